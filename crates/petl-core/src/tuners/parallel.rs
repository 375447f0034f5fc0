//! Scaled parallel adapter (He, Zhou, Ma, Berg-Kirkpatrick, Neubig, *Towards a Unified View of
//! Parameter-Efficient Transfer Learning*, ICLR 2022; the "Scaled PA" baseline of the APT
//! paper): a bottleneck beside the attention sub-layer, reading that sub-layer's input,
//!
//! `PA(u) = s · (up(ReLU(down(LN_pa(u)))))`, added to the attention branch output,
//!
//! with its own LayerNorm on the input, no internal residual, the scalar `s` (4.0) multiplying
//! the up-projection's bias too, weights `N(0, 0.02²)`, biases zero, LN `γ = 1`, `β = 0`. In a
//! pre-LN block (ViLT) `u = LN1(x)` and the sum `W_o·MHSA(u) + PA(u)` joins the residual. Not
//! mergeable. In a post-LN block (METER's fusion layers) the released APT code adds it after the
//! sub-layer's LayerNorm: `LN(x + W_o·MHSA(u)) + PA(u)`.

use burn::module::Param;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::hooks::{BlockHooks, BlockId, Layout, SubLayer};

/// Scaled parallel adapter hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct ParallelAdapterConfig {
    /// Bottleneck width.
    #[config(default = 96)]
    pub bottleneck: usize,
    /// The output scale `s`.
    #[config(default = 4.0)]
    pub scale: f64,
    /// Epsilon of the adapter's LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

/// One parallel adapter.
#[derive(Module, Debug)]
pub struct ParallelBranch {
    /// LayerNorm on the adapter input.
    pub norm: LayerNorm,
    /// `[D, r]` with bias.
    pub down: Linear,
    /// `[r, D]` with bias.
    pub up: Linear,
    /// `s`.
    pub scale: f64,
}

impl ParallelBranch {
    /// u: `[B, N, D]` -> `s · up(ReLU(down(LN(u))))`.
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        let h = burn::tensor::activation::relu(self.down.forward(self.norm.forward(u)));
        self.up.forward(h).mul_scalar(self.scale)
    }
}

/// A parallel adapter beside every attention sub-layer (and every cross-attention sub-layer
/// of layouts that have them).
#[derive(Module, Debug)]
pub struct ParallelAdapter {
    /// One per block.
    pub branches: Vec<ParallelBranch>,
    /// Beside the cross-attention, one per block (empty without cross-attention).
    pub cross: Vec<ParallelBranch>,
}

impl ParallelAdapterConfig {
    /// Parameters added to a backbone of this layout: per block `2·D·r + r + D` (projections)
    /// `+ 2·D` (LayerNorm).
    pub fn num_params(&self, layout: &Layout) -> usize {
        let r = self.bottleneck;
        let sites = layout.attentions_per_block();
        layout.blocks.iter().map(|b| sites * (2 * b.dim * r + r + b.dim + 2 * b.dim)).sum()
    }

    /// One branch of width `dim`.
    pub fn init_branch(&self, dim: usize, device: &Device) -> ParallelBranch {
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let lin = |i: usize, o: usize| {
            let mut l = LinearConfig::new(i, o).with_initializer(normal.clone()).init(device);
            l.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
            l
        };
        ParallelBranch {
            norm: LayerNormConfig::new(dim).with_epsilon(self.layer_norm_eps).init(device),
            down: lin(dim, self.bottleneck),
            up: lin(self.bottleneck, dim),
            scale: self.scale,
        }
    }

    /// Allocates the adapters for `layout`.
    pub fn init(&self, layout: &Layout, device: &Device) -> ParallelAdapter {
        let make = || layout.blocks.iter().map(|b| self.init_branch(b.dim, device)).collect();
        ParallelAdapter { branches: make(), cross: if layout.cross_attention() { make() } else { Vec::new() } }
    }
}

impl BlockHooks for ParallelAdapter {
    /// Added to the residual stream after the attention sub-layer: in a pre-LN block this is
    /// `x + (W_o·MHSA(u) + PA(u))`; in a post-LN block `LN(x + W_o·MHSA(u)) + PA(u)`, the
    /// placement of the APT paper's released METER code.
    fn attn_residual(&self, at: BlockId, x: Tensor<3>, input: &Tensor<3>) -> Tensor<3> {
        let branch = match at.sublayer {
            SubLayer::CrossAttention => &self.cross[at.index],
            _ => &self.branches[at.index],
        };
        x + branch.forward(input.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_apt_papers_scaled_pa() {
        let layout = crate::vit::VitConfig::vit_b16().layout();
        assert_eq!(ParallelAdapterConfig::new().num_params(&layout), 1_798_272);
        let device = crate::device::device_from_name("flex").expect("flex");
        let pa =
            ParallelAdapterConfig::new().with_bottleneck(4).init(&crate::vit::VitConfig::tiny_test().layout(), &device);
        use burn::module::Module;
        assert_eq!(
            pa.num_params(),
            ParallelAdapterConfig::new().with_bottleneck(4).num_params(&crate::vit::VitConfig::tiny_test().layout())
        );
    }
}
