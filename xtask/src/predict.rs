//! `cargo xtask predict`: logits of a trained model, as float32 `.npy` `[N, K]`.
//!
//! Checkpoints accepted:
//! - a petl adapter-only checkpoint (`adapter.safetensors`, its config in the metadata; the
//!   frozen backbone comes from `--weights`),
//! - a full state dict saved by the official ARC code (`.pth`, its key names; dimensions are
//!   read off the tensors, heads from `--config` or `--backbone`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arc::ArcVariant;
use burn::prelude::*;
use burn::tensor::TensorData;
use clap::Args;
use petl_core::checkpoint::AdapterConfig;
use petl_core::data::preprocess::{Preprocess, load_image};
use petl_core::model::BackboneConfig;
use petl_core::vit::VitConfig;
use serde::{Deserialize, Serialize};

use crate::load_backbone_weights;
use crate::methods::{self, MethodSpec};

/// Options of `predict` (`predict apt`: see `predict_apt`).
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Method of the checkpoint (`cargo xtask methods`): arc, arc-att, lora, adapter,
    /// deep-prompt, linear, full.
    pub method: String,
    /// The trained checkpoint (petl adapter `.safetensors`, an official ARC `.pth`, or for `apt`
    /// an official ViLT / METER state dict).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Model JSON (`image_size`, `patch_size`, `hidden_size`, `num_layers`, `num_heads`,
    /// `mlp_dim`, `num_classes`, `adapter_dim`, `variant`), inline or a file path.
    #[arg(long)]
    pub config: Option<String>,
    /// Backbone preset instead of `--config`.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Pretrained backbone weights for adapter-only checkpoints (`apt`: the backbone the run
    /// trained from, the embedded pretraining cache or the official checkpoint).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Folder of images (sorted by name; VTAB preprocessing at the model's size). `predict apt`:
    /// a file of image paths, one line per sample (two, tab-separated, for NLVR2).
    #[arg(long, conflicts_with = "input")]
    pub images: Option<PathBuf>,
    /// APT: a file of texts, one per line (with `--images` and `--tokenizer`).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// APT: the checkpoint's tokenizer.json for `--text` (an adapter names its run's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// APT: ViLT's shorter side / METER's resolution for `--images` (384; an adapter's run's).
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Preprocessed float32 tensor `[N, 3, H, W]` (`.npy`).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output `.npy` of float32 logits `[N, K]`.
    #[arg(long)]
    pub output: PathBuf,
    /// APT: the task whose logits to write (`vqa`, `nlvr2`, `irtr`; an adapter's own by default).
    #[arg(long)]
    pub task: Option<String>,
    /// APT: the method the checkpoint must hold (read off the file when absent).
    #[arg(long)]
    pub variant: Option<String>,
    /// APT: token ids, int64 `[N, T]` (`.npy`; the tokenizer's padding id marks padding).
    #[arg(long)]
    pub input_ids: Option<PathBuf>,
    /// APT: pixels, float32 `[N, 3, H, W]` (`[N, 2, 3, H, W]` for NLVR2) (`.npy`).
    #[arg(long)]
    pub pixels: Option<PathBuf>,
    /// Backend.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

/// The model JSON of `--config` (the official ARC code's model arguments), also what adapter-only
/// checkpoints of ViT runs stored before the `petl-adapter/1` schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelJson {
    /// Input size.
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Width D.
    pub hidden_size: usize,
    /// Blocks.
    pub num_layers: usize,
    /// Heads.
    pub num_heads: usize,
    /// FFN width.
    pub mlp_dim: usize,
    /// Classes.
    pub num_classes: usize,
    /// ARC bottleneck D'.
    #[serde(default = "default_adapter_dim")]
    pub adapter_dim: usize,
    /// `arc` or `arc-att`.
    #[serde(default)]
    pub variant: Option<ArcVariant>,
}

fn default_adapter_dim() -> usize {
    50
}

impl ModelJson {
    fn vit(&self) -> VitConfig {
        VitConfig::new(
            self.image_size,
            self.patch_size,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.mlp_dim,
        )
    }
}

/// `--config` (inline JSON or a file): the model JSON, checked on its own, and the keys it gives.
fn parse_config(text: &str) -> Result<(ModelJson, Vec<String>)> {
    let (json, origin) = if text.trim_start().starts_with('{') {
        (text.to_string(), "--config".to_string())
    } else {
        let json = std::fs::read_to_string(text).with_context(|| format!("reading --config file {text}"))?;
        (json, format!("--config {text}"))
    };
    let value: serde_json::Value = serde_json::from_str(&json).with_context(|| format!("{origin}: not JSON"))?;
    let model: ModelJson =
        serde_json::from_value(value.clone()).with_context(|| format!("{origin}: not a valid model JSON"))?;
    BackboneConfig::Vit(model.vit()).validate().with_context(|| origin.clone())?;
    if model.num_classes == 0 || model.adapter_dim == 0 {
        bail!("{origin}: num_classes and adapter_dim must be at least 1");
    }
    let keys = value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    Ok((model, keys))
}

/// Refuses a `--config` that contradicts the checkpoint: every key it gives must have the value
/// `found` (what the checkpoint holds) has.
fn check_config(checkpoint: &Path, (given, keys): &(ModelJson, Vec<String>), found: &serde_json::Value) -> Result<()> {
    let given = serde_json::to_value(given)?;
    let differ: Vec<String> = keys
        .iter()
        .filter(|k| found.get(k.as_str()) != given.get(k.as_str()))
        .map(|k| match found.get(k.as_str()) {
            Some(v) => format!("{k} {} in --config, {v} in the checkpoint", given[k.as_str()]),
            None => format!("{k} {} in --config, none in the checkpoint", given[k.as_str()]),
        })
        .collect();
    if !differ.is_empty() {
        bail!("{}: --config contradicts the checkpoint: {}", checkpoint.display(), differ.join("; "));
    }
    Ok(())
}

/// The sizes of a ViT config that the tensors' shapes show (the head count shapes none of them).
fn vit_json(v: &VitConfig) -> serde_json::Value {
    serde_json::json!({
        "image_size": v.image_size, "patch_size": v.patch_size, "hidden_size": v.hidden_size,
        "num_layers": v.num_layers, "mlp_dim": v.mlp_dim,
    })
}

fn read_input(args: &PredictArgs, size: usize) -> Result<(Vec<f32>, usize)> {
    if let Some(path) = &args.input {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a .npy file", path.display()))?;
        if npy.order() == npyz::Order::Fortran {
            bail!(
                "{}: a Fortran-order (column-major) array; save it in C order (np.ascontiguousarray)",
                path.display()
            );
        }
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        if shape.len() != 4 || shape[1] != 3 || shape[2] != size || shape[3] != size {
            bail!("{}: shape {shape:?}, expected [N, 3, {size}, {size}]", path.display());
        }
        let data: Vec<f32> = npy.into_vec().with_context(|| format!("{}: expected float32 data", path.display()))?;
        return Ok((data, shape[0]));
    }
    let Some(dir) = &args.images else { bail!("give --images DIR or --input X.npy") };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .png/.jpg images", dir.display());
    }
    let mut data = vec![];
    for f in &files {
        data.extend(load_image(f, &Preprocess::vtab(size as u32), None)?);
    }
    Ok((data, files.len()))
}

pub(crate) fn write_npy(path: &Path, data: &[f32], shape: [usize; 2]) -> Result<()> {
    let mut bytes = vec![];
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[shape[0] as u64, shape[1] as u64])
            .writer(&mut bytes)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
    }
    petl_core::io::write_atomic(path, &bytes)?;
    Ok(())
}

/// Entry point of `predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch 0: the batch must hold at least one sample");
    }
    if args.method == "apt" {
        return crate::predict_apt::run(args);
    }
    if args.task.is_some()
        || args.variant.is_some()
        || args.input_ids.is_some()
        || args.pixels.is_some()
        || args.text.is_some()
        || args.tokenizer.is_some()
        || args.resolution.is_some()
    {
        bail!(
            "--task, --variant, --input-ids, --pixels, --text, --tokenizer and --resolution are options of `predict apt`"
        );
    }
    let device = petl_core::device::device_from_name(&args.backend)?;
    let ext = args.checkpoint.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (model, size) = if ext == "pth" || ext == "pt" {
        // The one official training code whose checkpoints petl reads is ARC's; the checkpoint
        // itself says which variant it holds.
        let path = args.checkpoint.display();
        let raw = petl_core::weights::read_pth(&args.checkpoint)?;
        raw.check_finite()?;
        let shapes = arc::official::inspect(&raw)?;
        let given = args.config.as_deref().map(parse_config).transpose()?;
        let preset = match args.backbone.as_deref().map(BackboneConfig::preset).transpose()? {
            Some(BackboneConfig::Vit(v)) => Some(v),
            Some(BackboneConfig::Swin(_)) => bail!(
                "official .pth checkpoints are ViT; got --backbone {}",
                args.backbone.as_deref().unwrap_or_default()
            ),
            None => None,
        };
        let heads = match (&given, &preset) {
            (Some((c, _)), _) => c.num_heads,
            (None, Some(v)) => v.num_heads,
            (None, None) => {
                bail!("an official checkpoint does not record the number of heads: give --config or --backbone")
            }
        };
        let (vit, arc) = shapes.configs(heads);
        let found = vit_json(&vit);
        if let Some(v) = preset.filter(|v| vit_json(v) != found) {
            bail!(
                "{path}: a ViT of {found}, not --backbone {} ({})",
                args.backbone.as_deref().unwrap_or_default(),
                vit_json(&v)
            );
        }
        if let Some(given) = &given {
            let mut found = found.clone();
            found["num_heads"] = heads.into();
            found["num_classes"] = shapes.num_classes.into();
            found["adapter_dim"] = shapes.adapter_dim.into();
            found["variant"] = serde_json::to_value(shapes.variant)?;
            check_config(&args.checkpoint, given, &found)?;
        }
        let variant = serde_json::to_value(shapes.variant)?;
        let variant = variant.as_str().unwrap_or("arc");
        if methods::find(&args.method)?.name() != variant {
            bail!("{path}: an official ARC checkpoint of variant `{variant}`, not `{}`", args.method);
        }
        let spec = MethodSpec::stored(variant, serde_json::to_value(&arc)?)?;
        let size = vit.image_size;
        let backbone = BackboneConfig::Vit(vit);
        backbone.validate().with_context(|| format!("{path}: model configuration"))?;
        (spec.build(&backbone, shapes.num_classes, &device)?.load_tensors(arc::official::rename(raw)?)?, size)
    } else {
        let (tensors, meta) = petl_core::checkpoint::load_adapter(&args.checkpoint)?;
        let path = args.checkpoint.display();
        let (spec, backbone, classes) = match AdapterConfig::from_stored(&args.checkpoint, &meta)? {
            Some(stored) => {
                let spec = MethodSpec::stored(&stored.method, stored.method_config.clone())
                    .with_context(|| format!("{path}: the stored method"))?;
                if spec.name() != methods::find(&args.method)?.name() {
                    bail!("{path}: checkpoint holds an adapter of method `{}`, not `{}`", spec.name(), args.method);
                }
                (spec, stored.backbone, stored.num_classes)
            }
            None => {
                // Written before the adapter-config schema: the flat ViT model JSON.
                let stored: ModelJson = serde_json::from_value(meta.clone())
                    .with_context(|| format!("{path}: adapter config is not a model JSON"))?;
                let backbone = BackboneConfig::Vit(stored.vit());
                let mut spec = [MethodSpec::new(&args.method, &backbone, false)?];
                methods::apply_sets(&mut spec, &[("bottleneck".into(), stored.adapter_dim.into())])?;
                let [spec] = spec;
                (spec, backbone, stored.num_classes)
            }
        };
        if let Some(c) = &args.config {
            let given = parse_config(c)?;
            let BackboneConfig::Vit(v) = &backbone else {
                bail!("{path}: checkpoint was trained on a Swin backbone, --config describes a ViT")
            };
            let mut found = vit_json(v);
            found["num_heads"] = v.num_heads.into();
            found["num_classes"] = classes.into();
            for (key, setting) in [("adapter_dim", "bottleneck"), ("variant", "variant")] {
                if let Some(value) = spec.config.get(setting) {
                    found[key] = value.clone();
                }
            }
            check_config(&args.checkpoint, &given, &found)?;
        }
        if let Some(b) = &args.backbone
            && BackboneConfig::preset(b)? != backbone
        {
            bail!("{path}: checkpoint was trained on another backbone than --backbone {b}");
        }
        backbone.validate().with_context(|| format!("{path}: the backbone it was trained on"))?;
        let mut model = spec.build(&backbone, classes, &device)?;
        if !spec.entry.trains_backbone(&spec.config)? {
            let weights =
                args.weights.as_ref().context("adapter-only checkpoints need the frozen backbone: give --weights")?;
            model = model.load_backbone(load_backbone_weights(weights, &backbone)?)?;
        }
        (model.load_tensors(tensors)?, backbone.image_size())
    };
    let (data, n) = read_input(&args, size)?;
    let per = 3 * size * size;
    let mut logits = vec![];
    let mut classes = 0;
    for start in (0..n).step_by(args.batch.max(1)) {
        let end = (start + args.batch.max(1)).min(n);
        let x = Tensor::<4>::from_data(
            TensorData::new(data[start * per..end * per].to_vec(), [end - start, 3, size, size]),
            &device,
        );
        let out = petl_core::weights::HostTensor::from_tensor(&model.logits(x));
        classes = out.shape[1];
        logits.extend(out.data);
    }
    write_npy(&args.output, &logits, [n, classes])?;
    println!("wrote {} logits [{n}, {classes}] to {}", methods::find(&args.method)?.label(), args.output.display());
    Ok(())
}
