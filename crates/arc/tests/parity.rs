//! Parity with a PyTorch ViT + ARC written from the paper and the official code (fixtures made by
//! `tools/fixtures/arc_vit.py`, official key names): forward (T2), gradients and two AdamW
//! steps with global-norm clipping (T3), merging (T6), parameter counts (T11).

use std::collections::HashSet;
use std::path::Path;

use arc::{ArcConfig, ArcVariant, build, merge, official};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use petl_core::model::BackboneConfig;
use petl_core::train::{Classify, clip_global_norm};
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, TensorMap, apply, collect_with_ids, read_safetensors};

fn fixture(name: &str) -> TensorMap {
    read_safetensors(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

/// Entries `prefix.<official name>` as an official state dict; names absent under `prefix`
/// (frozen tensors, for gradients) are filled with zeros of the parameter's shape.
fn official_map(fx: &TensorMap, prefix: &str) -> TensorMap {
    let mut out = TensorMap::new(prefix);
    for (k, v) in &fx.tensors {
        if let Some(name) = k.strip_prefix("param.") {
            let t = fx
                .tensors
                .get(&format!("{prefix}{name}"))
                .cloned()
                .unwrap_or_else(|| HostTensor::new(v.shape.clone(), vec![0.0; v.data.len()]));
            out.insert(name, t);
        }
    }
    out
}

fn max_diff(a: &HostTensor, b: &HostTensor) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn setup(file: &str, variant: ArcVariant, device: &Device) -> (TensorMap, arc::ArcClassifier) {
    let fx = fixture(file);
    let backbone = BackboneConfig::Vit(VitConfig::tiny_test());
    let cfg = ArcConfig::new().with_bottleneck(8).with_adapter_dropout(0.0).with_variant(variant);
    let model = build(&backbone, &cfg, 5, device);
    let (model, report) = apply(model, official::rename(official_map(&fx, "param.")).unwrap());
    report.check("fixture", |_| false).unwrap();
    (fx, model)
}

fn input(fx: &TensorMap, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let x = fx.tensors["input.x"].to_tensor::<4>(device);
    let labels: Vec<i64> = fx.tensors["input.labels"].data.iter().map(|&v| v as i64).collect();
    (x, Tensor::from_data(TensorData::new(labels, [2]), device))
}

fn forward_and_merge(file: &str, variant: ArcVariant) {
    let device = Device::flex();
    let (fx, model) = setup(file, variant, &device);
    let (x, _) = input(&fx, &device);
    let logits = HostTensor::from_tensor(&model.logits(x.clone()));
    let d = max_diff(&logits, &fx.tensors["out.logits"]);
    assert!(d <= 1e-5, "{file}: logits differ by {d}");
    let merged = merge(model).unwrap();
    let m = HostTensor::from_tensor(&merged.logits(x));
    let d = max_diff(&m, &fx.tensors["out.merged_logits"]);
    assert!(d <= 1e-5, "{file}: merged logits differ by {d}");
    assert_eq!(merged.tuner.num_params(), 0, "merged model has no extra parameters");
}

#[test]
fn arc_forward_and_merge_match_pytorch() {
    forward_and_merge("arc_vit_tiny.safetensors", ArcVariant::Arc);
}

#[test]
fn arc_att_forward_and_merge_match_pytorch() {
    forward_and_merge("arc_att_vit_tiny.safetensors", ArcVariant::ArcAtt);
}

/// Gradients, clipping and two AdamW steps against torch (T3).
fn train_steps(file: &str, variant: ArcVariant, clip: f64, step_prefix: &str) {
    let device = Device::flex().autodiff();
    let (fx, mut model) = setup(file, variant, &device);
    let (x, y) = input(&fx, &device);
    let (_, ids) = collect_with_ids(&model, |_, _| true);
    let trainable: HashSet<_> = ids
        .iter()
        .filter(|(p, _)| p.starts_with("tuner.") || p.starts_with("head."))
        .map(|(_, &id)| burn::module::ParamId::from(id))
        .collect();
    let (t, f) = petl_core::accounting::measure_trainable(&model);
    let expected = if variant == ArcVariant::Arc { 1_637 } else { 981 };
    assert_eq!(t, expected, "trainable params");
    assert_eq!(t + f, if variant == ArcVariant::Arc { 72_997 } else { 72_341 });

    let mut optim = AdamWConfig::new().with_weight_decay(0.01).with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for step in 1..=2 {
        let loss = loss_fn.forward(model.logits(x.clone()), y.clone());
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), trainable.len(), "only trainable tensors get gradients");
        if step == 1 {
            let ours = read_grads(&model, &grads);
            let want = official::rename(official_map(&fx, "grad.")).unwrap();
            for (path, g) in &ours.tensors {
                let d = max_diff(g, &want.tensors[path]);
                assert!(d <= 2e-6, "{file}: grad of {path} differs by {d}");
            }
        }
        clip_global_norm(&model, &mut grads, clip, &trainable);
        model = optim.step(0.01, model, grads);
        let want = official::rename(official_map(&fx, &format!("{step_prefix}step{step}."))).unwrap();
        let (ours, _) = collect_with_ids(&model, |p, _| p.starts_with("tuner.") || p.starts_with("head."));
        for (path, p) in &ours.tensors {
            let d = max_diff(p, &want.tensors[path]);
            // AdamW divides by sqrt(v) + 1e-8: U entries whose gradient is ~1e-8 amplify f32
            // rounding of the gradient, so parameters are compared at 1e-5 (0.1 % of lr).
            assert!(d <= 1e-5, "{file}: step {step} {path} differs by {d}");
        }
    }
    assert_eq!(optim.to_record().len(), 2 * trainable.len(), "AdamW state only for trainable tensors");
}

fn read_grads(model: &arc::ArcClassifier, grads: &GradientsParams) -> TensorMap {
    struct V<'a>(&'a GradientsParams, Vec<String>, TensorMap);
    impl burn::module::ModuleVisitor for V<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.1.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.1.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.2.insert(self.1.join("."), HostTensor::from_tensor(&g));
            }
        }
    }
    let mut v = V(grads, vec![], TensorMap::new("grads"));
    model.visit(&mut v);
    v.2
}

#[test]
fn arc_gradients_and_adamw_steps_match_pytorch() {
    train_steps("arc_vit_tiny.safetensors", ArcVariant::Arc, 1.0, "");
    train_steps("arc_vit_tiny.safetensors", ArcVariant::Arc, 0.5, "clip05.");
}

#[test]
fn arc_att_gradients_and_adamw_steps_match_pytorch() {
    train_steps("arc_att_vit_tiny.safetensors", ArcVariant::ArcAtt, 1.0, "");
}

#[test]
fn schedule_matches_reference() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedule.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let s = petl_core::train::WarmupCosine::new(320, 3200);
    for (k, f) in v["f"].as_array().unwrap().iter().enumerate() {
        let want = f.as_f64().unwrap();
        assert!((s.factor(k) - want).abs() < 1e-9, "f({k})");
    }
}
