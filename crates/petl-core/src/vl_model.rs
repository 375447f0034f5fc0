//! A vision–language model for downstream tasks: a backbone ([`VlBackbone`]: single-stream
//! [`Vilt`] or two-stream [`Meter`]), any tuner (the method, driving the backbone's hooks), an
//! optional learned class token replacing the text's first embedding (APT's
//! `token4classifier`), and the task head of ViLT's and METER's fine-tuning code
//! (`vilt/modules/vilt_module.py`, `meter/modules/meter_module.py`). With `F` the pooled width
//! (ViLT `D`; METER `2D`, both streams' poolers) and `D` the hidden width:
//!
//! | head | input | layers |
//! |---|---|---|
//! | VQA (`vqa_classifier`) | pooled `[B, F]` | Linear(F → 2D) → LN → GELU → Linear(2D → answers) |
//! | NLVR2 (`nlvr2_classifier`) | `[pooled(image₀, type 1) ; pooled(image₁, type 2)]` `[B, 2F]` | Linear(2F → 2D) → LN → GELU → Linear(2D → 2) |
//! | retrieval (`rank_output`) | pooled `[B, F]` | Linear(F → 1), initialised from the "match" row of the pretrained ITM head |
//!
//! Heads: weights `N(0, 0.02²)`, biases 0, LN `γ = 1`, `β = 0` (eps 1e-5).
//!
//! Trainable sets ([`VlModel::petl_trainable`]): a PETL method trains its tuner, the head,
//! the class token, the poolers and the token-type tables (the official filters' `pooler` and
//! `token_type_embeddings` substrings; in ViLT they match the text's own table too); everything
//! else is frozen (no gradient, no optimizer state). Full tuning ([`VlModel::fully_trainable`])
//! trains every parameter.

use burn::module::{ModuleMapper, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bert::TextInput;
use crate::encoder::{EncodeOptions, Encoder};
use crate::hooks::BlockHooks;
use crate::meter::Meter;
use crate::model::Tuner;
use crate::ops::gelu;
use crate::train::vl::{VlClassify, VlInput};
use crate::vilt::{Vilt, ViltInput};

/// A vision–language backbone a [`VlModel`] can carry: an encoder of texts with images (of a
/// given modality type) that pools one feature per sample.
pub trait VlBackbone: Module + burn::module::ModuleDisplay + Encoder<Input = ViltInput> {
    /// Width of the text stream (and of a class token).
    fn hidden_size(&self) -> usize;
    /// Checks a batch against the backbone (vocabulary, text length, image sizes, modality
    /// type, class token width).
    ///
    /// # Errors
    /// One message naming what does not fit.
    fn check_input(&self, input: &ViltInput) -> crate::Result<()>;
    /// The text embedding of token `id` at the first position, type 0, after the embedding
    /// LayerNorm: APT's deterministic `token4classifier` initialisation.
    fn class_token_init(&self, id: usize) -> Tensor<1>;
    /// The modality token-type table (`[types, D]`).
    fn modality_types(&mut self) -> &mut burn::nn::Embedding;
    /// Frozen except the poolers and token-type tables (the PETL set's backbone part).
    fn petl_trainable(self) -> Self;
    /// Path prefixes (inside the backbone) of the PETL set's backbone part.
    fn petl_prefixes() -> &'static [&'static str];
    /// Parameters of the PETL set's backbone part.
    fn petl_params(&self) -> usize;
    /// A two-stream backbone's halves (METER), which retrieval evaluation uses to compute each
    /// unimodal stream once; `None` for a single-stream backbone (ViLT), whose every layer sees
    /// the pair.
    fn two_stream(&self) -> Option<&dyn TwoStream> {
        None
    }
}

/// A two-stream backbone split at its fusion layers: unimodal text and image streams that
/// depend on one modality alone, and the fusion of a pair of them; [`Encoder::encode`] is the
/// three in a row.
pub trait TwoStream {
    /// The text stream entering the fusion layers `[B, T, D]` (with `class_token` in place of
    /// the first token when given) and its padding `[B, T]` (true at padding).
    fn text_stream(&self, text: TextInput, class_token: Option<Tensor<1>>) -> (Tensor<3>, Tensor<2, Bool>);
    /// The image stream entering the fusion layers `[B, N, D]`, of modality type `image_type`.
    fn image_stream(&self, images: Tensor<4>, image_type: usize) -> Tensor<3>;
    /// The fusion layers, driven by `hooks`, over text and image streams of the same batch size.
    fn fuse(
        &self,
        text: Tensor<3>,
        text_padding: Tensor<2, Bool>,
        image: Tensor<3>,
        hooks: &dyn BlockHooks,
        options: EncodeOptions,
    ) -> crate::encoder::EncoderOutput;
}

impl VlBackbone for Vilt {
    fn hidden_size(&self) -> usize {
        Vilt::hidden_size(self)
    }
    fn check_input(&self, input: &ViltInput) -> crate::Result<()> {
        Vilt::check_input(self, input)
    }
    fn class_token_init(&self, id: usize) -> Tensor<1> {
        let text = TextInput::single(id, &self.word_embeddings.weight.device());
        let d = Vilt::hidden_size(self);
        self.embed_text(&text).reshape([d]).detach()
    }
    fn modality_types(&mut self) -> &mut burn::nn::Embedding {
        &mut self.token_type_embeddings
    }
    fn petl_trainable(self) -> Self {
        let mut b = self.no_grad();
        b.pooler = trainable(b.pooler);
        b.token_type_embeddings = trainable(b.token_type_embeddings);
        b.text_token_type_embeddings = trainable(b.text_token_type_embeddings);
        b
    }
    fn petl_prefixes() -> &'static [&'static str] {
        &["pooler.", "token_type_embeddings.", "text_token_type_embeddings."]
    }
    fn petl_params(&self) -> usize {
        self.pooler.num_params()
            + self.token_type_embeddings.num_params()
            + self.text_token_type_embeddings.num_params()
    }
}

/// METER's PETL set: both poolers and the modality token types (its official filter also
/// names `cross_modal_*` parameters; the transforms stay frozen as in the released code).
impl VlBackbone for Meter {
    fn hidden_size(&self) -> usize {
        Meter::hidden_size(self)
    }
    fn check_input(&self, input: &ViltInput) -> crate::Result<()> {
        Meter::check_input(self, input)
    }
    fn class_token_init(&self, id: usize) -> Tensor<1> {
        Meter::class_token_init(self, id)
    }
    fn modality_types(&mut self) -> &mut burn::nn::Embedding {
        &mut self.token_type_embeddings
    }
    fn petl_trainable(self) -> Self {
        let mut b = self.no_grad();
        b.text_pooler = trainable(b.text_pooler);
        b.image_pooler = trainable(b.image_pooler);
        b.token_type_embeddings = trainable(b.token_type_embeddings);
        b
    }
    fn petl_prefixes() -> &'static [&'static str] {
        &["text_pooler.", "image_pooler.", "token_type_embeddings."]
    }
    fn petl_params(&self) -> usize {
        self.text_pooler.num_params() + self.image_pooler.num_params() + self.token_type_embeddings.num_params()
    }
    fn two_stream(&self) -> Option<&dyn TwoStream> {
        Some(self)
    }
}

/// Linear → LayerNorm → GELU → Linear.
#[derive(Module, Debug)]
pub struct MlpHead {
    /// First linear.
    pub fc1: Linear,
    /// LayerNorm on its output.
    pub norm: LayerNorm,
    /// Output linear.
    pub fc2: Linear,
}

fn head_linear(i: usize, o: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 }).init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
    l
}

impl MlpHead {
    /// `input → hidden → out`, initialised as ViLT's heads.
    pub fn new(input: usize, hidden: usize, out: usize, device: &Device) -> Self {
        Self {
            fc1: head_linear(input, hidden, device),
            norm: LayerNormConfig::new(hidden).init(device),
            fc2: head_linear(hidden, out, device),
        }
    }

    /// `[B, F] -> [B, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2.forward(gelu(self.norm.forward(self.fc1.forward(x))))
    }
}

/// Which head a model carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VlHeadKind {
    /// VQA over `answers` answers.
    Vqa {
        /// Size of the answer vocabulary.
        answers: usize,
    },
    /// True/false over an image pair.
    Nlvr2,
    /// One matching score per (image, text) pair.
    Rank,
}

/// A task head.
#[derive(Module, Debug)]
pub enum VlHead {
    /// VQA head.
    Vqa(MlpHead),
    /// NLVR2 pair head.
    Nlvr2(MlpHead),
    /// Retrieval score.
    Rank(Linear),
}

/// Backbone, tuner, class token and head.
#[derive(Module, Debug)]
pub struct VlModel<E: VlBackbone, T: Tuner> {
    /// The encoder (frozen except poolers and token types for PETL methods).
    pub backbone: E,
    /// The method.
    pub tuner: T,
    /// `token4classifier` `[D]`: replaces the text's first embedding when present.
    pub class_token: Option<Param<Tensor<1>>>,
    /// The task head.
    pub head: VlHead,
}

struct RequireGrad(bool);

impl ModuleMapper for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.set_require_grad(self.0)
    }
}

/// Marks every parameter of `module` trainable.
pub fn trainable<M: Module>(module: M) -> M {
    module.map(&mut RequireGrad(true))
}

/// ViLT with a tuner and a head.
pub type ViltModel<T> = VlModel<Vilt, T>;

/// METER with a tuner and a head.
pub type MeterModel<T> = VlModel<Meter, T>;

impl<E: VlBackbone, T: Tuner> VlModel<E, T> {
    /// A model for `head` around `backbone` and `tuner`. `class_token`: the token id whose
    /// embedding initialises a learned class token (`None`: no class token, full tuning).
    /// `itm`: the pretrained ITM head `[D, 2]`, whose "match" column initialises the retrieval
    /// head (a fresh head otherwise).
    ///
    /// An NLVR2 head needs a third modality type (the second image): when the backbone has two,
    /// the table grows by a copy of row 1, as the official NLVR2 fine-tuning does.
    pub fn new(
        mut backbone: E,
        tuner: T,
        head: VlHeadKind,
        class_token: Option<usize>,
        itm: Option<&Linear>,
        device: &Device,
    ) -> Self {
        let d = backbone.hidden_size();
        let f = backbone.layout().feature_dim;
        let table = backbone.modality_types();
        let types = table.weight.val();
        let [rows, _] = types.dims();
        if head == VlHeadKind::Nlvr2 && rows < 3 {
            let grown = Tensor::cat(vec![types.clone(), types.narrow(0, rows - 1, 1).repeat_dim(0, 3 - rows)], 0);
            table.weight = Param::from_tensor(grown.detach());
        }
        let head = match head {
            VlHeadKind::Vqa { answers } => VlHead::Vqa(MlpHead::new(f, 2 * d, answers, device)),
            VlHeadKind::Nlvr2 => VlHead::Nlvr2(MlpHead::new(2 * f, 2 * d, 2, device)),
            VlHeadKind::Rank => {
                let mut rank = head_linear(f, 1, device);
                if let Some(itm) = itm {
                    rank.weight = Param::from_tensor(itm.weight.val().narrow(1, 1, 1).detach());
                    if let Some(b) = &itm.bias {
                        rank.bias = Some(Param::from_tensor(b.val().narrow(0, 1, 1).detach()));
                    }
                }
                VlHead::Rank(rank)
            }
        };
        let class_token = class_token.map(|id| Param::from_tensor(backbone.class_token_init(id)));
        Self { backbone, tuner, class_token, head }
    }

    /// The PETL trainable set (module docs): the backbone frozen except its pooler and
    /// token-type tables; tuner, class token and head trainable.
    pub fn petl_trainable(mut self) -> Self {
        self.backbone = self.backbone.petl_trainable();
        self
    }

    /// Whether the parameter at `path` (as [`crate::weights::collect`] names it) is in the
    /// PETL trainable set of [`ViltModel::petl_trainable`]: what an adapter checkpoint holds.
    pub fn in_petl_set(path: &str) -> bool {
        match path.strip_prefix("backbone.") {
            None => true,
            Some(inner) => E::petl_prefixes().iter().any(|p| inner.starts_with(p)),
        }
    }

    /// Parameters of the PETL trainable set outside the tuner: head, class token, poolers and
    /// token-type tables (the formula a measured count is checked against).
    pub fn petl_set_params_besides_tuner(&self) -> usize {
        self.head.num_params() + self.class_token.as_ref().map_or(0, |c| c.num_params()) + self.backbone.petl_params()
    }

    /// Every parameter trainable (full tuning).
    pub fn fully_trainable(self) -> Self {
        trainable(self)
    }

    /// The pooled feature of texts with image slot `images` of modality type `image_type`.
    pub fn pooled(&self, text: TextInput, images: Tensor<4>, image_type: usize) -> Tensor<2> {
        let input = ViltInput { text, images, image_type, class_token: self.class_token.as_ref().map(|c| c.val()) };
        self.backbone.encode(input, &self.tuner, EncodeOptions::default()).pooled
    }
}

impl<E: VlBackbone, T: Tuner> VlClassify for VlModel<E, T> {
    /// VQA: answer logits `[B, answers]`; NLVR2: `[B, 2]` (false, true); retrieval: the
    /// matching score `[B, 1]`.
    fn vl_logits(&self, input: VlInput) -> Tensor<2> {
        let mut images = input.images.into_iter();
        let first = images.next().expect("at least one image slot");
        match &self.head {
            VlHead::Vqa(h) => h.forward(self.pooled(input.text, first, 1)),
            VlHead::Rank(h) => h.forward(self.pooled(input.text, first, 1)),
            VlHead::Nlvr2(h) => {
                let second = images.next().expect("NLVR2 needs two image slots");
                let a = self.pooled(input.text.clone(), first, 1);
                let b = self.pooled(input.text, second, 2);
                h.forward(Tensor::cat(vec![a, b], 1))
            }
        }
    }

    /// On a two-stream backbone with the retrieval head: every text chunk's stream once, every
    /// image's stream once, then the fusion layers and the head per (image, chunk); otherwise
    /// one forward per (image, chunk). The scores equal those of [`VlClassify::vl_logits`].
    fn score_grid(&self, images: &[Tensor<4>], texts: &[TextInput]) -> Vec<f32> {
        let (VlHead::Rank(head), Some(two)) = (&self.head, self.backbone.two_stream()) else {
            return crate::train::vl::score_grid_pairwise(self, images, texts);
        };
        let class_token = self.class_token.as_ref().map(|c| c.val());
        let streams: Vec<_> = texts.iter().map(|t| two.text_stream(t.clone(), class_token.clone())).collect();
        let mut scores = vec![];
        for image in images {
            let v = two.image_stream(image.clone(), 1);
            let [_, n, d] = v.dims();
            for (t, padding) in &streams {
                let b = t.dims()[0];
                let v = v.clone().expand([b, n, d]);
                let fused = two.fuse(t.clone(), padding.clone(), v, &self.tuner, EncodeOptions::default());
                scores.extend(crate::weights::HostTensor::from_tensor(&head.forward(fused.pooled)).data);
            }
        }
        scores
    }
}
