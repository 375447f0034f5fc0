//! Backbone + tuner + head: the classifier every method trains.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Serialize};

use burn::module::ModuleDisplay;

use crate::encoder::{EncodeOptions, Encoder, EncoderOutput};
use crate::hooks::{BlockHooks, Layout, NoHooks};
use crate::swin::{Swin, SwinConfig};
use crate::vit::{Vit, VitConfig};
use crate::weights::{LoadReport, TensorMap, apply, collect};

/// The largest value any one size of a backbone config may take (image side, patch, width,
/// depth, heads): larger is no real model, and the bound keeps parameter counts of configs read
/// from files far from overflowing.
pub const MAX_DIM: usize = 1 << 16;

/// Configuration of an image backbone, tagged by family (`{"vit": {...}}` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneConfig {
    /// A plain ViT.
    Vit(VitConfig),
    /// A Swin transformer.
    Swin(SwinConfig),
}

impl BackboneConfig {
    /// A named preset from the registry ([`register_preset`]): built in are `vit-b16`,
    /// `vit-l16`, `vit-h14`, `vit-ti16`, `clip-vit-b16` (CLIP's image tower), `swin-b`,
    /// `vit-tiny-test`, `swin-tiny-test`; `ViT-B/16`-style spellings are accepted too.
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones).
    pub fn preset(name: &str) -> crate::Result<Self> {
        let registry = presets().read().unwrap_or_else(|e| e.into_inner());
        let wanted = name.to_ascii_lowercase().replace('/', "");
        registry.iter().find(|(n, _)| *n == wanted || n == name).map_or_else(
            || {
                let known: Vec<&str> = registry.iter().map(|(n, _)| n.as_str()).collect();
                Err(crate::Error::Config(format!("unknown backbone preset `{name}` (known: {})", known.join(", "))))
            },
            |(_, cfg)| Ok(cfg.clone()),
        )
    }

    /// Names of the registered presets, in registration order.
    pub fn preset_names() -> Vec<String> {
        presets().read().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, _)| n.clone()).collect()
    }

    /// Checks the configuration before anything is allocated (sizes, divisibility, a sane
    /// parameter count).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            Self::Vit(c) => c.validate(),
            Self::Swin(c) => c.validate(),
        }
    }

    /// Block layout.
    pub fn layout(&self) -> Layout {
        match self {
            Self::Vit(c) => c.layout(),
            Self::Swin(c) => c.layout(),
        }
    }

    /// Backbone parameters (no head), without allocating.
    pub fn num_params(&self) -> usize {
        match self {
            Self::Vit(c) => c.num_params(),
            Self::Swin(c) => c.num_params(),
        }
    }

    /// Input image size.
    pub fn image_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.image_size,
            Self::Swin(c) => c.image_size,
        }
    }

    /// Allocates the backbone.
    pub fn init(&self, device: &Device) -> Backbone {
        match self {
            Self::Vit(c) => Backbone::Vit(c.init(device)),
            Self::Swin(c) => Backbone::Swin(c.init(device)),
        }
    }
}

/// The preset registry, with the built-in presets.
fn presets() -> &'static RwLock<Vec<(String, BackboneConfig)>> {
    static PRESETS: OnceLock<RwLock<Vec<(String, BackboneConfig)>>> = OnceLock::new();
    PRESETS.get_or_init(|| {
        RwLock::new(vec![
            ("vit-b16".into(), BackboneConfig::Vit(VitConfig::vit_b16())),
            ("vit-l16".into(), BackboneConfig::Vit(VitConfig::vit_l16())),
            ("vit-h14".into(), BackboneConfig::Vit(VitConfig::vit_h14())),
            ("vit-ti16".into(), BackboneConfig::Vit(VitConfig::vit_ti16())),
            ("clip-vit-b16".into(), BackboneConfig::Vit(VitConfig::clip_vit_b16())),
            ("swin-b".into(), BackboneConfig::Swin(SwinConfig::swin_b())),
            ("vit-tiny-test".into(), BackboneConfig::Vit(VitConfig::tiny_test())),
            ("swin-tiny-test".into(), BackboneConfig::Swin(SwinConfig::tiny_test())),
        ])
    })
}

/// Registers (or replaces) a named backbone preset, so that a crate adds presets without editing
/// this one: `register_preset("vit-s16", BackboneConfig::Vit(VitConfig::new(224, 16, 384, 12, 6, 1536)))`.
pub fn register_preset(name: &str, config: BackboneConfig) {
    let mut registry = presets().write().unwrap_or_else(|e| e.into_inner());
    match registry.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = config,
        None => registry.push((name.to_string(), config)),
    }
}

/// A frozen-or-not image backbone.
#[derive(Module, Debug)]
pub enum Backbone {
    /// ViT.
    Vit(Vit),
    /// Swin.
    Swin(Swin),
}

impl Backbone {
    /// Loads tensors keyed by backbone paths (e.g. `blocks.0.query.weight`), reporting what
    /// fitted; see [`crate::weights::apply`].
    pub fn load(self, map: TensorMap) -> (Self, LoadReport) {
        match self {
            Self::Vit(m) => {
                let (m, r) = apply(m, map);
                (Self::Vit(m), r)
            }
            Self::Swin(m) => {
                let (m, r) = apply(m, map);
                (Self::Swin(m), r)
            }
        }
    }

    /// All backbone tensors keyed by backbone paths (the inverse of [`Backbone::load`]).
    pub fn tensors(&self) -> TensorMap {
        match self {
            Self::Vit(m) => collect(m, |_, _| true),
            Self::Swin(m) => collect(m, |_, _| true),
        }
    }

    /// Pooled features: images `[B, 3, H, W]` -> `[B, F]` (ViT: class token; Swin: token mean).
    pub fn forward_pooled(&self, images: Tensor<4>, hooks: &dyn BlockHooks) -> Tensor<2> {
        self.encode(images, hooks, EncodeOptions::default()).pooled
    }
}

impl Encoder for Backbone {
    /// Images `[B, 3, H, W]`.
    type Input = Tensor<4>;

    fn encode(&self, images: Tensor<4>, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        match self {
            Self::Vit(m) => m.encode(images, hooks, options),
            Self::Swin(m) => m.encode(images, hooks, options),
        }
    }

    fn layout(&self) -> Layout {
        match self {
            Self::Vit(m) => m.layout(),
            Self::Swin(m) => m.layout(),
        }
    }
}

/// How the classification head starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInit {
    /// All zeros (the official ViT loader; initial loss = ln K).
    Zeros,
    /// timm's head init for Swin: `trunc_normal_(std=0.02)`, bias 0. timm truncates at the
    /// absolute bounds ±2 (100 σ), so a plain normal draw is the same distribution.
    TruncNormal,
}

/// Creates a classification head `[F, K]`.
pub fn init_head(features: usize, classes: usize, init: HeadInit, device: &Device) -> Linear {
    let initializer = match init {
        HeadInit::Zeros => Initializer::Zeros,
        HeadInit::TruncNormal => Initializer::Normal { mean: 0.0, std: 0.02 },
    };
    let mut head = LinearConfig::new(features, classes).with_initializer(initializer).init(device);
    head.bias = Some(Param::from_tensor(Tensor::zeros([classes], device)));
    head
}

/// A method's parameters as a module that drives the backbone's insertion points.
pub trait Tuner: Module + ModuleDisplay + BlockHooks {}

impl<T: Module + ModuleDisplay + BlockHooks> Tuner for T {}

/// An encoder that is a Burn module (what a [`Classifier`] holds).
pub trait EncoderModule: Module + ModuleDisplay + Encoder {}

impl<E: Module + ModuleDisplay + Encoder> EncoderModule for E {}

/// Encoder, tuner (the method's parameters, driving the insertion points) and head.
///
/// The encoder is any [`Encoder`] module: the built-in image backbones ([`Backbone`], the
/// default), or any other encoder a crate brings (BERT's [`crate::bert::Bert`] gives a text
/// classifier reading [`crate::bert::TextInput`]); methods that merge reach its weights through
/// [`crate::merge::LinearSites`].
#[derive(Module, Debug)]
pub struct Classifier<T: Tuner, E: EncoderModule = Backbone> {
    /// The (usually frozen) encoder.
    pub backbone: E,
    /// The method.
    pub tuner: T,
    /// Linear head on the pooled feature.
    pub head: Linear,
}

impl<T: Tuner, E: EncoderModule> Classifier<T, E> {
    /// Logits: the encoder's input (images `[B, 3, H, W]` for image backbones) -> `[B, K]`.
    pub fn forward(&self, input: E::Input) -> Tensor<2> {
        self.head.forward(self.backbone.encode(input, &self.tuner, EncodeOptions::default()).pooled)
    }

    /// Freezes the encoder, leaves tuner and head trainable.
    pub fn freeze_backbone(mut self) -> Self {
        self.backbone = self.backbone.no_grad();
        self
    }
}

/// A classifier without a method: linear probing (frozen backbone) or full fine-tuning.
pub type PlainClassifier = Classifier<NoHooks>;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn presets_come_from_an_extensible_registry() {
        assert_eq!(BackboneConfig::preset("ViT-B/16").unwrap(), BackboneConfig::Vit(VitConfig::vit_b16()));
        assert_eq!(BackboneConfig::preset("clip-vit-b16").unwrap(), BackboneConfig::Vit(VitConfig::clip_vit_b16()));
        let err = BackboneConfig::preset("vit-x").unwrap_err().to_string();
        assert!(err.contains("unknown backbone preset `vit-x`") && err.contains("swin-b"), "{err}");
        let small = BackboneConfig::Vit(VitConfig::new(224, 16, 384, 12, 6, 1536));
        register_preset("vit-s16-registry-test", small.clone());
        assert_eq!(BackboneConfig::preset("vit-s16-registry-test").unwrap(), small);
        assert!(BackboneConfig::preset_names().contains(&"vit-s16-registry-test".to_string()));
    }

    #[test]
    fn encoders_report_their_layout_and_every_hidden_state() {
        let device = crate::device::device_from_name("flex").expect("flex");
        for cfg in [BackboneConfig::preset("vit-tiny-test").unwrap(), BackboneConfig::preset("swin-tiny-test").unwrap()]
        {
            let model = cfg.init(&device);
            assert_eq!(model.layout(), cfg.layout(), "{cfg:?}");
            let size = cfg.image_size();
            let x = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
            let plain = model.encode(x.clone(), &NoHooks, EncodeOptions::default());
            assert!(plain.hidden_states.is_empty());
            let out = model.encode(x, &NoHooks, EncodeOptions::with_hidden_states());
            assert_eq!(out.hidden_states.len(), cfg.layout().blocks.len() + 1, "embeddings + one per block");
            assert_eq!(out.pooled.dims(), [2, cfg.layout().feature_dim]);
            let d = (out.pooled - plain.pooled).abs().max().into_scalar::<f32>();
            assert_eq!(d, 0.0, "asking for hidden states changes nothing else");
            if let Backbone::Vit(vit) = &model {
                let normed = vit.norm.forward(out.hidden_states.last().unwrap().clone());
                assert_eq!((normed - out.last).abs().max().into_scalar::<f32>(), 0.0, "last = norm(h_L)");
            }
        }
    }
}

impl crate::merge::LinearSites for Backbone {
    fn linear_mut(
        &mut self,
        index: usize,
        site: crate::hooks::LinearSite,
    ) -> Option<(&mut burn::nn::Linear, std::ops::Range<usize>)> {
        match self {
            Backbone::Vit(v) => crate::merge::LinearSites::linear_mut(v, index, site),
            Backbone::Swin(s) => crate::merge::LinearSites::linear_mut(s, index, site),
        }
    }
}
