//! Vision Transformer (pre-LN), as in the Google ViT release and `Model/ARC_ViT.py`:
//! separate q/k/v linears, head-major head split, exact (erf) GELU, LayerNorm eps 1e-6,
//! class token pooling.

use crate::ops::gelu;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, BlockInfo, Layout, LinearSite};
use crate::nn::AttentionMask;

/// Configuration of a ViT backbone (no head).
#[derive(Config, Debug, PartialEq)]
pub struct VitConfig {
    /// Square input size in pixels.
    pub image_size: usize,
    /// Square patch size.
    pub patch_size: usize,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Number of blocks `L`.
    pub num_layers: usize,
    /// Attention heads (`D` must be divisible by it).
    pub num_heads: usize,
    /// FFN hidden width.
    pub mlp_dim: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

impl VitConfig {
    /// ViT-B/16 at 224 px.
    pub fn vit_b16() -> Self {
        Self::new(224, 16, 768, 12, 12, 3072)
    }
    /// ViT-L/16 at 224 px.
    pub fn vit_l16() -> Self {
        Self::new(224, 16, 1024, 24, 16, 4096)
    }
    /// ViT-H/14 at 224 px (patch 14, 257 tokens; the official config's patch 16 is a bug).
    pub fn vit_h14() -> Self {
        Self::new(224, 14, 1280, 32, 16, 5120)
    }
    /// ViT-Ti/16 at 224 px (DeiT-Tiny sizes: 12 × 192, 3 heads, MLP 768): the benchmark model.
    pub fn vit_ti16() -> Self {
        Self::new(224, 16, 192, 12, 3, 768)
    }
    /// The tiny parity-test model (`tools/fixtures/arc_vit.py`): 16 px, patch 4, 2 × 64.
    pub fn tiny_test() -> Self {
        Self::new(16, 4, 64, 2, 4, 128)
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens including the class token.
    pub fn num_tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Checks divisibility constraints.
    pub fn validate(&self) -> crate::Result<()> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(crate::Error::Config(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 {
            return Err(crate::Error::Config(format!(
                "hidden_size {} is not divisible by num_heads {}",
                self.hidden_size, self.num_heads
            )));
        }
        Ok(())
    }

    /// Block layout, for tuners and counting.
    pub fn layout(&self) -> Layout {
        Layout {
            blocks: (0..self.num_layers)
                .map(|i| BlockInfo { id: BlockId::vision(0, i), dim: self.hidden_size, mlp_dim: self.mlp_dim })
                .collect(),
            feature_dim: self.hidden_size,
        }
    }

    /// Parameter count of the backbone (no head), computed without allocating.
    pub fn num_params(&self) -> usize {
        let (d, m, p) = (self.hidden_size, self.mlp_dim, self.patch_size);
        let embed = d * self.in_channels * p * p + d + d + self.num_tokens() * d;
        let block = 4 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d);
        embed + self.num_layers * block + 2 * d
    }

    /// Allocates the backbone with timm-style random initialisation.
    ///
    /// # Panics
    /// If [`VitConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Vit {
        self.validate().expect("valid ViT config");
        let d = self.hidden_size;
        let ln = LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps);
        let lin =
            |i, o| LinearConfig::new(i, o).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device);
        let normal =
            |shape: [usize; 3]| Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.02), device));
        Vit {
            patch_embed: Conv2dConfig::new([self.in_channels, d], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .init(device),
            cls_token: normal([1, 1, d]),
            pos_embed: normal([1, self.num_tokens(), d]),
            blocks: (0..self.num_layers)
                .map(|_| VitBlock {
                    norm1: ln.init(device),
                    query: lin(d, d),
                    key: lin(d, d),
                    value: lin(d, d),
                    proj: lin(d, d),
                    norm2: ln.init(device),
                    fc1: lin(d, self.mlp_dim),
                    fc2: lin(self.mlp_dim, d),
                    num_heads: self.num_heads,
                })
                .collect(),
            norm: ln.init(device),
        }
    }
}

/// One pre-LN transformer block with separate q, k, v projections.
#[derive(Module, Debug)]
pub struct VitBlock {
    /// LN before attention.
    pub norm1: LayerNorm,
    /// Query projection `[D, D]`.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub proj: Linear,
    /// LN before the FFN.
    pub norm2: LayerNorm,
    /// FFN up-projection `[D, M]`.
    pub fc1: Linear,
    /// FFN down-projection `[M, D]`.
    pub fc2: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl VitBlock {
    /// x: `[B, N, D]` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>, hooks: &dyn BlockHooks, at: BlockId) -> Tensor<3> {
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let y = layer.forward(input.clone());
            hooks.linear(at, site, &input, y)
        };
        let y = hooks.attn_input(at, self.norm1.forward(x.clone()));
        let q = lin(&self.query, LinearSite::Query, y.clone());
        let (kv, mask) = match hooks.kv_prompts(at) {
            Some(p) => {
                let [b, _, d] = x.dims();
                let [m, _] = p.dims();
                let p = self.norm1.forward(p.unsqueeze::<3>().expand([b, m, d]));
                (Tensor::cat(vec![p, y.clone()], 1), AttentionMask::none().prepend_keys(m))
            }
            None => (y.clone(), AttentionMask::none()),
        };
        let k = lin(&self.key, LinearSite::Key, kv.clone());
        let v = lin(&self.value, LinearSite::Value, kv);
        let ctx = hooks.attention(at, q, k, v, self.num_heads, &mask);
        let x = x + hooks.attn_output(at, lin(&self.proj, LinearSite::AttnOut, ctx), &y);
        let x = hooks.mlp_residual(at, x);
        let z = hooks.mlp_input(at, self.norm2.forward(x.clone()));
        let h = gelu(lin(&self.fc1, LinearSite::Fc1, z));
        x + hooks.mlp_output(at, lin(&self.fc2, LinearSite::Fc2, h))
    }
}

/// ViT backbone: patch embedding, class token, position embedding, blocks, final LN.
#[derive(Module, Debug)]
pub struct Vit {
    /// Patch embedding conv (kernel = stride = patch), weight `[D, C, p, p]`.
    pub patch_embed: Conv2d,
    /// Class token `[1, 1, D]`.
    pub cls_token: Param<Tensor<3>>,
    /// Position embedding `[1, 1 + N_p, D]`.
    pub pos_embed: Param<Tensor<3>>,
    /// Transformer blocks.
    pub blocks: Vec<VitBlock>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
}

impl Vit {
    /// Token sequence after patch embedding, class token and position embedding.
    ///
    /// images: `[B, C, H, W]` -> `[B, 1 + N_p, D]`.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<3> {
        let x = self.patch_embed.forward(images);
        let [b, d, gh, gw] = x.dims();
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([b, 1, d]);
        Tensor::cat(vec![cls, x], 1) + self.pos_embed.val()
    }

    /// All tokens after the final LayerNorm.
    ///
    /// images: `[B, C, H, W]` -> `[B, 1 + N_p, D]`.
    pub fn forward_features(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Tensor<3> {
        self.encode(images, hooks, EncodeOptions::default()).last
    }

    /// The class token after the final LayerNorm: images `[B, C, H, W]` -> `[B, D]`.
    pub fn forward_pooled(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Tensor<2> {
        self.encode(images, hooks, EncodeOptions::default()).pooled
    }
}

impl Encoder for Vit {
    /// Images `[B, C, H, W]`.
    type Input = Tensor<4>;

    /// `last`: all tokens after the final LayerNorm `[B, 1 + N_p, D]`; `pooled`: its class
    /// token `[B, D]`; `hidden_states`: the embeddings and each block's output (L + 1).
    fn encode(&self, images: Tensor<4>, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        let mut states = States::new(options);
        let mut x = self.embed(images);
        states.push(&x);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, hooks, BlockId::vision(0, i));
            states.push(&x);
        }
        let last = self.norm.forward(x);
        let [b, _, d] = last.dims();
        let pooled = last.clone().narrow(1, 0, 1).reshape([b, d]);
        EncoderOutput { last, hidden_states: states.into_vec(), pooled }
    }

    fn layout(&self) -> Layout {
        let d = self.pos_embed.dims()[2];
        Layout {
            blocks: self
                .blocks
                .iter()
                .enumerate()
                .map(|(i, b)| BlockInfo { id: BlockId::vision(0, i), dim: d, mlp_dim: b.fc1.weight.dims()[1] })
                .collect(),
            feature_dim: d,
        }
    }
}
