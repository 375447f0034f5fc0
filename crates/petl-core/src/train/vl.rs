//! The vision–language tasks of the loop, over [`VlSample`]s: VQA with soft scores (ViLT, METER,
//! VL-Adapter's discriminative heads), NLVR2-style true/false over image pairs, and image–text
//! retrieval with a contrastive loss (CLIP/CLIP4Clip's symmetric InfoNCE or VSE∞'s triplet loss
//! with the hardest negatives). Models implement the small traits here ([`VlClassify`],
//! [`DualEncoder`]); the tasks own tokenisation, batching, losses and metrics.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;

use super::objectives::{Recall, retrieval_recall, symmetric_infonce, triplet_loss, vqa_score, vqa_soft_bce};
use super::task::{Evaluation, Task, TaskOutput, cross_entropy_top1, for_each_batch, top1_accuracy};
use crate::bert::TextInput;
use crate::data::Samples;
use crate::data::text::HfTokenizer;
use crate::data::vl::{VlSample, VlTarget, soft_scores, stack_images};
use crate::{Error, Result};

/// The model input of an image–text batch: tokenised texts and every image slot (one for VQA,
/// two for NLVR2 pairs), each `[B, 3, S, S]`.
#[derive(Clone, Debug)]
pub struct VlInput {
    /// The texts, padded to the longest.
    pub text: TextInput,
    /// Image slot `k` of every sample.
    pub images: Vec<Tensor<4>>,
}

/// Stacks every image slot of `items` (all with as many images as the first, all `3 × S × S`):
/// one `[B, 3, S, S]` tensor per slot.
///
/// # Errors
/// An empty batch, or a sample whose image count or size differs from the first's (named).
pub fn vl_images(items: &[VlSample], device: &Device) -> Result<Vec<Tensor<4>>> {
    let Some(first) = items.first() else { return Err(Error::Config("an empty batch".into())) };
    let slots = first.images.len();
    let side = first.images.first().map_or(0, |i| ((i.len() / 3) as f64).sqrt().round() as usize);
    if let Some((i, s)) = items.iter().enumerate().find(|(_, s)| s.images.len() != slots) {
        return Err(Error::Config(format!(
            "sample {i} of the batch has {} image(s), the first has {slots}",
            s.images.len()
        )));
    }
    for (i, s) in items.iter().enumerate() {
        if let Some(k) = s.images.iter().position(|im| im.len() != 3 * side * side) {
            return Err(Error::Config(format!(
                "sample {i} of the batch: image {k} has {} values, not 3 × {side} × {side}",
                s.images[k].len()
            )));
        }
    }
    Ok((0..slots).map(|k| stack_images(items, k, side, device)).collect())
}

/// Tokenises the texts and stacks the images of `items` ([`vl_images`]): the model input of an
/// image–text batch.
///
/// # Errors
/// As [`vl_images`]; a text the tokenizer rejects or longer than `max_len` tokens.
pub fn vl_input(tokenizer: &HfTokenizer, max_len: usize, items: &[VlSample], device: &Device) -> Result<VlInput> {
    let images = vl_images(items, device)?;
    let texts: Vec<String> = items.iter().map(|s| s.text.clone()).collect();
    let text = tokenizer.encode(&texts, max_len)?.input(0, items.len(), device);
    Ok(VlInput { text, images })
}

/// The target of every item, as `pick` reads it; an item whose target `pick` does not accept is
/// an error: "sample {i} of the batch {what}: {target}".
pub(crate) fn targets<'a, T>(
    items: &'a [VlSample],
    what: &str,
    pick: impl Fn(&'a VlTarget) -> Option<T>,
) -> Result<Vec<T>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            pick(&s.target).ok_or_else(|| Error::Config(format!("sample {i} of the batch {what}: {:?}", s.target)))
        })
        .collect()
}

/// A model that maps an image–text input to one logit row: answer logits for VQA, two classes
/// (false, true) for NLVR2.
pub trait VlClassify: Module {
    /// Logits `[B, K]`.
    fn vl_logits(&self, input: VlInput) -> Tensor<2>;

    /// Retrieval: the matching score of every image (`[1, 3, S, S]` each) with every text of
    /// every chunk, image-major (`images × Σ chunk sizes` values). The default scores each (image,
    /// chunk) through [`VlClassify::vl_logits`] ([`score_grid_pairwise`]); a two-stream model
    /// overrides it to compute each unimodal stream once.
    fn score_grid(&self, images: &[Tensor<4>], texts: &[TextInput]) -> Vec<f32> {
        score_grid_pairwise(self, images, texts)
    }
}

/// [`VlClassify::score_grid`] through [`VlClassify::vl_logits`]: every image repeated over each
/// text chunk, one call per (image, chunk).
pub fn score_grid_pairwise<M: VlClassify>(model: &M, images: &[Tensor<4>], texts: &[TextInput]) -> Vec<f32> {
    let mut scores = vec![];
    for image in images {
        for text in texts {
            let n = text.input_ids.dims()[0];
            let input = VlInput { text: text.clone(), images: vec![image.clone().repeat_dim(0, n)] };
            scores.extend(crate::weights::HostTensor::from_tensor(&model.vl_logits(input)).data);
        }
    }
    scores
}

/// VQA as ViLT and METER train it: the answer vocabulary as classes, soft-score binary
/// cross-entropy, the VQA score as the metric.
pub struct Vqa {
    /// The model's tokenizer.
    pub tokenizer: HfTokenizer,
    /// Positions of the text encoder.
    pub max_len: usize,
    /// Size of the answer vocabulary.
    pub answers: usize,
}

impl<M: VlClassify> Task<M> for Vqa {
    type Item = VlSample;
    type Batch = (VlInput, Tensor<2>);

    fn metric_name(&self) -> String {
        "VQA score (%)".into()
    }

    fn batch(&self, items: Vec<VlSample>, device: &Device) -> Result<Self::Batch> {
        let answers = targets(&items, "is not a VQA sample", |t| match t {
            VlTarget::Answers(a) => Some(a),
            _ => None,
        })?;
        let mut dense = Vec::with_capacity(items.len() * self.answers);
        for (i, answers) in answers.into_iter().enumerate() {
            if let Some((a, _)) = answers.iter().find(|(a, _)| *a >= self.answers) {
                return Err(Error::Config(format!("sample {i}: answer {a} outside the {} answers", self.answers)));
            }
            dense.extend(soft_scores(answers, self.answers));
        }
        let dense = Tensor::from_data(TensorData::new(dense, [items.len(), self.answers]), device);
        Ok((vl_input(&self.tokenizer, self.max_len, &items, device)?, dense))
    }

    fn forward(&self, model: &M, (input, targets): Self::Batch) -> TaskOutput {
        let [b, _] = targets.dims();
        let logits = model.vl_logits(input);
        let best = logits.clone().argmax(1);
        let score = targets.clone().gather(1, best).reshape([b]).sum();
        TaskOutput { loss: vqa_soft_bce(logits, targets), score_sum: Some(score) }
    }

    fn evaluate(&self, model: &M, data: &dyn Samples<VlSample>, batch_size: usize) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let (mut logits, mut targets) = (vec![], vec![]);
        for_each_batch(data, batch_size, |items| {
            let (input, t) = <Self as Task<M>>::batch(self, items, &device)?;
            logits.extend(crate::weights::HostTensor::from_tensor(&model.vl_logits(input)).data);
            targets.extend(crate::weights::HostTensor::from_tensor(&t).data);
            Ok(())
        })?;
        Ok(Evaluation::single("vqa_score", vqa_score(&logits, &targets, self.answers)))
    }
}

/// Classification of image–text samples with [`VlTarget::Class`] targets (NLVR2's true/false
/// over an image pair): cross-entropy and accuracy.
pub struct VlClassification {
    /// The model's tokenizer.
    pub tokenizer: HfTokenizer,
    /// Positions of the text encoder.
    pub max_len: usize,
}

impl<M: VlClassify> Task<M> for VlClassification {
    type Item = VlSample;
    type Batch = (VlInput, Tensor<1, Int>);

    fn metric_name(&self) -> String {
        "accuracy (%)".into()
    }

    fn batch(&self, items: Vec<VlSample>, device: &Device) -> Result<Self::Batch> {
        let labels = targets(&items, "has no class target", |t| match t {
            VlTarget::Class(c) => Some(*c as i64),
            _ => None,
        })?;
        let labels = Tensor::from_data(TensorData::new(labels, [items.len()]), device);
        Ok((vl_input(&self.tokenizer, self.max_len, &items, device)?, labels))
    }

    fn forward(&self, model: &M, (input, labels): Self::Batch) -> TaskOutput {
        cross_entropy_top1(model.vl_logits(input), labels, 0.0)
    }

    fn evaluate(&self, model: &M, data: &dyn Samples<VlSample>, batch_size: usize) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let accuracy = top1_accuracy(data, batch_size, |items| {
            let (input, labels) = <Self as Task<M>>::batch(self, items, &device)?;
            Ok((model.vl_logits(input), labels))
        })?;
        Ok(Evaluation::single("accuracy", accuracy))
    }
}

/// Recall@1/5/10 both ways of an `[images, texts]` score matrix (`text_image`: each text's image
/// position) as an evaluation: `i2t_r@K` (TR), `t2i_r@K` (IR), `rsum`; primary: their mean.
fn recall_evaluation(scores: &[f32], images: usize, text_image: &[usize]) -> Evaluation {
    let Recall { ks, image_to_text, text_to_image } = retrieval_recall(scores, images, text_image, &[1, 5, 10]);
    let mut e = Evaluation::default();
    for (k, (i2t, t2i)) in ks.iter().zip(image_to_text.iter().zip(&text_to_image)) {
        e.metrics.insert(format!("i2t_r@{k}"), *i2t);
        e.metrics.insert(format!("t2i_r@{k}"), *t2i);
    }
    e.primary = (image_to_text.iter().sum::<f64>() + text_to_image.iter().sum::<f64>()) / 6.0;
    e.metrics.insert("rsum".into(), e.primary * 6.0);
    e
}

/// A two-tower model: images and texts embedded apart, compared by dot product (CLIP, VSE∞).
pub trait DualEncoder: Module {
    /// Image embeddings `[B, E]` (normalised by the model if its method does).
    fn embed_images(&self, images: Tensor<4>) -> Tensor<2>;
    /// Text embeddings `[B, E]`.
    fn embed_texts(&self, text: TextInput) -> Tensor<2>;
}

/// The contrastive loss of [`Retrieval`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContrastiveLoss {
    /// Symmetric InfoNCE on similarities divided by `temperature` (CLIP, CLIP4Clip).
    InfoNce {
        /// Softmax temperature.
        temperature: f64,
    },
    /// VSE++ hinge triplet loss with `margin`, all or only the hardest negatives (VSE∞).
    Triplet {
        /// Margin.
        margin: f64,
        /// Only the hardest negative per row and column.
        hardest: bool,
    },
}

/// Image–text retrieval: each training batch pairs every caption with its image, the others
/// are negatives (two captions of one image in a batch count as negatives of each other, as in
/// CLIP4Clip's training); evaluation embeds every image once and every caption, and reports
/// recall@1/5/10 both ways (primary: their mean).
pub struct Retrieval {
    /// The model's tokenizer.
    pub tokenizer: HfTokenizer,
    /// Positions of the text encoder.
    pub max_len: usize,
    /// The loss.
    pub loss: ContrastiveLoss,
}

impl<M: DualEncoder> Task<M> for Retrieval {
    type Item = VlSample;
    type Batch = (VlInput, Vec<usize>);

    fn metric_name(&self) -> String {
        "mean recall@1/5/10, both ways (%)".into()
    }

    fn batch(&self, items: Vec<VlSample>, device: &Device) -> Result<Self::Batch> {
        let ids = targets(&items, "is not a retrieval pair", |t| match t {
            VlTarget::Match(id) => Some(*id),
            _ => None,
        })?;
        Ok((vl_input(&self.tokenizer, self.max_len, &items, device)?, ids))
    }

    fn forward(&self, model: &M, (input, _): Self::Batch) -> TaskOutput {
        let images = input.images.into_iter().next().expect("one image slot");
        let sims = model.embed_images(images).matmul(model.embed_texts(input.text).transpose());
        let loss = match self.loss {
            ContrastiveLoss::InfoNce { temperature } => symmetric_infonce(sims.div_scalar(temperature)),
            ContrastiveLoss::Triplet { margin, hardest } => triplet_loss(sims, margin, hardest),
        };
        TaskOutput { loss, score_sum: None }
    }

    fn evaluate(&self, model: &M, data: &dyn Samples<VlSample>, batch_size: usize) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let (mut image_emb, mut text_emb, mut text_image) = (vec![], vec![], vec![]);
        let mut image_ids: Vec<usize> = vec![];
        let mut dim = 0;
        for_each_batch(data, batch_size, |items| {
            // Each image once, in order of first appearance.
            let fresh: Vec<VlSample> = items
                .iter()
                .filter(|s| matches!(s.target, VlTarget::Match(id) if !image_ids.contains(&id)))
                .fold(vec![], |mut acc: Vec<VlSample>, s| {
                    if !acc.iter().any(|a| a.target == s.target) {
                        acc.push(s.clone());
                    }
                    acc
                });
            let (input, ids) = <Self as Task<M>>::batch(self, items, &device)?;
            let t = crate::weights::HostTensor::from_tensor(&model.embed_texts(input.text));
            dim = t.shape[1];
            text_emb.extend(t.data);
            text_image.extend(ids);
            if !fresh.is_empty() {
                let (input, ids) = <Self as Task<M>>::batch(self, fresh, &device)?;
                let images = input.images.into_iter().next().expect("one image slot");
                image_emb.extend(crate::weights::HostTensor::from_tensor(&model.embed_images(images)).data);
                image_ids.extend(ids);
            }
            Ok(())
        })?;
        let (n_images, n_texts) = (image_ids.len(), text_image.len());
        let mut scores = vec![0.0f32; n_images * n_texts];
        for i in 0..n_images {
            for t in 0..n_texts {
                scores[i * n_texts + t] = (0..dim).map(|k| image_emb[i * dim + k] * text_emb[t * dim + k]).sum();
            }
        }
        let position: Vec<usize> = text_image
            .iter()
            .map(|id| image_ids.iter().position(|x| x == id).expect("every text's image is embedded"))
            .collect();
        Ok(recall_evaluation(&scores, n_images, &position))
    }
}

/// Image–text retrieval with a single-stream (cross-encoder) model that scores each (image,
/// text) pair, as ViLT and METER fine-tune on Flickr30K: every training caption is scored with
/// its image together with `negatives` captions drawn uniformly from `pool` (the training
/// captions; a draw may accidentally match), and the loss is the cross-entropy over those
/// `1 + negatives` scores with the positive as the target. Evaluation scores every image with
/// every caption and reports recall@1/5/10 both ways (`i2t_r@K` = TR, `t2i_r@K` = IR); the
/// primary metric is the mean of the six.
///
/// The model's [`VlClassify::vl_logits`] gives the score `[B, 1]` of each pair. Negatives are
/// drawn from a seed derived from the batch's texts and [`PairRetrieval::seed`], so a resumed
/// run draws the same ones.
pub struct PairRetrieval {
    /// The model's tokenizer.
    pub tokenizer: HfTokenizer,
    /// Positions of the text encoder.
    pub max_len: usize,
    /// Negatives per positive (15 in ViLT's recipe).
    pub negatives: usize,
    /// Captions the negatives are drawn from.
    pub pool: Vec<String>,
    /// Seed of the draws.
    pub seed: u64,
}

impl PairRetrieval {
    fn negatives_for(&self, items: &[VlSample]) -> Vec<String> {
        let h = crate::data::fold_texts(self.seed ^ 0x9e37_79b9_7f4a_7c15, items.iter().map(|s| s.text.as_str()));
        (0..items.len() * self.negatives)
            .map(|k| {
                let r = crate::data::splitmix64(h.wrapping_add(k as u64));
                self.pool[(r % self.pool.len().max(1) as u64) as usize].clone()
            })
            .collect()
    }
}

impl<M: VlClassify> Task<M> for PairRetrieval {
    type Item = VlSample;
    type Batch = (VlInput, usize);

    fn metric_name(&self) -> String {
        "mean recall@1/5/10, both ways (%)".into()
    }

    fn batch(&self, items: Vec<VlSample>, device: &Device) -> Result<Self::Batch> {
        targets(&items, "is not a retrieval pair", |t| match t {
            VlTarget::Match(id) => Some(*id),
            _ => None,
        })?;
        if self.pool.is_empty() && self.negatives > 0 {
            return Err(Error::Config("retrieval training needs captions to draw negatives from".into()));
        }
        let group = 1 + self.negatives;
        let negatives = self.negatives_for(&items);
        let mut rows = Vec::with_capacity(items.len() * group);
        for (i, s) in items.iter().enumerate() {
            rows.push(s.clone());
            for text in &negatives[i * self.negatives..(i + 1) * self.negatives] {
                rows.push(VlSample { text: text.clone(), ..s.clone() });
            }
        }
        Ok((vl_input(&self.tokenizer, self.max_len, &rows, device)?, group))
    }

    fn forward(&self, model: &M, (input, group): Self::Batch) -> TaskOutput {
        let scores = model.vl_logits(input);
        let [n, _] = scores.dims();
        let b = n / group;
        let labels = Tensor::<1, Int>::zeros([b], &scores.device());
        cross_entropy_top1(scores.reshape([b, group]), labels, 0.0)
    }

    fn evaluate(&self, model: &M, data: &dyn Samples<VlSample>, batch_size: usize) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let mut texts: Vec<VlSample> = vec![];
        let mut images: Vec<(usize, VlSample)> = vec![];
        for_each_batch(data, batch_size, |items| {
            for s in items {
                let VlTarget::Match(id) = s.target else {
                    return Err(Error::Config(format!("sample `{}` is not a retrieval pair", s.text)));
                };
                if !images.iter().any(|(i, _)| *i == id) {
                    images.push((id, s.clone()));
                }
                texts.push(s);
            }
            Ok(())
        })?;
        let n_images = images.len();
        // Each text chunk tokenised once, each image stacked once; the model scores the grid.
        let chunks = texts
            .chunks(batch_size.max(1))
            .map(|chunk| {
                let strings: Vec<String> = chunk.iter().map(|t| t.text.clone()).collect();
                Ok(self.tokenizer.encode(&strings, self.max_len)?.input(0, chunk.len(), &device))
            })
            .collect::<Result<Vec<TextInput>>>()?;
        let image_tensors = images
            .iter()
            .map(|(_, s)| Ok(vl_images(std::slice::from_ref(s), &device)?.remove(0)))
            .collect::<Result<Vec<Tensor<4>>>>()?;
        let scores = model.score_grid(&image_tensors, &chunks);
        let position: Vec<usize> = texts
            .iter()
            .map(|t| match t.target {
                VlTarget::Match(id) => images.iter().position(|(i, _)| *i == id).expect("every image is listed"),
                _ => unreachable!("checked above"),
            })
            .collect();
        Ok(recall_evaluation(&scores, n_images, &position))
    }
}
