//! `cargo xtask`: the petl command line.
//!
//! - `reproduce arc`: the ARC table (embedded shapes world by default, or real VTAB/FGVC).
//! - `reproduce apt [--backbone meter]`: the APT tables' layout (embedded ViLT or METER, or the
//!   official checkpoints on ViLT's Arrow files).
//! - `params <method> --backbone <preset>`: parameter counts without allocating weights.
//! - `predict <method> --checkpoint FILE ...`: logits of a trained model as `.npy`.
//! - `bench`: step and inference time, memory, parameters per method and backend
//!   (`--backbone vilt-*|meter-*`: the APT variants beside the plain backbone).
//! - `encode --model DIR`: every layer's hidden states of a Hugging Face encoder folder.
//! - `methods`: the registered methods and their default configurations.

mod apt;
mod apt_bench;
mod apt_real;
mod bench;
mod encode;
mod methods;
mod predict;
mod predict_apt;
mod reproduce;
mod table;

use std::path::Path;

use anyhow::Result;
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
    /// The methods: name, table label, whether they merge, their default configuration.
    Methods(MethodsArgs),
}

#[derive(clap::Args)]
struct MethodsArgs {
    /// Backbone preset whose default configurations are shown.
    #[arg(long, default_value = "vit-b16")]
    backbone: String,
}

#[derive(clap::Args)]
struct ParamsArgs {
    /// Method (`cargo xtask methods` lists them): arc, arc-att, lora, adapter, deep-prompt,
    /// linear, full.
    method: String,
    /// Backbone preset (default vit-b16; APT: vilt-b32 or meter, default vilt-b32).
    #[arg(long)]
    backbone: Option<String>,
    /// ARC variant (`arc` or `arc-att`): shorthand for `--set variant=...`.
    #[arg(long)]
    variant: Option<String>,
    /// Classes of the head.
    #[arg(long, default_value_t = 100)]
    classes: usize,
    /// Bottleneck D' (ARC, the bottleneck adapter): shorthand for `--set bottleneck=N`.
    #[arg(long)]
    bottleneck: Option<usize>,
    /// Settings of the method's configuration, `KEY=VALUE` (repeatable), e.g. `--set rank=8`.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `--set` settings plus the shorthand flags, in that order.
pub fn settings(set: &[String], shorthands: &[(&str, Option<String>)]) -> Result<Vec<(String, serde_json::Value)>> {
    let mut all = methods::parse_sets(set)?;
    for (key, value) in shorthands {
        if let Some(v) = value {
            all.extend(methods::parse_sets(&[format!("{key}={v}")])?);
        }
    }
    Ok(all)
}

/// The largest `|a − b|` over two equally long slices (logits before and after merging).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max)
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
    if args.method == "apt" {
        let backbone = args.backbone.as_deref().unwrap_or("vilt-b32");
        return apt::params(backbone, args.variant.as_deref(), &args.set, args.json);
    }
    let backbone_name = args.backbone.clone().unwrap_or_else(|| "vit-b16".into());
    let backbone = BackboneConfig::preset(&backbone_name)?;
    let mut spec = [methods::MethodSpec::new(&args.method, &backbone, false)?];
    let sets = settings(
        &args.set,
        &[("variant", args.variant.clone()), ("bottleneck", args.bottleneck.map(|b| b.to_string()))],
    )?;
    methods::apply_sets(&mut spec, &sets)?;
    let counts = spec[0].counts(&backbone, args.classes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
    } else {
        println!("method            {}", spec[0].label());
        println!("backbone          {backbone_name}");
        println!("adapter params    {}", counts.adapter_params);
        println!("head params       {} ({} classes)", counts.head_params, args.classes);
        println!("trainable params  {}", counts.trainable_params);
        println!("frozen params     {}", counts.frozen_params);
        println!("adapter bytes     {} (f32)", counts.adapter_bytes());
    }
    Ok(())
}

fn list_methods(args: MethodsArgs) -> Result<()> {
    let backbone = BackboneConfig::preset(&args.backbone)?;
    for name in methods::names() {
        let m = methods::find(name)?;
        println!(
            "{:<12} {:<12} merges: {:<3} {}\n{:>12} default on {}: {}",
            m.name(),
            m.label(),
            if m.merges() { "yes" } else { "no" },
            m.about(),
            "",
            args.backbone,
            m.default_config(&backbone)
        );
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

/// Exit code of a run refused or stopped by its input: a file, argument or setting that the
/// one-line message names (as clap's usage errors). Internal errors (bugs) exit with 101 after
/// one line.
const EXIT_BAD_INPUT: i32 = 2;

fn main() {
    // Never hand freed pages back to the OS: a training step frees and re-allocates the same
    // tensor sizes every time, and re-faulting them cost full fine-tuning another 12 %. The
    // price is a higher peak RSS (`reproduce arc`: 204 MiB with mimalloc and this, 135 MiB with
    // glibc; the two causes were not measured apart).
    // SAFETY: plain option setter, called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // A panic is a bug in petl, never the user's input: one line saying so, exit code 101.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("internal error (a bug in petl, please report it): {}{at}", one_line(&msg));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: printed on stdout, exit code 0
        Err(e) => {
            eprintln!("{}", usage_error_line(&e));
            std::process::exit(EXIT_BAD_INPUT);
        }
    };
    let result = match cli.command {
        Command::Reproduce(a) => reproduce::run(a),
        Command::Params(a) => params(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Methods(a) => list_methods(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(EXIT_BAD_INPUT);
    }
}

/// An error and its causes on one line. A cause whose text its parent already shows (an I/O
/// error inside a message that quotes it, a path named twice) is left out.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        let text = text.strip_prefix(line.as_str()).unwrap_or(&text).trim_start_matches(": ");
        if !line.is_empty() {
            line += ": ";
        }
        line += text;
    }
    one_line(&line)
}

/// A clap usage error on one line (`error: ...; see --help`): the message without its usage block.
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("{}; see --help", one_line(&message.join(" ")))
}

/// `text` with its line breaks replaced by spaces: errors are one line on stderr.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
