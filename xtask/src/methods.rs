//! The methods `reproduce`, `params` and `predict` dispatch over, and one wrapper enum over
//! their models (the `ModelWrapper` pattern): each arm is a [`Classifier`] with its tuner.

use anyhow::{Context, Result};
use arc::{ArcClassifier, ArcConfig, ArcMethod, ArcVariant};
use burn::prelude::*;
use clap::ValueEnum;
use petl_core::accounting::ParamCounts;
use petl_core::checkpoint::AdapterConfig;
use petl_core::data::ImageDataset;
use petl_core::method::{
    AdapterMethod, DeepPromptMethod, FullFineTune, LinearProbe, LoraMethod, NoConfig, NotMergeable, PetlMethod,
};
use petl_core::model::{BackboneConfig, Classifier, PlainClassifier};
use petl_core::train::{Classify, TrainReport, Trainer};
use petl_core::tuners::{BottleneckAdapter, BottleneckAdapterConfig, DeepPrompt, DeepPromptConfig, Lora, LoraConfig};
use petl_core::weights::{TensorMap, collect};
use serde::{Deserialize, Serialize};

/// A method (a row of the papers' tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ARC: attention and MLP adapters.
    Arc,
    /// ARC_att: attention adapters only.
    ArcAtt,
    /// LoRA on q and v.
    Lora,
    /// Bottleneck adapter after attention and FFN.
    Adapter,
    /// Deep prompt tuning: learnable key/value tokens in every block.
    DeepPrompt,
    /// Linear probing: head only.
    Linear,
    /// Full fine-tuning.
    Full,
}

impl Method {
    /// The row label of the tables.
    pub fn label(self) -> &'static str {
        match self {
            Method::Arc => "ARC",
            Method::ArcAtt => "ARC_att",
            Method::Lora => "LoRA",
            Method::Adapter => "Adapter",
            Method::DeepPrompt => "Deep prompt",
            Method::Linear => "Linear",
            Method::Full => "Full FT",
        }
    }

    /// The method of a command-line name (`arc`, `arc-att`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(name, false).ok()
    }

    /// The command-line name.
    pub fn name(self) -> String {
        self.to_possible_value().expect("no skipped variants").get_name().to_string()
    }
}

/// A method with its hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSpec {
    /// Which method.
    pub method: Method,
    /// ARC hyper-parameters (used by `arc` and `arc-att`).
    pub arc: ArcConfig,
    /// LoRA hyper-parameters.
    pub lora: LoraConfig,
    /// Bottleneck-adapter hyper-parameters.
    pub adapter: BottleneckAdapterConfig,
    /// Deep-prompt hyper-parameters.
    pub prompt: DeepPromptConfig,
}

impl MethodSpec {
    /// Defaults of each method; `arc.variant` follows `method`.
    pub fn new(method: Method, arc: ArcConfig) -> Self {
        let variant = if method == Method::ArcAtt { ArcVariant::ArcAtt } else { ArcVariant::Arc };
        Self {
            method,
            arc: arc.with_variant(variant),
            lora: LoraConfig::new(),
            adapter: BottleneckAdapterConfig::new(),
            prompt: DeepPromptConfig::new(),
        }
    }

    /// This method's own hyper-parameters (what an adapter checkpoint stores): ARC's config for
    /// ARC, LoRA's for LoRA, ...; `{}` for linear probing and full fine-tuning.
    pub fn method_config(&self) -> serde_json::Value {
        match self.method {
            Method::Arc | Method::ArcAtt => serde_json::to_value(&self.arc),
            Method::Lora => serde_json::to_value(&self.lora),
            Method::Adapter => serde_json::to_value(&self.adapter),
            Method::DeepPrompt => serde_json::to_value(&self.prompt),
            Method::Linear | Method::Full => Ok(serde_json::json!({})),
        }
        .expect("method configs serialise")
    }

    /// The inverse of [`MethodSpec::method_config`]: `method` with the stored config.
    pub fn from_stored(method: Method, config: &serde_json::Value) -> Result<Self> {
        let mut spec = Self::new(method, ArcConfig::new());
        let what = || format!("the stored {} config", method.label());
        match method {
            Method::Arc | Method::ArcAtt => {
                spec.arc = serde_json::from_value(config.clone()).with_context(what)?;
            }
            Method::Lora => spec.lora = serde_json::from_value(config.clone()).with_context(what)?,
            Method::Adapter => spec.adapter = serde_json::from_value(config.clone()).with_context(what)?,
            Method::DeepPrompt => spec.prompt = serde_json::from_value(config.clone()).with_context(what)?,
            Method::Linear | Method::Full => {}
        }
        Ok(spec)
    }

    /// The adapter-checkpoint config of this method trained on `backbone` with `classes`.
    pub fn adapter_config(&self, backbone: &BackboneConfig, classes: usize) -> AdapterConfig {
        AdapterConfig::new(self.method.name(), self.method_config(), backbone.clone(), classes)
    }

    /// Parameter counts from the configs alone (nothing allocated).
    pub fn counts(&self, backbone: &BackboneConfig, classes: usize) -> ParamCounts {
        fn counts<M: PetlMethod>(cfg: &M::Config, backbone: &BackboneConfig, classes: usize) -> ParamCounts {
            let layout = backbone.layout();
            let head = (layout.feature_dim + 1) * classes;
            let adapter = M::num_params(cfg, &layout);
            let (trainable, frozen) = if M::trains_backbone(cfg) {
                (backbone.num_params() + adapter + head, 0)
            } else {
                (adapter + head, backbone.num_params())
            };
            ParamCounts {
                adapter_params: adapter,
                head_params: head,
                trainable_params: trainable,
                frozen_params: frozen,
            }
        }
        match self.method {
            Method::Arc | Method::ArcAtt => counts::<ArcMethod>(&self.arc, backbone, classes),
            Method::Lora => counts::<LoraMethod>(&self.lora, backbone, classes),
            Method::Adapter => counts::<AdapterMethod>(&self.adapter, backbone, classes),
            Method::DeepPrompt => counts::<DeepPromptMethod>(&self.prompt, backbone, classes),
            Method::Linear => counts::<LinearProbe>(&NoConfig {}, backbone, classes),
            Method::Full => counts::<FullFineTune>(&NoConfig {}, backbone, classes),
        }
    }

    /// Allocates backbone + method + head on `device` with this method's trainable set.
    pub fn build(&self, backbone: &BackboneConfig, classes: usize, device: &Device) -> AnyClassifier {
        match self.method {
            Method::Arc | Method::ArcAtt => ArcMethod::build(&self.arc, backbone, classes, device).into(),
            Method::Lora => LoraMethod::build(&self.lora, backbone, classes, device).into(),
            Method::Adapter => AdapterMethod::build(&self.adapter, backbone, classes, device).into(),
            Method::DeepPrompt => DeepPromptMethod::build(&self.prompt, backbone, classes, device).into(),
            Method::Linear => LinearProbe::build(&NoConfig {}, backbone, classes, device).into(),
            Method::Full => FullFineTune::build(&NoConfig {}, backbone, classes, device).into(),
        }
    }
}

/// One of the methods' classifiers.
#[derive(Debug)]
pub enum AnyClassifier {
    /// ARC / ARC_att.
    Arc(ArcClassifier),
    /// LoRA.
    Lora(Classifier<Lora>),
    /// Bottleneck adapter.
    Adapter(Classifier<BottleneckAdapter>),
    /// Deep prompts.
    Prompt(Classifier<DeepPrompt>),
    /// Linear probe or full fine-tuning.
    Plain(PlainClassifier),
}

impl From<ArcClassifier> for AnyClassifier {
    fn from(m: ArcClassifier) -> Self {
        AnyClassifier::Arc(m)
    }
}

impl From<Classifier<Lora>> for AnyClassifier {
    fn from(m: Classifier<Lora>) -> Self {
        AnyClassifier::Lora(m)
    }
}

impl From<Classifier<BottleneckAdapter>> for AnyClassifier {
    fn from(m: Classifier<BottleneckAdapter>) -> Self {
        AnyClassifier::Adapter(m)
    }
}

impl From<Classifier<DeepPrompt>> for AnyClassifier {
    fn from(m: Classifier<DeepPrompt>) -> Self {
        AnyClassifier::Prompt(m)
    }
}

impl From<PlainClassifier> for AnyClassifier {
    fn from(m: PlainClassifier) -> Self {
        AnyClassifier::Plain(m)
    }
}

macro_rules! each {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyClassifier::Arc($m) => $body,
            AnyClassifier::Lora($m) => $body,
            AnyClassifier::Adapter($m) => $body,
            AnyClassifier::Prompt($m) => $body,
            AnyClassifier::Plain($m) => $body,
        }
    };
}
pub(crate) use each;

impl AnyClassifier {
    /// Loads backbone weights (paths relative to the backbone), strictly.
    pub fn load_backbone(self, map: TensorMap) -> Result<Self> {
        let source = map.source.clone();
        Ok(each!(self, m => {
            let (backbone, report) = m.backbone.load(map);
            report.check(&source, |_| false)?;
            AnyClassifier::from(Classifier { backbone, ..m })
        }))
    }

    /// Loads tensors keyed by classifier paths (`tuner.*`, `head.*`, `backbone.*`) strictly,
    /// except that backbone paths may be absent.
    pub fn load_tensors(self, map: TensorMap) -> Result<Self> {
        let source = map.source.clone();
        Ok(each!(self, m => {
            let (m, report) = petl_core::weights::apply(m, map);
            report.check(&source, |p| p.starts_with("backbone."))?;
            AnyClassifier::from(m)
        }))
    }

    /// Trains with `trainer`.
    pub fn fit(
        self,
        trainer: &Trainer,
        train: &dyn ImageDataset,
        test: &dyn ImageDataset,
    ) -> Result<(Self, TrainReport)> {
        each!(self, m => trainer.fit(m, train, test).map(|(m, r)| (AnyClassifier::from(m), r)).map_err(Into::into))
    }

    /// The evaluation-mode snapshot (no autodiff, no dropout).
    pub fn valid(&self) -> Self {
        each!(self, m => AnyClassifier::from(m.valid()))
    }

    /// Logits: images `[B, 3, H, W]` -> `[B, K]` (call on [`AnyClassifier::valid`] for
    /// evaluation).
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        each!(self, m => m.logits(images))
    }

    /// The tensors an adapter-only checkpoint stores: the method's and the head's (all of
    /// them for full fine-tuning).
    pub fn adapter_tensors(&self, full: bool) -> TensorMap {
        each!(self, m => collect(m, |p, _| full || p.starts_with("tuner.") || p.starts_with("head.")))
    }

    /// Folds the method into the backbone where it merges exactly (ARC, LoRA on ViT); the
    /// plain methods give their evaluation snapshot.
    ///
    /// # Errors
    /// [`NotMergeable`] for a method configuration that has no exact merged form.
    pub fn merged(self) -> Result<PlainClassifier, NotMergeable> {
        match self {
            AnyClassifier::Arc(m) => ArcMethod::merge(m),
            AnyClassifier::Lora(m) => LoraMethod::merge(m),
            AnyClassifier::Adapter(m) => AdapterMethod::merge(m),
            AnyClassifier::Prompt(m) => DeepPromptMethod::merge(m),
            AnyClassifier::Plain(m) => LinearProbe::merge(m),
        }
    }
}
