//! The official ARC training recipes (ARC paper, Sec. 4.1, and the official scripts): AdamW,
//! 100 epochs with 10 of linear warm-up and a cosine decay stepped per update, batch 32,
//! global-norm clipping 1.0, and the official loop's T−1 updates.

use petl_core::data::vtab::VtabTask;
use petl_core::model::BackboneConfig;
use petl_core::train::TrainConfig;

use crate::{ArcConfig, MlpAdapterSite};

/// ARC's configuration on `backbone` in the official code: D' = 50 and adapter dropout 0.1
/// with the MLP adapter at the FFN input on ViT; on Swin the official code applies the MLP
/// adapter to the residual stream before LN2 and uses adapter dropout 0.5.
pub fn config_for(backbone: &BackboneConfig) -> ArcConfig {
    match backbone {
        BackboneConfig::Vit(_) => ArcConfig::new(),
        BackboneConfig::Swin(_) => ArcConfig::new().with_adapter_dropout(0.5).with_mlp_site(MlpAdapterSite::Residual),
    }
}

/// ViT on VTAB-1k: `(lr, weight decay)` = (0.01, 0).
pub const VIT_VTAB: (f64, f64) = (0.01, 0.0);

/// FGVC (ARC_att): `(lr, weight decay)` = (0.005, 0.01).
pub const FGVC: (f64, f64) = (0.005, 0.01);

/// The official loop with `lr`, `weight_decay`, `epochs` and `seed`.
pub fn official(lr: f64, weight_decay: f64, epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(epochs)
        .with_warmup_epochs(10)
        .with_batch_size(32)
        .with_grad_clip_norm(Some(1.0))
        .with_lr(lr)
        .with_weight_decay(weight_decay)
        .with_skip_last_update(true)
        .with_seed(seed)
}

/// Swin-B VTAB per-task (lr, weight decay) of the official ARC Swin VTAB script.
pub fn swin_vtab(task: VtabTask) -> (f64, f64) {
    use VtabTask::*;
    match task {
        Cifar => (0.005, 0.01),
        Caltech101 => (0.003, 0.05),
        Dtd => (0.005, 0.05),
        OxfordFlowers102 => (0.005, 5e-5),
        OxfordIiitPet => (0.01, 0.05),
        Svhn => (0.01, 0.05),
        Sun397 => (0.005, 5e-5),
        PatchCamelyon => (0.005, 5e-5),
        Eurosat => (0.003, 0.0),
        Resisc45 => (0.01, 0.0),
        DiabeticRetinopathy => (0.005, 5e-5),
        ClevrCount => (0.002, 0.05),
        ClevrDist => (0.001, 0.05),
        Dmlab => (0.005, 0.01),
        Kitti => (0.01, 0.0),
        DspritesLoc => (0.01, 0.0),
        DspritesOri => (0.005, 0.0),
        SmallnorbAzi => (0.01, 0.005),
        SmallnorbEle => (0.001, 0.05),
    }
}
