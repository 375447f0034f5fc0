//! Multi-head scaled-dot-product attention, written once for every backbone: self- and
//! cross-attention (`N_q ≠ N_kv`), key padding masks, additive score masks (relative
//! position biases, Swin's shifted-window mask) and dropout on the attention probabilities
//! (BERT's `attention_probs_dropout_prob`, active in training only).

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// What one attention call masks or biases.
///
/// A query row must keep at least one key unmasked (its softmax is undefined otherwise); the
/// backbones guarantee it (the class token, or the query itself, is never padding).
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    /// Keys never attended to: `[B, N_kv]`, `true` marks padding.
    pub key_padding: Option<Tensor<2, Bool>>,
    /// Added to the scaled scores before the softmax: `[B, heads, N_q, N_kv]`.
    pub additive: Option<Tensor<4>>,
    /// Dropout on the attention probabilities (after the softmax). While it is active (a
    /// non-zero rate, its training flag set, an autodiff device) the attention is computed
    /// explicitly (`softmax(q kᵀ/√d + bias)` materialised); otherwise by the fused kernel.
    pub dropout: Option<Dropout>,
}

impl AttentionMask {
    /// Nothing masked.
    pub fn none() -> Self {
        Self::default()
    }

    /// Masks the keys where `padding` is `true` (`[B, N_kv]`).
    pub fn with_key_padding(mut self, padding: Tensor<2, Bool>) -> Self {
        self.key_padding = Some(padding);
        self
    }

    /// Adds `bias` (`[B, heads, N_q, N_kv]`) to the scores.
    pub fn with_additive(mut self, bias: Tensor<4>) -> Self {
        self.additive = Some(bias);
        self
    }

    /// Drops attention probabilities with `dropout` (a no-op outside training).
    pub fn with_dropout(mut self, dropout: &Dropout) -> Self {
        self.dropout = (dropout.prob > 0.0).then(|| dropout.clone());
        self
    }

    /// The same mask for keys with `extra` more keys *before* the existing ones (deep prompts):
    /// the new keys are never padding and get no bias.
    pub fn prepend_keys(self, extra: usize) -> Self {
        if extra == 0 {
            return self;
        }
        let key_padding = self.key_padding.map(|p| {
            let [b, _] = p.dims();
            let kept = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; b * extra], [b, extra]), &p.device());
            Tensor::cat(vec![kept, p], 1)
        });
        let additive = self.additive.map(|a| {
            let [b, h, nq, _] = a.dims();
            Tensor::cat(vec![Tensor::zeros([b, h, nq, extra], &a.device()), a], 3)
        });
        Self { key_padding, additive, dropout: self.dropout }
    }
}

/// Prepends `prompts` `[M, D]`, shared by the batch, to `tokens` `[B, N, D]` as extra keys and
/// values (deep prompts), extending `mask` to match: -> `([B, M + N, D], mask)`.
pub fn prepend_prompts(prompts: Tensor<2>, tokens: Tensor<3>, mask: AttentionMask) -> (Tensor<3>, AttentionMask) {
    let [b, _, d] = tokens.dims();
    let [m, _] = prompts.dims();
    (Tensor::cat(vec![prompts.unsqueeze::<3>().expand([b, m, d]), tokens], 1), mask.prepend_keys(m))
}

/// Multi-head attention on projected q, k, v; heads are channel blocks `h·hd..(h+1)·hd`
/// (head-major, as ViT, BERT, CLIP and Swin lay them out).
///
/// # Shapes
/// q: `[B, N_q, D]`, k: `[B, N_kv, D]`, v: `[B, N_kv, D_v]` -> `[B, N_q, D_v]`.
///
/// # Panics
/// If `heads` does not divide `D` and `D_v`, or the mask's shape does not fit.
pub fn multi_head_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, mask: &AttentionMask) -> Tensor<3> {
    let [b, nq, d] = q.dims();
    let [_, nkv, dv] = v.dims();
    let split = |t: Tensor<3>, n: usize, w: usize| t.reshape([b, n, heads, w / heads]).swap_dims(1, 2);
    let padding = mask.key_padding.clone().map(|p| p.reshape([b, 1, 1, nkv]).expand([b, heads, nq, nkv]));
    let (q, k, v) = (split(q, nq, d), split(k, nkv, d), split(v, nkv, dv));
    let ctx = match mask.dropout.as_ref().filter(|drop| drop.training.is_enabled() && q.device().is_autodiff()) {
        Some(drop) => {
            let mut scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / ((d / heads) as f64).sqrt());
            if let Some(bias) = mask.additive.clone() {
                scores = scores + bias;
            }
            if let Some(padding) = padding {
                scores = scores.mask_fill(padding, f32::NEG_INFINITY);
            }
            drop.forward(burn::tensor::activation::softmax(scores, 3)).matmul(v)
        }
        None => attention(q, k, v, padding, mask.additive.clone(), AttentionModuleOptions::default()),
    };
    ctx.swap_dims(1, 2).reshape([b, nq, dv])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn device() -> Device {
        crate::device::device_from_name("flex").expect("flex")
    }

    /// softmax(q kᵀ/√hd + bias) v by hand, one head, one batch row.
    fn reference(q: &[f32], k: &[f32], v: &[f32], nq: usize, nkv: usize, d: usize, bias: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; nq * d];
        for i in 0..nq {
            let s: Vec<f32> = (0..nkv)
                .map(|j| {
                    (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f32>() / (d as f32).sqrt() + bias[i * nkv + j]
                })
                .collect();
            let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for c in 0..d {
                out[i * d + c] = (0..nkv).map(|j| e[j] / z * v[j * d + c]).sum();
            }
        }
        out
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn cross_attention_with_padding_and_bias_matches_the_formula() {
        let dev = device();
        let (nq, nkv, d) = (3, 5, 4);
        let q = Tensor::<3>::random([1, nq, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<3>::random([1, nkv, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<3>::random([1, nkv, d], Distribution::Normal(0.0, 1.0), &dev);
        let bias = Tensor::<4>::random([1, 1, nq, nkv], Distribution::Normal(0.0, 1.0), &dev);
        let padding =
            Tensor::<2, Bool>::from_data(TensorData::new(vec![false, false, true, false, true], [1, nkv]), &dev);
        let mask = AttentionMask::none().with_key_padding(padding).with_additive(bias.clone());
        let ours = host(multi_head_attention(q.clone(), k.clone(), v.clone(), 1, &mask));
        // Padding = a bias of -inf: the same as dropping keys 2 and 4.
        let mut b = host(bias);
        for i in 0..nq {
            b[i * nkv + 2] = f32::NEG_INFINITY;
            b[i * nkv + 4] = f32::NEG_INFINITY;
        }
        let expected = reference(&host(q), &host(k), &host(v), nq, nkv, d, &b);
        for (a, e) in ours.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-5, "{ours:?} vs {expected:?}");
        }
    }

    #[test]
    fn probability_dropout_acts_only_in_training_and_is_the_formula_otherwise() {
        let dev = device().autodiff();
        let q = Tensor::<3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let padding = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![false, false, true, false, true, false, false, false, false, true], [2, 5]),
            &dev,
        );
        let bias = Tensor::<4>::random([2, 2, 3, 5], Distribution::Normal(0.0, 1.0), &dev);
        let plain = AttentionMask::none().with_key_padding(padding).with_additive(bias);
        let fused = host(multi_head_attention(q.clone(), k.clone(), v.clone(), 2, &plain));
        let run = |drop: Dropout| {
            host(multi_head_attention(q.clone(), k.clone(), v.clone(), 2, &plain.clone().with_dropout(&drop)))
        };
        // The explicit path with an inactive dropout (validation flag) is the fused kernel.
        use burn::module::Module;
        let drop = burn::nn::DropoutConfig::new(0.5).init();
        let explicit = {
            let mut mask = plain.clone();
            mask.dropout = Some(drop.valid());
            host(multi_head_attention(q.clone(), k.clone(), v.clone(), 2, &mask))
        };
        for (a, e) in explicit.iter().zip(&fused) {
            assert!((a - e).abs() < 1e-5, "{explicit:?} vs {fused:?}");
        }
        // Training: probabilities are dropped (and rescaled), so the output moves.
        let trained = run(drop);
        assert!(trained.iter().zip(&fused).any(|(a, e)| (a - e).abs() > 1e-3));
        // A rate of 0 keeps the fused kernel.
        assert_eq!(run(burn::nn::DropoutConfig::new(0.0).init()), fused);
    }

    #[test]
    fn prepended_keys_are_attended_and_unbiased() {
        let dev = device();
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(vec![false, true], [1, 2]), &dev);
        let bias = Tensor::<4>::ones([1, 2, 3, 2], &dev);
        let mask = AttentionMask::none().with_key_padding(padding).with_additive(bias).prepend_keys(2);
        let p: Vec<bool> = mask.key_padding.unwrap().into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(p, vec![false, false, false, true]);
        let a = host(mask.additive.unwrap());
        assert_eq!(a.len(), 2 * 3 * 4);
        assert_eq!(&a[..4], &[0.0, 0.0, 1.0, 1.0]);
    }
}
