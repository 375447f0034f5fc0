//! Insertion points of the transformer blocks (see the crate docs for the table).

use burn::tensor::Tensor;

use crate::nn::{AttentionMask, multi_head_attention};

/// Which frozen linear layer of a block a [`BlockHooks::linear`] call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearSite {
    /// Query projection (ViT: its own linear; Swin: the q third of the fused qkv).
    Query,
    /// Key projection.
    Key,
    /// Value projection.
    Value,
    /// Attention output projection.
    AttnOut,
    /// First FFN linear.
    Fc1,
    /// Second FFN linear.
    Fc2,
    /// Query projection of a cross-attention sub-layer (queries from this stream).
    CrossQuery,
    /// Key projection of a cross-attention sub-layer (keys from the other stream).
    CrossKey,
    /// Value projection of a cross-attention sub-layer.
    CrossValue,
    /// Output projection of a cross-attention sub-layer.
    CrossOut,
}

/// Which tower of a model a block belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tower {
    /// An image encoder (ViT, Swin, CLIP's vision tower), or a single-stream model's blocks.
    #[default]
    Vision,
    /// A text encoder (BERT, RoBERTa).
    Text,
    /// Fusion layers of a vision-language model.
    Fusion,
    /// A decoder.
    Decoder,
}

/// The sub-layer of a block a hook is called from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubLayer {
    /// Self-attention (its q/k/v/out linears, prompts, attention and branch hooks).
    #[default]
    SelfAttention,
    /// Cross-attention to another stream (two-stream fusion layers, decoders).
    CrossAttention,
    /// The feed-forward sub-layer (its linears and the `mlp_*` hooks).
    Ffn,
}

/// Position of a hook call: tower, stage, block and sub-layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockId {
    /// The tower the block belongs to.
    pub tower: Tower,
    /// Stage (always 0 for ViT; 0..4 for Swin).
    pub stage: usize,
    /// Global block index over all stages of its tower (0..total blocks).
    pub index: usize,
    /// The sub-layer calling (self-attention in layouts).
    pub sublayer: SubLayer,
}

impl BlockId {
    /// Block `index` (in stage `stage`) of the vision tower, at its self-attention.
    pub fn vision(stage: usize, index: usize) -> Self {
        Self { tower: Tower::Vision, stage, index, sublayer: SubLayer::SelfAttention }
    }

    /// Block `index` of the text tower, at its self-attention.
    pub fn text(index: usize) -> Self {
        Self { tower: Tower::Text, stage: 0, index, sublayer: SubLayer::SelfAttention }
    }

    /// The same block, at sub-layer `sublayer`.
    pub fn at(self, sublayer: SubLayer) -> Self {
        Self { sublayer, ..self }
    }

    /// The same block, at its feed-forward sub-layer.
    pub fn ffn(self) -> Self {
        self.at(SubLayer::Ffn)
    }
}

/// Static description of one block: enough to build and count a tuner without the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Where the block sits.
    pub id: BlockId,
    /// Token width `D` of the block.
    pub dim: usize,
    /// Hidden width of its FFN.
    pub mlp_dim: usize,
    /// Whether the block has a cross-attention sub-layer between its self-attention and its
    /// FFN (two-stream fusion layers, decoders). Tuners keep their cross-attention modules in
    /// separate lists indexed like the blocks, so a layout has cross-attention in all of its
    /// blocks or in none ([`Layout::cross_attention`] checks it).
    pub cross_attention: bool,
}

impl BlockInfo {
    /// A block without cross-attention.
    pub fn new(id: BlockId, dim: usize, mlp_dim: usize) -> Self {
        Self { id, dim, mlp_dim, cross_attention: false }
    }
}

/// The layout of a backbone: its blocks in forward order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One entry per block.
    pub blocks: Vec<BlockInfo>,
    /// Width of the pooled feature the head reads.
    pub feature_dim: usize,
}

impl Layout {
    /// Number of stages (distinct `stage` values).
    pub fn num_stages(&self) -> usize {
        self.blocks.iter().map(|b| b.id.stage + 1).max().unwrap_or(0)
    }

    /// Whether the blocks have cross-attention sub-layers (tuners then allocate their
    /// cross-attention modules, one per block).
    ///
    /// # Panics
    /// If only some blocks have one (no backbone is built that way).
    pub fn cross_attention(&self) -> bool {
        let n = self.blocks.iter().filter(|b| b.cross_attention).count();
        assert!(n == 0 || n == self.blocks.len(), "a layout has cross-attention in all blocks or in none");
        n > 0
    }

    /// Attention sub-layers per block: 2 with cross-attention, else 1 (what per-attention
    /// tuners allocate).
    pub fn attentions_per_block(&self) -> usize {
        if self.cross_attention() { 2 } else { 1 }
    }

    /// Width of stage `s`.
    ///
    /// # Panics
    /// If the stage has no block.
    pub fn stage_dim(&self, s: usize) -> usize {
        self.blocks.iter().find(|b| b.id.stage == s).expect("stage exists").dim
    }
}

/// Hooks a transformer block calls at its insertion points. Every method defaults to the
/// identity. All tensors are `[batch, tokens, dim]` (Swin: tokens of the stage, `dim` = stage
/// width); the returned tensor must keep the shape.
///
/// Each call names its position ([`BlockId`]: tower, stage, block, sub-layer — the `mlp_*`
/// hooks and the FFN linears are called at [`SubLayer::Ffn`]); the attention hooks also get the
/// masks. Per-forward context that a method needs beyond that (the task id of a multi-task
/// batch, for Hyperformer-style adapters) is carried by a borrowed *view* of the tuner that
/// implements this trait for one forward pass (`tuner.for_task(id)`), so the trait and every
/// backbone stay unchanged.
pub trait BlockHooks {
    /// Branch input of the attention sub-layer, after LN1.
    fn attn_input(&self, _at: BlockId, x: Tensor<3>) -> Tensor<3> {
        x
    }
    /// Extra key/value tokens for this block's attention (deep prompt tuning): `M` rows `[M, D]`
    /// that join the block's tokens *before* LN1 and the frozen key and value projections, as
    /// keys and values only (prepended; the key mask is extended; they produce no output rows).
    fn kv_prompts(&self, _at: BlockId) -> Option<Tensor<2>> {
        None
    }
    /// The attention computation on projected q `[B, N_q, D]`, k and v `[B, N_kv, D]` with
    /// `heads` heads -> `[B, N_q, D]`; the default is the shared kernel.
    fn attention(
        &self,
        _at: BlockId,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        heads: usize,
        mask: &AttentionMask,
    ) -> Tensor<3> {
        multi_head_attention(q, k, v, heads, mask)
    }
    /// Output of the attention branch (after the output projection), before the branch's
    /// dropout and the residual add; `query_input` is the branch's query-side input (after LN1
    /// and `attn_input`).
    fn attn_output(&self, _at: BlockId, x: Tensor<3>, _query_input: &Tensor<3>) -> Tensor<3> {
        x
    }
    /// The residual stream right after an attention sub-layer — pre-LN blocks: `x + attn`;
    /// post-LN blocks (BERT, fusion layers): after that sub-layer's LayerNorm — with the
    /// sub-layer's branch input `input` (pre-LN: after LN1; post-LN: the sub-layer's input, after
    /// `attn_input`). A parallel branch added here reads the same input as the attention.
    fn attn_residual(&self, _at: BlockId, x: Tensor<3>, _input: &Tensor<3>) -> Tensor<3> {
        x
    }
    /// Residual stream between the two sub-layers, before LN2.
    fn mlp_residual(&self, _at: BlockId, x: Tensor<3>) -> Tensor<3> {
        x
    }
    /// Branch input of the FFN sub-layer, after LN2.
    fn mlp_input(&self, _at: BlockId, x: Tensor<3>) -> Tensor<3> {
        x
    }
    /// Output of the FFN branch, before its dropout and the residual add.
    fn mlp_output(&self, _at: BlockId, x: Tensor<3>) -> Tensor<3> {
        x
    }
    /// After a frozen linear `y = x W + c` of the block; `x` is its input.
    fn linear(&self, _at: BlockId, _site: LinearSite, _x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        y
    }
}

/// The identity: the plain frozen backbone (a module without parameters).
#[derive(burn::module::Module, Debug, Default)]
pub struct NoHooks;

impl BlockHooks for NoHooks {}
