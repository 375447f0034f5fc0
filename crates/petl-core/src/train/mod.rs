//! The one training loop every method and task uses: a [`Task`] (batches, loss, metrics) over
//! one or several training datasets ([`sampler`]), AdamW with parameter groups on a warm-up
//! cosine schedule, global-norm gradient clipping, gradient accumulation ([`optim`]),
//! per-epoch evaluation (best and final of the task's metric), atomic epoch checkpoints with
//! exact resume, a progress bar, and a JSON report.
//!
//! Methods supply a model whose trainable set is already chosen (frozen parameters have
//! `require_grad` off); the loop measures that set, and the optimizer only ever sees
//! gradients of trainable parameters, so frozen weights get no optimizer state.

mod clip;
pub mod generate;
pub mod objectives;
pub mod optim;
pub mod sampler;
pub mod schedule;
pub mod task;
pub mod vl;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{ImageDataset, ImageSample, Samples};
use crate::io::write_atomic;
use crate::model::Classifier;
use crate::model::Tuner;
use crate::weights::{apply_with_ids, collect_with_ids, read_safetensors, safetensors_bytes};
use crate::{Error, Result, accounting};
pub use clip::clip_global_norm;
pub use optim::{Optimization, ParamGroupConfig};
pub use sampler::{PlannedBatch, Sampling, epoch_plan};
pub use schedule::WarmupCosine;
pub use task::{Classification, Classify, Evaluation, Task, TaskOutput};

/// Optimisation recipe. The defaults are the usual VTAB-1k transfer settings (100 epochs, 10
/// warm-up, batch 32, global-norm clipping 1.0, as in VPT and the papers built on it); each
/// method crate keeps its paper's exact recipes (e.g. `arc::recipe`).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs.
    #[config(default = 100)]
    pub epochs: usize,
    /// Linear warm-up epochs.
    #[config(default = 10)]
    pub warmup_epochs: usize,
    /// Linear warm-up over `⌊fraction · T⌋` updates (`T` the run's updates) instead of
    /// [`TrainConfig::warmup_epochs`] whole epochs: ViLT's and METER's `warmup_steps = 0.1`
    /// (`get_linear_schedule_with_warmup` with `int(0.1 · max_steps)`).
    #[config(default = "None")]
    pub warmup_fraction: Option<f64>,
    /// Training batch size (last partial batch kept).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Evaluation batch size.
    #[config(default = 256)]
    pub eval_batch_size: usize,
    /// Base learning rate.
    #[config(default = 0.01)]
    pub lr: f64,
    /// Decoupled weight decay on every trainable tensor.
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Global L2 norm the gradients are clipped to (none: no clipping).
    #[config(default = "Some(1.0)")]
    pub grad_clip_norm: Option<f64>,
    /// Label smoothing of the cross-entropy (0: none).
    #[config(default = 0.0)]
    pub label_smoothing: f64,
    /// Seed of shuffling and augmentation.
    #[config(default = 42)]
    pub seed: u64,
    /// Evaluate every this many epochs (and after the last).
    #[config(default = 1)]
    pub eval_every: usize,
    /// Skip the very last optimizer update (T−1 updates in all): some official training loops
    /// step the optimizer before the scheduler and stop one update short; set this to match
    /// them exactly.
    #[config(default = false)]
    pub skip_last_update: bool,
    /// Batches whose gradients are summed into one update (1: none). Each micro-batch's loss
    /// is weighted by its share of the update's samples, so `k` batches of `b` give the same
    /// update as one batch of `k·b`; the schedule counts updates.
    #[config(default = 1)]
    pub grad_accumulation: usize,
    /// Parameter groups with their own learning-rate scale and weight decay.
    #[config(default = "Vec::new()")]
    pub param_groups: Vec<ParamGroupConfig>,
    /// How the batches of several training datasets are interleaved (multi-task training).
    #[config(default = "Sampling::Proportional")]
    pub sampling: Sampling,
    /// After the warm-up, decay linearly to 0 (ViLT, METER) instead of the cosine.
    #[config(default = false)]
    pub linear_decay: bool,
    /// AdamW's `β₂` (0.999; ViLT and METER fine-tune with 0.98).
    #[config(default = 0.999)]
    pub adam_beta2: f64,
    /// Epoch checkpoints kept in the run folder: the newest `k`, plus the one of the best test
    /// metric so far (an older one is removed only after a newer one is complete on disk).
    #[config(default = 1)]
    pub keep_checkpoints: usize,
}

impl<T: Tuner, E: crate::model::EncoderModule + crate::encoder::Encoder<Input = Tensor<4>>> Classify
    for Classifier<T, E>
{
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl TrainConfig {
    /// Checks the recipe before anything trains: counts at least 1, a finite positive learning
    /// rate, finite non-negative weight decay, a positive clipping norm, label smoothing in
    /// `[0, 1)` (a warm-up longer than a short run is allowed: the run stays in warm-up).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and its value.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: &dyn std::fmt::Display| Err(Error::Config(format!("training recipe: {what} {v}")));
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("grad_accumulation", self.grad_accumulation),
            ("keep_checkpoints", self.keep_checkpoints),
        ] {
            if v == 0 {
                return bad(&format!("{name} must be at least 1, got"), &v);
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr must be finite and positive, got", &self.lr);
        }
        if !(self.adam_beta2 > 0.0 && self.adam_beta2 < 1.0) {
            return bad("adam_beta2 must be in (0, 1), got", &self.adam_beta2);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay must be finite and non-negative, got", &self.weight_decay);
        }
        if let Some(n) = self.grad_clip_norm.filter(|n| !(n.is_finite() && *n > 0.0)) {
            return bad("grad_clip_norm must be finite and positive, got", &n);
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1), got", &self.label_smoothing);
        }
        if let Some(f) = self.warmup_fraction.filter(|f| !(0.0..=1.0).contains(f)) {
            return bad("warmup_fraction must be in [0, 1], got", &f);
        }
        for g in &self.param_groups {
            if !(g.lr_scale.is_finite() && g.lr_scale >= 0.0)
                || g.weight_decay.is_some_and(|w| !(w.is_finite() && w >= 0.0))
            {
                return bad(
                    &format!("parameter group `{}` needs a finite lr_scale ≥ 0 and weight decay ≥ 0, got", g.name),
                    &format!("{} / {:?}", g.lr_scale, g.weight_decay),
                );
            }
        }
        Ok(())
    }

    /// Updates of the linear warm-up for a run of `steps_per_epoch` updates per epoch:
    /// `⌊warmup_fraction · T⌋` with `T = epochs · steps_per_epoch`, else `warmup_epochs` epochs.
    pub fn warmup_updates(&self, steps_per_epoch: usize) -> usize {
        match self.warmup_fraction {
            Some(f) => (f * (self.epochs * steps_per_epoch) as f64).floor() as usize,
            None => self.warmup_epochs * steps_per_epoch,
        }
    }
}

/// One epoch's log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Updates done so far.
    pub step: usize,
    /// Learning rate of the last update.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean training score of the task (%): accuracy for classification; NaN when the task
    /// has none.
    #[serde(alias = "train_acc")]
    pub train_metric: f64,
    /// The task's metric on the evaluation data (%) when evaluated (the mean over evaluation
    /// datasets when there are several).
    #[serde(alias = "test_acc")]
    pub test_metric: Option<f64>,
    /// Every metric of that evaluation (`<dataset>/<metric>` with several datasets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub test_metrics: BTreeMap<String, f64>,
    /// Training throughput.
    pub samples_per_sec: f64,
}

/// What a run did: per-epoch logs, accuracies, accounting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Per-epoch logs.
    pub epochs: Vec<EpochLog>,
    /// What [`TrainReport::best_test`] and [`TrainReport::final_test`] measure.
    #[serde(default = "top1_name")]
    pub metric: String,
    /// Best evaluation metric over evaluations (%) — the papers' protocol.
    #[serde(alias = "best_test_acc")]
    pub best_test: f64,
    /// Evaluation metric after the last epoch (%).
    #[serde(alias = "final_test_acc")]
    pub final_test: f64,
    /// Parameters that received gradients.
    pub trainable_params: usize,
    /// Parameters that did not.
    pub frozen_params: usize,
    /// Optimizer state tensors at the end (AdamW: two moments per trainable tensor; frozen
    /// tensors have none).
    pub optimizer_state_tensors: usize,
    /// Mean training samples per second.
    pub samples_per_sec: f64,
    /// Peak resident memory of the process (bytes), where known.
    pub peak_rss_bytes: Option<u64>,
    /// Wall-clock seconds of this invocation.
    pub wall_secs: f64,
    /// Epoch the run resumed after (0 if it started fresh).
    pub resumed_from_epoch: usize,
}

fn top1_name() -> String {
    "top-1 accuracy (%)".into()
}

#[derive(Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: usize,
    history: Vec<EpochLog>,
    param_ids: BTreeMap<String, u64>,
    tensors: String,
    optimizer: String,
    /// SHA-256 of each member file (`tensors`, `optimizer`), written with the manifest, which
    /// is written last: a checkpoint is complete iff its manifest exists and the hashes match.
    #[serde(default)]
    sha256: BTreeMap<String, String>,
}

/// The training loop.
pub struct Trainer {
    /// Recipe.
    pub config: TrainConfig,
    /// Folder for checkpoints and `report.json`; `None` keeps the run in memory.
    pub run_dir: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Name shown in the progress bar.
    pub label: String,
    /// Stop after this many epochs of this invocation, leaving a checkpoint the next call of
    /// [`Trainer::fit`] resumes from (time-sliced or preemptible jobs). `None`: run to the end.
    pub stop_after: Option<usize>,
}

/// Ids of the parameters that require a gradient (the trainable set).
pub fn trainable_ids<M: Module>(module: &M) -> HashSet<ParamId> {
    struct Ids(HashSet<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.0.insert(param.id);
            }
        }
    }
    let mut ids = Ids(HashSet::new());
    module.visit(&mut ids);
    ids.0
}

/// Top-1 accuracy (%) of `model` on `data`, in evaluation mode (no autodiff, no dropout).
///
/// # Errors
/// A sample that cannot be read.
pub fn evaluate<M: Classify>(model: &M, data: &dyn ImageDataset, batch_size: usize) -> Result<f64> {
    Ok(Classification::default().evaluate(&model.valid(), data, batch_size)?.primary)
}

/// Forward and backward of one (micro-)batch: the gradients of `weight · loss`, the loss and
/// the batch's summed training score.
pub fn backward<M: Module, T: Task<M>>(
    task: &T,
    model: &M,
    batch: T::Batch,
    weight: Option<f64>,
) -> (GradientsParams, Tensor<1>, Option<Tensor<1>>) {
    let TaskOutput { loss, score_sum } = task.forward(model, batch);
    let scaled = match weight {
        Some(w) => loss.clone().mul_scalar(w),
        None => loss.clone(),
    };
    (GradientsParams::from_grads(scaled.backward(), model), loss, score_sum)
}

impl Trainer {
    /// A trainer with `config`, no run folder, progress bar on.
    pub fn new(config: TrainConfig) -> Self {
        Self { config, run_dir: None, progress: true, label: String::from("train"), stop_after: None }
    }

    fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("checkpoint"))
    }

    /// The epoch of the newest complete checkpoint in the run folder (what a new start resumes
    /// from), every member's SHA-256 checked; `None` without one.
    ///
    /// # Errors
    /// A checkpoint that is corrupt or incomplete with no older complete one kept (named).
    pub fn latest_checkpoint(&self) -> Result<Option<usize>> {
        Ok(self.read_progress()?.map(|p| p.epoch))
    }

    /// Trains an image classifier (on an autodiff device, trainable set chosen) on `train`,
    /// evaluating top-1 accuracy on `test`; resumes from the run folder's last epoch checkpoint
    /// when there is one.
    ///
    /// # Errors
    /// Empty or mismatched datasets, unreadable samples, checkpoint I/O.
    pub fn fit<M: Classify>(
        &self,
        model: M,
        train: &dyn ImageDataset,
        test: &dyn ImageDataset,
    ) -> Result<(M, TrainReport)> {
        if train.num_classes() != test.num_classes() {
            return Err(Error::Config(format!(
                "train `{}` has {} classes but test `{}` has {}",
                train.name(),
                train.num_classes(),
                test.name(),
                test.num_classes()
            )));
        }
        let task = Classification { label_smoothing: self.config.label_smoothing };
        self.fit_task(model, &task, &[train as &dyn Samples<ImageSample>], &[test as &dyn Samples<ImageSample>])
    }

    /// Trains `model` on `task` over the training datasets `train` (several: multi-task, batches
    /// interleaved per [`TrainConfig::sampling`]), evaluating on every dataset of `eval`;
    /// resumes from the run folder's last epoch checkpoint when there is one.
    ///
    /// # Errors
    /// Empty datasets, [`Task::check`] failures, unreadable samples, checkpoint I/O.
    pub fn fit_task<M: Module, T: Task<M>>(
        &self,
        model: M,
        task: &T,
        train: &[&dyn Samples<T::Item>],
        eval: &[&dyn Samples<T::Item>],
    ) -> Result<(M, TrainReport)> {
        let cfg = &self.config;
        if train.is_empty() || eval.is_empty() {
            return Err(Error::Config("training needs at least one training and one evaluation dataset".into()));
        }
        if let Some(empty) = train.iter().find(|d| d.is_empty()) {
            return Err(Error::Config(format!("training set `{}` is empty", empty.name())));
        }
        if let Some(empty) = eval.iter().find(|d| d.is_empty()) {
            return Err(Error::Config(format!("evaluation set `{}` is empty", empty.name())));
        }
        cfg.check()?;
        for t in train {
            for e in eval {
                task.check(*t, *e)?;
            }
        }
        let start = Instant::now();
        let device = model.devices().first().cloned().unwrap_or_default();
        let (trainable, frozen) = accounting::measure_trainable(&model);
        let sizes: Vec<usize> = train.iter().map(|d| d.len()).collect();
        let batches_per_epoch: usize = sizes.iter().map(|n| n.div_ceil(cfg.batch_size)).sum();
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.grad_accumulation);
        let total = cfg.epochs * steps_per_epoch;
        let last_update = if cfg.skip_last_update { total.saturating_sub(1) } else { total };
        let warmup = cfg.warmup_updates(steps_per_epoch);
        let schedule =
            if cfg.linear_decay { WarmupCosine::linear(warmup, total) } else { WarmupCosine::new(warmup, total) };

        // Path-derived parameter ids: optimizer states and checkpoints of identical runs are
        // byte-identical.
        let mut model = crate::weights::stable_param_ids(model);
        let mut history = vec![];
        let mut step = 0;
        let mut first_epoch = 0;
        let progress = self.read_progress()?;
        if let Some(progress) = &progress {
            let dir = self.checkpoint_dir().expect("progress implies a run folder");
            let tensors = read_safetensors(&dir.join(&progress.tensors))?;
            let (m, report) = apply_with_ids(model, tensors, progress.param_ids.clone());
            report
                .check(&dir.join(&progress.tensors).display().to_string(), |p| !progress.param_ids.contains_key(p))?;
            model = m;
            first_epoch = progress.epoch;
            step = progress.step;
            history = progress.history.clone();
        }
        let mut opt = Optimization::new(cfg, &model, schedule, step);
        if let Some(progress) = &progress {
            let dir = self.checkpoint_dir().expect("progress implies a run folder");
            let bytes = std::fs::read(dir.join(&progress.optimizer))
                .map_err(|e| Error::io(dir.join(&progress.optimizer), e))?;
            opt.optimizer = opt
                .optimizer
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| Error::format(dir.join(&progress.optimizer), format!("{e:?}")))?;
        }

        let bar =
            if self.progress { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(self.label.clone());
        bar.set_position(step as u64);

        for epoch in first_epoch..cfg.epochs {
            // The device RNG (dropout, drop path) is seeded at every epoch start from the seed
            // and the epoch (epoch 0: the seed itself, set just before training as the official
            // loop does): Burn cannot save the RNG's state, and this way a run resumed from an
            // epoch checkpoint draws the same masks as an uninterrupted one.
            device.seed(sampler::epoch_rng_seed(cfg.seed, epoch));
            let epoch_start = Instant::now();
            let plan = epoch_plan(&sizes, cfg.batch_size, cfg.seed, epoch, cfg.sampling);
            let (mut loss_sum, mut score_sum, mut scored, mut seen, mut lr) = (0.0, 0.0, 0usize, 0usize, 0.0);
            for update in plan.chunks(cfg.grad_accumulation) {
                if step >= last_update {
                    break;
                }
                let samples_in_update: usize = update.iter().map(|b| b.indices.len()).sum();
                let mut accumulator = GradientsAccumulator::<M>::new();
                let mut single = None;
                for planned in update {
                    let data = train[planned.source];
                    let seeds: Vec<u64> = planned
                        .indices
                        .iter()
                        .map(|&i| sampler::sample_seed(cfg.seed, epoch, planned.source, i))
                        .collect();
                    let items = task::load(data, &planned.indices, Some(&seeds))?;
                    let n = items.len();
                    let batch = task.batch(items, &device)?;
                    let weight = (update.len() > 1).then(|| n as f64 / samples_in_update as f64);
                    let (grads, loss, score) = backward(task, &model, batch, weight);
                    if let Some(score) = score {
                        score_sum += score.into_scalar::<f32>() as f64;
                        scored += n;
                    }
                    loss_sum += loss.into_scalar::<f32>() as f64 * n as f64;
                    seen += n;
                    if update.len() == 1 {
                        single = Some(grads);
                    } else {
                        accumulator.accumulate(&model, grads);
                    }
                }
                let grads = single.unwrap_or_else(|| accumulator.grads());
                let (m, used) = opt.update(model, grads);
                model = m;
                lr = used;
                step += 1;
                bar.inc(1);
                bar.set_message(format!(
                    "epoch {} loss {:.3}{} {:.0} samples/s",
                    epoch + 1,
                    loss_sum / seen as f64,
                    if scored > 0 {
                        format!(" train {:.1}%", 100.0 * score_sum / scored as f64)
                    } else {
                        String::new()
                    },
                    seen as f64 / epoch_start.elapsed().as_secs_f64()
                ));
            }
            let samples_per_sec = seen as f64 / epoch_start.elapsed().as_secs_f64();
            let is_last = epoch + 1 == cfg.epochs;
            let evaluation = if is_last || (epoch + 1) % cfg.eval_every.max(1) == 0 {
                Some(self.evaluate_all(&model, task, eval)?)
            } else {
                None
            };
            let log = EpochLog {
                epoch: epoch + 1,
                step,
                lr,
                train_loss: loss_sum / seen.max(1) as f64,
                train_metric: if scored > 0 { 100.0 * score_sum / scored as f64 } else { f64::NAN },
                test_metric: evaluation.as_ref().map(|e| e.primary),
                test_metrics: evaluation.map(|e| e.metrics).unwrap_or_default(),
                samples_per_sec,
            };
            if self.progress && bar.is_hidden() {
                // No terminal (CI, a log file): one line per epoch instead of a bar.
                eprintln!(
                    "{} epoch {}/{}: loss {:.3} train {:.1}% test {} lr {:.2e} {:.0} samples/s",
                    self.label,
                    log.epoch,
                    cfg.epochs,
                    log.train_loss,
                    log.train_metric,
                    log.test_metric.map(|a| format!("{a:.1}%")).unwrap_or_else(|| "-".into()),
                    log.lr,
                    log.samples_per_sec
                );
            }
            history.push(log);
            self.write_checkpoint(&model, &opt.optimizer, epoch + 1, step, &history, opt.trainable())?;
            if self.stop_after.is_some_and(|n| epoch + 1 - first_epoch >= n) {
                break;
            }
        }
        bar.finish_and_clear();

        let accs: Vec<f64> = history.iter().filter_map(|e| e.test_metric).collect();
        let report = TrainReport {
            metric: task.metric_name(),
            best_test: accs.iter().cloned().fold(f64::NAN, f64::max),
            final_test: accs.last().cloned().unwrap_or(f64::NAN),
            samples_per_sec: history.iter().map(|e| e.samples_per_sec).sum::<f64>() / history.len().max(1) as f64,
            epochs: history,
            trainable_params: trainable,
            frozen_params: frozen,
            optimizer_state_tensors: opt.optimizer.to_record().len(),
            peak_rss_bytes: accounting::peak_rss_bytes(),
            wall_secs: start.elapsed().as_secs_f64(),
            resumed_from_epoch: first_epoch,
        };
        if let Some(dir) = &self.run_dir {
            let json = serde_json::to_vec_pretty(&report).expect("report serialises");
            write_atomic(&dir.join("report.json"), &json)?;
        }
        Ok((model, report))
    }

    /// Evaluates an evaluation snapshot of `model` on every dataset of `eval`: one dataset gives
    /// its metrics as they are; several give `<name>/<metric>` and the mean primary metric.
    fn evaluate_all<M: Module, T: Task<M>>(
        &self,
        model: &M,
        task: &T,
        eval: &[&dyn Samples<T::Item>],
    ) -> Result<Evaluation> {
        let snapshot = model.valid();
        if let [one] = eval {
            return task.evaluate(&snapshot, *one, self.config.eval_batch_size);
        }
        let mut out = Evaluation::default();
        for data in eval {
            let e = task.evaluate(&snapshot, *data, self.config.eval_batch_size)?;
            out.primary += e.primary / eval.len() as f64;
            out.metrics.extend(e.metrics.into_iter().map(|(k, v)| (format!("{}/{k}", data.name()), v)));
        }
        Ok(out)
    }

    /// The newest complete checkpoint of the run folder: its manifest (`progress-EPOCH.json`,
    /// mirrored as `progress.json`) read and every member's SHA-256 checked. Temporaries a crash
    /// left are removed first. A manifest whose members are missing or corrupt is an error naming
    /// the file — unless an older complete checkpoint is kept (`keep_checkpoints` > 1), which is
    /// then used.
    fn read_progress(&self) -> Result<Option<Progress>> {
        let Some(dir) = self.checkpoint_dir() else { return Ok(None) };
        if !dir.exists() {
            return Ok(None);
        }
        let mut manifests = vec![];
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::io::is_atomic_temporary(&name) {
                let _ = std::fs::remove_file(e.path());
            } else if name.starts_with("progress-") && name.ends_with(".json") {
                manifests.push(name);
            }
        }
        manifests.sort();
        if manifests.is_empty() && dir.join("progress.json").exists() {
            // A run folder of an earlier petl: one manifest, no hashes.
            manifests.push("progress.json".into());
        }
        let mut first_error = None;
        for name in manifests.iter().rev() {
            match read_manifest(&dir, name) {
                Ok(p) => return Ok(Some(p)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Writes the epoch's checkpoint: the trainable tensors and the optimizer state, then the
    /// manifest with their SHA-256 (the commit point), then removes checkpoints beyond the newest
    /// `keep_checkpoints` and stray files.
    fn write_checkpoint<M: Module>(
        &self,
        model: &M,
        optim: &burn::optim::ModuleOptimizer,
        epoch: usize,
        step: usize,
        history: &[EpochLog],
        trainable: &HashSet<ParamId>,
    ) -> Result<()> {
        let Some(dir) = self.checkpoint_dir() else { return Ok(()) };
        let tensors_name = format!("trainable-{epoch:04}.safetensors");
        let optim_name = format!("optimizer-{epoch:04}.bpk");
        let (tensors, param_ids) = collect_with_ids(model, |_, id| trainable.contains(&id));
        let tensor_bytes = safetensors_bytes(&tensors, None).map_err(|e| Error::format(dir.join(&tensors_name), e))?;
        write_atomic(&dir.join(&tensors_name), &tensor_bytes)?;
        let bytes = optim.into_bytes().map_err(|e| Error::format(dir.join(&optim_name), format!("{e:?}")))?;
        let bytes = canonical_burnpack(bytes).map_err(|e| Error::format(dir.join(&optim_name), e))?;
        write_atomic(&dir.join(&optim_name), &bytes)?;
        let sha256 = BTreeMap::from([
            (tensors_name.clone(), crate::io::sha256_hex(&tensor_bytes)),
            (optim_name.clone(), crate::io::sha256_hex(&bytes)),
        ]);
        let progress = Progress {
            epoch,
            step,
            history: history.to_vec(),
            param_ids,
            tensors: tensors_name.clone(),
            optimizer: optim_name.clone(),
            sha256,
        };
        let manifest = serde_json::to_vec_pretty(&progress).expect("serialises");
        let manifest_name = format!("progress-{epoch:04}.json");
        // The manifest's own hash beside it, then the manifest: the commit point.
        write_atomic(&dir.join(format!("progress-{epoch:04}.sha256")), crate::io::sha256_hex(&manifest).as_bytes())?;
        write_atomic(&dir.join(&manifest_name), &manifest)?;
        write_atomic(&dir.join("progress.json"), &manifest)?;
        // Older checkpoints go only now that the new one is complete and durable; the newest `k`
        // stay, and the best so far (highest test metric, the earliest on ties).
        let mut kept: Vec<String> = vec!["progress.json".into()];
        let best = history
            .iter()
            .filter_map(|e| e.test_metric.map(|m| (e.epoch, m)))
            .fold(None, |acc: Option<(usize, f64)>, (e, m)| match acc {
                Some((_, b)) if b >= m => acc,
                _ => Some((e, m)),
            })
            .map(|(e, _)| e);
        for e in (0..=epoch).rev().take(self.config.keep_checkpoints).chain(best) {
            kept.extend([
                format!("progress-{e:04}.json"),
                format!("progress-{e:04}.sha256"),
                format!("trainable-{e:04}.safetensors"),
                format!("optimizer-{e:04}.bpk"),
            ]);
        }
        let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
        remove_stale(&dir, &kept);
        Ok(())
    }
}

/// Burn writes an optimizer's per-parameter states in hash-map order, which changes from run to
/// run; the same pack with its tensors sorted by name is byte-identical for identical states.
fn canonical_burnpack(bytes: burn::tensor::Bytes) -> std::result::Result<Vec<u8>, String> {
    let reader = burn_pack::Reader::from_bytes(bytes).map_err(|e| e.to_string())?;
    let metadata = reader.metadata().clone();
    let scalars = reader.scalars().clone();
    let mut parts = reader
        .into_tensors()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| t.into_parts())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors = parts
        .into_iter()
        .map(|(name, dtype, shape, id, data)| burn_pack::Tensor::new(name, dtype, shape, id, data))
        .collect();
    let mut writer = burn_pack::Writer::new(tensors);
    for (k, v) in &metadata {
        writer = writer.with_metadata(k, v);
    }
    for (k, v) in &scalars {
        writer = writer.with_scalar(k, *v);
    }
    Ok(writer.into_bytes().map_err(|e| e.to_string())?.to_vec())
}

/// Reads manifest `name` of `dir` and checks its members' SHA-256.
fn read_manifest(dir: &Path, name: &str) -> Result<Progress> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let sidecar = path.with_extension("sha256");
    if let Some(stem) = name.strip_prefix("progress-") {
        let want = std::fs::read(&sidecar).map_err(|e| Error::io(&sidecar, e))?;
        if crate::io::sha256_hex(&bytes).as_bytes() != want.as_slice() {
            return Err(Error::format(
                &path,
                format!(
                    "checkpoint manifest corrupt (SHA-256 differs from progress-{})",
                    stem.replace(".json", ".sha256")
                ),
            ));
        }
    }
    let progress: Progress = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("corrupt checkpoint manifest: {e}")))?;
    for (member, want) in &progress.sha256 {
        let file = dir.join(member);
        let data = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        if &crate::io::sha256_hex(&data) != want {
            return Err(Error::format(
                &file,
                format!("checkpoint member corrupt (SHA-256 differs from {name}); delete the run folder to start over"),
            ));
        }
    }
    Ok(progress)
}

fn remove_stale(dir: &Path, keep: &[&str]) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Temporaries of this process's writes are finished by now; other dotfiles stay.
            if !keep.contains(&name.as_str()) && (!name.starts_with('.') || crate::io::is_atomic_temporary(&name)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
