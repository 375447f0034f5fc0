//! Determinism: the same seed and config give byte-identical checkpoints (trainable tensors and
//! optimizer state) and the same metric log; another seed gives other bytes. One test in its
//! own binary: the device RNG is process-wide, so tests running beside it would draw from it.

mod common;
use burn::prelude::*;
use common::{model, trainer};
use petl_core::data::shapes::{ShapesDataset, ShapesTask};

/// Same seed and config: byte-identical checkpoints and identical metric logs; another seed:
/// different ones (flex backend, any thread count: the kernels' reductions are fixed-order).
#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let train = ShapesDataset::new(ShapesTask::Tint, 32, 16, 1);
    let test = ShapesDataset::new(ShapesTask::Tint, 16, 16, 2);
    let run = |seed: u64| {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut t = trainer(dir.path());
        t.config.seed = seed;
        let (_, report) = t.fit(model(&device), &train, &test).unwrap();
        let ck = dir.path().join("checkpoint");
        let bytes = ["trainable-0003.safetensors", "optimizer-0003.bpk"].map(|m| std::fs::read(ck.join(m)).unwrap());
        let metrics: Vec<(f64, f64)> =
            report.epochs.iter().map(|e| (e.train_loss, e.test_metric.unwrap_or(f64::NAN))).collect();
        (bytes, metrics)
    };
    let (a, ma) = run(3);
    let (b, mb) = run(3);
    let (c, _) = run(4);
    assert!(a[0] == b[0], "same seed, different trainable tensors");
    assert!(a[1] == b[1], "same seed, different optimizer state");
    assert_eq!(ma, mb);
    assert!(a[0] != c[0], "another seed gives the same weights");
}
