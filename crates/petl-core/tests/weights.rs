//! Loading real checkpoint formats into the ViT (fixtures from `tools/fixtures/vit_formats.py`):
//! Google `.npz`, timm safetensors, timm `.pth`, and the errors for bad checkpoints.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use petl_core::hooks::NoHooks;
use petl_core::vit::{Vit, VitConfig};
use petl_core::weights::{HostTensor, TensorMap, apply, families, read_checkpoint, read_npz};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(map: TensorMap) -> Vit {
    let source = map.source.clone();
    let (vit, report) = apply(VitConfig::tiny_test().init(&Device::flex()), map);
    report.check(&source, |_| false).unwrap();
    vit
}

fn assert_features(vit: &Vit, reference: &str) {
    let r = read_checkpoint(&fixture(reference)).unwrap();
    let x = r.tensors["input.x"].to_tensor::<4>(&Device::flex());
    let ours = HostTensor::from_tensor(&vit.forward_pooled(x, &NoHooks));
    let want = &r.tensors["out.features"];
    let d = ours.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-4, "{reference}: features differ by {d}");
}

#[test]
fn google_npz_loads_and_matches_reference() {
    let map = families::vit_google_npz(read_npz(&fixture("vit_tiny_google.npz")).unwrap()).unwrap();
    assert_features(&load(map), "vit_tiny_google_ref.safetensors");
}

#[test]
fn timm_safetensors_and_pth_load_and_match_reference() {
    for file in ["vit_tiny_timm.safetensors", "vit_tiny_timm.pth"] {
        let map = families::vit_timm(read_checkpoint(&fixture(file)).unwrap()).unwrap();
        assert_features(&load(map), "vit_tiny_timm_ref.safetensors");
    }
}

#[test]
fn npz_missing_key_is_named() {
    let mut map = read_npz(&fixture("vit_tiny_google.npz")).unwrap();
    map.tensors.remove("Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel");
    let err = families::vit_google_npz(map).unwrap_err().to_string();
    assert!(
        err.contains("vit_tiny_google.npz") && err.contains("Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"),
        "{err}"
    );
}

#[test]
fn checkpoint_of_another_size_is_rejected_by_name() {
    let map = families::vit_google_npz(read_npz(&fixture("vit_tiny_google.npz")).unwrap()).unwrap();
    let wider = VitConfig::new(16, 4, 32, 2, 4, 128).init(&Device::flex());
    let (_, report) = apply(wider, map);
    let err = report.check("vit_tiny_google.npz", |_| false).unwrap_err().to_string();
    assert!(
        err.contains("vit_tiny_google.npz")
            && err.contains("blocks.0.query.weight")
            && err.contains("another backbone size"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_and_corrupt_npz_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("vit_tiny_timm.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_checkpoint(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.safetensors") && err.contains("truncated"), "{err}");

    let bad = dir.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let err = read_checkpoint(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.npz"), "{err}");

    let err = read_checkpoint(&dir.path().join("absent.pth")).unwrap_err().to_string();
    assert!(err.contains("absent.pth") && err.contains("not found"), "{err}");

    // NaN or infinity in a weight: refused when read, naming the tensor and the element.
    for (value, name) in [(f32::NAN, "nan.safetensors"), (f32::NEG_INFINITY, "inf.safetensors")] {
        let mut map = TensorMap::new("test");
        map.insert("w", HostTensor::new(vec![2, 2], vec![1.0, 2.0, value, 4.0]));
        let path = dir.path().join(name);
        petl_core::weights::write_safetensors(&path, &map, None).unwrap();
        let err = read_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("tensor `w` holds") && err.contains("element 2"), "{err}");
    }
}

#[test]
fn config_param_count_matches_allocation_and_spec() {
    let tiny = VitConfig::tiny_test();
    assert_eq!(tiny.num_params(), burn::module::Module::num_params(&tiny.init(&Device::flex())));
    assert_eq!(VitConfig::vit_b16().num_params(), 85_798_656);
    // Hostile or corrupt configs are errors before anything is allocated.
    let huge = VitConfig::new(1 << 20, 1, 768, 12, 12, 3072).validate().unwrap_err().to_string();
    assert!(huge.contains("not a real model"), "{huge}");
    let zero = VitConfig::new(32, 4, 64, 0, 4, 128).validate().unwrap_err().to_string();
    assert!(zero.contains("num_layers must be at least 1"), "{zero}");
}
