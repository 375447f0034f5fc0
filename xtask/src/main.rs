//! `cargo xtask`: the petl command line.
//!
//! - `reproduce arc`: the ARC table (embedded shapes world by default, or real VTAB/FGVC).
//! - `params <method> --backbone <preset>`: parameter counts without allocating weights.
//! - `predict <method> --checkpoint FILE ...`: logits of a trained model as `.npy`.
//! - `bench`: step and inference time, memory, parameters per method and backend.
//! - `encode --model DIR`: every layer's hidden states of a Hugging Face encoder folder.

mod bench;
mod encode;
mod methods;
mod predict;
mod reproduce;
mod table;

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use peakmem_alloc::PeakMemAlloc;
use petl_core::model::BackboneConfig;
use petl_core::weights::{TensorMap, families, read_checkpoint};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "petl: parameter-efficient transfer learning on Burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce a paper's table (embedded shapes world by default).
    Reproduce(reproduce::ReproduceArgs),
    /// Parameter counts of a method on a backbone preset, without allocating weights.
    Params(ParamsArgs),
    /// Run a trained model on images or a preprocessed tensor and write logits as .npy.
    Predict(predict::PredictArgs),
    /// Time training and inference per method and backend (and against PyTorch).
    Bench(bench::BenchArgs),
    /// Every layer's hidden states of a Hugging Face encoder (BERT, RoBERTa, CLIP image tower).
    Encode(encode::EncodeArgs),
}

#[derive(clap::Args)]
struct ParamsArgs {
    /// Method: arc, arc-att, lora, adapter, linear, full.
    method: methods::Method,
    /// Backbone preset.
    #[arg(long, default_value = "vit-b16")]
    backbone: String,
    /// ARC variant (`arc` or `arc-att`); overrides the method name's.
    #[arg(long)]
    variant: Option<String>,
    /// Classes of the head.
    #[arg(long, default_value_t = 100)]
    classes: usize,
    /// ARC bottleneck D'.
    #[arg(long, default_value_t = 50)]
    bottleneck: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Writes pretty JSON atomically.
pub fn save_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    petl_core::io::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads a pretrained backbone checkpoint and renames it for `backbone` by its format:
/// Google `.npz` (ViT), timm safetensors/`.pth` (ViT or Swin), or our own backbone tensors.
pub fn load_backbone_weights(path: &Path, backbone: &BackboneConfig) -> Result<TensorMap> {
    let map = read_checkpoint(path)?;
    let ours = map.tensors.keys().any(|k| k == "cls_token" || k == "patch_embed.weight")
        && !map.tensors.contains_key("patch_embed.proj.weight");
    Ok(match backbone {
        BackboneConfig::Vit(_) if path.extension().is_some_and(|e| e == "npz") => families::vit_google_npz(map)?,
        BackboneConfig::Vit(_) if ours => map,
        BackboneConfig::Vit(_) => families::vit_timm(map)?,
        BackboneConfig::Swin(_) => families::swin_timm(map)?,
    })
}

fn params(args: ParamsArgs) -> Result<()> {
    let backbone = BackboneConfig::preset(&args.backbone)?;
    let mut method = args.method;
    if let Some(v) = &args.variant {
        method = match arc::ArcVariant::parse(v).with_context(|| format!("unknown variant `{v}` (arc or arc-att)"))? {
            arc::ArcVariant::Arc => methods::Method::Arc,
            arc::ArcVariant::ArcAtt => methods::Method::ArcAtt,
        };
    }
    let mut cfg = arc::ArcConfig::new().with_bottleneck(args.bottleneck);
    if matches!(backbone, BackboneConfig::Swin(_)) {
        cfg = cfg.with_mlp_site(arc::MlpAdapterSite::Residual);
    }
    let counts = methods::MethodSpec::new(method, cfg).counts(&backbone, args.classes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
    } else {
        println!("method            {}", method.label());
        println!("backbone          {}", args.backbone);
        println!("adapter params    {}", counts.adapter_params);
        println!("head params       {} ({} classes)", counts.head_params, args.classes);
        println!("trainable params  {}", counts.trainable_params);
        println!("frozen params     {}", counts.frozen_params);
        println!("adapter bytes     {} (f32)", counts.adapter_bytes());
    }
    Ok(())
}

/// mimalloc, not glibc: with glibc every tensor above the mmap threshold is a fresh `mmap` whose
/// pages the kernel zeroes on first touch (measured: full fine-tuning of ViT-Ti/16 30 % slower).
/// Wrapped in a counter of live bytes, so `bench` reports each row's peak heap (RSS cannot tell
/// rows apart once the allocator keeps freed pages).
#[global_allocator]
static GLOBAL: PeakMemAlloc<mimalloc::MiMalloc> = PeakMemAlloc::new(mimalloc::MiMalloc);

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys 0.1.49 has no
/// constant for it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() {
    // Never hand freed pages back to the OS: a training step frees and re-allocates the same
    // tensor sizes every time, and re-faulting them cost full fine-tuning another 12 %. The
    // price is a higher peak RSS (`reproduce arc`: 204 MiB with mimalloc and this, 135 MiB with
    // glibc; the two causes were not measured apart).
    // SAFETY: plain option setter, called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Reproduce(a) => reproduce::run(a),
        Command::Params(a) => params(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Encode(a) => encode::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
