//! ViLT (Kim, Son, Kim, *ViLT: Vision-and-Language Transformer Without Convolution or Region
//! Supervision*, ICML 2021; `dandelin/ViLT`, `vilt/modules/vilt_module.py`): one pre-LN
//! transformer over the concatenation of BERT-style text embeddings and ViT patch embeddings,
//! each tagged with a learned modality ("token type") embedding.
//!
//! - Text: `LN_1e-12(word + position + type₀)` (bert-base-uncased WordPiece, 40 positions).
//! - Image: `visual_embed` of the official code on a zero-padded batch: patch `(i, j)` is valid
//!   iff the channel sum of pixel `(P·i, P·j)` is non-zero; an image's valid grid `h × w` is read
//!   from row and column 0; its position embeddings are the pretrained grid bilinearly resized
//!   (`align_corners = True`) to `h × w` and zero-padded to the batch grid. Every grid patch of
//!   the padded batch is kept, in row-major order, with the validity mask as key padding: the
//!   official code's random patch permutation and sampling of padding patches only reorder
//!   masked or attended-to tokens, and only the class row is read.
//! - `x = [text + TT[0] ; image + TT[k]]` (`k` = 1, and 2 for the second image of an NLVR2
//!   pair), 12 ViT blocks with the key mask, final LayerNorm, `tanh(pooler(x₀))`.
//!
//! The image side is a [`Vit`] (`transformer.*` of the official checkpoint is a timm
//! `vit_base_patch32_384`), so every hook of the ViT blocks drives ViLT unchanged. A
//! `class_token` in [`ViltInput`] replaces the text's first embedding (APT's
//! `token4classifier`).
//!
//! Dropout ([`ViltConfig::dropout`], ViLT's `drop_rate` 0.1) acts in training only, also in the
//! frozen backbone (the official fine-tuning keeps it in train mode): on the text embeddings
//! (before the class token replaces the first), on the position-embedded image tokens, on each
//! block's attention branch after `attn_output` (where APT sits) and on the FFN's hidden
//! activation and output; attention probabilities are not dropped (ViLT's attention dropout is 0).

use burn::nn::conv::Conv2dConfig;
use burn::nn::{Dropout, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::bert::TextInput;
use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, Layout};
use crate::nn::AttentionMask;
use crate::vit::{Vit, VitConfig};
use crate::{Error, Result};

/// Configuration of a ViLT backbone (the official config's names where they exist).
#[derive(Config, Debug, PartialEq)]
pub struct ViltConfig {
    /// Text vocabulary.
    pub vocab_size: usize,
    /// Token width `D`.
    pub hidden_size: usize,
    /// Blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// FFN width (`mlp_ratio · D`).
    pub mlp_dim: usize,
    /// Text positions.
    pub max_text_len: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Image size of the pretrained position grid (`(image_size / patch_size)²` positions).
    pub image_size: usize,
    /// Rows of the modality token-type table (2; 3 for NLVR2's second image).
    #[config(default = 2)]
    pub modality_types: usize,
    /// Rows of the text's own token-type table.
    #[config(default = 2)]
    pub text_type_vocab: usize,
    /// LayerNorm epsilon of the blocks.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// LayerNorm epsilon of the text embeddings.
    #[config(default = 1e-12)]
    pub text_layer_norm_eps: f64,
    /// ViLT's `drop_rate` (module docs): 0.1 in ViLT-B/32, active in training only; `None` (configs
    /// written before the field): none.
    #[config(default = "None")]
    pub dropout: Option<f64>,
}

impl ViltConfig {
    /// ViLT-B/32 (`vilt_200k_mlm_itm.ckpt`): bert-base-uncased vocabulary, 40 text positions,
    /// ViT-B/32 at 384 px.
    pub fn vilt_b32() -> Self {
        Self::new(30522, 768, 12, 12, 3072, 40, 32, 384).with_dropout(Some(0.1))
    }

    /// The image side as a ViT config.
    pub fn vit(&self) -> VitConfig {
        VitConfig::new(
            self.image_size,
            self.patch_size,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.mlp_dim,
        )
        .with_layer_norm_eps(self.layer_norm_eps)
        .with_dropout(self.dropout)
    }

    /// Checks sizes.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.vit().validate()?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("max_text_len", self.max_text_len),
            ("modality_types", self.modality_types),
            ("text_type_vocab", self.text_type_vocab),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// Block layout (the ViT blocks, over text and image tokens).
    pub fn layout(&self) -> Layout {
        self.vit().layout()
    }

    /// Backbone parameters (text and image embeddings, blocks, final norm, modality types and
    /// pooler; no ITM or task head), without allocating: 111,595,008 for ViLT-B/32.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let text = (self.vocab_size + self.max_text_len + self.text_type_vocab) * d + 2 * d;
        text + self.vit().num_params() + self.modality_types * d + d * d + d
    }

    /// Allocates the backbone with random weights.
    ///
    /// # Panics
    /// If [`ViltConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Vilt {
        self.validate().expect("valid ViLT config");
        let d = self.hidden_size;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let emb = |n| EmbeddingConfig::new(n, d).with_initializer(normal.clone()).init(device);
        let mut transformer = self.vit().init(device);
        transformer.patch_embed = Conv2dConfig::new([3, d], [self.patch_size; 2])
            .with_stride([self.patch_size; 2])
            .with_initializer(normal.clone())
            .init(device);
        Vilt {
            word_embeddings: emb(self.vocab_size),
            position_embeddings: emb(self.max_text_len),
            text_token_type_embeddings: emb(self.text_type_vocab),
            text_norm: LayerNormConfig::new(d).with_epsilon(self.text_layer_norm_eps).init(device),
            text_dropout: crate::nn::dropout(self.dropout),
            token_type_embeddings: emb(self.modality_types),
            transformer,
            pooler: LinearConfig::new(d, d).with_initializer(normal).init(device),
        }
    }
}

/// The input of one ViLT forward.
#[derive(Clone, Debug)]
pub struct ViltInput {
    /// Tokenised texts (the text's own token types are zeros when absent).
    pub text: TextInput,
    /// Images `[B, 3, H, W]`, each zero-padded at the bottom and right to the batch size;
    /// `H` and `W` multiples of the patch size.
    pub images: Tensor<4>,
    /// Modality token type of the images (1; 2 for the second image of a pair).
    pub image_type: usize,
    /// Replaces the first text embedding of every sample (APT's `token4classifier`): `[D]`.
    pub class_token: Option<Tensor<1>>,
}

/// ViLT: text embeddings, modality types, a ViT over both modalities, pooler.
#[derive(Module, Debug)]
pub struct Vilt {
    /// Word embeddings `[V, D]`.
    pub word_embeddings: Embedding,
    /// Text position embeddings `[T, D]`.
    pub position_embeddings: Embedding,
    /// The text's own token types (BERT's; only row 0 is used).
    pub text_token_type_embeddings: Embedding,
    /// LayerNorm of the text embeddings.
    pub text_norm: LayerNorm,
    /// Dropout on the text embeddings (BERT's embedding dropout).
    pub text_dropout: Dropout,
    /// Modality types: row 0 text, row 1 image (row 2 the second image of a pair).
    pub token_type_embeddings: Embedding,
    /// Patch embedding, class token, position grid, blocks and final norm.
    pub transformer: Vit,
    /// Pooler `tanh(x₀ W + c)`.
    pub pooler: Linear,
}

/// Row `i` of a bilinear, `align_corners = True` resize from `from` to `to` points, padded with
/// zero rows to `rows`: `[rows, from]` row-major.
fn resize_matrix(from: usize, to: usize, rows: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; rows * from];
    for i in 0..to.min(rows) {
        let src = if to > 1 { i as f64 * (from - 1) as f64 / (to - 1) as f64 } else { 0.0 };
        let i0 = (src.floor() as usize).min(from - 1);
        let i1 = (i0 + 1).min(from - 1);
        let frac = (src - i0 as f64) as f32;
        m[i * from + i0] += 1.0 - frac;
        m[i * from + i1] += frac;
    }
    m
}

impl Vilt {
    /// Width `D`.
    pub fn hidden_size(&self) -> usize {
        self.word_embeddings.weight.dims()[1]
    }

    /// Text positions.
    pub fn max_text_len(&self) -> usize {
        self.position_embeddings.weight.dims()[0]
    }

    /// Patch size.
    pub fn patch_size(&self) -> usize {
        self.transformer.patch_embed.weight.dims()[2]
    }

    /// Text embeddings after LayerNorm (before the class token and modality type): `[B, T, D]`.
    pub fn embed_text(&self, text: &TextInput) -> Tensor<3> {
        let [b, t] = text.input_ids.dims();
        let tables = [&self.word_embeddings, &self.position_embeddings, &self.text_token_type_embeddings];
        crate::bert::embed_tokens(tables, &self.text_norm, text, (0..b).flat_map(|_| 0..t as i64).collect())
    }

    /// The official `visual_embed` with every patch kept (module docs): images `[B, 3, H, W]`
    /// -> (tokens `[B, 1 + (H/P)(W/P), D]` with class token and positions, before the modality
    /// type, after the position dropout; key padding `[B, 1 + (H/P)(W/P)]`, `true` for invalid
    /// patches).
    ///
    /// # Panics
    /// If `H` or `W` is not a multiple of the patch size.
    pub fn embed_images(&self, images: Tensor<4>) -> (Tensor<3>, Tensor<2, Bool>) {
        let device = images.device();
        let p = self.patch_size();
        let [b, _, height, width] = images.dims();
        assert!(height % p == 0 && width % p == 0, "image size {height}×{width} is not a multiple of the patch {p}");
        let (gh, gw) = (height / p, width / p);
        // The channel sum at each patch's top-left pixel (P·i, P·j), read back alone.
        let corners = images.clone().sum_dim(1).reshape([b, gh, p, gw, p]).narrow(2, 0, 1).narrow(4, 0, 1);
        let valid: Vec<bool> = corners
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("float pixels")
            .iter()
            .map(|&v| v != 0.0)
            .collect();
        let pos = self.transformer.pos_embed.val();
        let [_, n, d] = pos.dims();
        let g = ((n - 1) as f64).sqrt().round() as usize;
        let (mut rh, mut rw) = (Vec::with_capacity(b * gh * g), Vec::with_capacity(b * gw * g));
        for bi in 0..b {
            let at = |i: usize, j: usize| valid[bi * gh * gw + i * gw + j];
            let h = (0..gh).filter(|&i| at(i, 0)).count();
            let w = (0..gw).filter(|&j| at(0, j)).count();
            rh.extend(resize_matrix(g, h, gh));
            rw.extend(resize_matrix(g, w, gw));
        }
        let rh = Tensor::<4>::from_data(TensorData::new(rh, [b, 1, gh, g]), &device).expand([b, d, gh, g]);
        let rw =
            Tensor::<4>::from_data(TensorData::new(rw, [b, 1, gw, g]), &device).swap_dims(2, 3).expand([b, d, g, gw]);
        // [1, g², D] -> [B, D, g, g]; per image R_h · P · R_wᵀ -> [B, D, gh, gw].
        let grid = pos.clone().narrow(1, 1, g * g).reshape([g, g, d]).permute([2, 0, 1]).unsqueeze::<4>();
        let spatial = rh.matmul(grid.expand([b, d, g, g])).matmul(rw);
        let x = self.transformer.patch_embed.forward(images) + spatial;
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let cls = (self.transformer.cls_token.val() + pos.narrow(1, 0, 1)).expand([b, 1, d]);
        let mut padding = Vec::with_capacity(b * (1 + gh * gw));
        for bi in 0..b {
            padding.push(false);
            padding.extend(valid[bi * gh * gw..(bi + 1) * gh * gw].iter().map(|v| !v));
        }
        let padding = Tensor::<2, Bool>::from_data(TensorData::new(padding, [b, 1 + gh * gw]), &device);
        (self.transformer.dropout.forward(Tensor::cat(vec![cls, x], 1)), padding)
    }

    /// Checks a batch: the text with [`TextInput::check`] (shapes, vocabulary, positions), images a multiple of the patch size, the modality type inside the table.
    ///
    /// # Errors
    /// One message naming what does not fit.
    pub fn check_input(&self, input: &ViltInput) -> Result<()> {
        input.text.check(self.word_embeddings.weight.dims()[0], self.max_text_len())?;
        let [b, _] = input.text.input_ids.dims();
        let [ib, c, h, w] = input.images.dims();
        let p = self.patch_size();
        if ib != b || c != 3 || h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            return Err(Error::Config(format!(
                "images have shape {:?}: expected [{b}, 3, H, W] with H and W multiples of {p}",
                input.images.dims()
            )));
        }
        let types = self.token_type_embeddings.weight.dims()[0];
        if input.image_type >= types {
            return Err(Error::Config(format!(
                "image token type {} outside the {types} modality types",
                input.image_type
            )));
        }
        Ok(())
    }
}

impl Encoder for Vilt {
    /// Texts, images and the image's modality type.
    type Input = ViltInput;

    /// `last`: every token (text then image) after the final LayerNorm `[B, T + 1 + N_p, D]`;
    /// `pooled`: `tanh(pooler(last[:, 0]))`; `hidden_states`: the joint embeddings and each
    /// block's output.
    fn encode(&self, input: ViltInput, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        let device = input.images.device();
        let mut states = States::new(options);
        let mut text = self.text_dropout.forward(self.embed_text(&input.text));
        let [b, t, d] = text.dims();
        if let Some(cls) = input.class_token {
            let cls = cls.reshape([1, 1, d]).expand([b, 1, d]);
            text = Tensor::cat(vec![cls, text.narrow(1, 1, t - 1)], 1);
        }
        let type_of =
            |k: usize, n: usize| self.token_type_embeddings.forward(Tensor::<2, Int>::full([b, n], k as i64, &device));
        let text = text + type_of(0, t);
        let (image, image_padding) = self.embed_images(input.images);
        let n = image.dims()[1];
        let image = image + type_of(input.image_type, n);
        let mut x = Tensor::cat(vec![text, image], 1);
        let padding = Tensor::cat(vec![input.text.attention_mask.equal_elem(0), image_padding], 1);
        let mask = AttentionMask::none().with_key_padding(padding);
        states.push(&x);
        for (i, block) in self.transformer.blocks.iter().enumerate() {
            x = block.forward_masked(x, hooks, BlockId::vision(0, i), &mask);
            states.push(&x);
        }
        let last = self.transformer.norm.forward(x);
        let pooled = self.pooler.forward(last.clone().narrow(1, 0, 1).reshape([b, d])).tanh();
        EncoderOutput { last, hidden_states: states.into_vec(), pooled }
    }

    fn layout(&self) -> Layout {
        self.transformer.layout()
    }
}

impl crate::merge::LinearSites for Vilt {
    fn linear_mut(
        &mut self,
        index: usize,
        site: crate::hooks::LinearSite,
    ) -> Option<(&mut burn::nn::Linear, std::ops::Range<usize>)> {
        self.transformer.linear_mut(index, site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vilt_b32_counts_the_papers_backbone() {
        assert_eq!(ViltConfig::vilt_b32().num_params(), 111_595_008);
    }

    #[test]
    fn resize_matrix_is_align_corners_bilinear() {
        // 3 -> 5 points: sources 0, 0.5, 1, 1.5, 2.
        let m = resize_matrix(3, 5, 6);
        let row = |i: usize| &m[i * 3..i * 3 + 3];
        assert_eq!(row(0), &[1.0, 0.0, 0.0]);
        assert_eq!(row(1), &[0.5, 0.5, 0.0]);
        assert_eq!(row(4), &[0.0, 0.0, 1.0]);
        assert_eq!(row(5), &[0.0, 0.0, 0.0], "padding row");
        assert_eq!(resize_matrix(4, 4, 4), vec![1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.]);
    }

    #[test]
    fn a_model_counts_what_its_config_says() {
        let device = crate::device::device_from_name("flex").expect("flex");
        let cfg = ViltConfig::new(50, 32, 2, 4, 64, 12, 8, 32);
        let model = cfg.init(&device);
        assert_eq!(model.num_params(), cfg.num_params());
        assert_eq!(model.layout(), cfg.layout());
    }

    #[test]
    fn padded_patches_are_masked_and_the_class_token_pools() {
        let device = crate::device::device_from_name("flex").expect("flex");
        let cfg = ViltConfig::new(50, 32, 2, 4, 64, 12, 8, 32);
        let model = cfg.init(&device);
        // Image 0 is 16 × 24 inside a 32 × 32 canvas.
        let mut pixels = vec![0.0f32; 2 * 3 * 32 * 32];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let inside0 = y < 16 && x < 24;
                    pixels[(c * 32 + y) * 32 + x] = if inside0 { 0.5 } else { 0.0 };
                    pixels[((3 + c) * 32 + y) * 32 + x] = -0.25;
                }
            }
        }
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [2, 3, 32, 32]), &device);
        let (tokens, padding) = model.embed_images(images);
        assert_eq!(tokens.dims(), [2, 17, 32]);
        let padding: Vec<bool> = padding.into_data().try_to_vec().unwrap();
        let valid0: usize = padding[..17].iter().filter(|p| !**p).count();
        assert_eq!(valid0, 1 + 2 * 3, "class token + a 2 × 3 grid");
        assert!(padding[17..].iter().all(|p| !p), "image 1 fills the canvas");
    }
}

pub mod pretrain;
