//! Pretraining a vision–language backbone in-process, as ViLT (its `vilt_200k_mlm_itm`
//! checkpoint) and METER (`meter_clip16_288_roberta_pretrain`) were pretrained: image–text
//! matching (ITM) and masked language modelling (MLM) on captioned images. The embedded
//! reproductions use it to give the downstream methods a pretrained backbone without a
//! download. Any [`VlBackbone`] works: the ITM head reads the pooled feature (ViLT `[D]`;
//! METER both poolers, `[2D]`, as METER's `itm_score`), the MLM head the text tokens of the
//! encoder's last state (ViLT's joint sequence; METER's fused text stream).
//!
//! Each batch of captioned images ([`VlTarget::Match`] samples) pairs every odd-indexed
//! caption with the next sample's image (a mismatch unless both show the same image), masks
//! 15 % of the other captions' word tokens with `[MASK]` (at least one per batch), and trains
//! `CE(ITM(pooled), matched) + CE(MLM(text tokens), masked words)`, the MLM term over the
//! masked positions of matched pairs only. ViLT's 80/10/10 replacement and whole-word masking
//! are not used (the generated language has one token per word). [`ItmMlm::maskable`] can
//! restrict the masking to content words (colours, kinds, numbers), one or more per caption:
//! the embedded reproductions use it, because a small model otherwise spends MLM on function
//! words that the text alone predicts and learns little grounding.

use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use super::{Vilt, ViltInput};
use crate::data::Samples;
use crate::data::text::HfTokenizer;
use crate::data::vl::{VlSample, VlTarget};
use crate::encoder::EncodeOptions;
use crate::hooks::NoHooks;
use crate::ops::gelu;
use crate::train::objectives::{IGNORE_INDEX, seq2seq_cross_entropy};
use crate::train::task::{Evaluation, Task, TaskOutput, cross_entropy_top1, for_each_batch};
use crate::train::vl::{targets, vl_images};
use crate::vl_model::VlBackbone;
use crate::{Error, Result};

/// A backbone with its pretraining heads: ITM (`[F, 2]` over the pooled feature, "match" is
/// class 1) and BERT's MLM head (dense, GELU, LayerNorm, decoder to the vocabulary).
#[derive(Module, Debug)]
pub struct VlPretraining<E: VlBackbone> {
    /// The backbone (fully trained).
    pub backbone: E,
    /// Image–text matching head.
    pub itm: Linear,
    /// MLM transform.
    pub mlm_dense: Linear,
    /// MLM LayerNorm.
    pub mlm_norm: LayerNorm,
    /// MLM decoder `[D, V]`.
    pub mlm_decoder: Linear,
}

/// ViLT with its pretraining heads.
pub type ViltPretraining = VlPretraining<Vilt>;

impl ViltPretraining {
    /// Heads for `backbone` (its own vocabulary), freshly initialised.
    pub fn vilt(backbone: Vilt, device: &Device) -> Self {
        let vocab = backbone.word_embeddings.weight.dims()[0];
        Self::new(backbone, vocab, device)
    }
}

impl<E: VlBackbone> VlPretraining<E> {
    /// Heads for `backbone` over a `vocab`-word vocabulary, freshly initialised.
    pub fn new(backbone: E, vocab: usize, device: &Device) -> Self {
        let d = backbone.hidden_size();
        let f = backbone.layout().feature_dim;
        Self {
            itm: LinearConfig::new(f, 2).init(device),
            mlm_dense: LinearConfig::new(d, d).init(device),
            mlm_norm: LayerNormConfig::new(d).with_epsilon(1e-12).init(device),
            mlm_decoder: LinearConfig::new(d, vocab).init(device),
            backbone,
        }
    }

    /// ITM logits `[B, 2]` and MLM logits `[B, T, V]`.
    pub fn forward(&self, input: ViltInput) -> (Tensor<2>, Tensor<3>) {
        let t = input.text.input_ids.dims()[1];
        let out = self.backbone.encode(input, &NoHooks, EncodeOptions::default());
        let text = out.last.narrow(1, 0, t);
        let mlm = self.mlm_decoder.forward(self.mlm_norm.forward(gelu(self.mlm_dense.forward(text))));
        (self.itm.forward(out.pooled), mlm)
    }
}

/// The ITM + MLM objective (module docs).
pub struct ItmMlm {
    /// The tokenizer.
    pub tokenizer: HfTokenizer,
    /// Text positions.
    pub max_len: usize,
    /// Id of `[MASK]`.
    pub mask_id: i64,
    /// Ids never masked (`[CLS]`, `[SEP]`, `[PAD]`, ...).
    pub special_ids: Vec<i64>,
    /// When set, only these ids are masked (content words), every caption gets at least one
    /// masked word, and each further content word is masked with probability 15 %.
    pub maskable: Option<Vec<i64>>,
    /// Seed of the masking.
    pub seed: u64,
}

/// A pretraining batch.
pub struct ItmMlmBatch {
    /// Masked texts with (possibly mismatched) images.
    pub input: ViltInput,
    /// 1 where text and image match.
    pub matched: Tensor<1, Int>,
    /// The masked words' ids, [`IGNORE_INDEX`] elsewhere and on mismatched rows.
    pub labels: Tensor<2, Int>,
}

impl ItmMlm {
    fn build(&self, items: &[VlSample], device: &Device) -> Result<ItmMlmBatch> {
        let b = items.len();
        if b == 0 {
            return Err(Error::Config("an empty batch".into()));
        }
        let ids = targets(items, "is not a captioned image", |t| match t {
            VlTarget::Match(id) => Some(*id),
            _ => None,
        })?;
        // Odd rows see the next sample's image.
        let partner = |i: usize| if i % 2 == 1 && b > 1 { (i + 1) % b } else { i };
        let paired: Vec<VlSample> =
            (0..b).map(|i| VlSample { images: items[partner(i)].images.clone(), ..items[i].clone() }).collect();
        let matched: Vec<i64> = (0..b).map(|i| i64::from(ids[partner(i)] == ids[i])).collect();
        let texts: Vec<String> = items.iter().map(|s| s.text.clone()).collect();
        let tokens = self.tokenizer.encode(&texts, self.max_len)?;
        let mut h = crate::data::fold_texts(crate::data::splitmix64(self.seed), texts.iter().map(String::as_str));
        let mut ids_masked = tokens.ids.clone();
        let mut labels = vec![IGNORE_INDEX; tokens.ids.len()];
        let mut candidates = vec![];
        let mut row_candidates: Vec<Vec<usize>> = vec![vec![]; b];
        for (k, &id) in tokens.ids.iter().enumerate() {
            let row = k / tokens.len.max(1);
            let eligible = self.maskable.as_ref().is_none_or(|m| m.contains(&id));
            if self.special_ids.contains(&id) || tokens.mask[k] == 0 || !eligible {
                continue;
            }
            candidates.push(k);
            row_candidates[row].push(k);
            h = crate::data::splitmix64(h);
            if h % 100 < 15 {
                labels[k] = id;
                ids_masked[k] = self.mask_id;
            }
        }
        if self.maskable.is_some() {
            for row in &row_candidates {
                if !row.is_empty() && row.iter().all(|&k| labels[k] == IGNORE_INDEX) {
                    h = crate::data::splitmix64(h);
                    let k = row[(h % row.len() as u64) as usize];
                    labels[k] = tokens.ids[k];
                    ids_masked[k] = self.mask_id;
                }
            }
        }
        // Every caption is masked the same way (ITM must not read the match from the masks);
        // MLM is learned on matched pairs only.
        for (k, label) in labels.iter_mut().enumerate() {
            if matched[k / tokens.len.max(1)] == 0 {
                *label = IGNORE_INDEX;
            }
        }
        candidates.retain(|&k| matched[k / tokens.len.max(1)] == 1);
        if labels.iter().all(|&l| l == IGNORE_INDEX) && !candidates.is_empty() {
            // At least one masked word per batch (a batch may be all mismatched otherwise).
            let k = candidates[(h % candidates.len() as u64) as usize];
            labels[k] = tokens.ids[k];
            ids_masked[k] = self.mask_id;
        }
        let masked = crate::data::text::TokenBatch { ids: ids_masked, ..tokens.clone() };
        let images = vl_images(&paired, device)?.into_iter().next().expect("a captioned image");
        Ok(ItmMlmBatch {
            input: ViltInput { text: masked.input(0, b, device), images, image_type: 1, class_token: None },
            matched: Tensor::from_data(TensorData::new(matched, [b]), device),
            labels: Tensor::from_data(TensorData::new(labels, [b, tokens.len]), device),
        })
    }
}

impl<E: VlBackbone> Task<VlPretraining<E>> for ItmMlm {
    type Item = VlSample;
    type Batch = ItmMlmBatch;

    fn metric_name(&self) -> String {
        "ITM accuracy (%)".into()
    }

    fn batch(&self, items: Vec<VlSample>, device: &Device) -> Result<ItmMlmBatch> {
        self.build(&items, device)
    }

    fn forward(&self, model: &VlPretraining<E>, batch: ItmMlmBatch) -> TaskOutput {
        let (itm, mlm) = model.forward(batch.input);
        let itm = cross_entropy_top1(itm, batch.matched, 0.0);
        TaskOutput { loss: itm.loss + seq2seq_cross_entropy(mlm, batch.labels), score_sum: itm.score_sum }
    }

    fn evaluate(
        &self,
        model: &VlPretraining<E>,
        data: &dyn Samples<VlSample>,
        batch_size: usize,
    ) -> Result<Evaluation> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let (mut itm_hits, mut n, mut mlm_hits, mut masked) = (0usize, 0usize, 0usize, 0usize);
        for_each_batch(data, batch_size, |items| {
            let batch = self.build(&items, &device)?;
            let b = items.len();
            let (itm, mlm) = model.forward(batch.input);
            let pred: Vec<i64> = itm.argmax(1).reshape([b]).into_data().convert::<i64>().try_to_vec().expect("ints");
            let truth: Vec<i64> = batch.matched.into_data().convert::<i64>().try_to_vec().expect("ints");
            itm_hits += pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
            n += b;
            let words: Vec<i64> = mlm.argmax(2).into_data().convert::<i64>().try_to_vec().expect("ints");
            let labels: Vec<i64> = batch.labels.into_data().convert::<i64>().try_to_vec().expect("ints");
            for (w, l) in words.iter().zip(&labels) {
                if *l != IGNORE_INDEX {
                    masked += 1;
                    mlm_hits += usize::from(w == l);
                }
            }
            Ok(())
        })?;
        let mut e = Evaluation::single("itm_accuracy", 100.0 * itm_hits as f64 / n.max(1) as f64);
        e.metrics.insert("mlm_accuracy".into(), 100.0 * mlm_hits as f64 / masked.max(1) as f64);
        Ok(e)
    }
}
