//! What the loop trains: a [`Task`] turns samples into batches (Burn's `Batcher` role), a batch
//! into a loss, and a dataset into evaluation metrics. The loop ([`super::Trainer::fit_task`])
//! owns everything else: sampling, optimisation, accumulation, checkpoints.
//!
//! [`Classification`] is the image-classification task (cross-entropy, top-1); the
//! vision–language tasks (VQA soft scores, retrieval, generation) implement the same trait with
//! the losses and metrics of [`super::objectives`].

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use rayon::prelude::*;

use crate::Result;
use crate::data::{ImageSample, Samples, batch};

/// What one forward pass of a training batch gives the loop.
#[derive(Debug)]
pub struct TaskOutput {
    /// The scalar loss to minimise, `[1]` (a mean over the batch).
    pub loss: Tensor<1>,
    /// The batch's per-sample scores in `[0, 1]`, summed (`[1]`): correct predictions for
    /// classification. The epoch log reports their mean in %; `None` when the task has no
    /// cheap training metric.
    pub score_sum: Option<Tensor<1>>,
}

/// Metrics of one evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// The metric the run is judged by (best/final in reports), in %.
    pub primary: f64,
    /// Every metric by name (the primary one included), e.g. `top1`, `vqa_score`, `r@1_t2i`.
    pub metrics: BTreeMap<String, f64>,
}

impl Evaluation {
    /// An evaluation with one metric.
    pub fn single(name: &str, value: f64) -> Self {
        Self { primary: value, metrics: BTreeMap::from([(name.to_string(), value)]) }
    }
}

/// A training objective on models of type `M`.
pub trait Task<M>: Sync {
    /// One sample, as a dataset gives it.
    type Item: Send;
    /// A batch on a device.
    type Batch;

    /// Name and unit of [`Evaluation::primary`], for reports (`"top-1 accuracy (%)"`).
    fn metric_name(&self) -> String;

    /// Stacks samples into a batch on `device` (Burn's `Batcher::batch`).
    ///
    /// # Errors
    /// Samples the task cannot batch (a text longer than the model's positions, a target of
    /// another task), named.
    fn batch(&self, items: Vec<Self::Item>, device: &Device) -> Result<Self::Batch>;

    /// Loss (and training score) of `model` on a training batch; `model` is on an autodiff
    /// device and in training mode.
    fn forward(&self, model: &M, batch: Self::Batch) -> TaskOutput;

    /// Metrics of `model` (an evaluation snapshot: no autodiff, no dropout) on `data`.
    ///
    /// # Errors
    /// A sample that cannot be read.
    fn evaluate(&self, model: &M, data: &dyn Samples<Self::Item>, batch_size: usize) -> Result<Evaluation>;

    /// Checks that `train` and `eval` fit together and this task (class counts, answer
    /// vocabularies) before anything trains.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming both datasets.
    fn check(&self, _train: &dyn Samples<Self::Item>, _eval: &dyn Samples<Self::Item>) -> Result<()> {
        Ok(())
    }
}

/// Loads samples `indices` of `data` in parallel (`seeds`: one augmentation seed per sample).
///
/// # Errors
/// The first sample that cannot be read.
pub fn load<I: Send>(data: &dyn Samples<I>, indices: &[usize], seeds: Option<&[u64]>) -> Result<Vec<I>> {
    indices.par_iter().enumerate().map(|(j, &i)| data.get(i, seeds.map(|s| s[j]))).collect()
}

/// Evaluates `data` in batches of `batch_size` in order: `each(batch_items)` per batch.
///
/// # Errors
/// The first sample that cannot be read, or `each`'s error.
pub fn for_each_batch<I: Send>(
    data: &dyn Samples<I>,
    batch_size: usize,
    mut each: impl FnMut(Vec<I>) -> Result<()>,
) -> Result<()> {
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        each(load(data, chunk, None)?)?;
    }
    Ok(())
}

/// Cross-entropy of `logits` against `labels` (label-smoothed when `smoothing > 0`) and the
/// number of correct arg-max predictions: the training output of every classification task.
pub fn cross_entropy_top1(logits: Tensor<2>, labels: Tensor<1, Int>, smoothing: f64) -> TaskOutput {
    let [b] = labels.dims();
    let correct = logits.clone().argmax(1).reshape([b]).equal(labels.clone()).float().sum();
    let mut loss = CrossEntropyLossConfig::new();
    if smoothing > 0.0 {
        loss = loss.with_smoothing(Some(smoothing as f32));
    }
    let loss = loss.init(&logits.device()).forward(logits, labels);
    TaskOutput { loss, score_sum: Some(correct) }
}

/// Top-1 accuracy (%) of a classification task over `data`: `logits_and_labels` turns one
/// batch of items into its logits and labels.
///
/// # Errors
/// A sample that cannot be read or batched.
pub fn top1_accuracy<I: Send>(
    data: &dyn Samples<I>,
    batch_size: usize,
    mut logits_and_labels: impl FnMut(Vec<I>) -> Result<(Tensor<2>, Tensor<1, Int>)>,
) -> Result<f64> {
    let mut correct = 0usize;
    for_each_batch(data, batch_size, |items| {
        let n = items.len();
        let (logits, labels) = logits_and_labels(items)?;
        let pred = logits.argmax(1).reshape([n]);
        correct += pred.equal(labels).int().sum().into_scalar::<i64>() as usize;
        Ok(())
    })?;
    Ok(100.0 * correct as f64 / data.len().max(1) as f64)
}

/// A model the classification task trains: images `[B, 3, H, W]` -> logits `[B, K]`.
pub trait Classify: Module {
    /// Logits.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

/// Image classification: cross-entropy (optionally label-smoothed) and top-1 accuracy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Classification {
    /// Label smoothing of the cross-entropy (0: none).
    pub label_smoothing: f64,
}

fn image_side(sample: &ImageSample) -> usize {
    ((sample.image.len() / 3) as f64).sqrt().round() as usize
}

impl<M: Classify> Task<M> for Classification {
    type Item = ImageSample;
    type Batch = (Tensor<4>, Tensor<1, Int>);

    fn metric_name(&self) -> String {
        "top-1 accuracy (%)".into()
    }

    fn batch(&self, items: Vec<ImageSample>, device: &Device) -> Result<Self::Batch> {
        let size = image_side(&items[0]);
        Ok(batch(&items, size, device))
    }

    fn forward(&self, model: &M, (images, labels): Self::Batch) -> TaskOutput {
        cross_entropy_top1(model.logits(images), labels, self.label_smoothing)
    }

    fn evaluate(&self, model: &M, data: &dyn Samples<ImageSample>, batch_size: usize) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let top1 = top1_accuracy(data, batch_size, |items| {
            let (images, labels) = <Self as Task<M>>::batch(self, items, &device)?;
            Ok((model.logits(images), labels))
        })?;
        Ok(Evaluation::single("top1", top1))
    }
}
