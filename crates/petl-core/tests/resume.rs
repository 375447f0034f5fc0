//! An interrupted run resumes exactly: the same tensors as an uninterrupted one (optimizer
//! state, step count and shuffling included), and checkpoints/reports are complete files.

mod common;
use burn::prelude::*;
use common::trainer;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::train::{TrainConfig, Trainer};
use petl_core::tuners::LoraConfig;
use petl_core::vit::VitConfig;
use petl_core::weights::collect;

fn model(device: &Device) -> Classifier<petl_core::tuners::Lora> {
    let backbone = BackboneConfig::Vit(VitConfig::new(16, 4, 32, 2, 2, 64));
    let layout = backbone.layout();
    let model = Classifier {
        backbone: backbone.init(device).no_grad(),
        tuner: LoraConfig::new().with_rank(2).init(&layout, device),
        head: init_head(32, 5, HeadInit::Zeros, device),
    };
    // Same starting weights for every call: load a fixed set.
    let mut fixed = collect(&model, |_, _| true);
    for (i, t) in fixed.tensors.values_mut().enumerate() {
        for (j, v) in t.data.iter_mut().enumerate() {
            *v = (((i * 13 + j * 7) % 19) as f32 - 9.0) * 0.02;
        }
    }
    petl_core::weights::apply(model, fixed).0
}

#[test]
fn interrupted_run_resumes_exactly() {
    let device = Device::flex().autodiff();
    let train = ShapesDataset::new(ShapesTask::Tint, 64, 16, 1);
    let test = ShapesDataset::new(ShapesTask::Tint, 32, 16, 2);

    let a = tempfile::tempdir().unwrap();
    let (full, report_full) = trainer(a.path()).fit(model(&device), &train, &test).unwrap();

    let b = tempfile::tempdir().unwrap();
    let mut first = trainer(b.path());
    first.stop_after = Some(1);
    let (_, partial) = first.fit(model(&device), &train, &test).unwrap();
    assert_eq!(partial.epochs.len(), 1);
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("checkpoint/progress.json")).unwrap()).unwrap();
    assert_eq!(progress["epoch"], 1);
    let (resumed, report) = trainer(b.path()).fit(model(&device), &train, &test).unwrap();
    assert_eq!(report.resumed_from_epoch, 1);
    assert_eq!(report.epochs.len(), 3);
    assert_eq!(
        report.epochs,
        report_full
            .epochs
            .iter()
            .map(|e| petl_core::train::EpochLog {
                samples_per_sec: report.epochs[e.epoch - 1].samples_per_sec,
                ..e.clone()
            })
            .collect::<Vec<_>>()
    );
    let (x, y) =
        (collect(&full, |p, _| !p.starts_with("backbone")), collect(&resumed, |p, _| !p.starts_with("backbone")));
    assert_eq!(x.tensors, y.tensors, "resumed run must equal the uninterrupted one");

    // Only complete files are left: the report parses, no temporary files remain.
    let report_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report_json["epochs"].as_array().unwrap().len(), 3);
    let leftovers: Vec<_> = std::fs::read_dir(b.path().join("checkpoint"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.iter().all(|n| !n.contains(".tmp-")), "{leftovers:?}");
    // The newest checkpoint (tensors, optimizer, manifest, its hash) and progress.json, plus the
    // best epoch's four files when the best is not the last.
    let metrics: Vec<f64> = report.epochs.iter().map(|e| e.test_metric.unwrap()).collect();
    let best = metrics.iter().enumerate().fold(0, |b, (i, m)| if *m > metrics[b] { i } else { b }) + 1;
    assert_eq!(leftovers.len(), if best == 3 { 5 } else { 9 }, "best epoch {best}: {leftovers:?}");
}

#[test]
fn frozen_parameters_get_no_gradient_and_no_optimizer_state() {
    let device = Device::flex().autodiff();
    let train = ShapesDataset::new(ShapesTask::Tint, 32, 16, 1);
    let m = model(&device);
    let (trainable, frozen) = petl_core::accounting::measure_trainable(&m);
    assert_eq!(trainable, 2 * 2 * 2 * 32 * 2 + 33 * 5, "LoRA r=2 on q, v of 2 blocks + head");
    assert_eq!(frozen, VitConfig::new(16, 4, 32, 2, 2, 64).num_params());
    let cfg = TrainConfig::new().with_epochs(1).with_warmup_epochs(0).with_batch_size(16);
    let mut t = Trainer::new(cfg);
    t.progress = false;
    let backbone_before = collect(&m, |p, _| p.starts_with("backbone"));
    let (m, report) = t.fit(m, &train, &train).unwrap();
    assert_eq!(report.optimizer_state_tensors, 2 * (2 * 2 * 2 + 2), "two AdamW moments per trainable tensor");
    assert_eq!(
        collect(&m, |p, _| p.starts_with("backbone")).tensors,
        backbone_before.tensors,
        "frozen weights unchanged"
    );
}
