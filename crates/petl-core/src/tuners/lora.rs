//! LoRA (Hu et al. 2021) on the query and value projections:
//! `y = x W + c + s · (x A) B`, `A ∈ R^{D×r}` (Kaiming-uniform as in PEFT, or `N(0, std²)` as in
//! the APT paper's ViLT/METER code, where `std = 1` and `α = r`, i.e. no scaling), `B ∈ R^{r×D}`
//! (zeros), `s = α / r`. Merging folds `s·A·B` into `W` exactly. An optional dropout on the
//! low-rank path's input (PEFT's `lora_dropout`; 0.1 in the APT code base) acts in training only:
//! `y = x W + c + s · (drop(x) A) B`.

use burn::module::Param;
use burn::nn::{Dropout, Initializer};
use burn::prelude::*;

use super::matmul_tokens;
use crate::hooks::{BlockHooks, BlockId, Layout, LinearSite};
use crate::merge::{LinearSites, add_to_weight};
use crate::method::NotMergeable;

/// LoRA hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// Rank `r`.
    #[config(default = 8)]
    pub rank: usize,
    /// Scale numerator `α` (`s = α / r`).
    #[config(default = 8.0)]
    pub alpha: f64,
    /// `Some(std)`: `A ~ N(0, std²)`; `None`: PEFT's Kaiming-uniform.
    #[config(default = "None")]
    pub a_std: Option<f64>,
    /// Dropout on the low-rank path's input (training only; `None`: none).
    #[config(default = "None")]
    pub dropout: Option<f64>,
}

/// The low-rank pair of one linear.
#[derive(Module, Debug)]
pub struct LoraPair {
    /// Down factor `A: [D_in, r]`.
    pub a: Param<Tensor<2>>,
    /// Up factor `B: [r, D_out]`.
    pub b: Param<Tensor<2>>,
}

impl LoraPair {
    fn init(d_in: usize, d_out: usize, rank: usize, a_std: Option<f64>, device: &Device) -> Self {
        let a = match a_std {
            Some(std) => Initializer::Normal { mean: 0.0, std },
            None => Initializer::KaimingUniform { gain: 1.0 / 3f64.sqrt(), fan_out_only: false },
        };
        Self {
            a: a.init_with([d_in, rank], Some(d_in), Some(rank), device),
            b: Initializer::Zeros.init([rank, d_out], device),
        }
    }

    /// `s · A · B`, the weight delta `[D_in, D_out]`.
    pub fn delta(&self, scale: f64) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(scale)
    }
}

/// LoRA on q and v of every attention: each block's self-attention and, in layouts with
/// cross-attention (fusion layers), its cross-attention too (the query pair reads the block's own
/// stream, the value pair the other stream).
#[derive(Module, Debug)]
pub struct Lora {
    /// Query pairs, one per block.
    pub query: Vec<LoraPair>,
    /// Value pairs, one per block.
    pub value: Vec<LoraPair>,
    /// Cross-attention query pairs, one per block (empty without cross-attention).
    pub cross_query: Vec<LoraPair>,
    /// Cross-attention value pairs, one per block.
    pub cross_value: Vec<LoraPair>,
    /// `s = α / r`.
    pub scale: f64,
    /// Dropout on the low-rank path's input.
    pub dropout: Dropout,
}

impl LoraConfig {
    /// Parameters LoRA adds to a backbone of this layout.
    pub fn num_params(&self, layout: &Layout) -> usize {
        let attentions = layout.attentions_per_block();
        layout.blocks.iter().map(|b| attentions * 2 * 2 * b.dim * self.rank).sum()
    }

    /// Allocates LoRA for `layout`.
    pub fn init(&self, layout: &Layout, device: &Device) -> Lora {
        let pairs =
            || layout.blocks.iter().map(|b| LoraPair::init(b.dim, b.dim, self.rank, self.a_std, device)).collect();
        let cross = || if layout.cross_attention() { pairs() } else { Vec::new() };
        Lora {
            query: pairs(),
            value: pairs(),
            cross_query: cross(),
            cross_value: cross(),
            scale: self.alpha / self.rank as f64,
            dropout: crate::nn::dropout(self.dropout),
        }
    }
}

impl BlockHooks for Lora {
    fn linear(&self, at: BlockId, site: LinearSite, x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        let pair = match site {
            LinearSite::Query => &self.query[at.index],
            LinearSite::Value => &self.value[at.index],
            LinearSite::CrossQuery => &self.cross_query[at.index],
            LinearSite::CrossValue => &self.cross_value[at.index],
            _ => return y,
        };
        y + matmul_tokens(matmul_tokens(self.dropout.forward(x.clone()), pair.a.val()), pair.b.val())
            .mul_scalar(self.scale)
    }
}

impl Lora {
    /// Folds the low-rank updates into the q and v weights of `backbone` (any backbone with
    /// linear sites: ViT, Swin's fused qkv, BERT): the result computes the same outputs with no
    /// extra parameters.
    ///
    /// # Errors
    /// [`NotMergeable`] when the backbone lacks a site or its shapes differ from the updates'.
    pub fn merge_into<B: LinearSites + ?Sized>(&self, backbone: &mut B) -> Result<(), NotMergeable> {
        for i in 0..self.query.len() {
            add_to_weight(backbone, i, LinearSite::Query, self.query[i].delta(self.scale))?;
            add_to_weight(backbone, i, LinearSite::Value, self.value[i].delta(self.scale))?;
        }
        for i in 0..self.cross_query.len() {
            add_to_weight(backbone, i, LinearSite::CrossQuery, self.cross_query[i].delta(self.scale))?;
            add_to_weight(backbone, i, LinearSite::CrossValue, self.cross_value[i].delta(self.scale))?;
        }
        Ok(())
    }
}
