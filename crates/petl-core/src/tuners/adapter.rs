//! Bottleneck adapter (Houlsby et al. 2019, the "Adapter" row of the VTAB tables): after the
//! attention and the FFN sub-layers, `h ← h + up(σ(down(h)))` with `down: [D, r]`, `up: [r, D]`.
//! Two initialisations and activations cover the papers: GELU with Xavier `down` and zero `up`
//! (the adapter starts as the identity; the ARC/VTAB baseline), or ReLU with every weight
//! `N(0, std²)` and zero biases (the APT paper's ViLT/METER baseline, `std = 0.01`). Not
//! mergeable.

use crate::ops::gelu;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::hooks::{BlockHooks, BlockId, Layout, SubLayer};

/// Bottleneck adapter hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct BottleneckAdapterConfig {
    /// Bottleneck width `r`.
    #[config(default = 8)]
    pub bottleneck: usize,
    /// The activation between the projections.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// `Some(std)`: both weights `N(0, std²)`, biases zero (APT's baseline); `None`: Xavier
    /// `down`, zero `up` (Houlsby's identity start).
    #[config(default = "None")]
    pub init_std: Option<f64>,
}

/// The non-linearity of an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exact GELU.
    Gelu,
    /// ReLU.
    Relu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::Relu => burn::tensor::activation::relu(x),
        }
    }
}

/// One down–σ–up adapter.
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// `[D, r]` with bias.
    pub down: Linear,
    /// `[r, D]` with bias.
    pub up: Linear,
    /// σ.
    pub relu: bool,
}

impl Bottleneck {
    /// A bottleneck `D → r → D` initialised as `config` says.
    pub fn init(dim: usize, config: &BottleneckAdapterConfig, device: &Device) -> Self {
        let r = config.bottleneck;
        let (down, up) = match config.init_std {
            Some(std) => {
                let n = Initializer::Normal { mean: 0.0, std };
                (n.clone(), n)
            }
            None => (Initializer::XavierUniform { gain: 1.0 }, Initializer::Zeros),
        };
        // APT's initialisation zeroes the biases; Houlsby's keeps Burn's default bias init.
        let zero_bias = |mut l: Linear| {
            if config.init_std.is_some() {
                let n = l.weight.dims()[1];
                l.bias = Some(burn::module::Param::from_tensor(Tensor::zeros([n], device)));
            }
            l
        };
        Self {
            down: zero_bias(LinearConfig::new(dim, r).with_initializer(down).init(device)),
            up: zero_bias(LinearConfig::new(r, dim).with_initializer(up).init(device)),
            relu: config.activation == Activation::Relu,
        }
    }

    /// h: `[B, N, D]` -> `h + up(σ(down(h)))`.
    pub fn forward(&self, h: Tensor<3>) -> Tensor<3> {
        let act = if self.relu { Activation::Relu } else { Activation::Gelu };
        h.clone() + self.up.forward(act.apply(self.down.forward(h)))
    }
}

/// Adapters after attention and FFN in every block (and after the cross-attention of blocks
/// that have one: three per fusion layer).
#[derive(Module, Debug)]
pub struct BottleneckAdapter {
    /// After the attention sub-layer, per block.
    pub attn: Vec<Bottleneck>,
    /// After the cross-attention sub-layer, per block (empty without cross-attention).
    pub cross: Vec<Bottleneck>,
    /// After the FFN sub-layer, per block.
    pub mlp: Vec<Bottleneck>,
}

impl BottleneckAdapterConfig {
    /// Parameters added to a backbone of this layout.
    pub fn num_params(&self, layout: &Layout) -> usize {
        let r = self.bottleneck;
        // After each attention and after the FFN.
        let sites = layout.attentions_per_block() + 1;
        layout.blocks.iter().map(|b| sites * (b.dim * r + r + r * b.dim + b.dim)).sum()
    }

    /// Allocates the adapters for `layout`.
    pub fn init(&self, layout: &Layout, device: &Device) -> BottleneckAdapter {
        let make = || layout.blocks.iter().map(|b| Bottleneck::init(b.dim, self, device)).collect();
        let cross = if layout.cross_attention() { make() } else { Vec::new() };
        BottleneckAdapter { attn: make(), cross, mlp: make() }
    }
}

impl BlockHooks for BottleneckAdapter {
    fn attn_output(&self, at: BlockId, x: Tensor<3>, _query_input: &Tensor<3>) -> Tensor<3> {
        match at.sublayer {
            SubLayer::CrossAttention => self.cross[at.index].forward(x),
            _ => self.attn[at.index].forward(x),
        }
    }
    fn mlp_output(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.mlp[at.index].forward(x)
    }
}
