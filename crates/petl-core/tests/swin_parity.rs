//! Swin parity against timm (backbone part): the tiny Swin of
//! `tools/fixtures/swin_tiny.py` (image 32, patch 4, embed 16, depths (2, 2), heads (2, 4),
//! window 4; stage 0 has a shifted block with a mask, stage 1 equals the window) loaded from the
//! timm state dict through `families::swin_timm`, compared with timm's float64 references.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use petl_core::hooks::NoHooks;
use petl_core::swin::SwinConfig;
use petl_core::weights::{HostTensor, TensorMap, apply, families::swin_timm, read_safetensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn max_abs_diff<const D: usize>(got: Tensor<D>, want: &HostTensor) -> f32 {
    let got = HostTensor::from_tensor(&got);
    assert_eq!(got.shape, want.shape, "shape");
    got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn load() -> (petl_core::swin::Swin, TensorMap, Device) {
    let device = Device::flex();
    let state = read_safetensors(&fixture("swin_tiny_timm.safetensors")).expect("state dict");
    let reference = read_safetensors(&fixture("swin_tiny_ref.safetensors")).expect("reference");
    let model = SwinConfig::tiny_test().init(&device);
    let (model, report) = apply(model, swin_timm(state).expect("rename"));
    let report = report.check("swin_tiny_timm.safetensors", |_| false).expect("strict load");
    assert_eq!(report.applied.len(), 61, "{report}");
    (model, reference, device)
}

#[test]
fn tiny_swin_matches_timm() {
    let (model, reference, device) = load();
    let x: Tensor<4> = reference.tensors["input.x"].to_tensor(&device);

    let embed = max_abs_diff(model.embed(x.clone()), &reference.tensors["out.patch_embed"]);
    let stages = model.forward_stages(x.clone(), &NoHooks);
    let stage_diffs: Vec<f32> = stages
        .into_iter()
        .enumerate()
        .map(|(s, t)| max_abs_diff(t, &reference.tensors[&format!("out.stage.{s}")]))
        .collect();
    let pooled = max_abs_diff(model.forward_pooled(x, &NoHooks), &reference.tensors["out.features"]);
    eprintln!("max abs diff: patch_embed {embed:e}, stages {stage_diffs:?}, features {pooled:e}");
    assert!(embed <= 1e-5, "patch embed differs by {embed}");
    for (s, d) in stage_diffs.iter().enumerate() {
        assert!(*d <= 1e-4, "stage {s} differs by {d}");
    }
    assert!(pooled <= 1e-4, "pooled features differ by {pooled}");
}

#[test]
fn old_downsample_layout_loads_the_same() {
    // timm 0.6.13 / Microsoft: PatchMerging of stage s is `layers.{s}.downsample` (end of stage).
    let mut state = read_safetensors(&fixture("swin_tiny_timm.safetensors")).expect("state dict");
    let moved: Vec<String> = state.keys().into_iter().filter(|k| k.starts_with("layers.1.downsample.")).collect();
    for k in moved {
        let t = state.take(&k).expect("key");
        state.insert(k.replacen("layers.1.", "layers.0.", 1), t);
    }
    let new = swin_timm(read_safetensors(&fixture("swin_tiny_timm.safetensors")).expect("state dict")).expect("new");
    let old = swin_timm(state).expect("old");
    assert_eq!(old.tensors, new.tensors);
}

#[test]
fn unknown_and_buffer_keys() {
    let mut state = read_safetensors(&fixture("swin_tiny_timm.safetensors")).expect("state dict");
    state.insert("layers.0.blocks.1.attn_mask", HostTensor::new(vec![1], vec![0.0]));
    state.insert("layers.0.blocks.0.attn.relative_position_index", HostTensor::new(vec![1], vec![0.0]));
    state.insert("head.fc.weight", HostTensor::new(vec![1], vec![0.0]));
    state.insert("extra.weight", HostTensor::new(vec![1], vec![0.0]));
    let (_, report) = apply(SwinConfig::tiny_test().init(&Device::flex()), swin_timm(state).expect("rename"));
    assert_eq!(report.unexpected, vec!["<unmapped>extra.weight".to_string()]);
    assert!(report.check("test", |_| false).is_err());
}

/// The Microsoft release is a `.pth` with the state dict nested under `model` .
#[test]
fn nested_pth_release_loads_like_the_state_dict() {
    let device = Device::flex();
    let nested = petl_core::weights::read_checkpoint(&fixture("swin_tiny_ms_release.pth")).expect("pth");
    let (model, report) = apply(SwinConfig::tiny_test().init(&device), swin_timm(nested).expect("rename"));
    report.check("swin_tiny_ms_release.pth", |_| false).expect("strict load");
    let reference = read_safetensors(&fixture("swin_tiny_ref.safetensors")).expect("reference");
    let x: Tensor<4> = reference.tensors["input.x"].to_tensor(&device);
    assert!(max_abs_diff(model.forward_pooled(x, &NoHooks), &reference.tensors["out.features"]) <= 1e-4);
}
