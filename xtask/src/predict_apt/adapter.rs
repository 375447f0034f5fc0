//! `predict apt` on a petl adapter checkpoint: the `adapter.safetensors` a `reproduce apt` run
//! writes in each cell folder (embedded: `xtask/src/apt.rs`; real data: `apt_real.rs`). As HF
//! PEFT loads an adapter: the model is built from the config stored in the file (backbone,
//! method and its sizes, head, class token), the frozen backbone is loaded from `--weights`, then
//! the adapter's tensors; both loads are strict (a missing, unexpected or mis-shaped key is an
//! error naming it).
//!
//! `--weights`: the backbone the run trained from, in petl's layout (the embedded run's
//! pretraining cache `target/petl-cache/shapes-{vilt,meter}-*.safetensors`: the backbone's tensors
//! under its own paths, and the ITM head as `itm.*`, which is not used), or an official ViLT /
//! METER checkpoint (its backbone part; a real-data run's `--checkpoint`). A `full` adapter holds
//! every tensor, so `--weights` is optional there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use apt::Backbone;
use apt::official::Official;
use apt::{Variant, VariantConfig, VlTuner};
use burn::prelude::*;
use petl_core::data::arrow::{ArrowImageView, VILT_TEXT_PREFIX};
use petl_core::data::preprocess::Preprocess;
use petl_core::data::text::HfTokenizer;
use petl_core::vl_model::{VlHeadKind, VlModel};
use petl_core::weights::{LoadReport, TensorMap, apply};
use serde::Deserialize;

use super::{RawSpec, check_backbone_flag, check_vilt_pixels, logits, read_inputs, write_logits};
use crate::predict::PredictArgs;

/// The tokenizer a run used (`tokenizer`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StoredTokenizer {
    /// A built-in tokenizer by name: `shapes-words`, the shapes world's word tokenizer (padding
    /// id 0).
    Named(String),
    /// A Hugging Face `tokenizer.json` (real-data runs), with the model's padding id, the text
    /// positions the run tokenised to and whether ViLT's text prefix was prepended.
    File {
        file: PathBuf,
        padding_id: u32,
        max_len: usize,
        #[serde(default)]
        vilt_prefix: bool,
    },
}

/// The config an APT run stores in its adapter checkpoint. Keys written before `backbone_kind`,
/// `head`, `class_token_id` and `tokenizer` existed (embedded ViLT runs) take their defaults:
/// ViLT, the task's head (VQA's answers read off `head.Vqa.fc2`), the stored class token, the shapes
/// word tokenizer.
#[derive(Debug, Deserialize)]
struct Stored {
    variant: Variant,
    variants: VariantConfig,
    /// `vilt` or `meter` ([`Backbone::kind`]; files written before it: ViLT).
    backbone_kind: Option<String>,
    backbone: serde_json::Value,
    task: String,
    head: Option<VlHeadKind>,
    class_token_id: Option<usize>,
    tokenizer: Option<StoredTokenizer>,
    /// Real-data runs: ViLT's shorter side / METER's resolution of the image view.
    resolution: Option<u32>,
}

impl Stored {
    /// The config stored in `file`, if it is an APT run's.
    fn parse(mut stored: serde_json::Value, file: &str) -> Result<Self> {
        match stored.get("paper").and_then(|p| p.as_str()) {
            Some("apt") => {}
            Some(other) => bail!("{file}: an adapter of the {other} paper's run, not an APT model"),
            None => bail!(
                "{file}: a petl adapter without `\"paper\": \"apt\"` in its config (`predict <method>` reads \
                 adapters of the ViT methods)"
            ),
        }
        // Settings added since a file was written take their defaults, which runs then had.
        if let Some(v) = stored.get_mut("variants") {
            *v = with_defaults(serde_json::to_value(VariantConfig::new())?, v.take());
        }
        let stored: Stored =
            serde_json::from_value(stored).with_context(|| format!("{file}: the stored APT adapter config"))?;
        if !matches!(stored.task.as_str(), "vqa" | "nlvr2" | "retrieval") {
            bail!("{file}: stored `task` {:?}, expected vqa, nlvr2 or retrieval", stored.task);
        }
        Ok(stored)
    }

    /// Refuses `--config`, and a `--task` or `--variant` other than the stored ones.
    fn check_args(&self, args: &PredictArgs, file: &str) -> Result<()> {
        if args.config.is_some() {
            bail!("{file}: a petl adapter records its own config; --config is for official state dicts");
        }
        if let Some(given) = args.task.as_deref() {
            let given_task = match given {
                "irtr" | "retrieval" => "retrieval",
                "vqa" | "nlvr2" => given,
                other => bail!("--task {other}: expected vqa, nlvr2 or irtr"),
            };
            if given_task != self.task {
                bail!("{file}: an adapter trained for `{}` (its `task`), not --task {given}", self.task);
            }
        }
        if let Some(v) = args.variant.as_deref() {
            let v = Variant::parse(v).map_err(anyhow::Error::msg)?;
            if v != self.variant {
                bail!("{file}: holds a `{}` adapter (its `variant`), not `{}`", self.variant.name(), v.name());
            }
        }
        Ok(())
    }

    /// The stored head, or (older files) the task's, VQA's answers read off `tensors`.
    fn head(&self, tensors: &TensorMap, file: &str) -> Result<VlHeadKind> {
        let head = match (self.head, self.task.as_str()) {
            (Some(h), _) => h,
            (None, "vqa") => {
                let w = tensors
                    .tensors
                    .get("head.Vqa.fc2.weight")
                    .with_context(|| format!("{file}: a VQA adapter without `head.Vqa.fc2.weight`"))?;
                VlHeadKind::Vqa { answers: w.shape[w.shape.len() - 1] }
            }
            (None, "nlvr2") => VlHeadKind::Nlvr2,
            (None, _) => VlHeadKind::Rank,
        };
        let fits = matches!(
            (head, self.task.as_str()),
            (VlHeadKind::Vqa { .. }, "vqa") | (VlHeadKind::Nlvr2, "nlvr2") | (VlHeadKind::Rank, "retrieval")
        );
        if !fits {
            bail!("{file}: stored `head` {head:?} is not a {} head", self.task);
        }
        Ok(head)
    }

    /// The stored backbone config, checked.
    fn backbone(&self, file: &str) -> Result<Backbone> {
        let kind = self.backbone_kind.as_deref().unwrap_or("vilt");
        Backbone::from_kind(kind, self.backbone.clone()).map_err(|e| anyhow::anyhow!("{file}: `backbone`: {e}"))
    }
}

/// `predict apt` on the adapter checkpoint `args.checkpoint`, whose stored config is `stored`.
pub(super) fn run(args: &PredictArgs, stored: serde_json::Value, raw: bool, device: &Device) -> Result<()> {
    let ckpt = &args.checkpoint;
    let file = ckpt.display().to_string();
    let stored = Stored::parse(stored, &file)?;
    stored.check_args(args, &file)?;
    let (tensors, _) = petl_core::checkpoint::load_adapter(ckpt)?;
    let head = stored.head(&tensors, &file)?;
    let backbone = stored.backbone(&file)?;
    check_backbone_flag(args, &backbone, &file, "adapter")?;
    let weights = match &args.weights {
        Some(path) => Some((path.as_path(), petl_core::weights::read_checkpoint(path)?)),
        None if stored.variant == Variant::Full => None,
        None => bail!(
            "{file}: a `{}` adapter holds the trained tensors only; give the frozen backbone the run trained from \
             with --weights FILE (the embedded run's target/petl-cache/shapes-*.safetensors, or the official \
             checkpoint of a real-data run)",
            stored.variant.name()
        ),
    };
    let (pad, spec) = text_and_images(args, &stored, &backbone, raw, &file)?;
    let inputs = read_inputs(args, spec, head == VlHeadKind::Nlvr2)?;
    if let Some((path, map)) = &weights
        && let Some(family) = apt::official::family(map)
        && family != backbone.name()
    {
        bail!("{}: an official {family} checkpoint, the adapter was trained on {}", path.display(), backbone.name());
    }
    let logits = match &backbone {
        Backbone::Vilt(cfg) => {
            check_vilt_pixels(cfg, &inputs)?;
            let model = build(cfg.init(device), &stored, head, weights, tensors, ckpt, device)?;
            logits(&model, &inputs, pad, device)?
        }
        Backbone::Meter(cfg) => {
            let r = cfg.vision.image_size;
            if inputs.h != r || inputs.w != r {
                bail!(
                    "{}: images {} × {}, the adapter's METER reads {r} × {r}",
                    inputs.pixels_path.display(),
                    inputs.h,
                    inputs.w
                );
            }
            let model = build(cfg.init(device), &stored, head, weights, tensors, ckpt, device)?;
            logits(&model, &inputs, pad, device)?
        }
    };
    let task = if stored.task == "retrieval" { "irtr" } else { &stored.task };
    write_logits(args, &inputs, &logits, stored.variant, task)
}

/// `stored` over `defaults`, object by object.
fn with_defaults(defaults: serde_json::Value, stored: serde_json::Value) -> serde_json::Value {
    match (defaults, stored) {
        (serde_json::Value::Object(mut d), serde_json::Value::Object(s)) => {
            for (k, v) in s {
                let merged = match d.remove(&k) {
                    Some(dv) => with_defaults(dv, v),
                    None => v,
                };
                d.insert(k, merged);
            }
            serde_json::Value::Object(d)
        }
        (_, stored) => stored,
    }
}

/// The padding id of the run's tokenizer and, for raw inputs, how texts and images become model
/// inputs: the shapes word tokenizer (or `--tokenizer`) and the embedded run's images (a resize
/// to the backbone's image size, ImageNet normalisation, as `ShapesVl` renders them); or a
/// real-data run's `tokenizer.json` (or `--tokenizer`), its text prefix, and ViLT's or METER's
/// view at the run's resolution.
fn text_and_images(
    args: &PredictArgs,
    stored: &Stored,
    backbone: &Backbone,
    raw: bool,
    file: &str,
) -> Result<(i64, Option<RawSpec>)> {
    use petl_core::data::vl_views::{meter_view, vilt_view};
    let (vocab, positions, size) = (backbone.vocab_size(), backbone.max_text_len(), backbone.image_size());
    let fixed_size = |view: &str| -> Result<()> {
        match args.resolution {
            Some(r) if r as usize != size => bail!("--resolution {r}: the adapter's {view} reads {size} px images"),
            _ => Ok(()),
        }
    };
    match stored.tokenizer.as_ref().unwrap_or(&StoredTokenizer::Named("shapes-words".into())) {
        StoredTokenizer::Named(name) if name == "shapes-words" => {
            if !raw {
                return Ok((0, None));
            }
            fixed_size("embedded model")?;
            let tokenizer = match &args.tokenizer {
                Some(path) => HfTokenizer::from_file(path, 0, vocab)?,
                None => HfTokenizer::from_tokenizer(
                    petl_core::data::shapes::language::word_tokenizer()?,
                    0,
                    "shapes word tokenizer",
                ),
            };
            let view = ArrowImageView::from(Preprocess::vtab(size as u32));
            Ok((0, Some(RawSpec { tokenizer, prefix: "", max_len: positions, view })))
        }
        StoredTokenizer::Named(other) => {
            bail!("{file}: stored `tokenizer` {other:?}: predict knows the built-in `shapes-words` or a file")
        }
        StoredTokenizer::File { file: path, padding_id, max_len, vilt_prefix } => {
            if !raw {
                return Ok((i64::from(*padding_id), None));
            }
            let path = args.tokenizer.as_ref().unwrap_or(path);
            let tokenizer = HfTokenizer::from_file(path, *padding_id, vocab)
                .with_context(|| format!("the tokenizer of {file} (give --tokenizer FILE if it moved)"))?
                .with_truncation();
            let resolution = args.resolution.or(stored.resolution).unwrap_or(384);
            let view = match backbone {
                Backbone::Vilt(c) => vilt_view(resolution, c.patch_size as u32),
                Backbone::Meter(_) => {
                    fixed_size("METER")?;
                    meter_view(size as u32)
                }
            };
            let prefix = if *vilt_prefix { VILT_TEXT_PREFIX } else { "" };
            Ok((i64::from(*padding_id), Some(RawSpec { tokenizer, prefix, max_len: (*max_len).min(positions), view })))
        }
    }
}

/// The adapter's model on `backbone`: the frozen backbone from `weights` (petl's layout, strict,
/// its `itm.*` head unused; or an official state dict through [`apt::official::build`]), then the
/// adapter's `tensors`, strict (everything of the PETL set; every tensor for `full`).
fn build<E: Official>(
    backbone: E,
    stored: &Stored,
    head: VlHeadKind,
    weights: Option<(&Path, TensorMap)>,
    tensors: TensorMap,
    ckpt: &Path,
    device: &Device,
) -> Result<VlModel<E, VlTuner>> {
    let variant = stored.variant;
    let tuner = stored.variants.init(variant, &backbone.layout(), device);
    // Any id: the adapter's `class_token` replaces the initial one.
    let class_token = (variant != Variant::Full).then_some(stored.class_token_id.unwrap_or(0));
    let model = match weights {
        Some((path, map)) => match apt::official::family(&map) {
            // The file's backbone (its family checked by the caller); heads, method and class
            // token come from the adapter.
            Some(_) => {
                apt::official::build(backbone, tuner, head, class_token, map, |k| !k.starts_with("backbone."), device)?
            }
            None => {
                if petl_core::checkpoint::stored_config(path).is_ok_and(|c| c.is_some()) {
                    bail!(
                        "{}: a petl adapter checkpoint; --weights takes the frozen backbone the run trained from",
                        path.display()
                    );
                }
                let (backbone, report) = apply(backbone, map);
                strict(report, path, |_| false, |k| k.starts_with("itm."))?;
                VlModel::new(backbone, tuner, head, class_token, None, device)
            }
        },
        None => VlModel::new(backbone, tuner, head, class_token, None, device),
    };
    let (model, report) = apply(model, tensors);
    let frozen = |k: &str| variant != Variant::Full && !VlModel::<E, VlTuner>::in_petl_set(k);
    strict(report, ckpt, frozen, |_| false)?;
    Ok(model)
}

/// [`LoadReport::check_with`]; a file of another backbone size is named by its first
/// mis-shaped tensors rather than all of them.
fn strict(
    report: LoadReport,
    source: &Path,
    may_be_missing: impl Fn(&str) -> bool,
    may_be_unexpected: impl Fn(&str) -> bool,
) -> Result<()> {
    const SHOWN: usize = 3;
    if report.mismatched.len() > SHOWN {
        let first: Vec<String> = report.mismatched[..SHOWN]
            .iter()
            .map(|(p, want, got)| format!("`{p}` has shape {got:?}, the model {want:?}"))
            .collect();
        bail!(
            "{}: another backbone size than the adapter's: {}, and {} more tensors of other shapes",
            source.display(),
            first.join("; "),
            report.mismatched.len() - SHOWN
        );
    }
    report.check_with(&source.display().to_string(), may_be_missing, may_be_unexpected)?;
    Ok(())
}
