//! # apt — Approximated Prompt Tuning
//!
//! Wu, Zhou, Huang, Dai, Ji, *Approximated Prompt Tuning for Vision-Language Pre-trained
//! Models*, ICCV 2023 (official code: `DoubtedSteam/APT`). APT approximates deep prompt tuning
//! in a frozen vision–language transformer by an "information diffusion" term added after
//! every attention output projection ([`module`]), at a fraction of deep prompts' cost.
//!
//! - [`AptModule`] / [`Apt`]: the method, on petl-core's `attn_output` insertion point (one
//!   module per attention sub-layer).
//! - [`Variant`] / [`VariantConfig`] / [`VlTuner`]: APT and every baseline of the paper's
//!   tables through one interface — deep prompt, LoRA, sequential adapter, scaled parallel
//!   adapter, classifier only, full tuning — built for any backbone layout.
//! - [`Backbone`]: ViLT or METER with its sizes, as official files, adapter checkpoints, the
//!   embedded run and the bench name them.
//! - [`accounting`]: the tables' "Updated Param" and "Additional FLOPs" columns.
//! - [`official`]: the official checkpoints' key names (ViLT backbone, heads, every method's
//!   tensors).
//!
//! The ViLT backbone, the task heads ([`petl_core::vl_model::ViltModel`]), tasks, losses and
//! metrics live in petl-core; this crate adds only the method and its baselines' settings.
#![warn(missing_docs)]

pub mod accounting;
pub mod backbone;
pub mod module;
pub mod official;

pub use backbone::Backbone;
pub use module::AptModule;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use petl_core::hooks::{BlockHooks, BlockId, Layout, LinearSite, NoHooks, SubLayer};
use petl_core::nn::AttentionMask;
use petl_core::tuners::{
    Activation, BottleneckAdapter, BottleneckAdapterConfig, DeepPrompt, DeepPromptConfig, Lora, LoraConfig,
    ParallelAdapter, ParallelAdapterConfig,
};

/// APT hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct AptConfig {
    /// Prompts per module `M` (the paper's counts imply 200; the released ViLT file uses 50).
    #[config(default = 200)]
    pub num_prompts: usize,
    /// Rank `r` of the key-side correction.
    #[config(default = 4)]
    pub rank: usize,
    /// Keep `s` frozen at 0 (the released METER code's trainable filter `mm` misses `scale`).
    #[config(default = false)]
    pub freeze_scale: bool,
    /// `Some(σ)`: `A` and `B` both `N(0, σ²)` (the released METER code's re-initialisation);
    /// `None`: the paper's `A ~ N(0, 1)`, `B = 0`.
    #[config(default = "None")]
    pub mm_std: Option<f64>,
    /// Standard deviation of the prompts' initialisation `P ~ N(0, σ²)`: the official 0.02.
    /// The APT term `max_m(S)·S·P` is cubic in the prompts' scale and its scores grow with
    /// `σ·√d`, so on a narrower model the same σ starts APT orders of magnitude smaller relative
    /// to the frozen attention output than at d = 768; [`AptConfig::width_matched_prompt_std`]
    /// gives the σ that keeps the official per-prompt score scale `0.02·√768`.
    #[config(default = 0.02)]
    pub prompt_std: f64,
}

impl AptConfig {
    /// Parameters per module of width `d`: `M·d + 2·d·r + 1`.
    pub fn module_params(&self, d: usize) -> usize {
        self.num_prompts * d + 2 * d * self.rank + 1
    }

    /// Parameters on a backbone of this layout (one module per attention: per block, and per
    /// cross-attention of fusion layers).
    pub fn num_params(&self, layout: &Layout) -> usize {
        let attentions = layout.attentions_per_block();
        layout.blocks.iter().map(|b| attentions * self.module_params(b.dim)).sum()
    }

    /// The prompt initialisation σ at width `dim` whose scores `h·p` (`h` layer-normalised, so
    /// `|h| ≈ √d`) have the spread they have in the official models: `0.02·√(768/dim)`
    /// (0.02 at d = 768).
    pub fn width_matched_prompt_std(dim: usize) -> f64 {
        0.02 * (768.0 / dim as f64).sqrt()
    }

    /// Allocates one module per attention of `layout`.
    pub fn init(&self, layout: &Layout, device: &Device) -> Apt {
        let make = || {
            layout
                .blocks
                .iter()
                .map(|b| {
                    AptModule::init_with(
                        b.dim,
                        self.num_prompts,
                        self.rank,
                        self.freeze_scale,
                        self.mm_std,
                        self.prompt_std,
                        device,
                    )
                })
                .collect()
        };
        Apt { modules: make(), cross: if layout.cross_attention() { make() } else { Vec::new() } }
    }
}

/// APT after every attention output projection: ViLT's 12 blocks; METER's self- and
/// cross-attention of its 12 fusion layers (inside `BertSelfOutput`, before the dropout, the
/// residual add and the post-LN).
#[derive(Module, Debug)]
pub struct Apt {
    /// One module per block's (self-)attention.
    pub modules: Vec<AptModule>,
    /// One module per block's cross-attention (empty without cross-attention).
    pub cross: Vec<AptModule>,
}

impl BlockHooks for Apt {
    fn attn_output(&self, at: BlockId, x: Tensor<3>, query_input: &Tensor<3>) -> Tensor<3> {
        let module = match at.sublayer {
            SubLayer::CrossAttention => &self.cross[at.index],
            _ => &self.modules[at.index],
        };
        module.forward(x, query_input.clone())
    }
}

/// A method of the paper's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Approximated prompt tuning.
    Apt,
    /// Deep prompt tuning (prompts as extra keys/values of every attention).
    DeepPrompt,
    /// LoRA on q and v (mergeable).
    Lora,
    /// Sequential bottleneck adapters after attention and FFN.
    Adapter,
    /// Scaled parallel adapter beside every attention.
    ScaledPa,
    /// Only the task head, class token, pooler and token types.
    Classifier,
    /// Every parameter.
    Full,
}

impl Variant {
    /// Every variant, in the order of the paper's tables.
    pub const ALL: [Variant; 7] = [
        Variant::Full,
        Variant::Classifier,
        Variant::DeepPrompt,
        Variant::Lora,
        Variant::ScaledPa,
        Variant::Adapter,
        Variant::Apt,
    ];

    /// The command-line name (`apt`, `deep-prompt`, `lora`, `adapter`, `scaled-pa`,
    /// `classifier`, `full`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Apt => "apt",
            Variant::DeepPrompt => "deep-prompt",
            Variant::Lora => "lora",
            Variant::Adapter => "adapter",
            Variant::ScaledPa => "scaled-pa",
            Variant::Classifier => "classifier",
            Variant::Full => "full",
        }
    }

    /// The row label of the paper's tables.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Apt => "APT",
            Variant::DeepPrompt => "Deep Prompt",
            Variant::Lora => "LoRA",
            Variant::Adapter => "Adapter",
            Variant::ScaledPa => "Scaled PA",
            Variant::Classifier => "Classifier Only",
            Variant::Full => "Full Tuning",
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones).
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            format!("unknown APT variant `{name}` (known: {})", known.join(", "))
        })
    }

    /// Whether the variant's tuner can be folded into the backbone (LoRA; the plain
    /// variants have nothing to fold).
    pub fn merges(self) -> bool {
        matches!(self, Variant::Lora | Variant::Classifier | Variant::Full)
    }
}

/// The hyper-parameters of every variant, with the defaults implied by the paper's parameter
/// counts (the released code differs; each value is a switch).
#[derive(Config, Debug, PartialEq)]
pub struct VariantConfig {
    /// APT.
    #[config(default = "AptConfig::new()")]
    pub apt: AptConfig,
    /// Deep prompts per attention (200).
    #[config(default = 200)]
    pub deep_prompts: usize,
    /// LoRA rank on q and v (4; the released code: 204 ViLT, 27 METER).
    #[config(default = 4)]
    pub lora_rank: usize,
    /// Sequential adapter bottleneck (96).
    #[config(default = 96)]
    pub adapter_bottleneck: usize,
    /// Scaled parallel adapter bottleneck (96; the released ViLT code: 204).
    #[config(default = 96)]
    pub pa_bottleneck: usize,
    /// Scaled parallel adapter output scale (4.0).
    #[config(default = 4.0)]
    pub pa_scale: f64,
    /// METER: deep prompts only in the cross-attention sub-layers (the released code, 12 sets)
    /// instead of the 24 sets (self and cross) the paper's count implies.
    #[config(default = false)]
    pub meter_deep_prompt_cross_only: bool,
    /// The released METER code's initialisation: it re-initialises every Linear inside the fusion
    /// layers after building them (`N(0, 0.02²)`, biases 0), so APT's `A` and `B` and the
    /// adapters' projections start there instead of the paper's `A ~ N(0, 1)`, `B = 0` and the
    /// adapters' `N(0, 0.01²)`.
    #[config(default = false)]
    pub meter_official_init: bool,
}

impl VariantConfig {
    /// Deep prompts as the paper's baseline: VPT's uniform bound with its patch-16 constant.
    pub fn deep_prompt(&self) -> DeepPromptConfig {
        DeepPromptConfig::new()
            .with_num_prompts(self.deep_prompts)
            .with_init_patch_size(16)
            .with_cross_attention_only(self.meter_deep_prompt_cross_only)
    }

    /// LoRA as the official code writes it: `A ~ N(0, 1)`, `B = 0`, no `α/r` scaling, dropout
    /// 0.1 on the low-rank path's input (training only).
    pub fn lora(&self) -> LoraConfig {
        LoraConfig::new()
            .with_rank(self.lora_rank)
            .with_alpha(self.lora_rank as f64)
            .with_a_std(Some(1.0))
            .with_dropout(Some(0.1))
    }

    /// The sequential adapter of the official code: ReLU, weights `N(0, 0.01²)`, biases 0.
    ///
    /// It reads each sub-layer's output where APT does, before the backbone's output dropout:
    /// METER's placement (`LN(dropout(Ad(dense(c))) + u)`). ViLT's official code applies it after
    /// that dropout (`Ad(dropout(o))`); the two are equal at inference and differ only in where
    /// training's dropout noise falls.
    pub fn adapter(&self) -> BottleneckAdapterConfig {
        BottleneckAdapterConfig::new()
            .with_bottleneck(self.adapter_bottleneck)
            .with_activation(Activation::Relu)
            .with_init_std(Some(if self.meter_official_init { 0.02 } else { 0.01 }))
    }

    /// The scaled parallel adapter.
    pub fn scaled_pa(&self) -> ParallelAdapterConfig {
        ParallelAdapterConfig::new().with_bottleneck(self.pa_bottleneck).with_scale(self.pa_scale)
    }

    /// Parameters `variant` adds to a backbone of this layout (the tables' "Updated Param",
    /// which excludes heads, poolers and token types; 0 for classifier only and full tuning).
    pub fn num_params(&self, variant: Variant, layout: &Layout) -> usize {
        match variant {
            Variant::Apt => self.apt.num_params(layout),
            Variant::DeepPrompt => self.deep_prompt().num_params(layout),
            Variant::Lora => self.lora().num_params(layout),
            Variant::Adapter => self.adapter().num_params(layout),
            Variant::ScaledPa => self.scaled_pa().num_params(layout),
            Variant::Classifier | Variant::Full => 0,
        }
    }

    /// Parameters of `variant` that train: [`VariantConfig::num_params`] less APT's scales
    /// when `freeze_scale` holds them at 0 (the tables' "Updated Param" still counts them).
    pub fn trainable_params(&self, variant: Variant, layout: &Layout) -> usize {
        let frozen = if variant == Variant::Apt && self.apt.freeze_scale {
            layout.blocks.len() * layout.attentions_per_block()
        } else {
            0
        };
        self.num_params(variant, layout) - frozen
    }

    /// The tuner of `variant` for `layout`.
    pub fn init(&self, variant: Variant, layout: &Layout, device: &Device) -> VlTuner {
        match variant {
            Variant::Apt => {
                let apt =
                    if self.meter_official_init { self.apt.clone().with_mm_std(Some(0.02)) } else { self.apt.clone() };
                VlTuner::Apt(apt.init(layout, device))
            }
            Variant::DeepPrompt => VlTuner::DeepPrompt(self.deep_prompt().init(layout, device)),
            Variant::Lora => VlTuner::Lora(self.lora().init(layout, device)),
            Variant::Adapter => VlTuner::Adapter(self.adapter().init(layout, device)),
            Variant::ScaledPa => VlTuner::ScaledPa(self.scaled_pa().init(layout, device)),
            Variant::Classifier | Variant::Full => VlTuner::Plain(NoHooks),
        }
    }
}

/// The tuner of any [`Variant`], as one module type (what a model holds and a checkpoint
/// stores).
#[derive(Module, Debug)]
pub enum VlTuner {
    /// APT.
    Apt(Apt),
    /// Deep prompts.
    DeepPrompt(DeepPrompt),
    /// LoRA.
    Lora(Lora),
    /// Sequential adapters.
    Adapter(BottleneckAdapter),
    /// Scaled parallel adapters.
    ScaledPa(ParallelAdapter),
    /// No module (classifier only, full tuning).
    Plain(NoHooks),
}

impl VlTuner {
    fn hooks(&self) -> &dyn BlockHooks {
        match self {
            VlTuner::Apt(t) => t,
            VlTuner::DeepPrompt(t) => t,
            VlTuner::Lora(t) => t,
            VlTuner::Adapter(t) => t,
            VlTuner::ScaledPa(t) => t,
            VlTuner::Plain(t) => t,
        }
    }
}

impl BlockHooks for VlTuner {
    fn attn_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.hooks().attn_input(at, x)
    }
    fn kv_prompts(&self, at: BlockId) -> Option<Tensor<2>> {
        self.hooks().kv_prompts(at)
    }
    fn attention(
        &self,
        at: BlockId,
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        heads: usize,
        mask: &AttentionMask,
    ) -> Tensor<3> {
        self.hooks().attention(at, q, k, v, heads, mask)
    }
    fn attn_output(&self, at: BlockId, x: Tensor<3>, query_input: &Tensor<3>) -> Tensor<3> {
        self.hooks().attn_output(at, x, query_input)
    }
    fn attn_residual(&self, at: BlockId, x: Tensor<3>, input: &Tensor<3>) -> Tensor<3> {
        self.hooks().attn_residual(at, x, input)
    }
    fn mlp_residual(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.hooks().mlp_residual(at, x)
    }
    fn mlp_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.hooks().mlp_input(at, x)
    }
    fn mlp_output(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.hooks().mlp_output(at, x)
    }
    fn linear(&self, at: BlockId, site: LinearSite, x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        self.hooks().linear(at, site, x, y)
    }
}
