//! The APT module (`approximate_prompt` of the official code, identical in its ViLT and METER
//! code bases).
//!
//! Deep prompt tuning appends `M` learnable tokens to every attention's keys and values, at a
//! cost of `3·M·d² + 2·N·M·d` per layer. APT replaces them with an additive term computed
//! beside the frozen attention, after its output projection. For an attention output `O` and
//! that attention's query-side input `H` (both `[B, N, d]`):
//!
//! ```text
//! K_P = P + (P·A)·B               [M, d]    input-independent; K_P = P at init (B = 0)
//! S   = ReLU(H · K_Pᵀ)            [B, N, M] no 1/√d, no softmax, no mask, one "head" over d
//! E   = S · P                     [B, N, d] the values are the raw prompts
//! w   = stopgrad(max_m S)         [B, N, 1]
//! out = (O + w ⊙ E) · exp(s)      the scale multiplies the frozen branch too
//! ```
//!
//! Parameters per module: `P: [M, d]` (`mm_tokens`, `N(0, 0.02²)`), `A: [d, r]` (`mm.0`,
//! `N(0, 1)`; torch stores `[r, d]`), `B: [r, d]` (`mm.1`, zeros), `s: [1]` (`scale`, 0) —
//! `M·d + 2·d·r + 1`, 1,916,940 on ViLT-B/32 with M = 200, r = 4. The dropout on `S` of the
//! official code has p = 0 in every released configuration and is not implemented. Cost:
//! `2·N·M·d + 2·M·d·r` multiply-adds.

use burn::module::Param;
use burn::nn::Initializer;
use burn::prelude::*;
use burn::tensor::activation::relu;

use petl_core::tuners::matmul_tokens;

/// One APT module.
#[derive(Module, Debug)]
pub struct AptModule {
    /// Prompts `P: [M, d]`.
    pub prompts: Param<Tensor<2>>,
    /// Low-rank down factor `A: [d, r]`.
    pub a: Param<Tensor<2>>,
    /// Low-rank up factor `B: [r, d]`.
    pub b: Param<Tensor<2>>,
    /// Log-scale `s: [1]`.
    pub scale: Param<Tensor<1>>,
}

impl AptModule {
    /// A module of `num_prompts` prompts and rank `rank` for width `dim`, initialised as the
    /// official code does; `freeze_scale` leaves `s` at 0 without gradient (the released METER
    /// code's trainable filter).
    pub fn init(dim: usize, num_prompts: usize, rank: usize, freeze_scale: bool, device: &Device) -> Self {
        Self::init_with(dim, num_prompts, rank, freeze_scale, None, 0.02, device)
    }

    /// As [`AptModule::init`]; `mm_std: Some(σ)` draws both `A` and `B` from `N(0, σ²)`: what
    /// the released METER code trains from, as it re-initialises every Linear inside the fusion
    /// layers after building them (`meter_module_apt.py`, `apply(init_weights)`); `prompt_std`
    /// is the σ of `P ~ N(0, σ²)` (officially 0.02).
    pub fn init_with(
        dim: usize,
        num_prompts: usize,
        rank: usize,
        freeze_scale: bool,
        mm_std: Option<f64>,
        prompt_std: f64,
        device: &Device,
    ) -> Self {
        let scale = Initializer::Zeros.init([1], device);
        let (a, b) = match mm_std {
            Some(std) => (Initializer::Normal { mean: 0.0, std }, Initializer::Normal { mean: 0.0, std }),
            None => (Initializer::Normal { mean: 0.0, std: 1.0 }, Initializer::Zeros),
        };
        Self {
            prompts: Initializer::Normal { mean: 0.0, std: prompt_std }.init([num_prompts, dim], device),
            a: a.init([dim, rank], device),
            b: b.init([rank, dim], device),
            scale: if freeze_scale { scale.set_require_grad(false) } else { scale },
        }
    }

    /// `K_P = P + (P·A)·B`: `[M, d]`.
    pub fn prompt_keys(&self) -> Tensor<2> {
        let p = self.prompts.val();
        p.clone() + p.matmul(self.a.val()).matmul(self.b.val())
    }

    /// `out = (O + stopgrad(max_m S) ⊙ S·P) · exp(s)` with `S = ReLU(H·K_Pᵀ)`.
    ///
    /// # Shapes
    /// o, h: `[B, N, d]` -> `[B, N, d]`.
    ///
    /// Computed as `O·e^s + ((w·e^s) ⊙ S)·P`: the same value, with the per-token weight and the
    /// scale applied to the `[B, N, M]` scores instead of the wider `[B, N, d]` diffusion.
    pub fn forward(&self, o: Tensor<3>, h: Tensor<3>) -> Tensor<3> {
        let scores = relu(matmul_tokens(h, self.prompt_keys().transpose()));
        let scale = self.scale.val().exp().reshape([1, 1, 1]);
        let weight = scores.clone().max_dim(2).detach() * scale.clone();
        o * scale + matmul_tokens(scores * weight, self.prompts.val())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AptConfig;

    fn std_of(t: Tensor<2>) -> f64 {
        let v = petl_core::weights::HostTensor::from_tensor(&t).data;
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn prompts_start_at_the_configured_spread_and_the_width_matched_one_keeps_the_official_score_scale() {
        let device = petl_core::device::device_from_name("flex").unwrap();
        let official = AptModule::init(64, 200, 4, false, &device);
        let s = std_of(official.prompts.val());
        assert!((s - 0.02).abs() < 0.002, "official σ 0.02, drawn {s}");
        let wide = AptModule::init_with(64, 200, 4, false, None, 0.1, &device);
        let s = std_of(wide.prompts.val());
        assert!((s - 0.1).abs() < 0.01, "σ 0.1, drawn {s}");
        assert_eq!(AptConfig::width_matched_prompt_std(768), 0.02);
        // σ·√d is the spread of the scores h·p for a layer-normalised h (|h|² = d).
        let at = |d: usize| AptConfig::width_matched_prompt_std(d) * (d as f64).sqrt();
        assert!((at(64) - at(768)).abs() < 1e-12 && (at(192) - at(768)).abs() < 1e-12);
        // The config's default is the official value and reaches the modules.
        assert_eq!(AptConfig::new().prompt_std, 0.02);
    }
}
