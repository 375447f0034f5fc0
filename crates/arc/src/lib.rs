//! # arc — Adapter Re-Composing
//!
//! Dong, Yan, Lin, Wang, *Efficient Adaptation of Large Vision Transformer via Adapter
//! Re-Composing*, NeurIPS 2023. A purely linear bottleneck adapter whose down-projection `U`
//! is shared by all layers (per insertion site, per Swin stage), whose up-projection is `Uᵀ`,
//! and whose layers own only a re-scaling vector `λ_l` and a bias `b_l`:
//!
//! `A_l(X) = X + Drop(X · (U ⊙_col λ_l)) · Uᵀ + b_l`
//!
//! - [`ArcConfig`] / [`ArcTuner`]: the method, driving petl-core's insertion points
//!   (`attn_input` for the attention adapter; `mlp_input` (ViT) or `mlp_residual` (official
//!   Swin) for the MLP adapter).
//! - [`build`]: backbone + ARC + head with the trainable set of the paper; [`ArcMethod`]: ARC as
//!   a petl method plug-in.
//! - [`merge`]: folds the adapters into the frozen q/k/v (and fc1) weights, giving a plain
//!   backbone with zero extra parameters and FLOPs.
//! - [`official`]: loads state dicts saved by the official PyTorch code (its key names).
//! - [`recipe`]: the official training recipes (learning rates, weight decay, T−1 updates).
#![warn(missing_docs)]

mod adapter;
pub mod merge;
pub mod official;
pub mod recipe;

pub use adapter::{ArcConfig, ArcTuner, ArcVariant, LambdaInit, LayerAdapter, MlpAdapterSite};
pub use merge::{merge, merge_into};

use burn::prelude::*;
use petl_core::hooks::Layout;
use petl_core::method::{Entry, MethodEntry, NotMergeable, PetlMethod};
use petl_core::model::{BackboneConfig, Classifier, PlainClassifier};

/// Errors of the arc crate.
#[derive(Debug, thiserror::Error)]
pub enum ArcError {
    /// The configuration cannot be merged exactly.
    #[error("cannot merge: {0}")]
    NotMergeable(String),
    /// An error from petl-core (I/O, weights, configuration).
    #[error(transparent)]
    Core(#[from] petl_core::Error),
}

/// An ARC classifier.
pub type ArcClassifier = Classifier<ArcTuner>;

pub use petl_core::method::head_init;

/// Backbone (frozen) + ARC + head (trainable), freshly initialised on `device`.
pub fn build(backbone: &BackboneConfig, arc: &ArcConfig, classes: usize, device: &Device) -> ArcClassifier {
    petl_core::method::frozen_with(backbone, arc.init(&backbone.layout(), device), classes, device)
}

/// ARC as a petl method plug-in ([`petl_core::method::PetlMethod`]).
pub struct ArcMethod;

impl PetlMethod for ArcMethod {
    type Tuner = ArcTuner;
    type Config = ArcConfig;

    fn num_params(config: &ArcConfig, layout: &Layout) -> usize {
        config.num_params(layout)
    }

    fn merges() -> bool {
        true
    }

    fn build(config: &ArcConfig, backbone: &BackboneConfig, classes: usize, device: &Device) -> ArcClassifier {
        build(backbone, config, classes, device)
    }

    fn merge(model: ArcClassifier) -> Result<PlainClassifier, NotMergeable> {
        merge(model).map_err(|e| match e {
            ArcError::NotMergeable(why) => NotMergeable(why),
            other => NotMergeable(other.to_string()),
        })
    }
}

/// ARC's registry entries, ARC then ARC_att: the official configuration per backbone
/// ([`recipe::config_for`]); the embedded runs use D' = 8 on their D = 64 ViT and ARC's
/// official VTAB learning rate 0.01.
pub fn methods() -> Vec<Box<dyn MethodEntry>> {
    fn att(backbone: &BackboneConfig) -> ArcConfig {
        recipe::config_for(backbone).with_variant(ArcVariant::ArcAtt)
    }
    vec![
        Entry::<ArcMethod>::new("arc", "ARC", "ARC: attention and MLP adapters", recipe::config_for)
            .embedded(|b| recipe::config_for(b).with_bottleneck(8), 1e-2)
            .boxed(),
        Entry::<ArcMethod>::new("arc-att", "ARC_att", "ARC_att: attention adapters only", att)
            .embedded(|b| att(b).with_bottleneck(8), 1e-2)
            .boxed(),
    ]
}
