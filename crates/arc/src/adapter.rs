//! The ARC adapter and the tuner that places it.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use petl_core::hooks::{BlockHooks, BlockId, Layout};
use petl_core::tuners::matmul_tokens;
use serde::{Deserialize, Serialize};

/// Which adapters ARC inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArcVariant {
    /// Attention and MLP adapters in every block (the main method).
    Arc,
    /// Attention adapters only (ARC_att).
    ArcAtt,
}

impl ArcVariant {
    /// Parses `arc` / `arc-att` (also `ARC`, `ARC_att`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "arc" => Some(Self::Arc),
            "arc-att" => Some(Self::ArcAtt),
            _ => None,
        }
    }
}

/// Initialisation of `λ_mlp` (official code: xavier since commit a8407d7, zeros before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LambdaInit {
    /// Xavier-uniform on the `[1, D']` tensor, bound `sqrt(6 / (D' + 1))`.
    Xavier,
    /// Zeros (ARC starts as the identity).
    Zeros,
}

/// Where the MLP adapter sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlpAdapterSite {
    /// FFN branch input, after LN2 (ViT; mergeable into fc1).
    BranchInput,
    /// The residual stream before LN2 (the official Swin code; not mergeable).
    Residual,
}

/// ARC hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct ArcConfig {
    /// Bottleneck `D'`.
    #[config(default = 50)]
    pub bottleneck: usize,
    /// Dropout on the `[B, N, D']` bottleneck activations (0.1 ViT, 0.5 official Swin).
    #[config(default = 0.1)]
    pub adapter_dropout: f64,
    /// ARC or ARC_att.
    #[config(default = "ArcVariant::Arc")]
    pub variant: ArcVariant,
    /// Initialisation of `λ_mlp`.
    #[config(default = "LambdaInit::Xavier")]
    pub lambda_mlp_init: LambdaInit,
    /// Site of the MLP adapter.
    #[config(default = "MlpAdapterSite::BranchInput")]
    pub mlp_site: MlpAdapterSite,
}

/// Per-layer part of one adapter: `λ_l` and `b_l`.
#[derive(Module, Debug)]
pub struct LayerAdapter {
    /// Re-scaling `λ_l: [1, D']`.
    pub rescale: Param<Tensor<2>>,
    /// Bias `b_l: [D]`.
    pub bias: Param<Tensor<1>>,
}

impl LayerAdapter {
    /// `x + Drop(x · (U ⊙_col λ)) · Uᵀ + b`.
    ///
    /// # Shapes
    /// x: `[B, N, D]`, u: `[D, D']` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>, u: Tensor<2>, dropout: &Dropout) -> Tensor<3> {
        let scaled = u.clone() * self.rescale.val();
        let hidden = dropout.forward(matmul_tokens(x.clone(), scaled));
        x + matmul_tokens(hidden, u.transpose()) + self.bias.val().unsqueeze::<3>()
    }

    /// `M = I + U diag(λ) Uᵀ` (`[D, D]`, symmetric): the eval-mode map `A(X) = X M + b`.
    pub fn matrix(&self, u: Tensor<2>) -> Tensor<2> {
        let [d, _] = u.dims();
        let eye = Tensor::<2>::eye(d, &u.device());
        eye + (u.clone() * self.rescale.val()).matmul(u.transpose())
    }
}

/// ARC's parameters for a whole backbone: shared `U`s (one per stage and site) and the
/// per-block `λ`, `b`.
#[derive(Module, Debug)]
pub struct ArcTuner {
    /// `U_att` per stage, `[C_s, D']`.
    pub att_down: Vec<Param<Tensor<2>>>,
    /// `U_mlp` per stage (empty for ARC_att).
    pub mlp_down: Vec<Param<Tensor<2>>>,
    /// Attention adapters, one per block.
    pub att: Vec<LayerAdapter>,
    /// MLP adapters, one per block (empty for ARC_att).
    pub mlp: Vec<LayerAdapter>,
    /// Bottleneck dropout.
    pub dropout: Dropout,
    /// Whether the MLP adapter rewrites the residual stream (official Swin) instead of the
    /// FFN input.
    pub mlp_on_residual: bool,
}

fn uniform<const D: usize>(shape: [usize; D], bound: f64, device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::random(shape, Distribution::Uniform(-bound, bound), device))
}

impl ArcConfig {
    /// Number of adapter sites per block (2 for ARC, 1 for ARC_att).
    pub fn sites(&self) -> usize {
        match self.variant {
            ArcVariant::Arc => 2,
            ArcVariant::ArcAtt => 1,
        }
    }

    /// Adapter parameters on `layout`: `Σ_s sites·C_s·D' + Σ_l sites·(D' + C_l)`.
    pub fn num_params(&self, layout: &Layout) -> usize {
        let shared: usize = (0..layout.num_stages()).map(|s| layout.stage_dim(s) * self.bottleneck).sum();
        let per_layer: usize = layout.blocks.iter().map(|b| self.bottleneck + b.dim).sum();
        self.sites() * (shared + per_layer)
    }

    /// Allocates ARC for `layout` with the official initialisation (`Model/ARC_ViT.py`).
    pub fn init(&self, layout: &Layout, device: &Device) -> ArcTuner {
        let dp = self.bottleneck;
        let down = || {
            (0..layout.num_stages())
                .map(|s| {
                    let d = layout.stage_dim(s);
                    uniform([d, dp], (6.0 / (d + dp) as f64).sqrt(), device)
                })
                .collect::<Vec<_>>()
        };
        let att = layout
            .blocks
            .iter()
            .map(|b| LayerAdapter {
                rescale: Param::from_tensor(Tensor::zeros([1, dp], device)),
                bias: Param::from_tensor(Tensor::zeros([b.dim], device)),
            })
            .collect();
        let (mlp_down, mlp) = match self.variant {
            ArcVariant::ArcAtt => (vec![], vec![]),
            ArcVariant::Arc => (
                down(),
                layout
                    .blocks
                    .iter()
                    .map(|b| LayerAdapter {
                        rescale: match self.lambda_mlp_init {
                            LambdaInit::Xavier => uniform([1, dp], (6.0 / (dp + 1) as f64).sqrt(), device),
                            LambdaInit::Zeros => Param::from_tensor(Tensor::zeros([1, dp], device)),
                        },
                        bias: Param::from_tensor(Tensor::zeros([b.dim], device)),
                    })
                    .collect(),
            ),
        };
        ArcTuner {
            att_down: down(),
            mlp_down,
            att,
            mlp,
            dropout: DropoutConfig::new(self.adapter_dropout).init(),
            mlp_on_residual: self.mlp_site == MlpAdapterSite::Residual,
        }
    }
}

impl ArcTuner {
    fn mlp_adapter(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        match self.mlp.get(at.index) {
            Some(adapter) => adapter.forward(x, self.mlp_down[at.stage].val(), &self.dropout),
            None => x,
        }
    }
}

impl BlockHooks for ArcTuner {
    fn attn_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.att[at.index].forward(x, self.att_down[at.stage].val(), &self.dropout)
    }

    fn mlp_residual(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        if self.mlp_on_residual { self.mlp_adapter(at, x) } else { x }
    }

    fn mlp_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        if self.mlp_on_residual { x } else { self.mlp_adapter(at, x) }
    }
}
