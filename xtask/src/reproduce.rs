//! `cargo xtask reproduce arc`: the ARC VTAB table, on the embedded shapes world (default) or
//! on the real VTAB-1k / FGVC folders with a pretrained checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Args, ValueEnum};
use petl_core::data::ImageDataset;
use petl_core::data::fgvc::{FgvcDataset, FgvcSplit, FgvcTask};
use petl_core::data::preprocess::Preprocess;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::data::vtab::{VtabDataset, VtabSplit, VtabTask};
use petl_core::model::BackboneConfig;
use petl_core::train::{Classify, TrainConfig, Trainer};
use petl_core::vit::VitConfig;

use crate::methods::{self, MethodSpec};
use crate::table::{self, Cell};
use crate::{load_backbone_weights, save_json};

/// Size of the embedded run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// The README's table: a 4-layer ViT (D 64) on 32 px scenes, 6 tasks (2 per VTAB group),
    /// 6 methods.
    Default,
    /// A minute-long run for tests: 2 layers, 16 px, 3 tasks.
    Smoke,
}

/// Options of `reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The paper to reproduce: `arc` or `apt`.
    pub paper: String,
    /// Embedded run size.
    #[arg(long, value_enum, default_value = "default")]
    pub scale: Scale,
    /// Methods (rows), by name (`cargo xtask methods`). Default: every method (embedded); arc
    /// (VTAB) and arc-att (FGVC) on real data.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Tasks (columns) by name: shapes-world tasks, VTAB folders or FGVC names; default: the
    /// scale's set, or all 19 VTAB / 5 FGVC tasks of the roots given.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Epochs of each downstream run (default: the scale's, or 100 on real data).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Output folder (results.json, table.md, one run folder per task and method); default
    /// `runs/reproduce-<paper>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// VTAB-1k root (`<root>/<task>/{train800val200,test}.txt`): run the paper's protocol.
    #[arg(long)]
    pub vtab_root: Option<PathBuf>,
    /// FGVC root (`<root>/<Name>/{train,val,test}.json`).
    #[arg(long)]
    pub fgvc_root: Option<PathBuf>,
    /// Pretrained backbone: Google `.npz`, timm `.safetensors`/`.pth` (ViT or Swin).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// APT: root of the ViLT-style Arrow files (`vqav2_*.arrow`, `nlvr2_*.arrow`,
    /// `f30k_caption_karpathy_*.arrow`).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// APT: the official pretrained checkpoint (`vilt_200k_mlm_itm.ckpt`, METER's).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Backbone preset for real data (vit-b16, vit-l16, vit-h14, swin-b).
    #[arg(long, default_value = "vit-b16")]
    pub backbone: String,
    /// Real data: skip samples whose image cannot be decoded (at most 1 % of a split, each
    /// listed with its reason in `skipped.json` and results.json) instead of refusing the run.
    #[arg(long)]
    pub skip_bad_samples: bool,
    /// APT real-data run: the tokenizer.json of the checkpoint's text model (bert-base-uncased
    /// for ViLT, roberta-base for METER).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// APT real-data run: attention heads of every tower (default: width / 64, as the official
    /// models).
    #[arg(long)]
    pub heads: Option<usize>,
    /// APT real-data run: the micro-batch (the recipe's batch through gradient accumulation; 32).
    #[arg(long)]
    pub batch: Option<usize>,
    /// APT real-data run: at most this many samples per split (quick checks; the table then is
    /// not the paper's protocol).
    #[arg(long)]
    pub limit: Option<usize>,
    /// APT real-data run: ViLT's shorter side / METER's resolution instead of the recipe's.
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Bottleneck D' of the methods that have one (ARC, the bottleneck adapter); default: each
    /// method's (ARC: 50 on real data, 8 on the embedded ViT). Shorthand for `--set bottleneck=N`.
    #[arg(long)]
    pub bottleneck: Option<usize>,
    /// Settings of the methods' configurations, `KEY=VALUE` (repeatable), applied to every
    /// selected method that has the key.
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Backend: flex (default), ndarray, wgpu, tch, cuda (when compiled in).
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Learning rate of every run (default: the recipe's per method).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

struct Embedded {
    vit: VitConfig,
    pretrain_n: usize,
    pretrain_epochs: usize,
    train_n: usize,
    test_n: usize,
    epochs: usize,
    tasks: Vec<ShapesTask>,
}

impl Embedded {
    fn new(scale: Scale) -> Self {
        use ShapesTask::*;
        match scale {
            Scale::Default => Self {
                vit: VitConfig::new(32, 4, 64, 4, 4, 128),
                pretrain_n: 8_000,
                pretrain_epochs: 5,
                train_n: 600,
                test_n: 400,
                epochs: 8,
                tasks: vec![ScenePair, Object, Texture, Tint, Count, LocationX],
            },
            Scale::Smoke => Self {
                vit: VitConfig::new(16, 4, 32, 2, 2, 64),
                pretrain_n: 1_000,
                pretrain_epochs: 2,
                train_n: 256,
                test_n: 128,
                epochs: 6,
                tasks: vec![Tint, Texture, LocationX],
            },
        }
    }
}

/// The embedded recipe: the official ARC recipe shape (AdamW, warm-up cosine, clipping 1.0) with
/// each method's embedded learning rate (its registry entry: ARC's official VTAB 0.01, untuned
/// choices for the baselines).
fn embedded_recipe(lr: f64, epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(epochs)
        .with_warmup_epochs(1)
        .with_lr(lr)
        .with_weight_decay(1e-4)
        .with_eval_every(2)
        .with_seed(seed)
}

/// `target/petl-cache/`: pretrained embedded backbones, keyed by their settings.
pub(crate) fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/petl-cache")
}

/// Pretrains a ViT of config `v` on the shapes world's `pretrain` task (kind × colour of the
/// largest object, `n` scenes, `epochs` epochs; full training), cached under
/// `target/petl-cache/` keyed by config, data size, epochs and seed: the backbone's tensors.
pub(crate) fn pretrained_vit(
    v: &VitConfig,
    n: usize,
    epochs: usize,
    seed: u64,
    device: &Device,
    quiet: bool,
) -> Result<PathBuf> {
    let backbone = BackboneConfig::Vit(v.clone());
    let name = format!(
        "shapes-vit-s{}-p{}-d{}-l{}-h{}-m{}-n{}-e{}-seed{}.safetensors",
        v.image_size, v.patch_size, v.hidden_size, v.num_layers, v.num_heads, v.mlp_dim, n, epochs, seed
    );
    let path = cache_dir().join(&name);
    if path.exists() {
        println!("pretrained backbone: {} (cached)", path.display());
        return Ok(path);
    }
    println!("pretraining the embedded ViT on the shapes world ({n} scenes, {epochs} epochs) ...");
    let train = ShapesDataset::new(ShapesTask::Pretrain, n, v.image_size, seed.wrapping_add(1000));
    let test = ShapesDataset::new(ShapesTask::Pretrain, 500, v.image_size, seed.wrapping_add(2000));
    let spec = MethodSpec::new("full", &backbone, true)?;
    device.seed(seed);
    let model = spec.build(&backbone, train.num_classes(), &device.clone().autodiff())?;
    let cfg = TrainConfig::new()
        .with_epochs(epochs)
        .with_warmup_epochs(1)
        .with_batch_size(64)
        .with_lr(2e-3)
        .with_weight_decay(0.05)
        .with_label_smoothing(0.1)
        .with_eval_every(epochs)
        .with_seed(seed);
    let mut trainer = Trainer::new(cfg);
    trainer.progress = !quiet;
    trainer.label = "pretrain".into();
    let (model, report) = model.fit(&trainer, &train, &test)?;
    println!("pretrain: test accuracy {:.1}% in {:.0}s", report.final_test, report.wall_secs);
    std::fs::create_dir_all(cache_dir())?;
    petl_core::weights::write_safetensors(&path, &model.backbone_tensors(), None)?;
    Ok(path)
}

/// How a trained model relates to its merged form.
enum Merge {
    /// The method never merges (the bottleneck adapter: non-linear; deep prompts: extra keys).
    Never,
    /// Merged: max |logit difference| against the unmerged model on a few test images.
    Exact(f64),
    /// This configuration of a merging method has no exact merged form; why.
    NotMergeable(String),
}

/// Eval-mode logits of the trained model against its merged form on a few test images.
fn merge_check(
    spec: &MethodSpec,
    model: Box<dyn petl_core::method::AnyModel>,
    test: &dyn ImageDataset,
    device: &Device,
) -> Result<Merge> {
    if !spec.entry.merges() {
        return Ok(Merge::Never);
    }
    let samples: Vec<_> = (0..test.len().min(16)).map(|i| test.get(i, None)).collect::<petl_core::Result<_>>()?;
    let (images, _) = petl_core::data::batch(&samples, test.image_size(), device);
    let before = petl_core::weights::HostTensor::from_tensor(&model.valid().logits(images.clone()));
    let merged = match model.merged() {
        Ok(m) => m,
        Err(why) => return Ok(Merge::NotMergeable(why.0)),
    };
    let after = petl_core::weights::HostTensor::from_tensor(&merged.logits(images));
    Ok(Merge::Exact(crate::max_abs_diff(&before.data, &after.data)))
}

/// One column of the table: a task's data, the methods trained on it with their recipes, and
/// the folder of its runs. Every column of a table is built and checked before anything trains.
struct Column {
    task: String,
    group: String,
    train: Box<dyn ImageDataset>,
    test: Box<dyn ImageDataset>,
    /// The image files behind `train` and `test` (real data) still to be decoded once before
    /// training (none when `--skip-bad-samples` decoded them while opening the splits).
    images: Vec<PathBuf>,
    /// Samples left out by `--skip-bad-samples`: `(file, reason)`.
    skipped: Vec<(String, String)>,
    runs: Vec<(MethodSpec, TrainConfig)>,
    /// Parent of the run folders (one per method).
    dir: PathBuf,
}

/// What every (task, method) run of one table shares.
struct Runner<'a> {
    backbone: &'a BackboneConfig,
    weights: &'a dyn Fn() -> Result<petl_core::weights::TensorMap>,
    /// What the pretrained weights and the data are (file digests, roots): part of every run's
    /// settings, so a run folder is never reused for other inputs.
    inputs: serde_json::Value,
    device: &'a Device,
    quiet: bool,
}

/// SHA-256 and size of a file: what a run's inputs are, whatever their paths.
pub(crate) fn file_identity(path: &Path) -> Result<serde_json::Value> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(serde_json::json!({ "file": path.file_name().map(|n| n.to_string_lossy()), "bytes": bytes, "sha256": digest }))
}

/// Checks that `dir` holds no run of other settings: a run folder is keyed by everything that
/// determines the run (method and its config, backbone, recipe, task, data, weights), and a
/// folder written with other settings is an error, never silently reused or resumed.
pub(crate) fn check_settings(dir: &Path, settings: &serde_json::Value) -> Result<()> {
    let path = dir.join("config.json");
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    let stored: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not valid JSON", path.display()))?;
    let (stored, settings) = (without_nulls(&stored), without_nulls(settings));
    if stored == settings {
        return Ok(());
    }
    let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let mut differ: Vec<String> = keys(&settings).into_iter().filter(|k| stored.get(k) != settings.get(k)).collect();
    differ.extend(keys(&stored).into_iter().filter(|k| settings.get(k).is_none()));
    bail!(
        "{} holds a run with other settings (they differ in: {}); choose another --out or remove that folder",
        dir.display(),
        differ.join(", ")
    )
}

/// `v` without the object entries whose value is `null`: an optional setting added to the code
/// after a run folder was written is `null` when unset, and unset is what that run had.
fn without_nulls(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            Value::Object(o.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), without_nulls(x))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The report of the finished run in `dir` (a complete report of `epochs` epochs and its adapter
/// checkpoint), which is reused as it is.
fn finished(dir: &Path, epochs: usize) -> Option<petl_core::train::TrainReport> {
    std::fs::read(dir.join("report.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<petl_core::train::TrainReport>(&bytes).ok())
        .filter(|r| r.epochs.len() == epochs && dir.join("adapter.safetensors").exists())
}

impl Runner<'_> {
    /// Everything that determines the run of `spec` with `cfg` on `column` (its `config.json`).
    fn settings(&self, spec: &MethodSpec, cfg: &TrainConfig, column: &Column) -> serde_json::Value {
        let (train, test) = (&column.train, &column.test);
        serde_json::json!({
            "method": spec.name(), "method_config": spec.config, "backbone": self.backbone, "train": cfg,
            "task": column.task, "classes": train.num_classes(), "inputs": self.inputs,
            "data": { "train": [train.name(), train.len()], "test": [test.name(), test.len()] },
            "skipped": column.skipped,
        })
    }

    /// Trains every run of every column (resuming, or reusing finished runs), after checking
    /// them all: recipes, the settings of existing run folders, and every image of a column
    /// that still trains. Input that cannot be trained on is refused before anything is
    /// written, not in the middle of the table.
    fn table(&self, columns: &[Column]) -> Result<Vec<Cell>> {
        for column in columns {
            let mut trains = false;
            for (spec, cfg) in &column.runs {
                cfg.check().with_context(|| format!("{}/{}", column.task, spec.name()))?;
                let dir = column.dir.join(spec.name());
                check_settings(&dir, &self.settings(spec, cfg, column))?;
                trains |= finished(&dir, cfg.epochs).is_none();
            }
            if trains {
                petl_core::data::preprocess::check_images(&column.images)?;
            }
        }
        let mut cells = vec![];
        for column in columns {
            if !column.skipped.is_empty() {
                let list: Vec<_> =
                    column.skipped.iter().map(|(f, r)| serde_json::json!({ "file": f, "reason": r })).collect();
                crate::save_json(&column.dir.join("skipped.json"), &serde_json::Value::Array(list))?;
            }
            for (spec, cfg) in &column.runs {
                cells.push(self.run(spec, cfg, column)?);
            }
        }
        Ok(cells)
    }

    /// Runs `spec` on one column inside its run folder (resuming or reusing a finished run).
    fn run(&self, spec: &MethodSpec, cfg: &TrainConfig, column: &Column) -> Result<Cell> {
        let (backbone, device, quiet) = (self.backbone, self.device, self.quiet);
        let (train, test, task, group) = (&*column.train, &*column.test, column.task.as_str(), column.group.as_str());
        let dir = column.dir.join(spec.name());
        let counts = spec.counts(backbone, train.num_classes())?;
        let settings = self.settings(spec, cfg, column);
        check_settings(&dir, &settings)?;
        let report = match finished(&dir, cfg.epochs) {
            Some(report) => report,
            None => {
                device.seed(cfg.seed); // initialisation of the method's parameters
                // Built and loaded before the run folder is written: weights that do not fit
                // the backbone leave no folder behind.
                let model = spec
                    .build(backbone, train.num_classes(), &device.clone().autodiff())?
                    .load_backbone((self.weights)()?)?;
                save_json(&dir.join("config.json"), &settings)?;
                let mut trainer = Trainer::new(cfg.clone());
                trainer.run_dir = Some(dir.clone());
                trainer.progress = !quiet;
                trainer.label = format!("{task:>12} {:>8}", spec.label());
                let (model, report) = model.fit(&trainer, train, test)?;
                petl_core::checkpoint::save_adapter(
                    &dir.join("adapter.safetensors"),
                    &model.adapter_tensors(),
                    &serde_json::to_value(spec.adapter_config(backbone, train.num_classes())).expect("serialises"),
                )?;
                let note = dir.join("not-mergeable.json");
                std::fs::remove_file(&note)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .with_context(|| format!("removing {}", note.display()))?;
                match merge_check(spec, model, test, device)? {
                    Merge::Exact(diff) => {
                        println!(
                            "{task:>12} {:>8}: merged model (0 extra parameters) max |logit diff| {diff:.2e}",
                            spec.label()
                        );
                        if diff > 1e-3 {
                            bail!("{task}/{}: merged logits differ from unmerged by {diff}", spec.label());
                        }
                    }
                    Merge::NotMergeable(why) => {
                        println!("{task:>12} {:>8}: does not merge: {why}", spec.label());
                        save_json(&note, &serde_json::json!({ "reason": why }))?;
                    }
                    Merge::Never => {}
                }
                if report.trainable_params != counts.trainable_params {
                    bail!(
                        "{task}/{}: measured {} trainable parameters, formula says {}",
                        spec.label(),
                        report.trainable_params,
                        counts.trainable_params
                    );
                }
                report
            }
        };
        println!(
            "{task:>12} {:>8}: best {:.1}% final {:.1}%  trainable {}  {:.0} samples/s",
            spec.label(),
            report.best_test,
            report.final_test,
            report.trainable_params,
            report.samples_per_sec
        );
        Ok(Cell {
            task: task.into(),
            group: group.into(),
            method: spec.label().into(),
            best_acc: report.best_test,
            final_acc: report.final_test,
            trainable_params: report.trainable_params,
            adapter_params: counts.adapter_params,
            samples_per_sec: report.samples_per_sec,
            peak_rss_bytes: report.peak_rss_bytes,
            wall_secs: report.wall_secs,
            not_mergeable: std::fs::read(dir.join("not-mergeable.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["reason"].as_str().map(str::to_owned)),
        })
    }
}

/// The most epochs a run may ask for (the papers train 100; more is a typo, not a recipe).
const MAX_EPOCHS: usize = 10_000;

/// Checks the arguments every paper shares, before anything is read or written.
fn check_args(args: &ReproduceArgs, out: &Path) -> Result<()> {
    if let Some(epochs) = args.epochs.filter(|e| !(1..=MAX_EPOCHS).contains(e)) {
        bail!("--epochs {epochs}: epochs must be at least 1 and at most {MAX_EPOCHS}");
    }
    if let Some(lr) = args.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
        bail!("--lr {lr}: the learning rate must be finite and positive");
    }
    if args.batch == Some(0) {
        bail!("--batch 0: the batch must hold at least one sample");
    }
    if out.exists() && !out.is_dir() {
        bail!("--out {}: not a folder", out.display());
    }
    Ok(())
}

/// Entry point of `reproduce`.
pub fn run(args: ReproduceArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/reproduce-{}", args.paper)));
    check_args(&args, &out)?;
    match args.paper.as_str() {
        "arc" => {}
        "apt" => return crate::apt::reproduce(&args, &out),
        other => bail!("unknown paper `{other}`: `arc` and `apt` are implemented so far"),
    }
    if args.data_root.is_some() || args.checkpoint.is_some() {
        bail!(
            "reproduce arc: --data-root and --checkpoint belong to `reproduce apt` (ARC reads --vtab-root, --fgvc-root, --weights)"
        );
    }
    let apt_only = [
        ("--tokenizer", args.tokenizer.is_some()),
        ("--heads", args.heads.is_some()),
        ("--batch", args.batch.is_some()),
        ("--limit", args.limit.is_some()),
        ("--resolution", args.resolution.is_some()),
    ];
    if let Some((flag, _)) = apt_only.iter().find(|(_, given)| *given) {
        bail!("reproduce arc: {flag} is an option of `reproduce apt` (ARC uses the paper's batch and resolution)");
    }
    let real = args.vtab_root.is_some() || args.fgvc_root.is_some();
    if !real && args.skip_bad_samples {
        bail!("reproduce arc: --skip-bad-samples is for real data (give --vtab-root or --fgvc-root)");
    }
    if !real && args.weights.is_some() {
        bail!(
            "reproduce arc: --weights is for real data (give --vtab-root or --fgvc-root); the embedded run pretrains its own backbone"
        );
    }
    let args = ReproduceArgs { out: Some(out), ..args };
    let device = petl_core::device::device_from_name(&args.backend)?;
    let start = std::time::Instant::now();
    let (cells, methods, tasks) = if real { run_real(&args, &device)? } else { run_embedded(&args, &device)? };
    let md = table::markdown(&cells, &methods, &tasks);
    println!("\n{md}");
    println!(
        "wall time {:.0}s, peak RSS {}",
        start.elapsed().as_secs_f64(),
        petl_core::accounting::peak_rss_bytes()
            .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
            .unwrap_or("n/a".into())
    );
    petl_core::io::write_atomic(&out_dir(&args).join("table.md"), md.as_bytes())?;
    save_json(
        &out_dir(&args).join("results.json"),
        &serde_json::json!({
            "cells": cells,
            "summary": table::summarise(&cells, &methods, &tasks),
            "wall_secs": start.elapsed().as_secs_f64(),
        }),
    )?;
    println!("wrote {}/table.md and results.json", out_dir(&args).display());
    Ok(())
}

/// The methods of `--methods` (or `default`) with their configurations on `backbone`, `--set`
/// and `--bottleneck` applied.
fn specs(args: &ReproduceArgs, default: &[&str], backbone: &BackboneConfig, embedded: bool) -> Result<Vec<MethodSpec>> {
    let names: Vec<&str> =
        if args.methods.is_empty() { default.to_vec() } else { args.methods.iter().map(String::as_str).collect() };
    let mut specs = names.iter().map(|n| MethodSpec::new(n, backbone, embedded)).collect::<Result<Vec<_>>>()?;
    let sets = crate::settings(&args.set, &[("bottleneck", args.bottleneck.map(|b| b.to_string()))])?;
    methods::apply_sets(&mut specs, &sets)?;
    Ok(specs)
}

/// The rows (method labels) and columns (task, group) of a table of `columns`.
fn layout(columns: &[Column]) -> (Vec<String>, Vec<(String, String)>) {
    let mut rows: Vec<String> = vec![];
    for (spec, _) in columns.iter().flat_map(|c| &c.runs) {
        if !rows.iter().any(|r| r == spec.label()) {
            rows.push(spec.label().to_string());
        }
    }
    (rows, columns.iter().map(|c| (c.task.clone(), c.group.clone())).collect())
}

fn run_embedded(args: &ReproduceArgs, device: &Device) -> Result<(Vec<Cell>, Vec<String>, Vec<(String, String)>)> {
    let e = Embedded::new(args.scale);
    let tasks: Vec<ShapesTask> = if args.tasks.is_empty() {
        e.tasks.clone()
    } else {
        args.tasks.iter().map(|t| t.parse::<ShapesTask>().map_err(anyhow::Error::from)).collect::<Result<_>>()?
    };
    let backbone = BackboneConfig::Vit(e.vit.clone());
    let specs = specs(args, &methods::names(), &backbone, true)?;
    let epochs = args.epochs.unwrap_or(e.epochs);
    let recipe = |m: &MethodSpec| {
        let cfg = embedded_recipe(m.entry.embedded_lr(), epochs, args.seed);
        match args.lr {
            Some(lr) => cfg.with_lr(lr),
            None => cfg,
        }
    };
    let columns: Vec<Column> = tasks
        .iter()
        .map(|task| Column {
            task: task.name().to_string(),
            group: task.group().map(|g| format!("{g:?}")).unwrap_or_else(|| "Other".into()),
            train: Box::new(ShapesDataset::new(*task, e.train_n, e.vit.image_size, args.seed.wrapping_add(1))),
            test: Box::new(ShapesDataset::new(*task, e.test_n, e.vit.image_size, args.seed.wrapping_add(2))),
            images: vec![],
            skipped: vec![],
            runs: specs.iter().map(|m| (m.clone(), recipe(m))).collect(),
            dir: out_dir(args).join(task.name()),
        })
        .collect();
    let weights_path = pretrained_vit(&e.vit, e.pretrain_n, e.pretrain_epochs, args.seed, device, args.quiet)?;
    let weights = || Ok(petl_core::weights::read_safetensors(&weights_path)?);
    let inputs = serde_json::json!({ "weights": file_identity(&weights_path)?, "data": "shapes world" });
    let runner = Runner { backbone: &backbone, weights: &weights, inputs, device, quiet: args.quiet };
    let cells = runner.table(&columns)?;
    let (rows, columns) = layout(&columns);
    Ok((cells, rows, columns))
}

/// The tasks of one benchmark named in `--tasks` (all of them when `--tasks` is empty).
fn selected<T: Copy + std::str::FromStr + PartialEq>(names: &[String], all: &[T]) -> Vec<T> {
    if names.is_empty() {
        return all.to_vec();
    }
    names.iter().filter_map(|n| n.parse::<T>().ok()).collect()
}

/// The columns of the real-data table: every selected task of the roots given, its data
/// opened and checked (list files, split files, labels, image files present).
fn real_columns(args: &ReproduceArgs, backbone: &BackboneConfig) -> Result<Vec<Column>> {
    let unknown: Vec<&String> =
        args.tasks.iter().filter(|t| t.parse::<VtabTask>().is_err() && t.parse::<FgvcTask>().is_err()).collect();
    if !unknown.is_empty() {
        bail!("unknown task(s) {unknown:?}: VTAB folders (e.g. cifar, kitti) or FGVC names (e.g. CUB_200_2011)");
    }
    let size = backbone.image_size() as u32;
    let epochs = args.epochs.unwrap_or(100);
    let official = |lr: f64, wd: f64| arc::recipe::official(args.lr.unwrap_or(lr), wd, epochs, args.seed);
    let mut columns = vec![];
    if let Some(root) = &args.vtab_root {
        let methods = specs(args, &["arc"], backbone, false)?;
        for task in selected(&args.tasks, &VtabTask::ALL) {
            let train = VtabDataset::open(root, task, VtabSplit::Train800Val200, Preprocess::vtab(size))?;
            let test = VtabDataset::open(root, task, VtabSplit::Test, Preprocess::vtab(size))?;
            let (train, test, skipped) = skip_bad(args, train, test)?;
            let (lr, wd) = if matches!(backbone, BackboneConfig::Swin(_)) {
                arc::recipe::swin_vtab(task)
            } else {
                arc::recipe::VIT_VTAB
            };
            columns.push(Column {
                task: task.folder().to_string(),
                group: format!("{:?}", task.group()),
                images: unchecked_images(args, &train, &test),
                skipped,
                train: Box::new(train),
                test: Box::new(test),
                runs: methods.iter().map(|m| (m.clone(), official(lr, wd))).collect(),
                dir: out_dir(args).join("vtab").join(task.folder()),
            });
        }
    }
    if let Some(root) = &args.fgvc_root {
        let methods = specs(args, &["arc-att"], backbone, false)?;
        for task in selected(&args.tasks, &FgvcTask::ALL) {
            let train = FgvcDataset::open(root, task, FgvcSplit::Train, Preprocess::fgvc_train(size))?;
            let test = FgvcDataset::open(root, task, FgvcSplit::Test, Preprocess::fgvc_eval(size))?;
            let (train, test, skipped) = skip_bad(args, train, test)?;
            columns.push(Column {
                task: task.folder().to_string(),
                group: "FGVC".to_string(),
                images: unchecked_images(args, &train, &test),
                skipped,
                train: Box::new(train),
                test: Box::new(test),
                runs: methods.iter().map(|m| (m.clone(), official(arc::recipe::FGVC.0, arc::recipe::FGVC.1))).collect(),
                dir: out_dir(args).join("fgvc").join(task.folder()),
            });
        }
    }
    if columns.is_empty() {
        bail!(
            "--tasks {}: no task of the roots given (VTAB tasks need --vtab-root, FGVC tasks --fgvc-root)",
            args.tasks.join(",")
        );
    }
    Ok(columns)
}

/// `--skip-bad-samples`: both splits without their unreadable images (at most 1 % each), the
/// skipped files listed; without the flag, the splits as they are.
fn skip_bad<T: petl_core::data::FileTask>(
    args: &ReproduceArgs,
    train: petl_core::data::FileDataset<T>,
    test: petl_core::data::FileDataset<T>,
) -> Result<(petl_core::data::FileDataset<T>, petl_core::data::FileDataset<T>, Vec<(String, String)>)> {
    if !args.skip_bad_samples {
        return Ok((train, test, vec![]));
    }
    let (train, mut skipped) = train.skip_unreadable(0.01)?;
    let (test, more) = test.skip_unreadable(0.01)?;
    skipped.extend(more);
    for (file, reason) in &skipped {
        println!("skipped {}: {reason}", file.display());
    }
    Ok((train, test, skipped.into_iter().map(|(f, r)| (f.display().to_string(), r)).collect()))
}

/// The image files the run still has to decode before training: all of both splits, or none
/// when `--skip-bad-samples` has decoded every one already.
fn unchecked_images<T: petl_core::data::FileTask>(
    args: &ReproduceArgs,
    train: &petl_core::data::FileDataset<T>,
    test: &petl_core::data::FileDataset<T>,
) -> Vec<PathBuf> {
    if args.skip_bad_samples { vec![] } else { [image_paths(train), image_paths(test)].concat() }
}

/// The image files of a file dataset, in sample order.
fn image_paths<T: petl_core::data::FileTask>(data: &petl_core::data::FileDataset<T>) -> Vec<PathBuf> {
    data.samples().iter().map(|(path, _)| path.clone()).collect()
}

fn run_real(args: &ReproduceArgs, device: &Device) -> Result<(Vec<Cell>, Vec<String>, Vec<(String, String)>)> {
    let backbone = BackboneConfig::preset(&args.backbone)?;
    let Some(weights_path) = args.weights.clone() else {
        bail!("real-data runs need --weights (e.g. ViT-B_16.npz): petl never trains from random weights silently");
    };
    let weights = || load_backbone_weights(&weights_path, &backbone);
    weights()?;
    let columns = real_columns(args, &backbone)?;
    let root = |r: &Option<PathBuf>| r.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let inputs = serde_json::json!({
        "weights": file_identity(&weights_path)?, "vtab_root": root(&args.vtab_root), "fgvc_root": root(&args.fgvc_root),
    });
    let runner = Runner { backbone: &backbone, weights: &weights, inputs, device, quiet: args.quiet };
    let cells = runner.table(&columns)?;
    let (rows, columns) = layout(&columns);
    Ok((cells, rows, columns))
}

/// The output folder (`--out`, set by [`run`] to the paper's default when absent).
fn out_dir(args: &ReproduceArgs) -> &Path {
    args.out.as_deref().unwrap_or(Path::new("runs/reproduce-arc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_added_later_and_unset_matches_a_folder_written_before_it() {
        let dir = std::env::temp_dir().join(format!("petl-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = serde_json::json!({ "train": { "lr": 0.1, "grad_clip_norm": null }, "task": "vqa" });
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let added = serde_json::json!({ "train": { "lr": 0.1, "grad_clip_norm": null, "warmup_fraction": null },
                                        "task": "vqa" });
        check_settings(&dir, &added).unwrap();
        let set = serde_json::json!({ "train": { "lr": 0.1, "grad_clip_norm": null, "warmup_fraction": 0.1 },
                                      "task": "vqa" });
        let err = check_settings(&dir, &set).unwrap_err().to_string();
        assert!(err.contains("differ in: train"), "{err}");
        let clipped = serde_json::json!({ "train": { "lr": 0.1, "grad_clip_norm": 1.0 }, "task": "vqa" });
        assert!(check_settings(&dir, &clipped).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
