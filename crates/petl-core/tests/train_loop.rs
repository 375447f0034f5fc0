//! The generic loop's knobs do what they say: gradient accumulation equals the large batch,
//! parameter groups get their own learning rate and weight decay, several training datasets
//! are all trained on and each evaluated.

use burn::prelude::*;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::data::{ImageSample, Samples};
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::train::{Classification, ParamGroupConfig, Sampling, TrainConfig, Trainer};
use petl_core::tuners::{Lora, LoraConfig};
use petl_core::vit::VitConfig;
use petl_core::weights::{TensorMap, collect};

fn model(device: &Device) -> Classifier<Lora> {
    let backbone = BackboneConfig::Vit(VitConfig::new(16, 4, 32, 2, 2, 64));
    let model = Classifier {
        backbone: backbone.init(device).no_grad(),
        tuner: LoraConfig::new().with_rank(2).init(&backbone.layout(), device),
        head: init_head(32, 5, HeadInit::Zeros, device),
    };
    let mut fixed = collect(&model, |_, _| true);
    for (i, t) in fixed.tensors.values_mut().enumerate() {
        for (j, v) in t.data.iter_mut().enumerate() {
            *v = (((i * 13 + j * 7) % 19) as f32 - 9.0) * 0.02;
        }
    }
    petl_core::weights::apply(model, fixed).0
}

fn trainer(cfg: TrainConfig) -> Trainer {
    let mut t = Trainer::new(cfg.with_warmup_epochs(1).with_lr(1e-2).with_weight_decay(1e-2));
    t.progress = false;
    t
}

fn trained(m: &Classifier<Lora>) -> TensorMap {
    collect(m, |p, _| !p.starts_with("backbone"))
}

fn max_diff(a: &TensorMap, b: &TensorMap) -> f32 {
    a.tensors
        .iter()
        .flat_map(|(k, t)| t.data.iter().zip(&b.tensors[k].data).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn accumulating_two_half_batches_equals_one_full_batch() {
    let device = Device::flex().autodiff();
    let train = ShapesDataset::new(ShapesTask::Tint, 40, 16, 1);
    let test = ShapesDataset::new(ShapesTask::Tint, 16, 16, 2);
    let cfg = TrainConfig::new().with_epochs(2);
    let (full, r1) = trainer(cfg.clone().with_batch_size(8)).fit(model(&device), &train, &test).unwrap();
    let (accum, r2) =
        trainer(cfg.with_batch_size(4).with_grad_accumulation(2)).fit(model(&device), &train, &test).unwrap();
    assert_eq!(r1.epochs.iter().map(|e| e.step).collect::<Vec<_>>(), [5, 10], "updates, not batches");
    assert_eq!(r2.epochs.iter().map(|e| e.step).collect::<Vec<_>>(), [5, 10]);
    let diff = max_diff(&trained(&full), &trained(&accum));
    assert!(diff < 1e-5, "accumulated update differs from the large batch by {diff}");
    assert!(max_diff(&trained(&full), &trained(&model(&device))) > 1e-3, "it trained");
}

#[test]
fn a_group_with_zero_learning_rate_stays_put_while_the_rest_trains() {
    let device = Device::flex().autodiff();
    let train = ShapesDataset::new(ShapesTask::Tint, 32, 16, 1);
    let cfg = TrainConfig::new()
        .with_epochs(1)
        .with_batch_size(8)
        .with_param_groups(vec![ParamGroupConfig::new("head", &["head"]).with_lr_scale(0.0)]);
    let start = trained(&model(&device));
    let (m, report) = trainer(cfg).fit(model(&device), &train, &train).unwrap();
    let end = trained(&m);
    for (k, t) in &end.tensors {
        let moved = t.data.iter().zip(&start.tensors[k].data).any(|(a, b)| a != b);
        assert_eq!(moved, !k.starts_with("head"), "{k}: moved {moved}");
    }
    assert_eq!(report.optimizer_state_tensors, 2 * (2 * 2 * 2 + 2), "every trainable tensor has AdamW state");
}

/// A second task of the same item type, with labels relabelled, to train two datasets at once.
struct Shifted(ShapesDataset, &'static str);

impl Samples<ImageSample> for Shifted {
    fn name(&self) -> &str {
        self.1
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize, augment: Option<u64>) -> petl_core::Result<ImageSample> {
        let mut s = self.0.get(index, augment)?;
        s.label = (s.label + 1) % 5;
        Ok(s)
    }
}

#[test]
fn multi_task_training_visits_every_dataset_and_evaluates_each() {
    let device = Device::flex().autodiff();
    let a = ShapesDataset::new(ShapesTask::Tint, 24, 16, 1);
    let b = Shifted(ShapesDataset::new(ShapesTask::Tint, 8, 16, 3), "shifted");
    let (ea, eb) = (
        ShapesDataset::new(ShapesTask::Tint, 8, 16, 2),
        Shifted(ShapesDataset::new(ShapesTask::Tint, 8, 16, 4), "shifted"),
    );
    for sampling in [Sampling::Proportional, Sampling::RoundRobin] {
        let cfg = TrainConfig::new().with_epochs(1).with_batch_size(8).with_sampling(sampling);
        let (_, report) = trainer(cfg)
            .fit_task(
                model(&device),
                &Classification::default(),
                &[&a as &dyn Samples<ImageSample>, &b],
                &[&ea as &dyn Samples<ImageSample>, &eb],
            )
            .unwrap();
        let epoch = &report.epochs[0];
        assert_eq!(epoch.step, 3 + 1, "3 batches of the first dataset and 1 of the second");
        let metrics: Vec<&String> = epoch.test_metrics.keys().collect();
        assert_eq!(metrics, ["shifted/top1", "tint/top1"]);
        let mean = (epoch.test_metrics["shifted/top1"] + epoch.test_metrics["tint/top1"]) / 2.0;
        assert!((epoch.test_metric.unwrap() - mean).abs() < 1e-9);
    }
}

#[test]
fn bad_recipes_and_empty_sets_are_errors_before_training() {
    let device = Device::flex().autodiff();
    let train = ShapesDataset::new(ShapesTask::Tint, 8, 16, 1);
    let empty = ShapesDataset::new(ShapesTask::Tint, 0, 16, 2);
    let err = |cfg: TrainConfig, test: &ShapesDataset| {
        let mut t = Trainer::new(cfg);
        t.progress = false;
        t.fit(model(&device), &train, test).unwrap_err().to_string()
    };
    assert!(err(TrainConfig::new(), &empty).contains("evaluation set `tint` is empty"));
    assert!(err(TrainConfig::new().with_epochs(0), &train).contains("epochs must be at least 1"));
    assert!(err(TrainConfig::new().with_lr(f64::NAN), &train).contains("lr must be finite and positive"));
    assert!(err(TrainConfig::new().with_label_smoothing(1.0), &train).contains("label_smoothing"));
    assert!(err(TrainConfig::new().with_warmup_fraction(Some(1.5)), &train).contains("warmup_fraction"));
}

#[test]
fn warm_up_is_whole_epochs_or_a_fraction_of_all_updates() {
    let cfg = TrainConfig::new().with_epochs(3).with_warmup_epochs(1);
    assert_eq!(cfg.warmup_updates(188), 188);
    // ViLT / METER: int(0.1 · T), T = 3 · 188 updates.
    let cfg = cfg.with_warmup_fraction(Some(0.1));
    assert_eq!(cfg.warmup_updates(188), 56);
    assert_eq!(cfg.clone().with_epochs(10).warmup_updates(13), 13);
    // A recipe written before the field existed reads as unset.
    let mut json = serde_json::to_value(TrainConfig::new()).unwrap();
    json.as_object_mut().unwrap().remove("warmup_fraction");
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.warmup_fraction, None);
}

#[test]
fn reports_written_before_the_task_rename_still_load() {
    let old = r#"{"epochs": [{"epoch": 1, "step": 2, "lr": 0.01, "train_loss": 1.5, "train_acc": 40.0,
        "test_acc": 35.0, "samples_per_sec": 10.0}], "best_test_acc": 35.0, "final_test_acc": 35.0,
        "trainable_params": 3, "frozen_params": 4, "optimizer_state_tensors": 2, "samples_per_sec": 10.0,
        "peak_rss_bytes": null, "wall_secs": 1.0, "resumed_from_epoch": 0}"#;
    let report: petl_core::train::TrainReport = serde_json::from_str(old).unwrap();
    assert_eq!((report.best_test, report.final_test, report.epochs[0].train_metric), (35.0, 35.0, 40.0));
    assert_eq!(report.metric, "top-1 accuracy (%)");
}
