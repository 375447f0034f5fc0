//! Helpers shared by the resume tests.

use petl_core::train::{TrainConfig, Trainer};

/// Three epochs, one of warm-up, batch 16, evaluated every epoch, checkpoints in `dir`.
pub fn trainer(dir: &std::path::Path) -> Trainer {
    let cfg =
        TrainConfig::new().with_epochs(3).with_warmup_epochs(1).with_batch_size(16).with_lr(1e-2).with_eval_every(1);
    let mut t = Trainer::new(cfg);
    t.run_dir = Some(dir.to_path_buf());
    t.progress = false;
    t
}
