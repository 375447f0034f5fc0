//! Exact resume with ARC's adapter dropout on: for 3 seeds × 2 kill points, a run stopped after
//! epoch k and resumed ends with the same bytes as an uninterrupted run — the final trainable
//! tensors and optimizer state (SHA-256 of the checkpoint files) and the metric log. The loop
//! seeds the device RNG per epoch from the run's seed, so a resumed epoch draws the same dropout
//! masks. Its own test binary: the device RNG is process-wide.

use burn::prelude::*;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::model::BackboneConfig;
use petl_core::train::{TrainConfig, Trainer};
use petl_core::vit::VitConfig;

fn sha(path: &std::path::Path) -> String {
    petl_core::io::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn killed_and_resumed_runs_with_adapter_dropout_end_byte_identical() {
    let backbone = BackboneConfig::Vit(VitConfig::tiny_test());
    let arc = arc::ArcConfig::new().with_bottleneck(8).with_adapter_dropout(0.1);
    let train = ShapesDataset::new(ShapesTask::Tint, 48, 16, 1);
    let test = ShapesDataset::new(ShapesTask::Tint, 16, 16, 2);
    let trainer = |dir: &std::path::Path, seed: u64, stop: Option<usize>| {
        let cfg = TrainConfig::new()
            .with_epochs(3)
            .with_warmup_epochs(1)
            .with_batch_size(16)
            .with_lr(1e-2)
            .with_eval_every(1)
            .with_seed(seed);
        let mut t = Trainer::new(cfg);
        t.run_dir = Some(dir.to_path_buf());
        t.progress = false;
        t.stop_after = stop;
        t
    };
    let run = |seed: u64, kill: Option<usize>| {
        let device = Device::flex().autodiff();
        let dir = tempfile::tempdir().unwrap();
        let model = || {
            device.seed(seed);
            arc::build(&backbone, &arc, 5, &device)
        };
        if let Some(k) = kill {
            let (_, partial) = trainer(dir.path(), seed, Some(k)).fit(model(), &train, &test).unwrap();
            assert_eq!(partial.epochs.len(), k);
        }
        let (_, report) = trainer(dir.path(), seed, None).fit(model(), &train, &test).unwrap();
        assert_eq!(report.resumed_from_epoch, kill.unwrap_or(0));
        let ck = dir.path().join("checkpoint");
        let log: Vec<(usize, u64, u64)> = report
            .epochs
            .iter()
            .map(|e| (e.step, e.train_loss.to_bits(), e.test_metric.unwrap_or(f64::NAN).to_bits()))
            .collect();
        (sha(&ck.join("trainable-0003.safetensors")), sha(&ck.join("optimizer-0003.bpk")), log)
    };
    let mut distinct = std::collections::BTreeSet::new();
    for seed in [1u64, 2, 3] {
        let whole = run(seed, None);
        for kill in [1, 2] {
            assert_eq!(run(seed, Some(kill)), whole, "seed {seed}, killed after epoch {kill}");
        }
        distinct.insert(whole.0);
    }
    assert_eq!(distinct.len(), 3, "each seed its own weights");
}
