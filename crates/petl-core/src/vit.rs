//! Vision Transformer (pre-LN), as in the Google ViT release and `Model/ARC_ViT.py`:
//! separate q/k/v linears, head-major head split, exact (erf) GELU, LayerNorm eps 1e-6,
//! class token pooling.
//!
//! The same module is CLIP's image tower (Radford et al. 2021; Hugging Face
//! `CLIPVisionModel`) through its config ([`VitConfig::clip_vit_b16`]): no patch-embedding
//! bias, a LayerNorm before the blocks (`ln_pre`), quick GELU `x·σ(1.702x)`, LayerNorm eps
//! 1e-5, and [`VitPooling::ClipClass`] (the last hidden state is not normalised; the pooled
//! feature is the class token after the final LayerNorm, `ln_post`).

use crate::ops::gelu;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, BlockInfo, Layout, LinearSite};
use crate::nn::{AttentionMask, prepend_prompts};

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
    /// Whether the patch embedding has a bias (CLIP's has none).
    #[config(default = true)]
    pub patch_bias: bool,
    /// A LayerNorm on the embeddings before the first block (CLIP's `ln_pre`).
    #[config(default = false)]
    pub pre_norm: bool,
    /// The FFN activation.
    #[config(default = "VitActivation::Gelu")]
    pub activation: VitActivation,
    /// Where the final LayerNorm applies and what is pooled.
    #[config(default = "VitPooling::NormedClass")]
    pub pooling: VitPooling,
    /// timm's `drop_rate`: dropout on the position-embedded tokens, on the attention branch's
    /// output and on both FFN layers' outputs; active in training only (on an autodiff device,
    /// also in a frozen backbone: `no_grad` keeps it, `valid` turns it off). ViLT: 0.1; `None`
    /// (configs written before the field): none.
    #[config(default = "None")]
    pub dropout: Option<f64>,
}

/// FFN activation of a ViT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitActivation {
    /// Exact (erf) GELU.
    Gelu,
    /// CLIP's quick GELU `x·σ(1.702x)`.
    QuickGelu,
}

/// Final LayerNorm and pooling of a ViT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitPooling {
    /// Google ViT / timm: every token goes through the final LayerNorm; the class token of
    /// that is pooled.
    NormedClass,
    /// CLIP: the last hidden state stays as the blocks left it; the pooled feature is the
    /// class token after the final LayerNorm.
    ClipClass,
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
    /// CLIP ViT-B/16's image tower at 224 px (METER's image encoder; 288 px there).
    pub fn clip_vit_b16() -> Self {
        Self::new(224, 16, 768, 12, 12, 3072).clip()
    }

    /// Reads the image tower's config from a Hugging Face `config.json` of `model_type`
    /// `clip_vision_model`, or `clip` (its `vision_config`).
    ///
    /// # Errors
    /// A missing file, another `model_type`, a missing field (named), an activation other than
    /// `quick_gelu`, or sizes that cannot work.
    pub fn from_hf_clip_config(path: &std::path::Path) -> crate::Result<Self> {
        use crate::Error;
        let v = crate::io::HfConfig::read(path)?;
        let vision = match v["model_type"].as_str().unwrap_or("") {
            "clip_vision_model" => &v,
            "clip" => &v["vision_config"],
            other => {
                return Err(Error::format(
                    path,
                    format!("model_type `{other}`: expected `clip_vision_model` or `clip`"),
                ));
            }
        };
        let hf = crate::io::HfConfig { path, value: vision };
        let int = |key: &str| hf.usize(key);
        hf.expect_activation("quick_gelu")?;
        let cfg = Self::new(
            int("image_size")?,
            int("patch_size")?,
            int("hidden_size")?,
            int("num_hidden_layers")?,
            int("num_attention_heads")?,
            int("intermediate_size")?,
        )
        .with_in_channels(int("num_channels").unwrap_or(3))
        .clip()
        .with_layer_norm_eps(vision["layer_norm_eps"].as_f64().unwrap_or(1e-5));
        cfg.validate().map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    /// CLIP's variant of this ViT: no patch bias, `ln_pre`, quick GELU, eps 1e-5, CLIP pooling.
    pub fn clip(self) -> Self {
        self.with_patch_bias(false)
            .with_pre_norm(true)
            .with_activation(VitActivation::QuickGelu)
            .with_layer_norm_eps(1e-5)
            .with_pooling(VitPooling::ClipClass)
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

    /// Checks sizes (non-zero, and each within [`crate::model::MAX_DIM`] so that counting cannot
    /// overflow), divisibility, and that the model fits in memory at all (at most 2^34
    /// parameters: a corrupt or hostile config must not ask for terabytes).
    pub fn validate(&self) -> crate::Result<()> {
        for (name, v) in [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("mlp_dim", self.mlp_dim),
            ("in_channels", self.in_channels),
        ] {
            if v > crate::model::MAX_DIM {
                return Err(crate::Error::Config(format!(
                    "{name} {v} is larger than {}: not a real model",
                    crate::model::MAX_DIM
                )));
            }
        }
        for (name, v) in [
            ("image_size", self.image_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("mlp_dim", self.mlp_dim),
            ("in_channels", self.in_channels),
        ] {
            if v == 0 {
                return Err(crate::Error::Config(format!("{name} must be at least 1")));
            }
        }
        crate::nn::check_dropout("dropout", self.dropout)?;
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
        let params = self.num_params();
        if params > 1 << 34 {
            return Err(crate::Error::Config(format!(
                "this ViT has {params} parameters ({} GiB in f32): not a real model (image_size {}, hidden_size {})",
                params / (1 << 28),
                self.image_size,
                self.hidden_size
            )));
        }
        Ok(())
    }

    /// Block layout, for tuners and counting.
    pub fn layout(&self) -> Layout {
        Layout {
            blocks: (0..self.num_layers)
                .map(|i| BlockInfo::new(BlockId::vision(0, i), self.hidden_size, self.mlp_dim))
                .collect(),
            feature_dim: self.hidden_size,
        }
    }

    /// Parameter count of the backbone (no head), computed without allocating.
    pub fn num_params(&self) -> usize {
        let (d, m, p) = (self.hidden_size, self.mlp_dim, self.patch_size);
        let embed = d * self.in_channels * p * p
            + if self.patch_bias { d } else { 0 }
            + d
            + self.num_tokens() * d
            + if self.pre_norm { 2 * d } else { 0 };
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
                .with_bias(self.patch_bias)
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
                    quick_gelu: self.activation == VitActivation::QuickGelu,
                    dropout: crate::nn::dropout(self.dropout),
                })
                .collect(),
            dropout: crate::nn::dropout(self.dropout),
            pre_norm: self.pre_norm.then(|| ln.init(device)),
            norm: ln.init(device),
            clip_pooling: self.pooling == VitPooling::ClipClass,
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
    /// Quick GELU (CLIP) instead of exact GELU.
    pub quick_gelu: bool,
    /// Dropout on the attention branch (after `attn_output`, where APT sits, before the
    /// residual add), on the FFN's hidden activation and on its output (after `mlp_output`).
    pub dropout: Dropout,
}

impl VitBlock {
    /// x: `[B, N, D]` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>, hooks: &dyn BlockHooks, at: BlockId) -> Tensor<3> {
        self.forward_masked(x, hooks, at, &AttentionMask::none())
    }

    /// As [`VitBlock::forward`], with keys masked by `mask` (padded text and image tokens of a
    /// single-stream vision–language model such as ViLT).
    pub fn forward_masked(&self, x: Tensor<3>, hooks: &dyn BlockHooks, at: BlockId, mask: &AttentionMask) -> Tensor<3> {
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let y = layer.forward(input.clone());
            hooks.linear(if matches!(site, LinearSite::Fc1 | LinearSite::Fc2) { at.ffn() } else { at }, site, &input, y)
        };
        let y = hooks.attn_input(at, self.norm1.forward(x.clone()));
        let q = lin(&self.query, LinearSite::Query, y.clone());
        let (kv, mask) = match hooks.kv_prompts(at) {
            Some(p) => prepend_prompts(self.norm1.forward(p), y.clone(), mask.clone()),
            None => (y.clone(), mask.clone()),
        };
        let k = lin(&self.key, LinearSite::Key, kv.clone());
        let v = lin(&self.value, LinearSite::Value, kv);
        let ctx = hooks.attention(at, q, k, v, self.num_heads, &mask);
        let x = x + self.dropout.forward(hooks.attn_output(at, lin(&self.proj, LinearSite::AttnOut, ctx), &y));
        let x = hooks.attn_residual(at, x, &y);
        let x = hooks.mlp_residual(at.ffn(), x);
        let z = hooks.mlp_input(at.ffn(), self.norm2.forward(x.clone()));
        let h = lin(&self.fc1, LinearSite::Fc1, z);
        let h = if self.quick_gelu { h.clone() * burn::tensor::activation::sigmoid(h * 1.702) } else { gelu(h) };
        let h = self.dropout.forward(h);
        x + self.dropout.forward(hooks.mlp_output(at.ffn(), lin(&self.fc2, LinearSite::Fc2, h)))
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
    /// LayerNorm before the first block (CLIP's `ln_pre`).
    pub pre_norm: Option<LayerNorm>,
    /// Transformer blocks.
    pub blocks: Vec<VitBlock>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// CLIP pooling ([`VitPooling::ClipClass`]).
    pub clip_pooling: bool,
    /// Dropout on the position-embedded tokens (timm's `pos_drop`).
    pub dropout: Dropout,
}

impl Vit {
    /// Token sequence after patch embedding, class token, position embedding (and `ln_pre`).
    ///
    /// images: `[B, C, H, W]` -> `[B, 1 + N_p, D]`.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<3> {
        let x = self.patch_embed.forward(images);
        let [b, d, gh, gw] = x.dims();
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([b, 1, d]);
        let x = self.dropout.forward(Tensor::cat(vec![cls, x], 1) + self.pos_embed.val());
        match &self.pre_norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// The last hidden state (all tokens after the final LayerNorm; CLIP: before it).
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
        let [b, _, d] = x.dims();
        let (last, pooled) = if self.clip_pooling {
            let pooled = self.norm.forward(x.clone().narrow(1, 0, 1)).reshape([b, d]);
            (x, pooled)
        } else {
            let last = self.norm.forward(x);
            (last.clone(), last.narrow(1, 0, 1).reshape([b, d]))
        };
        EncoderOutput { last, hidden_states: states.into_vec(), pooled }
    }

    fn layout(&self) -> Layout {
        let d = self.pos_embed.dims()[2];
        Layout {
            blocks: self
                .blocks
                .iter()
                .enumerate()
                .map(|(i, b)| BlockInfo::new(BlockId::vision(0, i), d, b.fc1.weight.dims()[1]))
                .collect(),
            feature_dim: d,
        }
    }
}

impl crate::merge::LinearSites for Vit {
    fn linear_mut(
        &mut self,
        index: usize,
        site: crate::hooks::LinearSite,
    ) -> Option<(&mut burn::nn::Linear, std::ops::Range<usize>)> {
        use crate::hooks::LinearSite::*;
        let block = self.blocks.get_mut(index)?;
        let linear = match site {
            Query => &mut block.query,
            Key => &mut block.key,
            Value => &mut block.value,
            AttnOut => &mut block.proj,
            Fc1 => &mut block.fc1,
            Fc2 => &mut block.fc2,
            CrossQuery | CrossKey | CrossValue | CrossOut => return None,
        };
        let out = linear.weight.dims()[1];
        Some((linear, 0..out))
    }
}
