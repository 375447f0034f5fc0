//! Helpers shared by the resume tests.

#![allow(dead_code)]

use burn::prelude::*;
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::train::{TrainConfig, Trainer};
use petl_core::tuners::LoraConfig;
use petl_core::vit::VitConfig;

/// Three epochs, one of warm-up, batch 16, evaluated every epoch, checkpoints in `dir`.
pub fn trainer(dir: &std::path::Path) -> Trainer {
    let cfg =
        TrainConfig::new().with_epochs(3).with_warmup_epochs(1).with_batch_size(16).with_lr(1e-2).with_eval_every(1);
    let mut t = Trainer::new(cfg);
    t.run_dir = Some(dir.to_path_buf());
    t.progress = false;
    t
}

/// A tiny ViT (16 px, 2 × 32) with LoRA r 2 and a zero head, freshly initialised.
pub fn model(device: &Device) -> Classifier<petl_core::tuners::Lora> {
    let backbone = BackboneConfig::Vit(VitConfig::new(16, 4, 32, 2, 2, 64));
    let layout = backbone.layout();
    Classifier {
        backbone: backbone.init(device).no_grad(),
        tuner: LoraConfig::new().with_rank(2).init(&layout, device),
        head: init_head(32, 5, HeadInit::Zeros, device),
    }
}
