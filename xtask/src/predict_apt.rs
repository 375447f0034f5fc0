//! `cargo xtask predict apt`: task logits of an APT / ViLT / METER model on preprocessed or raw
//! inputs, from one of two kinds of checkpoint:
//!
//! - an official state dict (Lightning `.ckpt`, `.pth` or `.safetensors` with the official key
//!   names), below;
//! - a petl adapter checkpoint (the `adapter.safetensors` of a `reproduce apt` run folder,
//!   `runs/reproduce-apt/<task>/<method>/`) with `--weights FILE`, the frozen backbone the run
//!   trained from (the embedded run's `target/petl-cache/shapes-{vilt,meter}-*.safetensors`, or
//!   the official checkpoint of a real-data run): the model, task, tokenizer and image view come
//!   from the adapter's stored config ([`adapter`]). `--task`, `--variant` and `--backbone`, if
//!   given, must agree with it.
//!
//! ```text
//! cargo xtask predict apt --checkpoint runs/reproduce-apt/vqa/apt/adapter.safetensors \
//!     --weights target/petl-cache/shapes-vilt-s32-...-seed42.safetensors \
//!     --input-ids ids.npy --pixels pixels.npy --output logits.npy
//! ```
//!
//! Official state dicts:
//!
//! - The backbone, the method and every size are read off the file's tensors
//!   ([`apt::official::inspect`]); only the attention heads are not recorded (default
//!   `width / 64`, as the official code; `--config` gives `num_heads`, and for METER
//!   `text_num_heads` / `vision_num_heads`). Other `--config` keys of the official configs
//!   (`hidden_size`, `num_layers`, `mlp_ratio`, `vocab_size`, `max_text_len`, `patch_size`,
//!   `vqav2_label_size`, `num_prompts`, `rank`, ...) are checked against the file: a
//!   contradiction is an error, never a silent override. `--backbone vilt-b32|meter` checks
//!   that the file is that backbone.
//!
//! Inputs (both kinds):
//!
//! - `--input-ids IDS.npy`: int64 `[N, T]`; the padding id is the tokenizer's (ViLT's
//!   bert-base-uncased: 0; METER's RoBERTa: 1; the shapes word tokenizer of embedded runs: 0)
//!   and sets the attention mask.
//! - `--pixels X.npy`: float32 `[N, 3, H, W]` (NLVR2: `[N, 2, 3, H, W]`), normalised as the
//!   backbone expects (ViLT: `(x − 0.5) / 0.5`, zero padding at the bottom and right allowed;
//!   METER: CLIP's mean and std, square, the position table is resized to `H / patch` as
//!   METER's `adapt_position_encoding` does; embedded runs: ImageNet's mean and std at the
//!   model's image size, as the shapes world's samples).
//! - `--task vqa|nlvr2|irtr` → `--output OUT.npy`, float32 `[N, answers]`, `[N, 2]`, `[N, 1]`.
//!   A retrieval model without a trained `rank_output` scores with the pretrained ITM head's
//!   "match" row, as fine-tuning starts.
//!
//! - Or raw inputs: `--text FILE` (one text per line), `--images FILE` (one image path per line,
//!   two tab-separated for NLVR2, relative to the list's folder) and `--tokenizer tokenizer.json`
//!   (an adapter names its own): tokenised with truncation as the official code (ViLT's texts get
//!   its prefix), images through the backbone's view (`petl_core::data::vl_views`) at
//!   `--resolution` (384; an adapter stores its run's).

mod adapter;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use apt::Backbone;
use apt::official::{Heads, inspect};
use apt::{Variant, VlTuner};
use burn::prelude::*;
use burn::tensor::TensorData;
use petl_core::bert::TextInput;
use petl_core::train::vl::{VlClassify, VlInput};
use petl_core::vl_model::{VlBackbone, VlHeadKind, VlModel};
use petl_core::weights::TensorMap;

use crate::predict::{PredictArgs, write_npy};

/// `--config`: the official config's keys that matter here (others are ignored).
#[derive(Debug, Default, serde::Deserialize)]
struct Config {
    num_heads: Option<usize>,
    text_num_heads: Option<usize>,
    vision_num_heads: Option<usize>,
    hidden_size: Option<usize>,
    num_layers: Option<usize>,
    num_top_layer: Option<usize>,
    mlp_ratio: Option<f64>,
    vocab_size: Option<usize>,
    max_text_len: Option<usize>,
    patch_size: Option<usize>,
    vqav2_label_size: Option<usize>,
    num_prompts: Option<usize>,
    rank: Option<usize>,
}

fn read_config(text: &str) -> Result<Config> {
    let (json, origin) = if text.trim_start().starts_with('{') {
        (text.to_string(), "--config".to_string())
    } else {
        (std::fs::read_to_string(text).with_context(|| format!("reading --config file {text}"))?, text.to_string())
    };
    serde_json::from_str(&json).with_context(|| format!("{origin}: not a JSON object of config keys"))
}

/// Reads a C-order `.npy` of `T`, with its shape.
fn read_npy<T: npyz::Deserialize>(path: &Path, what: &str) -> Result<(Vec<T>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a .npy file", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        bail!("{}: a Fortran-order (column-major) array; save it in C order (np.ascontiguousarray)", path.display());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let data =
        npy.into_vec::<T>().with_context(|| format!("{}: {what} of another dtype ({dtype:?})", path.display()))?;
    Ok((data, shape))
}

/// Checks a `--config` value against what the file says.
fn agree(key: &str, given: Option<usize>, file: usize, ckpt: &Path) -> Result<()> {
    match given {
        Some(g) if g != file => {
            bail!("--config `{key}` = {g}, but {} holds {file}", ckpt.display())
        }
        _ => Ok(()),
    }
}

/// Entry point of `predict apt`: a petl adapter checkpoint ([`adapter`]) or an official state
/// dict.
pub fn run(args: PredictArgs) -> Result<()> {
    if args.input.is_some() {
        bail!("predict apt: --input is ARC's; give --input-ids and --pixels, or --text and --images");
    }
    let raw = match (&args.text, &args.images, &args.input_ids, &args.pixels) {
        (Some(_), Some(_), None, None) => true,
        (None, None, Some(_), Some(_)) => false,
        _ => bail!(
            "predict apt reads either preprocessed inputs (--input-ids IDS.npy, --pixels X.npy) or raw ones (--text \
             FILE, --images FILE, --tokenizer tokenizer.json)"
        ),
    };
    let device = petl_core::device::device_from_name(&args.backend)?;
    if args.checkpoint.extension().is_some_and(|e| e == "safetensors")
        && let Some(stored) = petl_core::checkpoint::stored_config(&args.checkpoint)?
    {
        return adapter::run(&args, stored, raw, &device);
    }
    if args.weights.is_some() {
        bail!(
            "{}: an official state dict holds its backbone; --weights goes with a petl adapter checkpoint",
            args.checkpoint.display()
        );
    }
    official(&args, raw, &device)
}

/// `predict apt` on an official state dict.
fn official(args: &PredictArgs, raw: bool, device: &Device) -> Result<()> {
    let task = args.task.as_deref().context("predict apt needs --task vqa|nlvr2|irtr")?;
    let config = match &args.config {
        Some(c) => read_config(c)?,
        None => Config::default(),
    };
    let ckpt = &args.checkpoint;
    let map = petl_core::weights::read_checkpoint(ckpt)?;
    let heads = Heads { model: config.num_heads, text: config.text_num_heads, vision: config.vision_num_heads };
    let found = inspect(&map, heads)?;
    let variant = match args.variant.as_deref() {
        Some(v) => {
            let v = Variant::parse(v).map_err(anyhow::Error::msg)?;
            if v != found.variant {
                bail!("{}: holds a `{}` model, not `{}`", ckpt.display(), found.variant.name(), v.name());
            }
            v
        }
        None => found.variant,
    };
    agree("num_prompts", config.num_prompts, found.variants.apt.num_prompts, ckpt)
        .and(agree("rank", config.rank, found.variants.apt.rank, ckpt))
        .or_else(|e| if variant == Variant::Apt { Err(e) } else { Ok(()) })?;
    let head = match task {
        "vqa" => {
            let answers =
                found.vqa_answers.with_context(|| format!("{}: no VQA head (`vqa_classifier`)", ckpt.display()))?;
            agree("vqav2_label_size", config.vqav2_label_size, answers, ckpt)?;
            VlHeadKind::Vqa { answers }
        }
        "nlvr2" => VlHeadKind::Nlvr2,
        "irtr" => VlHeadKind::Rank,
        other => bail!("--task {other}: expected vqa, nlvr2 or irtr"),
    };
    check_backbone_flag(args, &found.backbone, &ckpt.display().to_string(), "state dict")?;
    let spec = if raw { Some(official_raw_spec(args, &found.backbone)?) } else { None };
    let inputs = read_inputs(args, spec, head == VlHeadKind::Nlvr2)?;
    let (h, w) = (inputs.h, inputs.w);
    let logits = match found.backbone {
        Backbone::Vilt(cfg) => {
            agree("hidden_size", config.hidden_size, cfg.hidden_size, ckpt)?;
            agree("num_layers", config.num_layers, cfg.num_layers, ckpt)?;
            agree("vocab_size", config.vocab_size, cfg.vocab_size, ckpt)?;
            agree("max_text_len", config.max_text_len, cfg.max_text_len, ckpt)?;
            agree("patch_size", config.patch_size, cfg.patch_size, ckpt)?;
            if let Some(r) = config.mlp_ratio
                && (r * cfg.hidden_size as f64).round() as usize != cfg.mlp_dim
            {
                bail!("--config `mlp_ratio` = {r}, but {} has an MLP of {}", ckpt.display(), cfg.mlp_dim);
            }
            check_vilt_pixels(&cfg, &inputs)?;
            let model = build_official(cfg.init(device), &found.variants, variant, head, map, device)?;
            logits(&model, &inputs, 0, device)?
        }
        Backbone::Meter(cfg) => {
            agree("hidden_size", config.hidden_size, cfg.hidden_size, ckpt)?;
            agree("num_top_layer", config.num_top_layer, cfg.num_layers, ckpt)?;
            agree("vocab_size", config.vocab_size, cfg.text.vocab_size, ckpt)?;
            agree("patch_size", config.patch_size, cfg.vision.patch_size, ckpt)?;
            if h != w || h % cfg.vision.patch_size != 0 {
                bail!(
                    "{}: METER reads square images of a multiple of the patch size {}, got {h} × {w}",
                    inputs.pixels_path.display(),
                    cfg.vision.patch_size
                );
            }
            // The run's resolution; the checkpoint's position table is resized to it on load.
            let cfg = petl_core::meter::MeterConfig {
                vision: petl_core::vit::VitConfig { image_size: h, ..cfg.vision.clone() },
                ..cfg
            };
            let model = build_official(cfg.init(device), &found.variants, variant, head, map, device)?;
            logits(&model, &inputs, 1, device)?
        }
    };
    write_logits(args, &inputs, &logits, variant, task)
}

/// `--backbone vilt-b32|vilt|meter`, if given, names the family of `backbone` (`what`: the file
/// kind in the message).
fn check_backbone_flag(args: &PredictArgs, backbone: &Backbone, file: &str, what: &str) -> Result<()> {
    let Some(given) = args.backbone.as_deref() else { return Ok(()) };
    let kind = if given == "vilt-b32" { "vilt" } else { given };
    if kind != backbone.kind() {
        bail!("{file}: a {} {what}, not --backbone {given}", backbone.name());
    }
    Ok(())
}

/// ViLT reads images of any size that is a multiple of its patch (its position table is
/// resized to the image's grid).
fn check_vilt_pixels(cfg: &petl_core::vilt::ViltConfig, inputs: &Inputs) -> Result<()> {
    if !inputs.h.is_multiple_of(cfg.patch_size) || !inputs.w.is_multiple_of(cfg.patch_size) {
        bail!(
            "{}: images {} × {} are not multiples of the patch size {}",
            inputs.pixels_path.display(),
            inputs.h,
            inputs.w,
            cfg.patch_size
        );
    }
    Ok(())
}

/// Writes the logits `[N, K]` to `--output` and says so.
fn write_logits(args: &PredictArgs, inputs: &Inputs, logits: &[f32], variant: Variant, task: &str) -> Result<()> {
    let n = inputs.n;
    let k = logits.len() / n.max(1);
    write_npy(&args.output, logits, [n, k])?;
    println!("wrote {} {task} logits [{n}, {k}] to {}", variant.label(), args.output.display());
    Ok(())
}

/// How raw `--text` / `--images` become model inputs: the tokenizer, the text prefix, the text
/// positions and the image view.
struct RawSpec {
    tokenizer: petl_core::data::text::HfTokenizer,
    /// Prepended to every text (ViLT's fine-tuning prefix), or empty.
    prefix: &'static str,
    max_len: usize,
    view: petl_core::data::arrow::ArrowImageView,
}

/// An official checkpoint's raw inputs: `--tokenizer` (truncating as the official code), ViLT's
/// view (min-max resize into the padded canvas, shorter side `--resolution` or 384) and text
/// prefix, or METER's (resize and centre crop at `--resolution` or 384).
fn official_raw_spec(args: &PredictArgs, backbone: &Backbone) -> Result<RawSpec> {
    use petl_core::data::vl_views::{meter_view, vilt_view};
    let tokenizer = args.tokenizer.as_ref().context(
        "raw texts need --tokenizer FILE: the tokenizer.json of bert-base-uncased (ViLT) or roberta-base (METER)",
    )?;
    let resolution = args.resolution.unwrap_or(384);
    let (view, prefix, max_len) = match backbone {
        Backbone::Vilt(c) => {
            (vilt_view(resolution, c.patch_size as u32), petl_core::data::arrow::VILT_TEXT_PREFIX, c.max_text_len)
        }
        Backbone::Meter(c) => (meter_view(resolution), "", c.text.max_text_len().min(50)),
    };
    let (pad, vocab) = (backbone.pad_token_id() as u32, backbone.vocab_size());
    let tokenizer = petl_core::data::text::HfTokenizer::from_file(tokenizer, pad, vocab)?.with_truncation();
    Ok(RawSpec { tokenizer, prefix, max_len, view })
}

/// The inputs: `--input-ids` and `--pixels`, or `--text` and `--images` through `raw`; shapes
/// checked against each other and the task (`pair`: NLVR2's two images per text).
fn read_inputs(args: &PredictArgs, raw: Option<RawSpec>, pair: bool) -> Result<Inputs> {
    let (ids, ids_shape, pixels, px_shape, ids_path, pixels_path) = match raw {
        Some(spec) => {
            let (ids, ids_shape, pixels, px_shape) = raw_inputs(args, &spec, pair)?;
            let (t, i) = (args.text.clone().expect("raw"), args.images.clone().expect("raw"));
            (ids, ids_shape, pixels, px_shape, t, i)
        }
        None => {
            let (ids_path, pixels_path) = (args.input_ids.clone().expect("npy"), args.pixels.clone().expect("npy"));
            let (ids, ids_shape) = read_npy::<i64>(&ids_path, "int64 token ids")?;
            let (pixels, px_shape) = read_npy::<f32>(&pixels_path, "float32 pixels")?;
            (ids, ids_shape, pixels, px_shape, ids_path, pixels_path)
        }
    };
    let want_rank = if pair { 5 } else { 4 };
    if ids_shape.len() != 2 {
        bail!("{}: shape {ids_shape:?}, expected [N, T]", ids_path.display());
    }
    if px_shape.len() != want_rank
        || px_shape[0] != ids_shape[0]
        || px_shape[want_rank - 3] != 3
        || (pair && px_shape[1] != 2)
    {
        let want = if pair { "[N, 2, 3, H, W]" } else { "[N, 3, H, W]" };
        bail!("{}: shape {px_shape:?}, expected {want} with N = {} (the texts)", pixels_path.display(), ids_shape[0]);
    }
    if let Some(bad) = pixels.iter().position(|v| !v.is_finite()) {
        bail!("{}: value {bad} is not finite", pixels_path.display());
    }
    Ok(Inputs {
        ids,
        t: ids_shape[1],
        pixels,
        n: ids_shape[0],
        h: px_shape[want_rank - 2],
        w: px_shape[want_rank - 1],
        pair,
        batch: args.batch.max(1),
        pixels_path,
    })
}

/// Token ids and their shape, pixels and their shape.
type Arrays = (Vec<i64>, Vec<usize>, Vec<f32>, Vec<usize>);

/// `--text` (one text per line) and `--images` (one image path per line; two, tab-separated, for
/// NLVR2; relative to the list's folder) through `spec`: ids `[N, T]`, pixels
/// `[N, (2,) 3, H, W]`.
fn raw_inputs(args: &PredictArgs, spec: &RawSpec, pair: bool) -> Result<Arrays> {
    let text_path = args.text.as_ref().expect("raw");
    let list_path = args.images.as_ref().expect("raw");
    let read = |p: &Path| -> Result<Vec<String>> {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(text.lines().map(str::trim_end).filter(|l| !l.is_empty()).map(str::to_string).collect())
    };
    let texts = read(text_path)?;
    let lines = read(list_path)?;
    if texts.is_empty() || texts.len() != lines.len() {
        bail!(
            "{} has {} texts and {} has {} image lines: one line each per sample",
            text_path.display(),
            texts.len(),
            list_path.display(),
            lines.len()
        );
    }
    let texts: Vec<String> = texts.iter().map(|t| format!("{}{t}", spec.prefix)).collect();
    let batch = spec.tokenizer.encode(&texts, spec.max_len)?;
    if spec.tokenizer.truncated() > 0 {
        eprintln!("note: {} texts truncated to {} tokens", spec.tokenizer.truncated(), spec.max_len);
    }
    let base = list_path.parent().unwrap_or(Path::new("."));
    let slots = if pair { 2 } else { 1 };
    let mut pixels = vec![];
    let mut side = 0;
    for (i, line) in lines.iter().enumerate() {
        let files: Vec<&str> = line.split('\t').collect();
        if files.len() != slots {
            bail!("{} line {}: {} image path(s), the task needs {slots}", list_path.display(), i + 1, files.len());
        }
        for f in files {
            let img = petl_core::data::preprocess::decode_rgb(&base.join(f))?;
            let chw = spec.view.apply(&img, None)?;
            side = ((chw.len() / 3) as f64).sqrt().round() as usize;
            pixels.extend(chw);
        }
    }
    let n = texts.len();
    let px_shape = if pair { vec![n, 2, 3, side, side] } else { vec![n, 3, side, side] };
    Ok((batch.ids, vec![batch.rows, batch.len], pixels, px_shape))
}

/// Preprocessed inputs.
struct Inputs {
    ids: Vec<i64>,
    t: usize,
    pixels: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
    pair: bool,
    batch: usize,
    /// Where the pixels came from (`--pixels` or `--images`), for messages.
    pixels_path: PathBuf,
}

/// The model of `variant` on `backbone`, loaded from the official state dict `map` (strict: every
/// tensor of the model present, nothing of another shape).
fn build_official<E: apt::official::Official>(
    backbone: E,
    variants: &apt::VariantConfig,
    variant: Variant,
    head: VlHeadKind,
    map: TensorMap,
    device: &Device,
) -> Result<VlModel<E, VlTuner>> {
    let tuner = variants.init(variant, &backbone.layout(), device);
    // Any id: the file's `token4classifier` replaces the initial class token.
    let class_token = (variant != Variant::Full).then_some(0);
    Ok(apt::official::build(backbone, tuner, head, class_token, map, |_| false, device)?)
}

/// The logits of `model` on the inputs, in batches (`pad`: the padding id, which sets the
/// attention mask).
fn logits<E: VlBackbone>(model: &VlModel<E, VlTuner>, inputs: &Inputs, pad: i64, device: &Device) -> Result<Vec<f32>> {
    let slots = if inputs.pair { 2 } else { 1 };
    let per = 3 * inputs.h * inputs.w;
    let mut out = vec![];
    for start in (0..inputs.n).step_by(inputs.batch) {
        let end = (start + inputs.batch).min(inputs.n);
        let b = end - start;
        let ids: Vec<i64> = inputs.ids[start * inputs.t..end * inputs.t].to_vec();
        let mask: Vec<i64> = ids.iter().map(|&i| i64::from(i != pad)).collect();
        let text = TextInput {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, inputs.t]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [b, inputs.t]), device),
            token_type_ids: None,
        };
        let images: Vec<Tensor<4>> = (0..slots)
            .map(|s| {
                let data: Vec<f32> = (start..end)
                    .flat_map(|i| {
                        let at = (i * slots + s) * per;
                        inputs.pixels[at..at + per].iter().copied()
                    })
                    .collect();
                Tensor::from_data(TensorData::new(data, [b, 3, inputs.h, inputs.w]), device)
            })
            .collect();
        let check = petl_core::vilt::ViltInput {
            text: text.clone(),
            images: images[0].clone(),
            image_type: 1,
            class_token: model.class_token.as_ref().map(|c| c.val()),
        };
        model.backbone.check_input(&check).with_context(|| format!("samples {start}..{end}"))?;
        let logits = model.vl_logits(VlInput { text, images });
        out.extend(petl_core::weights::HostTensor::from_tensor(&logits).data);
    }
    Ok(out)
}
