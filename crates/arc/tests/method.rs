//! The method-level properties of ARC: counts (T11), initialisation (T8), identity at
//! initialisation, trainable set, merging on ViT and Swin (T6), adapter-only save/load.

use arc::{ArcConfig, ArcVariant, LambdaInit, MlpAdapterSite, build, merge};
use burn::module::Module;
use burn::prelude::*;
use petl_core::hooks::{Layout, NoHooks};
use petl_core::model::BackboneConfig;
use petl_core::swin::SwinConfig;
use petl_core::train::Classify;
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, apply, collect};

fn counts(backbone: &BackboneConfig, arc: &ArcConfig, classes: usize) -> usize {
    let layout: Layout = backbone.layout();
    arc.num_params(&layout) + (layout.feature_dim + 1) * classes
}

#[test]
fn parameter_counts_match_the_spec() {
    let arc = ArcConfig::new();
    let att = ArcConfig::new().with_variant(ArcVariant::ArcAtt);
    let vit = |c: VitConfig| BackboneConfig::Vit(c);
    assert_eq!(arc.num_params(&VitConfig::vit_b16().layout()), 96_432);
    assert_eq!(att.num_params(&VitConfig::vit_b16().layout()), 48_216);
    assert_eq!(arc.num_params(&VitConfig::vit_l16().layout()), 153_952);
    assert_eq!(att.num_params(&VitConfig::vit_l16().layout()), 76_976);
    assert_eq!(arc.num_params(&VitConfig::vit_h14().layout()), 213_120);
    assert_eq!(att.num_params(&VitConfig::vit_h14().layout()), 106_560);
    assert_eq!(arc.num_params(&SwinConfig::swin_b().layout()), 218_464);
    assert_eq!(counts(&vit(VitConfig::vit_b16()), &arc, 100), 173_332);
    let tiny = ArcConfig::new().with_bottleneck(8);
    assert_eq!(counts(&vit(VitConfig::tiny_test()), &tiny, 5), 1_637);
    assert_eq!(counts(&vit(VitConfig::tiny_test()), &tiny.clone().with_variant(ArcVariant::ArcAtt), 5), 981);
    assert_eq!(counts(&BackboneConfig::Swin(SwinConfig::tiny_test()), &tiny, 5), 1_189);
}

#[test]
fn measured_trainable_set_equals_the_formula() {
    let device = Device::flex().autodiff();
    for backbone in [BackboneConfig::Vit(VitConfig::tiny_test()), BackboneConfig::Swin(SwinConfig::tiny_test())] {
        for variant in [ArcVariant::Arc, ArcVariant::ArcAtt] {
            let cfg = ArcConfig::new().with_bottleneck(8).with_variant(variant);
            let model = build(&backbone, &cfg, 5, &device);
            let (trainable, frozen) = petl_core::accounting::measure_trainable(&model);
            assert_eq!(trainable, counts(&backbone, &cfg, 5), "{backbone:?} {variant:?}");
            assert_eq!(frozen, backbone.num_params());
        }
    }
}

#[test]
fn initialisation_follows_the_official_code() {
    let device = Device::flex();
    let tuner = ArcConfig::new().init(&VitConfig::vit_b16().layout(), &device);
    let stats = |t: Tensor<2>| {
        let h = HostTensor::from_tensor(&t);
        let max = h.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mean = h.data.iter().sum::<f32>() / h.data.len() as f32;
        (max, mean)
    };
    let (max, mean) = stats(tuner.att_down[0].val());
    let bound = (6.0f32 / (768.0 + 50.0)).sqrt(); // 0.08564
    assert!(max <= bound && max > 0.08, "U_att bound {max}");
    assert!(mean.abs() < 0.002, "U_att mean {mean}");
    let (max, _) = stats(tuner.mlp[3].rescale.val());
    assert!(max <= (6.0f32 / 51.0).sqrt() && max > 0.1, "λ_mlp bound {max}"); // 0.342997
    assert_eq!(stats(tuner.att[3].rescale.val()).0, 0.0, "λ_att starts at zero");
    assert_eq!(stats(tuner.att[3].bias.val().unsqueeze()).0, 0.0, "b starts at zero");
    let zeros = ArcConfig::new().with_lambda_mlp_init(LambdaInit::Zeros).init(&VitConfig::vit_b16().layout(), &device);
    assert_eq!(stats(zeros.mlp[0].rescale.val()).0, 0.0);
}

#[test]
fn arc_att_starts_as_the_frozen_backbone_with_zero_logits() {
    let device = Device::flex();
    let backbone = BackboneConfig::Vit(VitConfig::tiny_test());
    let model = build(&backbone, &ArcConfig::new().with_bottleneck(8).with_variant(ArcVariant::ArcAtt), 5, &device);
    let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let plain = model.backbone.forward_pooled(x.clone(), &NoHooks);
    let tuned = model.backbone.forward_pooled(x.clone(), &model.tuner);
    assert_eq!(HostTensor::from_tensor(&plain), HostTensor::from_tensor(&tuned));
    assert!(HostTensor::from_tensor(&model.logits(x)).data.iter().all(|&v| v == 0.0));
}

fn randomise(model: arc::ArcClassifier) -> arc::ArcClassifier {
    // Non-zero λ and b everywhere, so merging is exercised on every term.
    let mut tensors = collect(&model, |p, _| p.starts_with("tuner."));
    for (i, t) in tensors.tensors.values_mut().enumerate() {
        for (j, v) in t.data.iter_mut().enumerate() {
            *v = (((i * 31 + j * 17) % 23) as f32 - 11.0) * 0.01;
        }
    }
    let (model, report) = apply(model, tensors);
    report.check("random", |p| !p.starts_with("tuner.")).unwrap();
    model
}

fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    let (a, b) = (HostTensor::from_tensor(&a), HostTensor::from_tensor(&b));
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn merging_is_exact_on_vit_and_on_swin_with_branch_input_adapters() {
    let device = Device::flex();
    let cases = [
        (BackboneConfig::Vit(VitConfig::tiny_test()), MlpAdapterSite::BranchInput, 16),
        (BackboneConfig::Swin(SwinConfig::tiny_test()), MlpAdapterSite::BranchInput, 32),
    ];
    for (backbone, site, size) in cases {
        let cfg = ArcConfig::new().with_bottleneck(8).with_mlp_site(site);
        let model = randomise(build(&backbone, &cfg, 5, &device));
        let x = Tensor::<4>::random([2, 3, size, size], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let before = model.logits(x.clone());
        let merged = merge(model).unwrap();
        assert_eq!(merged.tuner.num_params(), 0);
        assert_eq!(merged.num_params(), backbone.num_params() + (backbone.layout().feature_dim + 1) * 5);
        let d = max_diff(before, merged.logits(x));
        assert!(d <= 1e-5, "{backbone:?}: merged logits differ by {d}");
    }
}

#[test]
fn the_official_swin_residual_adapter_is_refused_by_merge() {
    let backbone = BackboneConfig::Swin(SwinConfig::tiny_test());
    let cfg = ArcConfig::new().with_bottleneck(8).with_mlp_site(MlpAdapterSite::Residual);
    let err = merge(build(&backbone, &cfg, 5, &Device::flex())).unwrap_err().to_string();
    assert!(err.contains("residual stream"), "{err}");
    let att = cfg.with_variant(ArcVariant::ArcAtt);
    assert!(merge(build(&backbone, &att, 5, &Device::flex())).is_ok(), "attention adapters always merge");
}

#[test]
fn adapter_only_checkpoint_round_trips_exactly() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let backbone = BackboneConfig::Vit(VitConfig::tiny_test());
    let cfg = ArcConfig::new().with_bottleneck(8);
    let model = randomise(build(&backbone, &cfg, 5, &device));
    let path = dir.path().join("adapter.safetensors");
    let tensors = collect(&model, |p, _| p.starts_with("tuner.") || p.starts_with("head."));
    assert_eq!(tensors.tensors.values().map(|t| t.data.len()).sum::<usize>(), 1_637);
    petl_core::checkpoint::save_adapter(&path, &tensors, &serde_json::json!({"method": "arc"})).unwrap();
    let (loaded, config) = petl_core::checkpoint::load_adapter(&path).unwrap();
    assert_eq!(config["method"], "arc");
    let fresh = build(&backbone, &cfg, 5, &device);
    let fresh = fresh.clone().load_record(model.clone().into_record()); // same frozen backbone
    let (restored, report) = apply(fresh, loaded);
    report.check("adapter", |p| p.starts_with("backbone.")).unwrap();
    let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(max_diff(model.logits(x.clone()), restored.logits(x)), 0.0);
}

#[test]
fn arc_merges_into_bert_through_the_same_linear_sites() {
    use burn::tensor::TensorData;
    use petl_core::bert::{BertConfig, TextInput};
    use petl_core::encoder::{EncodeOptions, Encoder};
    let device = Device::flex();
    device.seed(9);
    let mut bert = BertConfig::new(50, 32, 2, 2, 64, 16).init(&device);
    let layout = bert.layout();
    let tuner = ArcConfig::new().with_bottleneck(4).init(&layout, &device);
    let mut tensors = collect(&tuner, |_, _| true);
    for (i, t) in tensors.tensors.values_mut().enumerate() {
        for (j, v) in t.data.iter_mut().enumerate() {
            *v = (((i * 29 + j * 13) % 17) as f32 - 8.0) * 0.02;
        }
    }
    let tuner = apply(tuner, tensors).0;
    let ids: Vec<i64> = (0..10).map(|i| 1 + (i * 11) % 49).collect();
    let input = TextInput {
        input_ids: Tensor::from_data(TensorData::new(ids, [2, 5]), &device),
        attention_mask: Tensor::from_data(TensorData::new(vec![1i64; 10], [2, 5]), &device),
        token_type_ids: None,
    };
    let before = bert.encode(input.clone(), &tuner, EncodeOptions::default()).last;
    arc::merge_into(&tuner, &mut bert, &layout).expect("BERT has q, k, v and fc1 sites");
    let after = bert.encode(input, &NoHooks, EncodeOptions::default()).last;
    let (a, b) = (HostTensor::from_tensor(&before), HostTensor::from_tensor(&after));
    let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff < 1e-4, "merged BERT differs by {diff}");
}
