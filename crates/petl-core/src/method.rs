//! Methods as plug-ins, in the manner of Hugging Face PEFT's `tuners/<method>/{config,model}`: a
//! method is a config, the tuner it injects and the rule that builds it on a backbone, plus its
//! merge rule where it has one. Binaries keep a list of methods and dispatch through
//! [`PetlMethod`]; nothing else in them names a method.
//!
//! This crate implements it for the shared baselines ([`LoraMethod`], [`AdapterMethod`],
//! [`DeepPromptMethod`], [`LinearProbe`], [`FullFineTune`]); each paper's crate implements it for
//! its own method.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use burn::prelude::*;

use crate::hooks::{Layout, NoHooks};
use crate::model::{Backbone, BackboneConfig, Classifier, HeadInit, PlainClassifier, Tuner, init_head};
use crate::tuners::{BottleneckAdapter, BottleneckAdapterConfig, DeepPrompt, DeepPromptConfig, Lora, LoraConfig};

/// A method configuration that has no exact merged form (a property of the configuration, not
/// a failure: tables report it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("does not merge: {0}")]
pub struct NotMergeable(pub String);

/// A parameter-efficient method.
pub trait PetlMethod: 'static {
    /// The tuner the method injects: a Burn module implementing the insertion-point hooks.
    type Tuner: Tuner;
    /// Its hyper-parameters, stored as `method_config` in adapter checkpoints.
    type Config: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;

    /// Parameters the method adds to a backbone of `layout` (the head not included).
    fn num_params(config: &Self::Config, layout: &Layout) -> usize;

    /// Whether the backbone itself is trained (full fine-tuning).
    fn trains_backbone(_config: &Self::Config) -> bool {
        false
    }

    /// Backbone (frozen unless [`PetlMethod::trains_backbone`]) + tuner + head, freshly
    /// initialised on `device`.
    fn build(
        config: &Self::Config,
        backbone: &BackboneConfig,
        classes: usize,
        device: &Device,
    ) -> Classifier<Self::Tuner>;

    /// The plain backbone with the method folded in, in evaluation mode, where that is exact.
    ///
    /// # Errors
    /// [`NotMergeable`] with the reason, by default.
    fn merge(_model: Classifier<Self::Tuner>) -> Result<PlainClassifier, NotMergeable> {
        Err(NotMergeable("the method adds computation that has no merged form".into()))
    }
}

/// Head initialisation of the official pipelines per backbone family: zeros for ViT (the
/// Google ViT release; initial loss `ln K`), timm's `trunc_normal_(0.02)` for Swin.
pub fn head_init(backbone: &BackboneConfig) -> HeadInit {
    match backbone {
        BackboneConfig::Vit(_) => HeadInit::Zeros,
        BackboneConfig::Swin(_) => HeadInit::TruncNormal,
    }
}

/// A frozen backbone with `tuner` and a head initialised per [`head_init`].
pub fn frozen_with<T: Tuner>(backbone: &BackboneConfig, tuner: T, classes: usize, device: &Device) -> Classifier<T> {
    let features = backbone.layout().feature_dim;
    Classifier {
        backbone: backbone.init(device).no_grad(),
        tuner,
        head: init_head(features, classes, head_init(backbone), device),
    }
}

/// A method without hyper-parameters (`{}` in JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// LoRA on q and v ([`crate::tuners::lora`]); merges into ViT backbones.
pub struct LoraMethod;

impl PetlMethod for LoraMethod {
    type Tuner = Lora;
    type Config = LoraConfig;

    fn num_params(config: &LoraConfig, layout: &Layout) -> usize {
        config.num_params(layout)
    }

    fn build(config: &LoraConfig, backbone: &BackboneConfig, classes: usize, device: &Device) -> Classifier<Lora> {
        frozen_with(backbone, config.init(&backbone.layout(), device), classes, device)
    }

    fn merge(model: Classifier<Lora>) -> Result<PlainClassifier, NotMergeable> {
        let m = model.valid();
        match m.backbone {
            Backbone::Vit(vit) => {
                Ok(Classifier { backbone: Backbone::Vit(m.tuner.merge_into(vit)), tuner: NoHooks, head: m.head })
            }
            Backbone::Swin(_) => Err(NotMergeable("LoRA merging is implemented for ViT backbones only".into())),
        }
    }
}

/// The bottleneck adapter after attention and FFN ([`crate::tuners::adapter`]); non-linear,
/// so it never merges.
pub struct AdapterMethod;

impl PetlMethod for AdapterMethod {
    type Tuner = BottleneckAdapter;
    type Config = BottleneckAdapterConfig;

    fn num_params(config: &BottleneckAdapterConfig, layout: &Layout) -> usize {
        config.num_params(layout)
    }

    fn build(
        config: &BottleneckAdapterConfig,
        backbone: &BackboneConfig,
        classes: usize,
        device: &Device,
    ) -> Classifier<BottleneckAdapter> {
        frozen_with(backbone, config.init(&backbone.layout(), device), classes, device)
    }

    fn merge(_model: Classifier<BottleneckAdapter>) -> Result<PlainClassifier, NotMergeable> {
        Err(NotMergeable("the bottleneck adapter is non-linear".into()))
    }
}

/// Deep prompts ([`crate::tuners::prompt`]); they add keys and values, so they never merge.
pub struct DeepPromptMethod;

impl PetlMethod for DeepPromptMethod {
    type Tuner = DeepPrompt;
    type Config = DeepPromptConfig;

    fn num_params(config: &DeepPromptConfig, layout: &Layout) -> usize {
        config.num_params(layout)
    }

    fn build(
        config: &DeepPromptConfig,
        backbone: &BackboneConfig,
        classes: usize,
        device: &Device,
    ) -> Classifier<DeepPrompt> {
        frozen_with(backbone, config.init(&backbone.layout(), device), classes, device)
    }

    fn merge(_model: Classifier<DeepPrompt>) -> Result<PlainClassifier, NotMergeable> {
        Err(NotMergeable("deep prompts add keys and values to every block".into()))
    }
}

/// Linear probing: a frozen backbone and a trained head.
pub struct LinearProbe;

impl PetlMethod for LinearProbe {
    type Tuner = NoHooks;
    type Config = NoConfig;

    fn num_params(_: &NoConfig, _: &Layout) -> usize {
        0
    }

    fn build(_: &NoConfig, backbone: &BackboneConfig, classes: usize, device: &Device) -> PlainClassifier {
        frozen_with(backbone, NoHooks, classes, device)
    }

    fn merge(model: PlainClassifier) -> Result<PlainClassifier, NotMergeable> {
        Ok(model.valid())
    }
}

/// Full fine-tuning: every backbone weight and the head are trained (timm's head init).
pub struct FullFineTune;

impl PetlMethod for FullFineTune {
    type Tuner = NoHooks;
    type Config = NoConfig;

    fn num_params(_: &NoConfig, _: &Layout) -> usize {
        0
    }

    fn trains_backbone(_: &NoConfig) -> bool {
        true
    }

    fn build(_: &NoConfig, backbone: &BackboneConfig, classes: usize, device: &Device) -> PlainClassifier {
        let features = backbone.layout().feature_dim;
        Classifier {
            backbone: backbone.init(device),
            tuner: NoHooks,
            head: init_head(features, classes, HeadInit::TruncNormal, device),
        }
    }

    fn merge(model: PlainClassifier) -> Result<PlainClassifier, NotMergeable> {
        Ok(model.valid())
    }
}
