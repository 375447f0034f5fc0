//! `cargo xtask reproduce apt --data-root DIR --checkpoint FILE --tokenizer FILE`: the APT
//! paper's recipe on the real datasets from an official pretrained checkpoint (ViLT's
//! `vilt_200k_mlm_itm.ckpt` or METER's `meter_clip16_288_roberta_pretrain.ckpt`; the backbone and
//! its sizes are read off the file).
//!
//! Data (ViLT's Arrow files under `DIR`): VQA trains on `vqav2_train` + `vqav2_trainable_val`
//! and is scored locally on `vqav2_rest_val` (the proxy: test-dev is scored only by the EvalAI
//! server; when `vqav2_test-dev.arrow` is present, `vqa_test-dev.json` — `[{question_id,
//! answer}]` — is written for it); NLVR2 trains on `nlvr2_train` and is evaluated on `nlvr2_dev`
//! and `nlvr2_test1` (the table's test-P); Flickr30K trains on the Karpathy train + val captions
//! (1 positive + 15 negatives drawn from all training captions, unprefixed) and is evaluated on
//! the full Karpathy test grid (IR and TR R@1/5/10). Images: ViLT's min-max resize into a
//! padded canvas, METER's resize and centre crop (`petl_core::data::vl_views`), RandAugment
//! (N 2, M 9) on training images; ViLT's texts get the official prefix. Over-long texts are
//! truncated as the official tokenisation does, and counted in the report.
//!
//! Recipe (the released run scripts): AdamW (β₂ 0.98, eps 1e-8, decay 0.01 except biases and
//! LayerNorms), linear warm-up over 10 % of the updates then linear decay to 0, 10 epochs, the
//! last epoch evaluated; ViLT lr 5e-4 (VQA head ×10), batches 256 / 128 / 256; METER lr 2.5e-5 /
//! 1e-5 / 5e-5 with `cross_modal*` ×5 (every parameter whose official name holds `cross_modal`:
//! the fusion transforms, layers and poolers, and the methods inside the fusion layers; not
//! the deep prompts, `prompts.{0,1}` on the model root) and heads ×50 / ×10 / ×5 (not the
//! ranking head), batches 512 / 256 / 512, 384 / 288 / 384 px. `--batch` is the
//! micro-batch (the recipe's batch is reached by gradient accumulation). Dropout is not applied
//! in the frozen backbone (petl's backbones run in evaluation form), a documented difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use apt::Backbone;
use apt::official::{Heads, Inspected, Official, build, inspect};
use apt::{Variant, VariantConfig};
use burn::module::Module;
use burn::prelude::*;
use petl_core::data::Samples;
use petl_core::data::arrow::{F30kArrow, Nlvr2Arrow, VlArrowOptions, VqaArrow};
use petl_core::data::text::HfTokenizer;
use petl_core::data::vl::VlSample;
use petl_core::data::vl_views::{meter_view, vilt_view};
use petl_core::train::task::Task;
use petl_core::train::vl::{PairRetrieval, VlClassification, VlClassify, Vqa};
use petl_core::train::{ParamGroupConfig, TrainConfig, Trainer};
use petl_core::vl_model::VlHeadKind;
use petl_core::weights::TensorMap;

use crate::apt::AptTask as RealTask;
use crate::reproduce::{ReproduceArgs, check_settings, file_identity};
use crate::save_json;

/// The real-data files of each task.
impl RealTask {
    /// Files `(train, eval)` under the data root.
    fn files(self) -> (Vec<&'static str>, Vec<&'static str>) {
        match self {
            RealTask::Vqa => (vec!["vqav2_train", "vqav2_trainable_val"], vec!["vqav2_rest_val"]),
            RealTask::Nlvr2 => (vec!["nlvr2_train"], vec!["nlvr2_dev", "nlvr2_test1"]),
            RealTask::Retrieval => {
                (vec!["f30k_caption_karpathy_train", "f30k_caption_karpathy_val"], vec!["f30k_caption_karpathy_test"])
            }
        }
    }
}

/// One task's recipe on one backbone.
#[derive(Clone, Debug, serde::Serialize)]
struct Recipe {
    batch: usize,
    lr: f64,
    /// `(name, path fragments, lr multiplier)`.
    groups: Vec<(&'static str, Vec<&'static str>, f64)>,
    /// ViLT: the shorter side; METER: the square resolution.
    image: u32,
    text_len: usize,
}

fn recipe(meter: bool, task: RealTask) -> Recipe {
    let head = |scale: f64| ("heads", vec!["head."], scale);
    // METER's `set_schedule` (`meter_utils.py`): `lr_mult_cross_modal` for every parameter named
    // `cross_modal*`, which full tuning trains too; APT, LoRA and the adapters sit inside
    // `cross_modal_{text,image}_layers`, the deep prompts do not (`meter_module_prompt.py`).
    let cross = (
        "cross_modal",
        vec![
            "backbone.text_transform.",
            "backbone.image_transform.",
            "backbone.text_layers.",
            "backbone.image_layers.",
            "backbone.text_pooler.",
            "backbone.image_pooler.",
            "tuner.Apt.",
            "tuner.Lora.",
            "tuner.Adapter.",
            "tuner.ScaledPa.",
        ],
        5.0,
    );
    match (meter, task) {
        (false, RealTask::Vqa) => Recipe { batch: 256, lr: 5e-4, groups: vec![head(10.0)], image: 384, text_len: 40 },
        (false, RealTask::Nlvr2) => Recipe { batch: 128, lr: 5e-4, groups: vec![], image: 384, text_len: 40 },
        (false, RealTask::Retrieval) => Recipe { batch: 256, lr: 5e-4, groups: vec![], image: 384, text_len: 40 },
        (true, RealTask::Vqa) => {
            Recipe { batch: 512, lr: 2.5e-5, groups: vec![cross, head(50.0)], image: 384, text_len: 50 }
        }
        (true, RealTask::Nlvr2) => {
            Recipe { batch: 256, lr: 1e-5, groups: vec![cross, head(10.0)], image: 288, text_len: 50 }
        }
        // The ranking head keeps the base learning rate.
        (true, RealTask::Retrieval) => Recipe { batch: 512, lr: 5e-5, groups: vec![cross], image: 384, text_len: 40 },
    }
}

/// The parameter groups of a recipe: decay-free biases and LayerNorms, each multiplier group,
/// and its decay-free part (later groups win).
fn param_groups(r: &Recipe) -> Vec<ParamGroupConfig> {
    let free = ["bias", "gamma", "beta"];
    let mut groups = vec![ParamGroupConfig::new("no-decay", &free).with_weight_decay(0.0)];
    for (name, fragments, scale) in &r.groups {
        groups.push(ParamGroupConfig::new(name, fragments).with_lr_scale(*scale));
        let both: Vec<String> = fragments.iter().flat_map(|f| free.map(|p| format!("{f}&{p}"))).collect();
        let both: Vec<&str> = both.iter().map(String::as_str).collect();
        groups.push(
            ParamGroupConfig::new(&format!("{name} no-decay"), &both).with_lr_scale(*scale).with_weight_decay(0.0),
        );
    }
    groups
}

/// The first `n` samples of a dataset (`--limit`, for quick checks; the name says so).
struct Limited<D> {
    inner: D,
    n: usize,
    name: String,
}

impl<D: Samples<VlSample>> Samples<VlSample> for Limited<D> {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.inner.len().min(self.n)
    }
    fn get(&self, index: usize, augment: Option<u64>) -> petl_core::Result<VlSample> {
        self.inner.get(index, augment)
    }
}

/// The first `limit` samples of `inner` (all of them without a limit).
pub(crate) fn limited<D: Samples<VlSample> + 'static>(inner: D, limit: Option<usize>) -> Box<dyn Samples<VlSample>> {
    match limit {
        Some(n) if n < inner.len() => {
            let name = format!("{}[:{n}]", inner.name());
            Box::new(Limited { inner, n, name })
        }
        _ => Box::new(inner),
    }
}

/// What every cell of a real-data run shares.
struct Real<'a> {
    args: &'a ReproduceArgs,
    root: PathBuf,
    map: TensorMap,
    found: Inspected,
    tokenizer: PathBuf,
    micro: usize,
    device: Device,
    variants: VariantConfig,
    identity: serde_json::Value,
}

/// Measured metrics of one (task, method) cell.
struct Cell {
    task: RealTask,
    variant: Variant,
    metrics: BTreeMap<String, f64>,
    truncated: usize,
}

/// Entry point from `reproduce apt` when `--data-root` or `--checkpoint` is given.
pub fn reproduce(args: &ReproduceArgs, out: &Path, variants_cfg: VariantConfig) -> Result<()> {
    let root = args.data_root.clone().context("the real-data run needs --data-root DIR (ViLT's Arrow files)")?;
    let ckpt = args
        .checkpoint
        .clone()
        .context("the real-data run needs --checkpoint FILE (the pretrained ViLT or METER .ckpt)")?;
    let tokenizer = args.tokenizer.clone().context(
        "the real-data run needs --tokenizer FILE: the tokenizer.json of bert-base-uncased (ViLT) or roberta-base (METER)",
    )?;
    let heads = Heads { model: args.heads, text: args.heads, vision: args.heads };
    let map = petl_core::weights::read_checkpoint(&ckpt)?;
    let found = inspect(&map, heads)?;
    let meter = matches!(found.backbone, Backbone::Meter(_));
    match args.backbone.as_str() {
        "vilt-b32" | "vilt" if meter => {
            bail!("{}: a METER checkpoint, not --backbone {}", ckpt.display(), args.backbone)
        }
        "meter" if !meter => bail!("{}: a ViLT checkpoint, not --backbone meter", ckpt.display()),
        "vilt-b32" | "vilt" | "meter" | "vit-b16" => {}
        other => bail!("--backbone {other}: APT runs on vilt-b32 or meter"),
    }
    if found.variant != Variant::Full {
        bail!(
            "{}: holds `{}` tensors; the recipe starts from a pretrained checkpoint (no method, no task head)",
            ckpt.display(),
            found.variant.name()
        );
    }
    let tasks = crate::apt::tasks(&args.tasks)?;
    // Every file the run needs, before anything trains.
    for task in &tasks {
        let (train, eval) = task.files();
        for stem in train.iter().chain(&eval) {
            let path = root.join(format!("{stem}.arrow"));
            if !path.exists() {
                bail!(
                    "{}: missing (the {} task needs it; ViLT's `write_*` scripts make these files)",
                    path.display(),
                    task.name()
                );
            }
        }
    }
    let variants: Vec<Variant> = if args.methods.is_empty() {
        Variant::ALL.to_vec()
    } else {
        args.methods.iter().map(|m| Variant::parse(m).map_err(anyhow::Error::msg)).collect::<Result<_>>()?
    };
    let real = Real {
        args,
        root,
        identity: serde_json::json!({ "checkpoint": file_identity(&ckpt)?, "tokenizer": file_identity(&tokenizer)? }),
        map,
        found,
        tokenizer,
        micro: args.batch.unwrap_or(32).max(1),
        device: petl_core::device::device_from_name(&args.backend)?,
        variants: variants_cfg,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cells = vec![];
    for &task in &tasks {
        for &v in &variants {
            let dir = out.join(task.name()).join(v.name());
            let cell = match real.found.backbone.clone() {
                Backbone::Vilt(cfg) => real.cell(task, v, &dir, serde_json::to_value(&cfg)?, |d| cfg.init(d))?,
                Backbone::Meter(cfg) => {
                    let res = real.args.resolution.unwrap_or(recipe(true, task).image) as usize;
                    let cfg = petl_core::meter::MeterConfig {
                        vision: petl_core::vit::VitConfig { image_size: res, ..cfg.vision.clone() },
                        ..cfg
                    };
                    real.cell(task, v, &dir, serde_json::to_value(&cfg)?, |d| cfg.init(d))?
                }
            };
            cells.push(cell);
        }
    }
    let md = table(&cells, &variants, &real);
    println!("\n{md}");
    petl_core::io::write_atomic(&out.join("table.md"), md.as_bytes())?;
    let json: Vec<_> = cells
        .iter()
        .map(|c| serde_json::json!({ "task": c.task.name(), "variant": c.variant, "metrics": c.metrics, "truncated_texts": c.truncated }))
        .collect();
    save_json(&out.join("results.json"), &serde_json::json!({ "cells": json }))?;
    println!("wrote {}/table.md and results.json", out.display());
    Ok(())
}

impl Real<'_> {
    fn options(&self, meter: bool, r: &Recipe, patch: u32) -> VlArrowOptions {
        let image = self.args.resolution.unwrap_or(r.image);
        if meter {
            VlArrowOptions::new(meter_view(image))
        } else {
            VlArrowOptions::new(vilt_view(image, patch)).with_vilt_prefix()
        }
    }

    fn paths(&self, stems: &[&str]) -> Vec<PathBuf> {
        stems.iter().map(|s| self.root.join(format!("{s}.arrow"))).collect()
    }

    /// Trains and evaluates one cell on the backbone `make` builds (`backbone_config`: its config, which
    /// the adapter checkpoint records).
    fn cell<E: Official>(
        &self,
        task: RealTask,
        variant: Variant,
        dir: &Path,
        backbone_config: serde_json::Value,
        make: impl Fn(&Device) -> E,
    ) -> Result<Cell> {
        let meter = matches!(self.found.backbone, Backbone::Meter(_));
        let r = recipe(meter, task);
        let b = &self.found.backbone;
        let (patch, text_positions, vocab, pad) =
            (b.patch_size() as u32, b.max_text_len(), b.vocab_size(), b.pad_token_id() as u32);
        let max_len = r.text_len.min(text_positions);
        let tok =
            || -> Result<HfTokenizer> { Ok(HfTokenizer::from_file(&self.tokenizer, pad, vocab)?.with_truncation()) };
        let options = self.options(meter, &r, patch);
        let (train_stems, eval_stems) = task.files();
        let limit = self.args.limit;
        let epochs = self.args.epochs.unwrap_or(10);
        let cfg = TrainConfig::new()
            .with_epochs(epochs)
            .with_warmup_fraction(Some(0.1))
            .with_batch_size(self.micro)
            .with_eval_batch_size(self.micro)
            .with_grad_accumulation((r.batch / self.micro).max(1))
            .with_lr(self.args.lr.unwrap_or(r.lr))
            .with_weight_decay(0.01)
            .with_grad_clip_norm(None)
            .with_linear_decay(true)
            .with_adam_beta2(0.98)
            .with_param_groups(param_groups(&r))
            .with_eval_every(epochs)
            .with_seed(self.args.seed);
        let settings = serde_json::json!({
            "paper": "apt", "data": "real", "task": task.name(), "variant": variant, "variants": self.variants,
            "recipe": r, "train": &cfg, "inputs": self.identity, "data_root": self.root, "limit": limit,
            "resolution": self.args.resolution,
        });
        check_settings(dir, &settings)?;
        let label = format!("{:>9} {:>15}", task.name(), variant.label());
        if let Some(done) = std::fs::read(dir.join("result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            println!("{label}: finished run reused");
            return Ok(Cell {
                task,
                variant,
                metrics: serde_json::from_value(done["metrics"].clone())?,
                truncated: done["truncated_texts"].as_u64().unwrap_or(0) as usize,
            });
        }
        save_json(&dir.join("config.json"), &settings)?;
        let ad = self.device.clone().autodiff();
        ad.seed(cfg.seed);
        let backbone = make(&ad);
        let tuner = self.variants.init(variant, &backbone.layout(), &ad);
        let tokenizer = tok()?;
        let class_id = tokenizer.encode(&[String::new()], max_len)?.ids[0] as usize;
        let vqa_vocab = if task == RealTask::Vqa {
            Some(VqaArrow::answer_vocab(&self.paths(&[&train_stems[..], &eval_stems[..]].concat()))?)
        } else {
            None
        };
        let head = match task {
            RealTask::Vqa => VlHeadKind::Vqa { answers: vqa_vocab.as_ref().map_or(0, Vec::len) },
            RealTask::Nlvr2 => VlHeadKind::Nlvr2,
            RealTask::Retrieval => VlHeadKind::Rank,
        };
        let class_token = (variant != Variant::Full).then_some(class_id);
        // A pretrained file has no task head, method or class token.
        let pretrained = |k: &str| k.starts_with("head.") || k.starts_with("tuner.") || k == "class_token";
        let model = build(backbone, tuner, head, class_token, self.map.clone(), pretrained, &ad)?;
        let model = if variant == Variant::Full { model.fully_trainable() } else { model.petl_trainable() };
        let mut trainer = Trainer::new(cfg);
        trainer.run_dir = Some(dir.to_path_buf());
        trainer.progress = !self.args.quiet;
        trainer.label = label.clone();
        let (model, metrics, truncated) = match task {
            RealTask::Vqa => {
                let answers = vqa_vocab.as_ref().map_or(0, Vec::len);
                let train = limited(VqaArrow::open(&self.paths(&train_stems), answers, options.clone())?, limit);
                let eval = limited(VqaArrow::open(&self.paths(&eval_stems), answers, options.clone())?, limit);
                let t = Vqa { tokenizer, max_len, answers };
                let (model, report) = trainer.fit_task(model, &t, &[train.as_ref()], &[eval.as_ref()])?;
                let test_dev = self.root.join("vqav2_test-dev.arrow");
                if test_dev.exists() {
                    let set = VqaArrow::open(&[&test_dev], answers, options)?;
                    write_vqa_answers(
                        &model.valid(),
                        &t,
                        &set,
                        limit,
                        vqa_vocab.as_deref().unwrap_or(&[]),
                        self.micro,
                        &dir.join("vqa_test-dev.json"),
                    )?;
                }
                (model, last_metrics(&report), t.tokenizer.truncated())
            }
            RealTask::Nlvr2 => {
                let train = limited(Nlvr2Arrow::open(&self.paths(&train_stems), options.clone())?, limit);
                let evals: Vec<_> = eval_stems
                    .iter()
                    .map(|s| Ok(limited(Nlvr2Arrow::open(&self.paths(&[s]), options.clone())?, limit)))
                    .collect::<Result<_>>()?;
                let eval_refs: Vec<&dyn Samples<VlSample>> = evals.iter().map(|e| e.as_ref()).collect();
                let t = VlClassification { tokenizer, max_len };
                let (model, report) = trainer.fit_task(model, &t, &[train.as_ref()], &eval_refs)?;
                (model, last_metrics(&report), t.tokenizer.truncated())
            }
            RealTask::Retrieval => {
                let train_set = F30kArrow::open(&self.paths(&train_stems), options.clone())?;
                let pool = train_set.captions().to_vec();
                let train = limited(train_set, limit);
                let eval = limited(F30kArrow::open(&self.paths(&eval_stems), options)?, limit);
                let t = PairRetrieval { tokenizer, max_len, negatives: 15, pool, seed: self.args.seed };
                let (model, report) = trainer.fit_task(model, &t, &[train.as_ref()], &[eval.as_ref()])?;
                (model, last_metrics(&report), t.tokenizer.truncated())
            }
        };
        // What `predict apt --checkpoint adapter.safetensors --weights <the --checkpoint here>`
        // rebuilds the model from; `answers` names VQA's logits.
        let tokenizer_file = std::fs::canonicalize(&self.tokenizer).unwrap_or_else(|_| self.tokenizer.clone());
        petl_core::checkpoint::save_adapter(
            &dir.join("adapter.safetensors"),
            &crate::apt::adapter_tensors(&model.valid(), variant),
            &serde_json::json!({
                "paper": "apt", "data": "real", "variant": variant, "variants": self.variants,
                "backbone_kind": if meter { "meter" } else { "vilt" }, "backbone": backbone_config,
                "task": task.name(), "head": head, "class_token_id": class_token,
                "tokenizer": { "file": tokenizer_file, "padding_id": pad, "max_len": max_len, "vilt_prefix": !meter },
                "resolution": self.args.resolution.unwrap_or(r.image), "answers": vqa_vocab,
            }),
        )?;
        save_json(&dir.join("result.json"), &serde_json::json!({ "metrics": metrics, "truncated_texts": truncated }))?;
        println!("{label}: {metrics:?}, {truncated} texts truncated to {max_len} tokens");
        Ok(Cell { task, variant, metrics, truncated })
    }
}

fn last_metrics(report: &petl_core::train::TrainReport) -> BTreeMap<String, f64> {
    report.epochs.last().map(|l| l.test_metrics.clone()).unwrap_or_default()
}

/// VQA answers of `model` on `set` as the EvalAI file: `[{"question_id", "answer"}]`.
fn write_vqa_answers<M: VlClassify>(
    model: &M,
    task: &Vqa,
    set: &VqaArrow,
    limit: Option<usize>,
    vocab: &[String],
    batch: usize,
    path: &Path,
) -> Result<()> {
    let n = limit.map_or(set.len(), |l| l.min(set.len()));
    let device = model.devices().first().cloned().context("a model on a device")?;
    let mut answers = vec![];
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let items = (start..end).map(|i| set.get(i, None)).collect::<petl_core::Result<Vec<_>>>()?;
        let (input, _) = <Vqa as Task<M>>::batch(task, items, &device)?;
        let logits = petl_core::weights::HostTensor::from_tensor(&model.vl_logits(input));
        let k = logits.shape[1];
        for (row, i) in logits.data.chunks(k).zip(start..end) {
            let best = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
            let qid = set.question_id(i).context("question id")?;
            answers.push(
                serde_json::json!({ "question_id": qid, "answer": vocab.get(best).cloned().unwrap_or_default() }),
            );
        }
    }
    save_json(path, &serde_json::Value::Array(answers))?;
    println!("wrote {} answers to {} (for the EvalAI test-dev server)", n, path.display());
    Ok(())
}

fn table(cells: &[Cell], variants: &[Variant], real: &Real) -> String {
    use std::fmt::Write;
    let layout = real.found.backbone.layout();
    let get = |task: RealTask, v: Variant, key: &str| {
        cells
            .iter()
            .find(|c| c.task == task && c.variant == v)
            .and_then(|c| c.metrics.iter().find(|(k, _)| k.ends_with(key)).map(|(_, x)| *x))
    };
    let cell = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    let mut md = String::new();
    let _ = writeln!(md, "| Method | Updated Param | VQA (rest_val) | NLVR2 test-P | IR R@1 | TR R@1 | Avg |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for &v in variants {
        let cols = [
            get(RealTask::Vqa, v, "vqa_score"),
            get(RealTask::Nlvr2, v, "test1/accuracy").or_else(|| get(RealTask::Nlvr2, v, "accuracy")),
            get(RealTask::Retrieval, v, "t2i_r@1"),
            get(RealTask::Retrieval, v, "i2t_r@1"),
        ];
        let avg = if cols.iter().all(Option::is_some) { Some(cols.iter().flatten().sum::<f64>() / 4.0) } else { None };
        let params = match v {
            Variant::Classifier => "-".into(),
            Variant::Full => "all".into(),
            _ => real.variants.num_params(v, &layout).to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {params} | {} | {} | {} | {} | {} |",
            v.label(),
            cell(cols[0]),
            cell(cols[1]),
            cell(cols[2]),
            cell(cols[3]),
            cell(avg)
        );
    }
    let truncated: usize = cells.iter().map(|c| c.truncated).sum();
    let _ = writeln!(md, "\nTexts truncated to the text limit (over all cells): {truncated}.");
    md
}
