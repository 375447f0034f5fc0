//! The one training loop every method uses: AdamW, warm-up cosine schedule, global-norm
//! gradient clipping, optional label smoothing, per-epoch evaluation (best and final
//! accuracy), atomic epoch checkpoints with exact resume, a progress bar, and a JSON report.
//!
//! Methods supply a model whose trainable set is already chosen (frozen parameters have
//! `require_grad` off); the loop measures that set, and the optimizer only ever sees
//! gradients of trainable parameters, so frozen weights get no optimizer state.

mod clip;
pub mod objectives;
pub mod schedule;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{ImageDataset, ImageSample, batch};
use crate::io::write_atomic;
use crate::model::Classifier;
use crate::model::Tuner;
use crate::weights::{apply_with_ids, collect_with_ids, read_safetensors, write_safetensors};
use crate::{Error, Result, accounting};
pub use clip::clip_global_norm;
pub use schedule::WarmupCosine;

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
}

/// A model the loop can train: images `[B, 3, H, W]` -> logits `[B, K]`.
pub trait Classify: Module {
    /// Logits.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

impl<T: Tuner> Classify for Classifier<T> {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
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
    /// Training accuracy (%).
    pub train_acc: f64,
    /// Test accuracy (%) when evaluated.
    pub test_acc: Option<f64>,
    /// Training throughput.
    pub samples_per_sec: f64,
}

/// What a run did: per-epoch logs, accuracies, accounting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Per-epoch logs.
    pub epochs: Vec<EpochLog>,
    /// Best test accuracy over evaluations (%) — the papers' protocol.
    pub best_test_acc: f64,
    /// Test accuracy after the last epoch (%).
    pub final_test_acc: f64,
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

#[derive(Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step: usize,
    history: Vec<EpochLog>,
    param_ids: BTreeMap<String, u64>,
    tensors: String,
    optimizer: String,
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

fn load_samples(data: &dyn ImageDataset, indices: &[usize], seeds: Option<&[u64]>) -> Result<Vec<ImageSample>> {
    indices.par_iter().enumerate().map(|(j, &i)| data.get(i, seeds.map(|s| s[j]))).collect()
}

/// Top-1 accuracy (%) of `model` on `data`, in evaluation mode (no autodiff, no dropout).
pub fn evaluate<M: Classify>(model: &M, data: &dyn ImageDataset, batch_size: usize) -> Result<f64> {
    let model = model.valid();
    let device = model.devices().first().cloned().unwrap_or_default();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for chunk in indices.chunks(batch_size.max(1)) {
        let samples = load_samples(data, chunk, None)?;
        let (images, labels) = batch(&samples, data.image_size(), &device);
        let pred = model.logits(images).argmax(1).reshape([chunk.len()]);
        correct += pred.equal(labels).int().sum().into_scalar::<i64>() as usize;
    }
    Ok(100.0 * correct as f64 / data.len().max(1) as f64)
}

impl Trainer {
    /// A trainer with `config`, no run folder, progress bar on.
    pub fn new(config: TrainConfig) -> Self {
        Self { config, run_dir: None, progress: true, label: String::from("train"), stop_after: None }
    }

    fn checkpoint_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("checkpoint"))
    }

    /// Trains `model` (on an autodiff device, trainable set chosen) on `train`, evaluating on
    /// `test`; resumes from the run folder's last epoch checkpoint when there is one.
    pub fn fit<M: Classify>(
        &self,
        model: M,
        train: &dyn ImageDataset,
        test: &dyn ImageDataset,
    ) -> Result<(M, TrainReport)> {
        let cfg = &self.config;
        if train.is_empty() {
            return Err(Error::Config(format!("training set `{}` is empty", train.name())));
        }
        if train.num_classes() != test.num_classes() {
            return Err(Error::Config(format!(
                "train `{}` has {} classes but test `{}` has {}",
                train.name(),
                train.num_classes(),
                test.name(),
                test.num_classes()
            )));
        }
        let start = Instant::now();
        let device = model.devices().first().cloned().unwrap_or_default();
        let (trainable, frozen) = accounting::measure_trainable(&model);
        let trainable_set = trainable_ids(&model);
        let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).with_epsilon(1e-8).init();
        let mut loss_cfg = CrossEntropyLossConfig::new();
        if cfg.label_smoothing > 0.0 {
            loss_cfg = loss_cfg.with_smoothing(Some(cfg.label_smoothing as f32));
        }
        let loss_fn = loss_cfg.init(&device);
        let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
        let total = cfg.epochs * steps_per_epoch;
        let last_update = if cfg.skip_last_update { total.saturating_sub(1) } else { total };
        let schedule = WarmupCosine::new(cfg.warmup_epochs * steps_per_epoch, total);

        // As the official loop: the seed is set again just before training (dropout masks).
        device.seed(cfg.seed);
        let mut model = model;
        let mut history = vec![];
        let mut step = 0;
        let mut first_epoch = 0;
        if let Some(progress) = self.read_progress()? {
            let dir = self.checkpoint_dir().expect("progress implies a run folder");
            let tensors = read_safetensors(&dir.join(&progress.tensors))?;
            let (m, report) = apply_with_ids(model, tensors, progress.param_ids.clone());
            report
                .check(&dir.join(&progress.tensors).display().to_string(), |p| !progress.param_ids.contains_key(p))?;
            model = m;
            let bytes = std::fs::read(dir.join(&progress.optimizer))
                .map_err(|e| Error::io(dir.join(&progress.optimizer), e))?;
            optim = optim
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| Error::format(dir.join(&progress.optimizer), format!("{e:?}")))?;
            first_epoch = progress.epoch;
            step = progress.step;
            history = progress.history;
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
            let epoch_start = Instant::now();
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
            let mut order: Vec<usize> = (0..train.len()).collect();
            order.shuffle(&mut rng);
            let (mut loss_sum, mut correct, mut seen, mut lr) = (0.0, 0usize, 0usize, 0.0);
            for chunk in order.chunks(cfg.batch_size) {
                if step >= last_update {
                    break;
                }
                let seeds: Vec<u64> = chunk.iter().map(|&i| cfg.seed ^ ((epoch as u64) << 32) ^ i as u64).collect();
                let samples = load_samples(train, chunk, Some(&seeds))?;
                let (images, labels) = batch(&samples, train.image_size(), &device);
                let logits = model.logits(images);
                let pred = logits.clone().argmax(1).reshape([chunk.len()]);
                correct += pred.equal(labels.clone()).int().sum().into_scalar::<i64>() as usize;
                let loss = loss_fn.forward(logits, labels);
                let mut grads = GradientsParams::from_grads(loss.backward(), &model);
                if let Some(max_norm) = cfg.grad_clip_norm {
                    clip_global_norm(&model, &mut grads, max_norm, &trainable_set);
                }
                lr = cfg.lr * schedule.factor(step);
                model = optim.step(lr, model, grads);
                loss_sum += loss.into_scalar::<f32>() as f64 * chunk.len() as f64;
                seen += chunk.len();
                step += 1;
                bar.inc(1);
                bar.set_message(format!(
                    "epoch {} loss {:.3} acc {:.1}% {:.0} samples/s",
                    epoch + 1,
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / seen as f64,
                    seen as f64 / epoch_start.elapsed().as_secs_f64()
                ));
            }
            let samples_per_sec = seen as f64 / epoch_start.elapsed().as_secs_f64();
            let is_last = epoch + 1 == cfg.epochs;
            let test_acc = if is_last || (epoch + 1) % cfg.eval_every.max(1) == 0 {
                Some(evaluate(&model, test, cfg.eval_batch_size)?)
            } else {
                None
            };
            let log = EpochLog {
                epoch: epoch + 1,
                step,
                lr,
                train_loss: loss_sum / seen.max(1) as f64,
                train_acc: 100.0 * correct as f64 / seen.max(1) as f64,
                test_acc,
                samples_per_sec,
            };
            if self.progress && bar.is_hidden() {
                // No terminal (CI, a log file): one line per epoch instead of a bar.
                eprintln!(
                    "{} epoch {}/{}: loss {:.3} train acc {:.1}% test acc {} lr {:.2e} {:.0} samples/s",
                    self.label,
                    log.epoch,
                    cfg.epochs,
                    log.train_loss,
                    log.train_acc,
                    log.test_acc.map(|a| format!("{a:.1}%")).unwrap_or_else(|| "-".into()),
                    log.lr,
                    log.samples_per_sec
                );
            }
            history.push(log);
            self.write_checkpoint(&model, &optim, epoch + 1, step, &history, &trainable_set)?;
            if self.stop_after.is_some_and(|n| epoch + 1 - first_epoch >= n) {
                break;
            }
        }
        bar.finish_and_clear();

        let accs: Vec<f64> = history.iter().filter_map(|e| e.test_acc).collect();
        let report = TrainReport {
            best_test_acc: accs.iter().cloned().fold(f64::NAN, f64::max),
            final_test_acc: accs.last().cloned().unwrap_or(f64::NAN),
            samples_per_sec: history.iter().map(|e| e.samples_per_sec).sum::<f64>() / history.len().max(1) as f64,
            epochs: history,
            trainable_params: trainable,
            frozen_params: frozen,
            optimizer_state_tensors: optim.to_record().len(),
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

    fn read_progress(&self) -> Result<Option<Progress>> {
        let Some(dir) = self.checkpoint_dir() else { return Ok(None) };
        let path = dir.join("progress.json");
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::format(&path, format!("corrupt progress file: {e}")))
    }

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
        write_safetensors(&dir.join(&tensors_name), &tensors, None)?;
        let bytes = optim.into_bytes().map_err(|e| Error::format(dir.join(&optim_name), format!("{e:?}")))?;
        write_atomic(&dir.join(&optim_name), &bytes)?;
        let progress = Progress {
            epoch,
            step,
            history: history.to_vec(),
            param_ids,
            tensors: tensors_name.clone(),
            optimizer: optim_name.clone(),
        };
        write_atomic(&dir.join("progress.json"), &serde_json::to_vec_pretty(&progress).expect("serialises"))?;
        remove_stale(&dir, &[tensors_name.as_str(), optim_name.as_str(), "progress.json"]);
        Ok(())
    }
}

fn remove_stale(dir: &Path, keep: &[&str]) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name.as_str()) && !name.starts_with('.') {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
