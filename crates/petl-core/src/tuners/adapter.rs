//! Bottleneck adapter (Houlsby et al. 2019, the "Adapter" row of the VTAB tables): after the
//! attention and the FFN sub-layers, `h ← h + up(GELU(down(h)))` with `down: [D, r]`,
//! `up: [r, D]` (zero-initialised, so the adapter starts as the identity). Not mergeable.

use crate::ops::gelu;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use crate::hooks::{BlockHooks, BlockId, Layout};

/// Bottleneck adapter hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct BottleneckAdapterConfig {
    /// Bottleneck width `r`.
    #[config(default = 8)]
    pub bottleneck: usize,
}

/// One down–GELU–up adapter.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// `[D, r]` with bias.
    pub down: Linear,
    /// `[r, D]` with bias, zeros at init.
    pub up: Linear,
}

impl Bottleneck {
    fn init(dim: usize, r: usize, device: &Device) -> Self {
        Self {
            down: LinearConfig::new(dim, r).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device),
            up: LinearConfig::new(r, dim).with_initializer(Initializer::Zeros).init(device),
        }
    }

    /// h: `[B, N, D]` -> `h + up(GELU(down(h)))`.
    pub fn forward(&self, h: Tensor<3>) -> Tensor<3> {
        h.clone() + self.up.forward(gelu(self.down.forward(h)))
    }
}

/// Adapters after attention and FFN in every block.
#[derive(Module, Debug)]
pub struct BottleneckAdapter {
    /// After the attention sub-layer, per block.
    pub attn: Vec<Bottleneck>,
    /// After the FFN sub-layer, per block.
    pub mlp: Vec<Bottleneck>,
}

impl BottleneckAdapterConfig {
    /// Parameters added to a backbone of this layout.
    pub fn num_params(&self, layout: &Layout) -> usize {
        let r = self.bottleneck;
        layout.blocks.iter().map(|b| 2 * (b.dim * r + r + r * b.dim + b.dim)).sum()
    }

    /// Allocates the adapters for `layout`.
    pub fn init(&self, layout: &Layout, device: &Device) -> BottleneckAdapter {
        let make = || layout.blocks.iter().map(|b| Bottleneck::init(b.dim, self.bottleneck, device)).collect();
        BottleneckAdapter { attn: make(), mlp: make() }
    }
}

impl BlockHooks for BottleneckAdapter {
    fn attn_output(&self, at: BlockId, x: Tensor<3>, _query_input: &Tensor<3>) -> Tensor<3> {
        self.attn[at.index].forward(x)
    }
    fn mlp_output(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.mlp[at.index].forward(x)
    }
}
