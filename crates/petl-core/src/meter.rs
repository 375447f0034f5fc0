//! METER (Dou et al., *An Empirical Study of Training End-to-End Vision-and-Language
//! Transformers*, CVPR 2022; `zdou0830/METER`, `meter/modules/meter_module.py` and
//! `bert_model.py`), the two-stream backbone of the APT paper's second table:
//!
//! - Text: a RoBERTa encoder ([`Bert`] with RoBERTa positions), then
//!   `cross_modal_text_transform` (Linear).
//! - Image: CLIP's image tower ([`Vit`] in its CLIP form: no patch bias, `ln_pre`, quick GELU,
//!   eps 1e-5) with METER's changes: the last residual block is dropped (11 of ViT-B/16's 12)
//!   and `ln_post` normalises every token; no output projection. Then
//!   `cross_modal_image_transform` (Linear). The position table is the checkpoint's grid
//!   bicubically resized to the run's resolution ([`resize_position_table`]).
//! - `t[:, 0]` is replaced by the learned class token when there is one (APT's
//!   `token4classifier`), `t += TT[0]`, `v += TT[k]` (`k` = 1; 2 for NLVR2's second image).
//! - `L` fusion rounds: both streams update at once from the previous pair,
//!   `(t, v) ← (TextLayer_i(t, v), ImageLayer_i(v, t))`. A [`CrossLayer`] is BERT's post-LN
//!   layer with a cross-attention sub-layer between the self-attention and the FFN (Hugging
//!   Face's `BertLayer` with `add_cross_attention`): each sub-layer ends with a residual add and
//!   LayerNorm (eps 1e-12), GELU (erf) in the FFN, text padding masked as keys in both streams.
//! - Poolers `tanh(W t[:, 0] + b)` and `tanh(W' v[:, 0] + b')`, concatenated: `[B, 2D]`.
//!
//! Hooks drive the fusion layers only (the paper tunes those): the RoBERTa and CLIP towers run
//! frozen without hooks. Fusion blocks are named `Tower::Fusion`, stage 0 for the text stream
//! (indices `0..L`) and stage 1 for the image stream (`L..2L`); every hook names its sub-layer
//! (self-attention, cross-attention, FFN).
//!
//! Dropout (training only, also in the frozen towers and layers, as the official fine-tuning
//! keeps them in train mode): RoBERTa's embeddings, sub-layer outputs and attention
//! probabilities ([`BertConfig`]'s rates); in the fusion layers each sub-layer's output before
//! its residual add and LayerNorm (after `attn_output` / `mlp_output`, where APT and the
//! sequential adapters sit) and the attention probabilities of both attentions
//! ([`MeterConfig::hidden_dropout`], [`MeterConfig::attention_dropout`], 0.1 in METER). CLIP's
//! tower has none.

use burn::nn::{Dropout, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::bert::{Bert, BertConfig, TextInput};
use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, BlockInfo, Layout, LinearSite, NoHooks, SubLayer, Tower};
use crate::nn::{AttentionMask, prepend_prompts};
use crate::ops::gelu;
use crate::vilt::ViltInput;
use crate::vit::{Vit, VitConfig, VitPooling};
use crate::vl_model::TwoStream;
use crate::weights::HostTensor;
use crate::{Error, Result};

/// Configuration of a METER backbone.
#[derive(Config, Debug, PartialEq)]
pub struct MeterConfig {
    /// The text tower (RoBERTa).
    pub text: BertConfig,
    /// The image tower (CLIP's, with the blocks METER keeps and the run's resolution as
    /// `image_size`).
    pub vision: VitConfig,
    /// Width `D` of the fusion layers.
    #[config(default = 768)]
    pub hidden_size: usize,
    /// Fusion layers per stream.
    #[config(default = 6)]
    pub num_layers: usize,
    /// Attention heads of the fusion layers.
    #[config(default = 12)]
    pub num_heads: usize,
    /// FFN width of the fusion layers.
    #[config(default = 3072)]
    pub intermediate_size: usize,
    /// LayerNorm epsilon of the fusion layers.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Rows of the modality token-type table (2; 3 for NLVR2's second image).
    #[config(default = 2)]
    pub modality_types: usize,
    /// Dropout on each fusion sub-layer's output before its residual add (METER: 0.1; `None`,
    /// as in configs written before the field: none).
    #[config(default = "None")]
    pub hidden_dropout: Option<f64>,
    /// Dropout on the fusion layers' attention probabilities, self- and cross-attention
    /// (METER: 0.1).
    #[config(default = "None")]
    pub attention_dropout: Option<f64>,
}

impl MeterConfig {
    /// `meter_clip16_288_roberta` at `resolution` px (the APT paper: 384 for VQA and
    /// retrieval, 288 for NLVR2): RoBERTa-base, CLIP ViT-B/16 with 11 blocks, 6 fusion layers
    /// per stream of width 768.
    pub fn meter_clip16_roberta(resolution: usize) -> Self {
        let vision = VitConfig { image_size: resolution, num_layers: 11, ..VitConfig::clip_vit_b16() }
            .with_pooling(VitPooling::NormedClass);
        Self::new(BertConfig::roberta_base(), vision).with_hidden_dropout(Some(0.1)).with_attention_dropout(Some(0.1))
    }

    /// Checks sizes.
    ///
    /// # Errors
    /// A zero size or heads not dividing the fusion width (named), or an invalid tower config.
    pub fn validate(&self) -> Result<()> {
        self.text.validate()?;
        self.vision.validate()?;
        if [self.hidden_size, self.num_layers, self.intermediate_size, self.num_heads].contains(&0)
            || self.hidden_size % self.num_heads != 0
        {
            return Err(Error::Config(format!(
                "METER fusion: hidden_size {}, num_layers {}, num_heads {} and intermediate_size {} must be \
                 positive with the heads dividing the width",
                self.hidden_size, self.num_layers, self.num_heads, self.intermediate_size
            )));
        }
        crate::nn::check_dropout("hidden_dropout", self.hidden_dropout)?;
        crate::nn::check_dropout("attention_dropout", self.attention_dropout)?;
        if self.modality_types < 2 {
            return Err(Error::Config(format!("METER needs 2 or more modality types, not {}", self.modality_types)));
        }
        Ok(())
    }

    /// The fusion layers (what tuners are built for): the text stream's `L` layers, then the
    /// image stream's, each with a cross-attention sub-layer.
    pub fn layout(&self) -> Layout {
        let l = self.num_layers;
        Layout {
            blocks: (0..2 * l)
                .map(|i| BlockInfo {
                    cross_attention: true,
                    ..BlockInfo::new(fusion_id(i, l), self.hidden_size, self.intermediate_size)
                })
                .collect(),
            feature_dim: 2 * self.hidden_size,
        }
    }

    /// Parameters, computed without allocating: towers, transforms, token types, fusion layers
    /// and poolers (no task head).
    pub fn num_params(&self) -> usize {
        let (d, m) = (self.hidden_size, self.intermediate_size);
        let layer = 8 * (d * d + d) + 3 * 2 * d + (d * m + m) + (m * d + d);
        self.text.num_params()
            + self.vision.num_params()
            + (self.text.hidden_size * d + d)
            + (self.vision.hidden_size * d + d)
            + self.modality_types * d
            + 2 * self.num_layers * layer
            + 2 * (d * d + d)
    }

    /// Allocates the backbone with random weights (linears and embeddings `N(0, 0.02²)`).
    ///
    /// # Panics
    /// If [`MeterConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Meter {
        self.validate().expect("valid METER config");
        let d = self.hidden_size;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let lin = |i, o| LinearConfig::new(i, o).with_initializer(normal.clone()).init(device);
        let ln = LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps);
        let layer = || CrossLayer {
            query: lin(d, d),
            key: lin(d, d),
            value: lin(d, d),
            attn_out: lin(d, d),
            attn_norm: ln.init(device),
            cross_query: lin(d, d),
            cross_key: lin(d, d),
            cross_value: lin(d, d),
            cross_out: lin(d, d),
            cross_norm: ln.init(device),
            fc1: lin(d, self.intermediate_size),
            fc2: lin(self.intermediate_size, d),
            ffn_norm: ln.init(device),
            num_heads: self.num_heads,
            dropout: crate::nn::dropout(self.hidden_dropout),
            attention_dropout: crate::nn::dropout(self.attention_dropout),
        };
        Meter {
            text: self.text.init(device),
            vision: self.vision.init(device),
            text_transform: lin(self.text.hidden_size, d),
            image_transform: lin(self.vision.hidden_size, d),
            token_type_embeddings: EmbeddingConfig::new(self.modality_types, d)
                .with_initializer(normal.clone())
                .init(device),
            text_layers: (0..self.num_layers).map(|_| layer()).collect(),
            image_layers: (0..self.num_layers).map(|_| layer()).collect(),
            text_pooler: lin(d, d),
            image_pooler: lin(d, d),
        }
    }
}

/// Block `i` of the fusion layers (`0..L` text stream, `L..2L` image stream).
fn fusion_id(i: usize, layers: usize) -> BlockId {
    BlockId { tower: Tower::Fusion, stage: i / layers, index: i, sublayer: SubLayer::SelfAttention }
}

/// One fusion layer of a stream: self-attention, cross-attention to the other stream, FFN, each
/// post-LN (`BertLayer` with cross-attention in METER's `bert_model.py`).
#[derive(Module, Debug)]
pub struct CrossLayer {
    /// Self-attention query.
    pub query: Linear,
    /// Self-attention key.
    pub key: Linear,
    /// Self-attention value.
    pub value: Linear,
    /// Self-attention output projection (`attention.output.dense`).
    pub attn_out: Linear,
    /// LayerNorm after the self-attention residual add.
    pub attn_norm: LayerNorm,
    /// Cross-attention query (this stream).
    pub cross_query: Linear,
    /// Cross-attention key (the other stream).
    pub cross_key: Linear,
    /// Cross-attention value (the other stream).
    pub cross_value: Linear,
    /// Cross-attention output projection (`crossattention.output.dense`).
    pub cross_out: Linear,
    /// LayerNorm after the cross-attention residual add.
    pub cross_norm: LayerNorm,
    /// FFN up-projection (`intermediate.dense`).
    pub fc1: Linear,
    /// FFN down-projection (`output.dense`).
    pub fc2: Linear,
    /// LayerNorm after the FFN residual add.
    pub ffn_norm: LayerNorm,
    /// Heads.
    pub num_heads: usize,
    /// Dropout on each sub-layer's output before its residual add.
    pub dropout: Dropout,
    /// Dropout on the attention probabilities (self- and cross-attention).
    pub attention_dropout: Dropout,
}

impl CrossLayer {
    /// `x` `[B, N_x, D]` attends to itself and then to `y` `[B, N_y, D]` -> `[B, N_x, D]`;
    /// `x_mask` and `y_mask` mask padding keys of each stream.
    pub fn forward(
        &self,
        x: Tensor<3>,
        y: Tensor<3>,
        x_mask: &AttentionMask,
        y_mask: &AttentionMask,
        hooks: &dyn BlockHooks,
        at: BlockId,
    ) -> Tensor<3> {
        let self_at = at.at(SubLayer::SelfAttention);
        let a = self.attend(x, None, x_mask, hooks, self_at);
        let c = self.attend(a, Some(y), y_mask, hooks, at.at(SubLayer::CrossAttention));
        let h = hooks.mlp_residual(at.ffn(), c);
        let z = hooks.mlp_input(at.ffn(), h.clone());
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let out = layer.forward(input.clone());
            hooks.linear(at.ffn(), site, &input, out)
        };
        let f = lin(&self.fc2, LinearSite::Fc2, gelu(lin(&self.fc1, LinearSite::Fc1, z)));
        self.ffn_norm.forward(h + self.dropout.forward(hooks.mlp_output(at.ffn(), f)))
    }

    /// One post-LN attention sub-layer: self-attention when `other` is `None`, else
    /// cross-attention with keys and values from `other` (masked by `mask`).
    fn attend(
        &self,
        x: Tensor<3>,
        other: Option<Tensor<3>>,
        mask: &AttentionMask,
        hooks: &dyn BlockHooks,
        at: BlockId,
    ) -> Tensor<3> {
        let cross = other.is_some();
        let [q_l, k_l, v_l, o_l] = if cross {
            [&self.cross_query, &self.cross_key, &self.cross_value, &self.cross_out]
        } else {
            [&self.query, &self.key, &self.value, &self.attn_out]
        };
        let [q_s, k_s, v_s, o_s] = if cross {
            [LinearSite::CrossQuery, LinearSite::CrossKey, LinearSite::CrossValue, LinearSite::CrossOut]
        } else {
            [LinearSite::Query, LinearSite::Key, LinearSite::Value, LinearSite::AttnOut]
        };
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let out = layer.forward(input.clone());
            hooks.linear(at, site, &input, out)
        };
        let u = hooks.attn_input(at, x.clone());
        let q = lin(q_l, q_s, u.clone());
        let source = other.unwrap_or_else(|| u.clone());
        let (kv, mask) = match hooks.kv_prompts(at) {
            Some(p) => prepend_prompts(p, source, mask.clone()),
            None => (source, mask.clone()),
        };
        let mask = mask.with_dropout(&self.attention_dropout);
        let k = lin(k_l, k_s, kv.clone());
        let v = lin(v_l, v_s, kv);
        let ctx = hooks.attention(at, q, k, v, self.num_heads, &mask);
        let o = hooks.attn_output(at, lin(o_l, o_s, ctx), &u);
        let norm = if cross { &self.cross_norm } else { &self.attn_norm };
        hooks.attn_residual(at, norm.forward(x + self.dropout.forward(o)), &u)
    }
}

/// The METER backbone (module docs).
#[derive(Module, Debug)]
pub struct Meter {
    /// RoBERTa (its pooler is kept for checkpoint fidelity and not used).
    pub text: Bert,
    /// CLIP's image tower (METER's blocks, `ln_post` on every token).
    pub vision: Vit,
    /// `cross_modal_text_transform`.
    pub text_transform: Linear,
    /// `cross_modal_image_transform`.
    pub image_transform: Linear,
    /// Modality token types `[types, D]`.
    pub token_type_embeddings: Embedding,
    /// Text-stream fusion layers.
    pub text_layers: Vec<CrossLayer>,
    /// Image-stream fusion layers.
    pub image_layers: Vec<CrossLayer>,
    /// `cross_modal_text_pooler.dense`.
    pub text_pooler: Linear,
    /// `cross_modal_image_pooler.dense`.
    pub image_pooler: Linear,
}

impl Meter {
    /// Width `D` of the fusion layers (and of a class token).
    pub fn hidden_size(&self) -> usize {
        self.text_pooler.weight.dims()[0]
    }

    /// Image side length the position table is built for.
    pub fn resolution(&self) -> usize {
        let [_, n, _] = self.vision.pos_embed.dims();
        let grid = ((n - 1) as f64).sqrt().round() as usize;
        grid * self.vision.patch_embed.kernel_size[0]
    }

    /// The text tower's embedding of token `id` at the first position (RoBERTa: position
    /// `pad + 1`), type 0, after its LayerNorm: METER's `token4classifier` initialisation
    /// (`<s>`, id 0), computed without dropout.
    pub fn class_token_init(&self, id: usize) -> Tensor<1> {
        let text = TextInput::single(id, &self.text_pooler.weight.device());
        let d = self.text.word_embeddings.weight.dims()[1];
        self.text.embed(&text).reshape([d]).detach()
    }

    /// Checks a batch: the text against RoBERTa's vocabulary and positions, the images against
    /// the resolution, the class token's width and the modality type.
    ///
    /// # Errors
    /// One message naming what does not fit.
    pub fn check_input(&self, input: &ViltInput) -> Result<()> {
        self.text.check_input(&input.text)?;
        let [b, c, h, w] = input.images.dims();
        let res = self.resolution();
        if c != 3 || h != res || w != res {
            return Err(Error::Config(format!(
                "METER at {res} px needs images [B, 3, {res}, {res}], got [{b}, {c}, {h}, {w}]"
            )));
        }
        if b != input.text.input_ids.dims()[0] {
            return Err(Error::Config(format!("{b} images for {} texts", input.text.input_ids.dims()[0])));
        }
        let types = self.token_type_embeddings.weight.dims()[0];
        if input.image_type >= types {
            return Err(Error::Config(format!("image token type {} outside the {types}-row table", input.image_type)));
        }
        if let Some(cls) = &input.class_token
            && cls.dims()[0] != self.hidden_size()
        {
            return Err(Error::Config(format!(
                "class token of width {}, the fusion layers have {}",
                cls.dims()[0],
                self.hidden_size()
            )));
        }
        Ok(())
    }
}

/// The two halves of [`Encoder::encode`]: the unimodal streams (frozen towers, transforms, class
/// token, modality types), which depend on the text or the image alone, and the fusion layers
/// over a pair of them. Retrieval evaluation scores every image with every caption: it computes
/// each stream once and fuses the pairs, as the official METER evaluation caches its towers'
/// outputs.
impl TwoStream for Meter {
    /// RoBERTa, `cross_modal_text_transform`, the class token in place of `<s>` (when given),
    /// modality type 0.
    fn text_stream(&self, text: TextInput, class_token: Option<Tensor<1>>) -> (Tensor<3>, Tensor<2, Bool>) {
        let device = text.input_ids.device();
        let text_padding = text.attention_mask.clone().equal_elem(0);
        let states = self.text.encode(text, &NoHooks, EncodeOptions::default()).last;
        let mut t = self.text_transform.forward(states);
        let [b, n_t, d] = t.dims();
        if let Some(cls) = class_token {
            let cls = cls.reshape([1, 1, d]).expand([b, 1, d]);
            t = Tensor::cat(vec![cls, t.narrow(1, 1, n_t - 1)], 1);
        }
        let types = self.token_type_embeddings.forward(Tensor::<2, Int>::zeros([b, n_t], &device));
        (t + types, text_padding)
    }

    /// The CLIP tower, `cross_modal_image_transform`, modality type `image_type`.
    fn image_stream(&self, images: Tensor<4>, image_type: usize) -> Tensor<3> {
        let device = images.device();
        let v = self.image_transform.forward(self.vision.forward_features(images, &NoHooks));
        let [b, n_v, _] = v.dims();
        let types = self.token_type_embeddings.forward(Tensor::<2, Int>::full([b, n_v], image_type as i64, &device));
        v + types
    }

    /// The fusion layers and the poolers (see [`Encoder::encode`] for the output).
    fn fuse(
        &self,
        mut t: Tensor<3>,
        text_padding: Tensor<2, Bool>,
        mut v: Tensor<3>,
        hooks: &dyn BlockHooks,
        options: EncodeOptions,
    ) -> EncoderOutput {
        let mut states = States::new(options);
        let [b, _, d] = t.dims();
        let t_mask = AttentionMask::none().with_key_padding(text_padding);
        let v_mask = AttentionMask::none();
        if options.hidden_states {
            states.push(&Tensor::cat(vec![t.clone(), v.clone()], 1));
        }
        let l = self.text_layers.len();
        for (i, (tl, il)) in self.text_layers.iter().zip(&self.image_layers).enumerate() {
            let t_next = tl.forward(t.clone(), v.clone(), &t_mask, &v_mask, hooks, fusion_id(i, l));
            let v_next = il.forward(v, t, &v_mask, &t_mask, hooks, fusion_id(l + i, l));
            (t, v) = (t_next, v_next);
            if options.hidden_states {
                states.push(&Tensor::cat(vec![t.clone(), v.clone()], 1));
            }
        }
        let first = |x: &Tensor<3>| x.clone().narrow(1, 0, 1).reshape([b, d]);
        let pooled = Tensor::cat(
            vec![self.text_pooler.forward(first(&t)).tanh(), self.image_pooler.forward(first(&v)).tanh()],
            1,
        );
        EncoderOutput { last: Tensor::cat(vec![t, v], 1), hidden_states: states.into_vec(), pooled }
    }
}

impl Encoder for Meter {
    /// Texts (RoBERTa ids, padding id 1), images `[B, 3, R, R]` and the image's modality type.
    type Input = ViltInput;

    /// `last`: both streams after the fusion layers, text tokens then image tokens
    /// `[B, T + N_v, D]`; `pooled`: `[tanh(pool_t(t₀)) ; tanh(pool_v(v₀))]` `[B, 2D]`;
    /// `hidden_states`: the fusion input and each round's output (both streams concatenated).
    fn encode(&self, input: ViltInput, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        let (t, text_padding) = self.text_stream(input.text, input.class_token);
        let v = self.image_stream(input.images, input.image_type);
        self.fuse(t, text_padding, v, hooks, options)
    }

    fn layout(&self) -> Layout {
        let l = self.text_layers.len();
        let d = self.hidden_size();
        Layout {
            blocks: (0..2 * l)
                .map(|i| {
                    let layer = if i < l { &self.text_layers[i] } else { &self.image_layers[i - l] };
                    BlockInfo {
                        cross_attention: true,
                        ..BlockInfo::new(fusion_id(i, l), d, layer.fc1.weight.dims()[1])
                    }
                })
                .collect(),
            feature_dim: 2 * d,
        }
    }
}

impl crate::merge::LinearSites for Meter {
    /// Fusion block `index` (`0..L` text stream, `L..2L` image stream) and any site of it.
    fn linear_mut(&mut self, index: usize, site: LinearSite) -> Option<(&mut Linear, std::ops::Range<usize>)> {
        use LinearSite::*;
        let l = self.text_layers.len();
        let layer = if index < l { self.text_layers.get_mut(index)? } else { self.image_layers.get_mut(index - l)? };
        let linear = match site {
            Query => &mut layer.query,
            Key => &mut layer.key,
            Value => &mut layer.value,
            AttnOut => &mut layer.attn_out,
            CrossQuery => &mut layer.cross_query,
            CrossKey => &mut layer.cross_key,
            CrossValue => &mut layer.cross_value,
            CrossOut => &mut layer.cross_out,
            Fc1 => &mut layer.fc1,
            Fc2 => &mut layer.fc2,
        };
        let out = linear.weight.dims()[1];
        Some((linear, 0..out))
    }
}

/// PyTorch's bicubic weights (`upsample_bicubic2d`, `A = −0.75`) for the four source taps
/// around output index `i` of `out` samples over `input` samples, `align_corners = False`;
/// taps outside the input are clamped to its border.
fn bicubic_taps(i: usize, input: usize, out: usize) -> [(usize, f64); 4] {
    const A: f64 = -0.75;
    let src = (i as f64 + 0.5) * input as f64 / out as f64 - 0.5;
    let floor = src.floor();
    let t = src - floor;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let w = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
    let mut taps = [(0, 0.0); 4];
    for (k, tap) in taps.iter_mut().enumerate() {
        let idx = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
        *tap = (idx, w[k]);
    }
    taps
}

/// A ViT position table with a class row, `[1, 1 + g², D]` (or `[1 + g², D]`), resized to a
/// `grid × grid` grid as METER's `adapt_position_encoding` does it: the class row kept, the
/// grid rows bicubically interpolated (`F.interpolate(mode = "bicubic", align_corners =
/// False)`). The output keeps the input's rank.
///
/// # Errors
/// When the table's rows minus one are not a square.
pub fn resize_position_table(table: &HostTensor, grid: usize) -> Result<HostTensor> {
    let (rows, d) = (table.shape[table.shape.len() - 2], table.shape[table.shape.len() - 1]);
    let before = ((rows.saturating_sub(1)) as f64).sqrt().round() as usize;
    if rows < 2 || before * before + 1 != rows {
        return Err(Error::Config(format!("a position table of {rows} rows is not a class row plus a square grid")));
    }
    let src = |r: usize, c: usize, k: usize| table.data[(1 + r * before + c) * d + k] as f64;
    // Along columns, then rows (the separable form of the 2-D kernel).
    let mut wide = vec![0.0f64; before * grid * d];
    for r in 0..before {
        for c in 0..grid {
            for (j, w) in bicubic_taps(c, before, grid) {
                for k in 0..d {
                    wide[(r * grid + c) * d + k] += w * src(r, j, k);
                }
            }
        }
    }
    let mut data: Vec<f32> = table.data[..d].to_vec();
    data.reserve(grid * grid * d);
    for r in 0..grid {
        let taps = bicubic_taps(r, before, grid);
        for c in 0..grid {
            for k in 0..d {
                let v: f64 = taps.iter().map(|&(i, w)| w * wide[(i * grid + c) * d + k]).sum();
                data.push(v as f32);
            }
        }
    }
    let mut shape = table.shape.clone();
    let n = shape.len();
    shape[n - 2] = 1 + grid * grid;
    Ok(HostTensor::new(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_counts_match_the_apt_papers_backbone() {
        // RoBERTa-base 124,645,632 + CLIP ViT-B/16 (11 blocks, 577 positions at 384 px)
        // 79,003,392 + transforms 1,181,184 + token types 1,536 + 12 fusion layers 113,421,312 +
        // 2 poolers 1,181,184. (The APT paper's 319,474,688 adds the 40,448 parameters of CLIP's
        // unused text-side tensors that METER's checkpoint carries.)
        assert_eq!(BertConfig::roberta_base().num_params(), 124_645_632);
        let cfg = MeterConfig::meter_clip16_roberta(384);
        assert_eq!(cfg.vision.num_params(), 79_003_392);
        assert_eq!(cfg.num_params(), 319_474_688 - 40_448);
    }

    #[test]
    fn bicubic_resize_keeps_a_constant_table_and_the_class_row() {
        let d = 3;
        let mut data = vec![7.0, 8.0, 9.0];
        data.extend(std::iter::repeat_n([1.5f32, -2.0, 0.25], 16).flatten());
        let table = HostTensor::new(vec![1, 17, d], data);
        let out = resize_position_table(&table, 6).unwrap();
        assert_eq!(out.shape, vec![1, 37, 3]);
        assert_eq!(&out.data[..3], &[7.0, 8.0, 9.0]);
        for row in out.data[3..].chunks(3) {
            for (a, b) in row.iter().zip([1.5f32, -2.0, 0.25]) {
                assert!((a - b).abs() < 1e-6, "{row:?}");
            }
        }
        assert!(resize_position_table(&HostTensor::new(vec![6, 2], vec![0.0; 12]), 3).is_err());
    }
}
