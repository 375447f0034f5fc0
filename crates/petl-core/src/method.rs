//! Methods as plug-ins, in the manner of Hugging Face PEFT's `tuners/<method>/{config,model}`: a
//! method is a config, the tuner it injects and the rule that builds it on a backbone, plus its
//! merge rule where it has one. Binaries keep a list of methods and dispatch through
//! [`PetlMethod`]; nothing else in them names a method.
//!
//! This crate implements it for the shared baselines ([`LoraMethod`], [`AdapterMethod`],
//! [`DeepPromptMethod`], [`LinearProbe`], [`FullFineTune`]); each paper's crate implements it for
//! its own method.
//!
//! Binaries see methods through the type-erased registry: an [`Entry`] names a method (command
//! line name, table label, default configuration per backbone, the embedded recipe's learning
//! rate) and gives a [`MethodEntry`] whose [`MethodEntry::build`] returns a [`AnyModel`]. Each
//! crate exports its entries ([`builtin`] here, `arc::methods()`); a binary's method list is the
//! concatenation of those lists, so a new method crate is one line in it.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use burn::prelude::*;

use crate::accounting::{GradientCounts, ParamCounts, measure_gradients};
use crate::data::ImageDataset;
use crate::hooks::{Layout, NoHooks};
use crate::model::{BackboneConfig, Classifier, HeadInit, PlainClassifier, Tuner, init_head};
use crate::train::{Classification, Optimization, TrainConfig, TrainReport, Trainer, WarmupCosine, backward};
use crate::tuners::{BottleneckAdapter, BottleneckAdapterConfig, DeepPrompt, DeepPromptConfig, Lora, LoraConfig};
use crate::weights::{TensorMap, collect};

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

    /// Whether the method folds into the backbone's weights ([`PetlMethod::merge`] can succeed),
    /// so that a merged model is worth checking and timing.
    fn merges() -> bool {
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

/// LoRA on q and v ([`crate::tuners::lora`]); merges into every backbone's q and v weights.
pub struct LoraMethod;

impl PetlMethod for LoraMethod {
    type Tuner = Lora;
    type Config = LoraConfig;

    fn num_params(config: &LoraConfig, layout: &Layout) -> usize {
        config.num_params(layout)
    }

    fn merges() -> bool {
        true
    }

    fn build(config: &LoraConfig, backbone: &BackboneConfig, classes: usize, device: &Device) -> Classifier<Lora> {
        frozen_with(backbone, config.init(&backbone.layout(), device), classes, device)
    }

    fn merge(model: Classifier<Lora>) -> Result<PlainClassifier, NotMergeable> {
        let Classifier { mut backbone, tuner, head } = model.valid();
        tuner.merge_into(&mut backbone)?;
        Ok(Classifier { backbone, tuner: NoHooks, head })
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

/// A model of some method, type-erased: what binaries do with one (load, train, run, save,
/// merge, time a step) without naming its method.
pub trait AnyModel {
    /// Loads backbone weights (paths relative to the backbone), strictly.
    ///
    /// # Errors
    /// Missing, unexpected or mis-shaped tensors, named with `map`'s source.
    fn load_backbone(self: Box<Self>, map: TensorMap) -> crate::Result<Box<dyn AnyModel>>;

    /// Loads tensors keyed by model paths (`tuner.*`, `head.*`, `backbone.*`) strictly, except
    /// that backbone paths may be absent (adapter-only checkpoints) when the method keeps the
    /// backbone frozen.
    ///
    /// # Errors
    /// As [`AnyModel::load_backbone`].
    fn load_tensors(self: Box<Self>, map: TensorMap) -> crate::Result<Box<dyn AnyModel>>;

    /// Trains with `trainer` on an image-classification task.
    ///
    /// # Errors
    /// As [`Trainer::fit`].
    fn fit(
        self: Box<Self>,
        trainer: &Trainer,
        train: &dyn ImageDataset,
        test: &dyn ImageDataset,
    ) -> crate::Result<(Box<dyn AnyModel>, TrainReport)>;

    /// The evaluation snapshot (no autodiff, no dropout).
    fn valid(&self) -> Box<dyn AnyModel>;

    /// Logits: images `[B, 3, H, W]` -> `[B, K]` (call on [`AnyModel::valid`] for evaluation).
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// What an adapter-only checkpoint stores: the method's tensors and the head's (every
    /// tensor when the method trains the backbone).
    fn adapter_tensors(&self) -> TensorMap;

    /// The backbone's tensors (paths relative to the backbone).
    fn backbone_tensors(&self) -> TensorMap;

    /// Folds the method into the backbone where that is exact.
    ///
    /// # Errors
    /// [`NotMergeable`] for a method or configuration without an exact merged form.
    fn merged(self: Box<Self>) -> Result<PlainClassifier, NotMergeable>;

    /// `(trainable, frozen)` parameters, read off the tensors.
    fn measure_trainable(&self) -> (usize, usize);

    /// The optimisation of `config` (with `schedule`) for this model's trainable set.
    fn optimization(&self, config: &TrainConfig, schedule: WarmupCosine) -> Optimization;

    /// One training step of the loop on a classification batch (forward, backward, clipping,
    /// AdamW); with `count_gradients`, the gradients it produced are counted (outside the step's
    /// own work, so a timed step need not pay for it).
    fn train_step(
        self: Box<Self>,
        batch: (Tensor<4>, Tensor<1, Int>),
        optimization: &mut Optimization,
        count_gradients: bool,
    ) -> (Box<dyn AnyModel>, Option<GradientCounts>);
}

struct Built<M: PetlMethod> {
    model: Classifier<M::Tuner>,
    trains_backbone: bool,
}

impl<M: PetlMethod> Built<M> {
    fn boxed(model: Classifier<M::Tuner>, trains_backbone: bool) -> Box<dyn AnyModel> {
        Box::new(Self { model, trains_backbone })
    }
}

impl<M: PetlMethod> AnyModel for Built<M> {
    fn load_backbone(self: Box<Self>, map: TensorMap) -> crate::Result<Box<dyn AnyModel>> {
        let source = map.source.clone();
        let (backbone, report) = self.model.backbone.load(map);
        report.check(&source, |_| false)?;
        Ok(Self::boxed(Classifier { backbone, ..self.model }, self.trains_backbone))
    }

    fn load_tensors(self: Box<Self>, map: TensorMap) -> crate::Result<Box<dyn AnyModel>> {
        let source = map.source.clone();
        let (model, report) = crate::weights::apply(self.model, map);
        // A method that trains the backbone (full fine-tuning) needs it in its checkpoint: a
        // head-only file must not run a randomly initialised backbone.
        let frozen = !self.trains_backbone;
        report.check(&source, |p| frozen && p.starts_with("backbone."))?;
        Ok(Self::boxed(model, self.trains_backbone))
    }

    fn fit(
        self: Box<Self>,
        trainer: &Trainer,
        train: &dyn ImageDataset,
        test: &dyn ImageDataset,
    ) -> crate::Result<(Box<dyn AnyModel>, TrainReport)> {
        let (model, report) = trainer.fit(self.model, train, test)?;
        Ok((Self::boxed(model, self.trains_backbone), report))
    }

    fn valid(&self) -> Box<dyn AnyModel> {
        Self::boxed(self.model.valid(), self.trains_backbone)
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.model.forward(images)
    }

    fn adapter_tensors(&self) -> TensorMap {
        let full = self.trains_backbone;
        collect(&self.model, |p, _| full || p.starts_with("tuner.") || p.starts_with("head."))
    }

    fn backbone_tensors(&self) -> TensorMap {
        self.model.backbone.tensors()
    }

    fn merged(self: Box<Self>) -> Result<PlainClassifier, NotMergeable> {
        M::merge(self.model)
    }

    fn measure_trainable(&self) -> (usize, usize) {
        crate::accounting::measure_trainable(&self.model)
    }

    fn optimization(&self, config: &TrainConfig, schedule: WarmupCosine) -> Optimization {
        Optimization::new(config, &self.model, schedule, 0)
    }

    fn train_step(
        self: Box<Self>,
        batch: (Tensor<4>, Tensor<1, Int>),
        optimization: &mut Optimization,
        count_gradients: bool,
    ) -> (Box<dyn AnyModel>, Option<GradientCounts>) {
        let (grads, loss, score) = backward(&Classification::default(), &self.model, batch, None);
        let counts = count_gradients.then(|| measure_gradients(&self.model, &grads));
        let (model, _) = optimization.update(self.model, grads);
        loss.into_scalar::<f32>();
        if let Some(score) = score {
            score.into_scalar::<f32>();
        }
        (Self::boxed(model, self.trains_backbone), counts)
    }
}

/// A registered method, type-erased: what a binary's method list holds.
pub trait MethodEntry: Send + Sync {
    /// Command-line name (`arc-att`).
    fn name(&self) -> &str;
    /// Row label of tables (`ARC_att`).
    fn label(&self) -> &str;
    /// One line for `--help` and listings.
    fn about(&self) -> &str;
    /// The method's default configuration on `backbone`, as JSON (what adapter checkpoints
    /// store as `method_config`).
    fn default_config(&self, backbone: &BackboneConfig) -> serde_json::Value;
    /// The configuration of the embedded (small-backbone) runs.
    fn embedded_config(&self, backbone: &BackboneConfig) -> serde_json::Value;
    /// Learning rate of the embedded runs.
    fn embedded_lr(&self) -> f64;
    /// Whether the method folds into the backbone ([`PetlMethod::merges`]).
    fn merges(&self) -> bool;
    /// Whether `config` trains the backbone (then checkpoints hold every tensor).
    ///
    /// # Errors
    /// A configuration that does not parse.
    fn trains_backbone(&self, config: &serde_json::Value) -> crate::Result<bool>;
    /// Parameter counts from the configuration alone (nothing allocated).
    ///
    /// # Errors
    /// A configuration that does not parse.
    fn counts(
        &self,
        config: &serde_json::Value,
        backbone: &BackboneConfig,
        classes: usize,
    ) -> crate::Result<ParamCounts>;
    /// Backbone + method + head on `device`, freshly initialised, trainable set chosen.
    ///
    /// # Errors
    /// A configuration that does not parse.
    fn build(
        &self,
        config: &serde_json::Value,
        backbone: &BackboneConfig,
        classes: usize,
        device: &Device,
    ) -> crate::Result<Box<dyn AnyModel>>;
}

/// The registry entry of method `M`: its names, its default configuration per backbone and its
/// embedded recipe.
pub struct Entry<M: PetlMethod> {
    name: &'static str,
    label: &'static str,
    about: &'static str,
    config: fn(&BackboneConfig) -> M::Config,
    embedded: fn(&BackboneConfig) -> M::Config,
    embedded_lr: f64,
    method: PhantomData<fn() -> M>,
}

impl<M: PetlMethod> Entry<M> {
    /// An entry whose configuration on a backbone is `config(backbone)`; the embedded runs use
    /// the same configuration and a learning rate of 1e-2 until set otherwise.
    pub fn new(
        name: &'static str,
        label: &'static str,
        about: &'static str,
        config: fn(&BackboneConfig) -> M::Config,
    ) -> Self {
        Self { name, label, about, config, embedded: config, embedded_lr: 1e-2, method: PhantomData }
    }

    /// With the embedded runs' configuration and learning rate.
    pub fn embedded(mut self, config: fn(&BackboneConfig) -> M::Config, lr: f64) -> Self {
        self.embedded = config;
        self.embedded_lr = lr;
        self
    }

    /// Boxed, for a method list.
    pub fn boxed(self) -> Box<dyn MethodEntry> {
        Box::new(self)
    }

    fn parse(&self, config: &serde_json::Value) -> crate::Result<M::Config> {
        let invalid = |e: String| crate::Error::Config(format!("invalid configuration of method `{}`: {e}", self.name));
        // Every method's dropout rates (`dropout`, `adapter_dropout`, ...): Burn's dropout panics
        // outside [0, 1).
        if let Some(obj) = config.as_object() {
            for (key, value) in obj.iter().filter(|(k, _)| k.ends_with("dropout")) {
                if let Some(problem) = crate::nn::dropout_problem(key, value.as_f64()) {
                    return Err(invalid(problem));
                }
            }
        }
        serde_json::from_value(config.clone()).map_err(|e| invalid(e.to_string()))
    }
}

fn to_json<C: Serialize>(config: &C) -> serde_json::Value {
    serde_json::to_value(config).expect("method configurations serialise")
}

impl<M: PetlMethod> MethodEntry for Entry<M> {
    fn name(&self) -> &str {
        self.name
    }

    fn label(&self) -> &str {
        self.label
    }

    fn about(&self) -> &str {
        self.about
    }

    fn default_config(&self, backbone: &BackboneConfig) -> serde_json::Value {
        to_json(&(self.config)(backbone))
    }

    fn embedded_config(&self, backbone: &BackboneConfig) -> serde_json::Value {
        to_json(&(self.embedded)(backbone))
    }

    fn embedded_lr(&self) -> f64 {
        self.embedded_lr
    }

    fn merges(&self) -> bool {
        M::merges()
    }

    fn trains_backbone(&self, config: &serde_json::Value) -> crate::Result<bool> {
        Ok(M::trains_backbone(&self.parse(config)?))
    }

    fn counts(
        &self,
        config: &serde_json::Value,
        backbone: &BackboneConfig,
        classes: usize,
    ) -> crate::Result<ParamCounts> {
        let cfg = self.parse(config)?;
        let layout = backbone.layout();
        let head = (layout.feature_dim + 1) * classes;
        let adapter = M::num_params(&cfg, &layout);
        let (trainable, frozen) = if M::trains_backbone(&cfg) {
            (backbone.num_params() + adapter + head, 0)
        } else {
            (adapter + head, backbone.num_params())
        };
        Ok(ParamCounts {
            adapter_params: adapter,
            head_params: head,
            trainable_params: trainable,
            frozen_params: frozen,
        })
    }

    fn build(
        &self,
        config: &serde_json::Value,
        backbone: &BackboneConfig,
        classes: usize,
        device: &Device,
    ) -> crate::Result<Box<dyn AnyModel>> {
        let cfg = self.parse(config)?;
        Ok(Built::<M>::boxed(M::build(&cfg, backbone, classes, device), M::trains_backbone(&cfg)))
    }
}

/// The shared baselines' entries, in table order: LoRA (embedded lr 5e-3), the bottleneck
/// adapter (5e-3), deep prompts (1e-2: VPT's prompts train at large learning rates), linear
/// probing (1e-2) and full fine-tuning (1e-3, for the small from-scratch-pretrained ViT of the
/// embedded runs).
pub fn builtin() -> Vec<Box<dyn MethodEntry>> {
    vec![
        Entry::<LoraMethod>::new("lora", "LoRA", "LoRA on the query and value projections", |_| LoraConfig::new())
            .embedded(|_| LoraConfig::new(), 5e-3)
            .boxed(),
        Entry::<AdapterMethod>::new("adapter", "Adapter", "bottleneck adapter after attention and FFN", |_| {
            BottleneckAdapterConfig::new()
        })
        .embedded(|_| BottleneckAdapterConfig::new(), 5e-3)
        .boxed(),
        Entry::<DeepPromptMethod>::new(
            "deep-prompt",
            "Deep prompt",
            "deep prompt tuning: learnable key/value tokens in every block",
            |_| DeepPromptConfig::new(),
        )
        .boxed(),
        Entry::<LinearProbe>::new("linear", "Linear", "linear probing: the head only", |_| NoConfig {}).boxed(),
        Entry::<FullFineTune>::new("full", "Full FT", "full fine-tuning", |_| NoConfig {})
            .embedded(|_| NoConfig {}, 1e-3)
            .boxed(),
    ]
}

/// The entry named `name` in `methods`.
///
/// # Errors
/// An unknown name; the message lists the known ones.
pub fn find<'a>(methods: &'a [Box<dyn MethodEntry>], name: &str) -> crate::Result<&'a dyn MethodEntry> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    methods.iter().find(|m| m.name() == wanted).map(|m| m.as_ref()).ok_or_else(|| {
        let known: Vec<&str> = methods.iter().map(|m| m.name()).collect();
        crate::Error::Config(format!("unknown method `{name}` (known: {})", known.join(", ")))
    })
}
