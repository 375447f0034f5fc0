//! Swin transformer, numerically the timm-0.6.13 / Microsoft `swin_base_patch4_window7_224`
//! (timm 0.6.13 `swin_transformer.py`, as the official ARC Swin code uses it): patch-embed conv +
//! LayerNorm, no absolute position embedding,
//! stages of (shifted-)window attention blocks with a relative position bias, PatchMerging
//! between stages, final LayerNorm and mean pooling over tokens.
//!
//! Details that matter for parity:
//! - Window side `w` and shift `s = w / 2` (odd blocks of a stage) are clamped per stage: when
//!   the stage resolution `r ≤ w`, the window is `r` and there is no shift (and no mask).
//! - Relative position bias table `[(2w−1)², heads]` indexed by `(Δh + w−1)(2w−1) + (Δw + w−1)`
//!   (Δ = query − key coordinate inside the window); the index is computed on the host and is a
//!   constant of the module, not a parameter.
//! - Shifted blocks roll the token grid by `−s` before window partition and by `+s` after
//!   window reverse; tokens of different regions of a shifted window get a −100 additive mask.
//! - PatchMerging concatenates `[x(0::2,0::2), x(1::2,0::2), x(0::2,1::2), x(1::2,1::2)]` on
//!   channels, then LN(4C) and Linear(4C → 2C, no bias).
//!
//! Implementation choice: the fused qkv and the output projection are per-token maps, so they
//! commute with the cyclic shift and the window partition. They are applied on the stage's
//! token sequence `[B, H·W, C]` (row-major grid order), and only q, k, v are rolled and
//! partitioned. Every [`BlockHooks`] call therefore sees `[B, tokens of the stage, C]`, as
//! for ViT; the result is the same as timm's, which projects inside the windows.

use crate::ops::gelu;
use burn::module::{Flag, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};

use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, BlockInfo, Layout, LinearSite};
use crate::nn::AttentionMask;

/// Additive attention mask between tokens of different regions of a shifted window.
pub const SHIFTED_WINDOW_MASK: f32 = -100.0;

/// Configuration of a Swin backbone (no head).
#[derive(Config, Debug, PartialEq)]
pub struct SwinConfig {
    /// Square input size.
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Width of stage 0 (doubles per stage).
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Heads per stage.
    pub num_heads: Vec<usize>,
    /// Window side.
    pub window_size: usize,
    /// FFN width ratio.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Stochastic depth rate of the last block (linear from 0).
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl SwinConfig {
    /// Swin-B, window 7, 224 px.
    pub fn swin_b() -> Self {
        Self::new(224, 4, 128, vec![2, 2, 18, 2], vec![4, 8, 16, 32], 7)
    }
    /// The tiny parity model (`tools/fixtures/swin_tiny.py`): 32 px, patch 4, embed 16, depths (2, 2),
    /// heads (2, 4), window 4.
    pub fn tiny_test() -> Self {
        Self::new(32, 4, 16, vec![2, 2], vec![2, 4], 4).with_drop_path_rate(0.0)
    }
    /// Width of stage `s`.
    pub fn stage_dim(&self, s: usize) -> usize {
        self.embed_dim << s
    }
    /// Block layout.
    pub fn layout(&self) -> Layout {
        let mut blocks = vec![];
        for (s, &depth) in self.depths.iter().enumerate() {
            for _ in 0..depth {
                let dim = self.stage_dim(s);
                blocks.push(BlockInfo::new(BlockId::vision(s, blocks.len()), dim, dim * self.mlp_ratio));
            }
        }
        Layout { blocks, feature_dim: self.stage_dim(self.depths.len() - 1) }
    }

    /// Patches per side after the patch embedding (stage 0 resolution).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Token grid side of stage `s`: `grid / 2^s`.
    pub fn stage_resolution(&self, s: usize) -> usize {
        self.grid() >> s
    }

    /// Effective `(window side, shift of the odd blocks)` of stage `s`: `(w, w / 2)`, or
    /// `(r, 0)` when the stage resolution `r ≤ w`.
    pub fn stage_window(&self, s: usize) -> (usize, usize) {
        let r = self.stage_resolution(s);
        if r <= self.window_size { (r, 0) } else { (self.window_size, self.window_size / 2) }
    }

    /// Stochastic depth rate of every block in forward order: linspace(0, rate, total blocks).
    pub fn drop_path_rates(&self) -> Vec<f64> {
        let total: usize = self.depths.iter().sum();
        (0..total).map(|i| if total > 1 { self.drop_path_rate * i as f64 / (total - 1) as f64 } else { 0.0 }).collect()
    }

    /// Checks the shape constraints: patch divides the image, one head count per stage, heads
    /// divide the width, even resolutions before every PatchMerging, windows tile each stage.
    pub fn validate(&self) -> crate::Result<()> {
        let err = |msg: String| Err(crate::Error::Config(msg));
        let sizes = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("embed_dim", self.embed_dim),
            ("window_size", self.window_size),
            ("mlp_ratio", self.mlp_ratio),
            ("in_channels", self.in_channels),
        ];
        let per_stage = self.depths.iter().chain(&self.num_heads).map(|&v| ("depths/num_heads", v));
        if let Some((name, v)) = sizes.into_iter().chain(per_stage).find(|(_, v)| *v > crate::model::MAX_DIM) {
            return err(format!("{name} {v} is larger than {}: not a real model", crate::model::MAX_DIM));
        }
        // Stage s has width embed_dim · 2^s: more stages than that doubling allows is no model.
        if self.depths.len() > 8 || self.depths.iter().sum::<usize>() > 1 << 10 {
            return err(format!("depths {:?}: at most 8 stages of 1024 blocks in all", self.depths));
        }
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return err(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return err(format!(
                "Swin needs one head count per stage: depths {:?}, num_heads {:?}",
                self.depths, self.num_heads
            ));
        }
        if self.window_size == 0 || self.mlp_ratio == 0 {
            return err("window_size and mlp_ratio must be positive".into());
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return err(format!("drop_path_rate {} is not in [0, 1)", self.drop_path_rate));
        }
        for s in 0..self.depths.len() {
            let (dim, heads, r) = (self.stage_dim(s), self.num_heads[s], self.stage_resolution(s));
            if heads == 0 || dim % heads != 0 {
                return err(format!("stage {s}: width {dim} is not divisible by {heads} heads"));
            }
            if r == 0 || r % self.stage_window(s).0 != 0 {
                return err(format!(
                    "stage {s}: resolution {r} is not a multiple of the window {} (padding is not supported)",
                    self.window_size
                ));
            }
            if s + 1 < self.depths.len() && r % 2 != 0 {
                return err(format!("stage {s}: odd resolution {r} cannot be patch-merged"));
            }
        }
        Ok(())
    }

    /// Parameter count of the backbone (no head), computed without allocating. Relative
    /// position bias tables are parameters; their index and the attention masks are not.
    pub fn num_params(&self) -> usize {
        let (c0, p) = (self.embed_dim, self.patch_size);
        let embed = c0 * self.in_channels * p * p + c0 + 2 * c0;
        let stages: usize = (0..self.depths.len())
            .map(|s| {
                let c = self.stage_dim(s);
                let m = c * self.mlp_ratio;
                let w = self.stage_window(s).0;
                let table = (2 * w - 1) * (2 * w - 1) * self.num_heads[s];
                let block = 4 * c + (3 * c * c + 3 * c) + table + (c * c + c) + (c * m + m) + (m * c + c);
                let merge = if s + 1 < self.depths.len() { 2 * 4 * c + 4 * c * 2 * c } else { 0 };
                self.depths[s] * block + merge
            })
            .sum();
        let last = self.stage_dim(self.depths.len() - 1);
        embed + stages + 2 * last
    }

    /// Allocates the backbone with timm-style random initialisation (Linear weights and bias
    /// tables N(0, 0.02), biases 0, LayerNorm 1/0).
    ///
    /// # Panics
    /// If [`SwinConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Swin {
        self.validate().expect("valid Swin config");
        let ln = |d: usize| LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let lin = |i: usize, o: usize, bias: bool| {
            LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device)
        };
        let rates = self.drop_path_rates();
        let mut stages = Vec::with_capacity(self.depths.len());
        for (s, &depth) in self.depths.iter().enumerate() {
            let (c, heads, r) = (self.stage_dim(s), self.num_heads[s], self.stage_resolution(s));
            let m = c * self.mlp_ratio;
            let (w, shift) = self.stage_window(s);
            let index = relative_position_index(w);
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [w * w * w * w]), device);
            let mask = (shift > 0).then(|| {
                let n = w * w;
                let nw = (r / w) * (r / w);
                Tensor::<3>::from_data(TensorData::new(shifted_window_mask(r, w, shift), [nw, n, n]), device)
            });
            let first = stages.iter().map(|st: &SwinStage| st.blocks.len()).sum::<usize>();
            let blocks = (0..depth)
                .map(|b| {
                    let shifted = b % 2 == 1 && shift > 0;
                    SwinBlock {
                        norm1: ln(c),
                        qkv: lin(c, 3 * c, true),
                        relative_position_bias_table: Param::from_tensor(Tensor::random(
                            [(2 * w - 1) * (2 * w - 1), heads],
                            Distribution::Normal(0.0, 0.02),
                            device,
                        )),
                        proj: lin(c, c, true),
                        norm2: ln(c),
                        fc1: lin(c, m, true),
                        fc2: lin(m, c, true),
                        drop_path: DropPath::new(rates[first + b]),
                        num_heads: heads,
                        resolution: r,
                        window_size: w,
                        shift_size: if shifted { shift } else { 0 },
                        relative_position_index: index.clone(),
                        attn_mask: if shifted { mask.clone() } else { None },
                    }
                })
                .collect();
            let downsample = (s + 1 < self.depths.len()).then(|| PatchMerging {
                norm: ln(4 * c),
                reduction: lin(4 * c, 2 * c, false),
                resolution: r,
            });
            stages.push(SwinStage { blocks, downsample });
        }
        Swin {
            patch_embed: Conv2dConfig::new([self.in_channels, self.embed_dim], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .init(device),
            patch_norm: ln(self.embed_dim),
            stages,
            norm: ln(self.stage_dim(self.depths.len() - 1)),
            image_size: self.image_size,
        }
    }
}

/// Relative position index of a `w × w` window, row-major over (query token, key token):
/// `(Δh + w−1)(2w−1) + (Δw + w−1)` with Δ = query − key coordinate. Length `w⁴`, values in
/// `0..(2w−1)²`.
pub fn relative_position_index(w: usize) -> Vec<i64> {
    let n = w * w;
    let mut index = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = i / w + w - 1 - j / w;
            let dw = i % w + w - 1 - j % w;
            index.push((dh * (2 * w - 1) + dw) as i64);
        }
    }
    index
}

/// Additive mask of the shifted windows of an `r × r` grid (window `w`, shift `s > 0`), in the
/// rolled frame, windows row-major: 0 between tokens of the same region, [`SHIFTED_WINDOW_MASK`]
/// otherwise. Regions per axis are `[0, r−w)`, `[r−w, r−s)`, `[r−s, r)`, as in timm.
///
/// # Shapes
/// - output: `[(r/w)², w², w²]`, flattened row-major.
pub fn shifted_window_mask(r: usize, w: usize, s: usize) -> Vec<f32> {
    let region = |p: usize| {
        if p < r - w {
            0
        } else if p < r - s {
            1
        } else {
            2
        }
    };
    let (side, n) = (r / w, w * w);
    let mut mask = Vec::with_capacity(side * side * n * n);
    for wh in 0..side {
        for ww in 0..side {
            let label = |t: usize| region(wh * w + t / w) * 3 + region(ww * w + t % w);
            for i in 0..n {
                for j in 0..n {
                    mask.push(if label(i) == label(j) { 0.0 } else { SHIFTED_WINDOW_MASK });
                }
            }
        }
    }
    mask
}

/// Stochastic depth: drops the whole residual branch of a sample with probability `prob` and
/// scales the kept ones by `1 / (1 − prob)`. Active only while [`DropPath::training`] is set
/// and the input lives on an autodiff device (like `burn::nn::Dropout`); otherwise the identity.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability of dropping a sample's branch.
    pub prob: f64,
    /// Whether to behave as during training. Cleared by [`Module::freeze`] traversals.
    pub training: Param<Flag>,
}

impl DropPath {
    /// A drop-path layer with rate `prob`, in training mode.
    ///
    /// # Panics
    /// If `prob` is not in `[0, 1)`.
    pub fn new(prob: f64) -> Self {
        assert!(prob.is_finite() && (0.0..1.0).contains(&prob), "drop-path rate {prob} is not in [0, 1)");
        Self { prob, training: Param::from_bool(true) }
    }

    /// Applies one Bernoulli(1 − prob) draw per sample.
    ///
    /// # Shapes
    /// - x: `[B, N, C]` -> `[B, N, C]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.prob == 0.0 {
            return x;
        }
        let keep = 1.0 - self.prob;
        let [b, _, _] = x.dims();
        let mask = Tensor::<3>::random([b, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask * (1.0 / keep)
    }
}

/// One Swin block: (shifted-)window attention with relative position bias, then the FFN, both
/// pre-LN with stochastic depth on the residual branches.
#[derive(Module, Debug)]
pub struct SwinBlock {
    /// LN before attention.
    pub norm1: LayerNorm,
    /// Fused q, k, v projection `[C, 3C]` (output channels q | k | v, heads contiguous).
    pub qkv: Linear,
    /// Relative position bias table `[(2w−1)², heads]`.
    pub relative_position_bias_table: Param<Tensor<2>>,
    /// Attention output projection `[C, C]`.
    pub proj: Linear,
    /// LN before the FFN.
    pub norm2: LayerNorm,
    /// FFN up-projection `[C, M]`.
    pub fc1: Linear,
    /// FFN down-projection `[M, C]`.
    pub fc2: Linear,
    /// Stochastic depth of both residual branches.
    pub drop_path: DropPath,
    /// Number of heads.
    pub num_heads: usize,
    /// Side `r` of the stage's token grid.
    pub resolution: usize,
    /// Window side `w` (already clamped to `r`).
    pub window_size: usize,
    /// Cyclic shift `s` (0: regular windows).
    pub shift_size: usize,
    /// Constant (not a parameter): index into the bias table, `[w⁴]`.
    pub relative_position_index: Tensor<1, Int>,
    /// Constant (not a parameter): shifted-window mask `[nW, w², w²]`, present iff `s > 0`.
    pub attn_mask: Option<Tensor<3>>,
}

impl SwinBlock {
    /// x: `[B, r·r, C]` (row-major grid) -> `[B, r·r, C]`.
    pub fn forward(&self, x: Tensor<3>, hooks: &dyn BlockHooks, at: BlockId) -> Tensor<3> {
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let y = layer.forward(input.clone());
            hooks.linear(if matches!(site, LinearSite::Fc1 | LinearSite::Fc2) { at.ffn() } else { at }, site, &input, y)
        };
        let c = x.dims()[2];
        let y = hooks.attn_input(at, self.norm1.forward(x.clone()));
        let qkv = self.qkv.forward(y.clone());
        let q = hooks.linear(at, LinearSite::Query, &y, qkv.clone().narrow(2, 0, c));
        let k = hooks.linear(at, LinearSite::Key, &y, qkv.clone().narrow(2, c, c));
        let v = hooks.linear(at, LinearSite::Value, &y, qkv.narrow(2, 2 * c, c));
        // Deep prompts: projected by the frozen LN1 and k/v thirds of qkv, shared by every window.
        let prompts = hooks.kv_prompts(at).map(|p| {
            let normed = self.norm1.forward(p.unsqueeze::<3>());
            let p = self.qkv.forward(normed.clone());
            let [_, m, _] = p.dims();
            let pk = hooks.linear(at, LinearSite::Key, &normed, p.clone().narrow(2, c, c));
            let pv = hooks.linear(at, LinearSite::Value, &normed, p.narrow(2, 2 * c, c));
            (pk, pv, m)
        });
        let ctx = self.window_attention(q, k, v, prompts, hooks, at);
        let h = hooks.attn_output(at, lin(&self.proj, LinearSite::AttnOut, ctx), &y);
        let x = x + self.drop_path.forward(h);
        let x = hooks.attn_residual(at, x, &y);
        let x = hooks.mlp_residual(at.ffn(), x);
        let z = hooks.mlp_input(at.ffn(), self.norm2.forward(x.clone()));
        let h = gelu(lin(&self.fc1, LinearSite::Fc1, z));
        let h = hooks.mlp_output(at.ffn(), lin(&self.fc2, LinearSite::Fc2, h));
        x + self.drop_path.forward(h)
    }

    /// Multi-head attention inside the (shifted) windows, on projected q, k, v (through the
    /// `attention` hook, once for all windows); the result is back in grid order, before the
    /// output projection. `prompts` are projected prompt keys and values `[1, M, C]` prepended
    /// to every window's keys and values.
    ///
    /// # Shapes
    /// - q, k, v: `[B, r·r, C]` -> `[B, r·r, C]`.
    pub fn window_attention(
        &self,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        prompts: Option<(Tensor<3>, Tensor<3>, usize)>,
        hooks: &dyn BlockHooks,
        at: BlockId,
    ) -> Tensor<3> {
        let [b, l, c] = q.dims();
        let (r, w, s) = (self.resolution, self.window_size, self.shift_size as i64);
        let to_windows = |t: Tensor<3>| {
            let t = t.reshape([b, r, r, c]);
            let t = if s > 0 { t.roll(&[-s, -s], &[1, 2]) } else { t };
            window_partition(t, w)
        };
        let mask = AttentionMask::none().with_additive(self.attention_bias(b));
        let (q, k, v) = (to_windows(q), to_windows(k), to_windows(v));
        let (k, v, mask) = match prompts {
            Some((pk, pv, m)) => {
                let windows = k.dims()[0];
                let each = |p: Tensor<3>| p.expand([windows, m, c]);
                (Tensor::cat(vec![each(pk), k], 1), Tensor::cat(vec![each(pv), v], 1), mask.prepend_keys(m))
            }
            None => (k, v, mask),
        };
        let ctx = hooks.attention(at, q, k, v, self.num_heads, &mask);
        let ctx = window_reverse(ctx, b, r, w);
        let ctx = if s > 0 { ctx.roll(&[s, s], &[1, 2]) } else { ctx };
        ctx.reshape([b, l, c])
    }

    /// Relative position bias plus the shifted-window mask, repeated over the batch.
    ///
    /// # Shapes
    /// - output: `[B·nW, heads, w², w²]` (window-major within each sample, as the partition).
    fn attention_bias(&self, batch: usize) -> Tensor<4> {
        let (w, h) = (self.window_size, self.num_heads);
        let (n, nw) = (w * w, (self.resolution / w) * (self.resolution / w));
        let rel = self
            .relative_position_bias_table
            .val()
            .select(0, self.relative_position_index.clone())
            .reshape([n, n, h])
            .permute([2, 0, 1])
            .unsqueeze_dim::<4>(0);
        let bias = match &self.attn_mask {
            Some(mask) => rel + mask.clone().unsqueeze_dim::<4>(1),
            None => rel.expand([nw, h, n, n]),
        };
        bias.unsqueeze_dim::<5>(0).expand([batch, nw, h, n, n]).reshape([batch * nw, h, n, n])
    }
}

/// Splits a grid into non-overlapping `w × w` windows, batch-major then windows row-major.
///
/// # Shapes
/// - x: `[B, r, r, C]` -> `[B·(r/w)², w², C]`.
fn window_partition(x: Tensor<4>, w: usize) -> Tensor<3> {
    let [b, r, _, c] = x.dims();
    x.reshape([b, r / w, w, r / w, w, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b * (r / w) * (r / w), w * w, c])
}

/// Inverse of [`window_partition`].
///
/// # Shapes
/// - x: `[B·(r/w)², w², C]` -> `[B, r, r, C]`.
fn window_reverse(x: Tensor<3>, b: usize, r: usize, w: usize) -> Tensor<4> {
    let c = x.dims()[2];
    x.reshape([b, r / w, r / w, w, w, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, r, r, c])
}

/// PatchMerging: 2 × 2 neighbourhoods concatenated on channels, LN(4C), Linear(4C → 2C).
#[derive(Module, Debug)]
pub struct PatchMerging {
    /// LN over the `4C` concatenated channels.
    pub norm: LayerNorm,
    /// Reduction `[4C, 2C]`, no bias.
    pub reduction: Linear,
    /// Side `r` of the input grid (even).
    pub resolution: usize,
}

impl PatchMerging {
    /// Channel order `[x(0::2,0::2), x(1::2,0::2), x(0::2,1::2), x(1::2,1::2)]` (row, column).
    ///
    /// # Shapes
    /// - x: `[B, r·r, C]` -> `[B, (r/2)², 2C]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let r = self.resolution;
        // [B, r/2, row parity, r/2, column parity, C] -> [B, r/2, r/2, column parity, row parity, C]
        let x = x.reshape([b, r / 2, 2, r / 2, 2, c]).permute([0, 1, 3, 4, 2, 5]).reshape([b, l / 4, 4 * c]);
        self.reduction.forward(self.norm.forward(x))
    }
}

/// A stage: blocks of one width and resolution, then (all but the last stage) PatchMerging.
#[derive(Module, Debug)]
pub struct SwinStage {
    /// The blocks; odd ones are shifted when the stage is larger than the window.
    pub blocks: Vec<SwinBlock>,
    /// PatchMerging after the blocks (absent in the last stage).
    pub downsample: Option<PatchMerging>,
}

/// Swin backbone: patch embedding + LN, stages, final LN; pooled by the token mean.
#[derive(Module, Debug)]
pub struct Swin {
    /// Patch embedding conv (kernel = stride = patch), weight `[C0, 3, p, p]`.
    pub patch_embed: Conv2d,
    /// LayerNorm after the patch embedding.
    pub patch_norm: LayerNorm,
    /// The stages.
    pub stages: Vec<SwinStage>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// Square input size the attention masks were built for.
    pub image_size: usize,
}

impl Swin {
    /// Patch tokens after the patch-embed LayerNorm.
    ///
    /// # Shapes
    /// - images: `[B, C_in, S, S]` (S = image size) -> `[B, (S/p)², C0]`.
    ///
    /// # Panics
    /// If the images are not `S × S` (windows and masks are built for one size).
    pub fn embed(&self, images: Tensor<4>) -> Tensor<3> {
        let [_, _, h, w] = images.dims();
        assert!(
            h == self.image_size && w == self.image_size,
            "Swin was built for {0}x{0} images, got {h}x{w}",
            self.image_size
        );
        let x = self.patch_embed.forward(images);
        let [b, c, gh, gw] = x.dims();
        self.patch_norm.forward(x.reshape([b, c, gh * gw]).swap_dims(1, 2))
    }

    /// Output of every stage's blocks (before its PatchMerging).
    ///
    /// # Shapes
    /// - images: `[B, C_in, S, S]` -> stage `s`: `[B, (S/p/2^s)², C0·2^s]`.
    pub fn forward_stages(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Vec<Tensor<3>> {
        self.run(images, hooks, &mut States::new(EncodeOptions::default()))
    }

    /// Runs every stage, recording block outputs in `states`; returns each stage's output.
    fn run(&self, images: Tensor<4>, hooks: &dyn BlockHooks, states: &mut States) -> Vec<Tensor<3>> {
        let mut x = self.embed(images);
        states.push(&x);
        let mut outputs = Vec::with_capacity(self.stages.len());
        let mut index = 0;
        for (stage, st) in self.stages.iter().enumerate() {
            for block in &st.blocks {
                x = block.forward(x, hooks, BlockId::vision(stage, index));
                states.push(&x);
                index += 1;
            }
            outputs.push(x.clone());
            if let Some(merge) = &st.downsample {
                x = merge.forward(x);
            }
        }
        outputs
    }

    /// Last-stage tokens after the final LayerNorm.
    ///
    /// # Shapes
    /// - images: `[B, C_in, S, S]` -> `[B, N_last, C_last]`.
    pub fn forward_features(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Tensor<3> {
        self.encode(images, hooks, EncodeOptions::default()).last
    }

    /// Pooled features: mean over the last-stage tokens after the final LayerNorm.
    ///
    /// # Shapes
    /// - images: `[B, C_in, S, S]` -> `[B, C_last]`.
    pub fn forward_pooled(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Tensor<2> {
        self.encode(images, hooks, EncodeOptions::default()).pooled
    }
}

impl Encoder for Swin {
    /// Images `[B, C_in, S, S]`.
    type Input = Tensor<4>;

    /// `last`: last-stage tokens after the final LayerNorm; `pooled`: their mean;
    /// `hidden_states`: the patch embeddings and every block's output (widths grow by stage).
    fn encode(&self, images: Tensor<4>, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        let mut states = States::new(options);
        let last = self.run(images, hooks, &mut states).pop().expect("Swin has at least one stage");
        let last = self.norm.forward(last);
        let [b, _, c] = last.dims();
        let pooled = last.clone().mean_dim(1).reshape([b, c]);
        EncoderOutput { last, hidden_states: states.into_vec(), pooled }
    }

    fn layout(&self) -> Layout {
        let mut blocks = vec![];
        for (s, st) in self.stages.iter().enumerate() {
            for b in &st.blocks {
                let [dim, mlp_dim] = b.fc1.weight.dims();
                blocks.push(BlockInfo::new(BlockId::vision(s, blocks.len()), dim, mlp_dim));
            }
        }
        let feature_dim = blocks.last().map_or(0, |b| b.dim);
        Layout { blocks, feature_dim }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::hooks::NoHooks;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32")
    }

    #[test]
    fn param_count_matches_the_module() {
        for cfg in [SwinConfig::tiny_test(), SwinConfig::swin_b()] {
            assert_eq!(cfg.num_params(), cfg.init(&Device::flex()).num_params(), "{cfg:?}");
        }
        // timm 1.0.31: swin_base_patch4_window7_224(num_classes=0), relative position bias
        // tables included (buffers excluded).
        assert_eq!(SwinConfig::swin_b().num_params(), 86_743_224);
        // timm state dict of tools/fixtures/swin_tiny.py.
        assert_eq!(SwinConfig::tiny_test().num_params(), 35_612);
    }

    #[test]
    fn stage_geometry() {
        let b = SwinConfig::swin_b();
        let windows: Vec<_> = (0..4).map(|s| (b.stage_resolution(s), b.stage_window(s))).collect();
        assert_eq!(windows, vec![(56, (7, 3)), (28, (7, 3)), (14, (7, 3)), (7, (7, 0))]);
        let t = SwinConfig::tiny_test();
        assert_eq!((t.stage_window(0), t.stage_window(1)), ((4, 2), (4, 0)));
        let rates = b.with_drop_path_rate(0.1).drop_path_rates();
        assert_eq!(rates.len(), 24);
        assert_eq!((rates[0], rates[23]), (0.0, 0.1));
        assert!((rates[1] - 0.1 / 23.0).abs() < 1e-15);
        assert!(SwinConfig::new(32, 4, 16, vec![2, 2], vec![3, 4], 4).validate().is_err());
        assert!(SwinConfig::new(40, 4, 16, vec![2, 2], vec![2, 4], 4).validate().is_err());
        assert!(SwinConfig::new(32, 4, 16, vec![2], vec![2, 4], 4).validate().is_err());
    }

    #[test]
    fn relative_position_index_layout() {
        let w = 3;
        let index = relative_position_index(w);
        let n = w * w;
        assert_eq!(index.len(), n * n);
        // Same token: Δ = (0, 0) -> the centre of the (2w−1)² table.
        for i in 0..n {
            assert_eq!(index[i * n + i], ((w - 1) * (2 * w - 1) + (w - 1)) as i64);
        }
        // Query (0, 0), key (2, 2): Δ = (−2, −2) -> 0; the reverse pair -> the last entry.
        assert_eq!(index[n - 1], 0);
        assert_eq!(index[(n - 1) * n], ((2 * w - 1) * (2 * w - 1) - 1) as i64);
        // Query (0, 1), key (1, 0): Δ = (−1, +1) -> (1)·5 + 3.
        assert_eq!(index[n + w], 8);
    }

    #[test]
    fn shifted_window_mask_separates_wrapped_tokens() {
        // In the rolled frame, grid position p of an axis came from (p + s) mod r; two tokens of a
        // window may attend to each other iff, on both axes, both or neither wrapped around.
        let (r, w, s) = (8, 4, 2);
        let mask = shifted_window_mask(r, w, s);
        let (side, n) = (r / w, w * w);
        assert_eq!(mask.len(), side * side * n * n);
        let wrapped = |p: usize| p + s >= r;
        let mut masked = 0;
        for wh in 0..side {
            for ww in 0..side {
                for i in 0..n {
                    for j in 0..n {
                        let (hi, wi) = (wh * w + i / w, ww * w + i % w);
                        let (hj, wj) = (wh * w + j / w, ww * w + j % w);
                        let same = wrapped(hi) == wrapped(hj) && wrapped(wi) == wrapped(wj);
                        let m = mask[((wh * side + ww) * n + i) * n + j];
                        assert_eq!(m, if same { 0.0 } else { SHIFTED_WINDOW_MASK });
                        masked += usize::from(!same);
                    }
                }
            }
        }
        // Only the last window row/column is split: 2 windows in halves, 1 in quarters.
        assert_eq!(masked, 2 * (n * n / 2) + (n * n - 4 * 4 * 4));
    }

    /// Tokens of the block output that change when input token `token` changes.
    fn receptive_set(block: &SwinBlock, token: usize) -> Vec<usize> {
        let device = Device::flex();
        let c = block.norm1.gamma.dims()[0];
        let l = block.resolution * block.resolution;
        let x = Tensor::<3>::random([1, l, c], Distribution::Normal(0.0, 1.0), &device);
        let bump = Tensor::<3>::zeros([1, l, c], &device).slice_assign(
            [0..1, token..token + 1, 0..c],
            // Not a constant over channels: LayerNorm would remove it.
            Tensor::random([1, 1, c], Distribution::Normal(0.0, 1.0), &device),
        );
        let at = BlockId::vision(0, 0);
        let a = host(block.forward(x.clone(), &NoHooks, at));
        let b = host(block.forward(x + bump, &NoHooks, at));
        (0..l).filter(|&t| (0..c).any(|i| (a[t * c + i] - b[t * c + i]).abs() > 1e-6)).collect()
    }

    #[test]
    fn shift_and_mask_restrict_attention() {
        let model = SwinConfig::tiny_test().init(&Device::flex());
        let blocks = &model.stages[0].blocks;
        assert_eq!((blocks[0].shift_size, blocks[1].shift_size), (0, 2));
        assert!(blocks[0].attn_mask.is_none() && blocks[1].attn_mask.is_some());
        assert!(model.stages[1].blocks.iter().all(|b| b.shift_size == 0 && b.attn_mask.is_none()));
        let grid = |rows: &[usize], cols: &[usize]| {
            let mut v: Vec<usize> = rows.iter().flat_map(|r| cols.iter().map(move |c| r * 8 + c)).collect();
            v.sort();
            v
        };
        // Regular windows: token (0, 0) reaches its 4 × 4 window.
        assert_eq!(receptive_set(&blocks[0], 0), grid(&[0, 1, 2, 3], &[0, 1, 2, 3]));
        // Shifted: (0, 0) lands in the bottom-right rolled window {6, 7, 0, 1}², whose mask
        // keeps only the wrapped quarter {0, 1}².
        assert_eq!(receptive_set(&blocks[1], 0), grid(&[0, 1], &[0, 1]));
        // (2, 2) lands in the top-left rolled window {2..6}², which no mask splits.
        assert_eq!(receptive_set(&blocks[1], 2 * 8 + 2), grid(&[2, 3, 4, 5], &[2, 3, 4, 5]));
        // (7, 2): rows {6, 7, 0, 1} split by wrap, columns {2..6} whole.
        assert_eq!(receptive_set(&blocks[1], 7 * 8 + 2), grid(&[6, 7], &[2, 3, 4, 5]));
    }

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<(BlockId, String, Vec<usize>)>>,
    }

    impl Recorder {
        fn log(&self, at: BlockId, what: &str, x: &Tensor<3>) {
            self.calls.borrow_mut().push((at, what.to_string(), x.dims().to_vec()));
        }
    }

    impl BlockHooks for Recorder {
        fn attn_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
            self.log(at, "attn_input", &x);
            x
        }
        fn attn_output(&self, at: BlockId, x: Tensor<3>, _query_input: &Tensor<3>) -> Tensor<3> {
            self.log(at, "attn_output", &x);
            x
        }
        fn attn_residual(&self, at: BlockId, x: Tensor<3>, _input: &Tensor<3>) -> Tensor<3> {
            self.log(at, "attn_residual", &x);
            x
        }
        fn mlp_residual(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
            self.log(at, "mlp_residual", &x);
            x
        }
        fn mlp_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
            self.log(at, "mlp_input", &x);
            x
        }
        fn mlp_output(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
            self.log(at, "mlp_output", &x);
            x
        }
        fn linear(&self, at: BlockId, site: LinearSite, x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
            assert_eq!(x.dims()[..2], y.dims()[..2], "x and y are the same tokens");
            self.log(at, &format!("{site:?}"), &y);
            y
        }
    }

    #[test]
    fn hooks_are_called_at_every_insertion_point() {
        let device = Device::flex();
        let cfg = SwinConfig::tiny_test();
        let model = cfg.init(&device);
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let recorder = Recorder::default();
        let hooked = host(model.forward_pooled(images.clone(), &recorder));
        assert_eq!(hooked, host(model.forward_pooled(images, &NoHooks)));
        let calls = recorder.calls.into_inner();
        let order = [
            "attn_input",
            "Query",
            "Key",
            "Value",
            "AttnOut",
            "attn_output",
            "attn_residual",
            "mlp_residual",
            "mlp_input",
            "Fc1",
            "Fc2",
            "mlp_output",
        ];
        let layout = cfg.layout();
        assert_eq!(calls.len(), order.len() * layout.blocks.len());
        for (block, chunk) in layout.blocks.iter().zip(calls.chunks(order.len())) {
            let tokens = cfg.stage_resolution(block.id.stage).pow(2);
            for ((at, what, dims), want) in chunk.iter().zip(order) {
                let ffn = matches!(want, "mlp_residual" | "mlp_input" | "Fc1" | "Fc2" | "mlp_output");
                let expected = if ffn { block.id.ffn() } else { block.id };
                assert_eq!((*at, what.as_str()), (expected, want));
                let width = if want == "Fc1" { block.mlp_dim } else { block.dim };
                assert_eq!(dims, &vec![2, tokens, width], "{what} in block {}", block.id.index);
            }
        }
    }

    /// Zeroes both residual branches through `linear` (AttnOut, Fc2) or through the branch
    /// outputs: either way every block is the identity.
    struct ZeroBranches {
        via_linear: bool,
    }

    impl BlockHooks for ZeroBranches {
        fn attn_output(&self, _at: BlockId, x: Tensor<3>, _query_input: &Tensor<3>) -> Tensor<3> {
            if self.via_linear { x } else { x.zeros_like() }
        }
        fn mlp_output(&self, _at: BlockId, x: Tensor<3>) -> Tensor<3> {
            if self.via_linear { x } else { x.zeros_like() }
        }
        fn linear(&self, _at: BlockId, site: LinearSite, _x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
            match site {
                LinearSite::AttnOut | LinearSite::Fc2 if self.via_linear => y.zeros_like(),
                _ => y,
            }
        }
    }

    #[test]
    fn hook_results_are_used() {
        let device = Device::flex();
        let model = SwinConfig::tiny_test().init(&device);
        let images = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let embedded = host(model.embed(images.clone()));
        for via_linear in [true, false] {
            let stages = model.forward_stages(images.clone(), &ZeroBranches { via_linear });
            assert_eq!(host(stages[0].clone()), embedded, "via_linear = {via_linear}");
        }
    }

    #[test]
    fn drop_path_only_in_training_on_autodiff() {
        let x = |device: &Device| Tensor::<3>::ones([64, 2, 3], device);
        let layer = DropPath::new(0.5);
        assert_eq!(host(layer.forward(x(&Device::flex()))), vec![1.0; 64 * 6]);
        let device = Device::flex().autodiff();
        let out = host(layer.forward(x(&device)));
        // One draw per sample: each sample is all 0 or all 1 / keep = 2.
        let samples: Vec<f32> = out
            .chunks(6)
            .map(|s| {
                assert!(s.iter().all(|v| *v == s[0]) && (s[0] == 0.0 || s[0] == 2.0), "{s:?}");
                s[0]
            })
            .collect();
        assert!(samples.contains(&0.0) && samples.contains(&2.0));
        let frozen = layer.valid();
        assert_eq!(host(frozen.forward(x(&device))), vec![1.0; 64 * 6]);
    }

    #[test]
    fn trains_on_autodiff() {
        let device = Device::flex().autodiff();
        let model = SwinConfig::tiny_test().with_drop_path_rate(0.2).init(&device);
        let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let grads = model.forward_pooled(images, &NoHooks).powi_scalar(2).sum().backward();
        let table = &model.stages[0].blocks[1].relative_position_bias_table;
        let grad = table.val().grad(&grads).expect("bias table gets a gradient");
        assert_eq!(grad.dims(), [49, 2]);
        assert!(host(grad).iter().any(|g| *g != 0.0));
    }
}

impl crate::merge::LinearSites for Swin {
    /// Blocks are counted across stages in forward order; q, k and v are the thirds of the
    /// fused `qkv` projection's output columns (timm's layout).
    fn linear_mut(
        &mut self,
        index: usize,
        site: crate::hooks::LinearSite,
    ) -> Option<(&mut burn::nn::Linear, std::ops::Range<usize>)> {
        use crate::hooks::LinearSite::*;
        let block = self.stages.iter_mut().flat_map(|s| s.blocks.iter_mut()).nth(index)?;
        let third = block.qkv.weight.dims()[1] / 3;
        let (linear, cols) = match site {
            Query => (&mut block.qkv, 0..third),
            Key => (&mut block.qkv, third..2 * third),
            Value => (&mut block.qkv, 2 * third..3 * third),
            AttnOut => {
                let out = block.proj.weight.dims()[1];
                (&mut block.proj, 0..out)
            }
            Fc1 => {
                let out = block.fc1.weight.dims()[1];
                (&mut block.fc1, 0..out)
            }
            Fc2 => {
                let out = block.fc2.weight.dims()[1];
                (&mut block.fc2, 0..out)
            }
            CrossQuery | CrossKey | CrossValue | CrossOut => return None,
        };
        Some((linear, cols))
    }
}
