//! Exact resume with stochastic layers. Its own test binary: Burn's device RNG is global, and
//! tests running beside it in one process would draw from it.

mod common;
use burn::prelude::*;
use common::trainer;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::tuners::LoraConfig;
use petl_core::weights::collect;

/// With stochastic layers (Swin's drop path), an interrupted run still resumes exactly: the loop
/// seeds the device RNG per epoch, so the resumed epochs draw the same masks.
#[test]
fn interrupted_run_with_drop_path_resumes_exactly() {
    use petl_core::swin::SwinConfig;
    let device = Device::flex().autodiff();
    let backbone = BackboneConfig::Swin(SwinConfig::tiny_test().with_drop_path_rate(0.2));
    let build = || {
        device.seed(7);
        let layout = backbone.layout();
        Classifier {
            backbone: backbone.init(&device).no_grad(),
            tuner: LoraConfig::new().with_rank(2).init(&layout, &device),
            head: init_head(layout.feature_dim, 5, HeadInit::TruncNormal, &device),
        }
    };
    let train = ShapesDataset::new(ShapesTask::Tint, 48, 32, 1);
    let test = ShapesDataset::new(ShapesTask::Tint, 16, 32, 2);
    let a = tempfile::tempdir().unwrap();
    let (full, full_report) = trainer(a.path()).fit(build(), &train, &test).unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut first = trainer(b.path());
    first.stop_after = Some(2);
    first.fit(build(), &train, &test).unwrap();
    let (resumed, report) = trainer(b.path()).fit(build(), &train, &test).unwrap();
    assert_eq!(report.resumed_from_epoch, 2);
    let losses = |r: &petl_core::train::TrainReport| r.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&report), losses(&full_report));
    let trained = |m: &Classifier<petl_core::tuners::Lora>| collect(m, |p, _| !p.starts_with("backbone")).tensors;
    assert_eq!(trained(&full), trained(&resumed), "drop-path masks replayed exactly");
}
