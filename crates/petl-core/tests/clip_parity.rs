//! CLIP's image tower against Hugging Face `transformers` (fixtures from
//! `tools/fixtures/clip_hf.py`): every layer's hidden states, the last hidden state and the
//! pooled output, loaded from an HF model folder through `VitConfig::from_hf_clip_config` and
//! `weights::families::clip_vision_hf`.

use std::path::{Path, PathBuf};

use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::NoHooks;
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, apply, families::clip_vision_hf, read_safetensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn diff(ours: &HostTensor, theirs: &HostTensor) -> f32 {
    assert_eq!(ours.shape, theirs.shape);
    ours.data.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
}

#[test]
fn clip_vision_tower_matches_transformers_layer_by_layer() {
    let device = petl_core::device::device_from_name("flex").expect("flex");
    let folder = fixture("clip_vision_tiny");
    let cfg = VitConfig::from_hf_clip_config(&folder.join("config.json")).expect("config");
    let state = clip_vision_hf(read_safetensors(&folder.join("model.safetensors")).expect("weights")).expect("rename");
    let (model, report) = apply(cfg.init(&device), state);
    report.check("clip_vision_tiny", |_| false).expect("strict load");
    assert_eq!(cfg.num_params(), burn::module::Module::num_params(&model));
    let mut reference = read_safetensors(&fixture("clip_vision_tiny_ref.safetensors")).expect("reference");
    let x = reference.take("pixel_values").unwrap().to_tensor::<4>(&device);
    let out = model.encode(x, &NoHooks, EncodeOptions::with_hidden_states());
    assert_eq!(out.hidden_states.len(), cfg.num_layers + 1);
    for (i, h) in out.hidden_states.iter().enumerate() {
        let d = diff(&HostTensor::from_tensor(h), &reference.take(&format!("hidden_states.{i}")).unwrap());
        assert!(d <= 1e-4, "hidden_states.{i} differs by {d}");
    }
    let d = diff(&HostTensor::from_tensor(&out.last), &reference.take("last_hidden_state").unwrap());
    assert!(d <= 1e-4, "last_hidden_state differs by {d}");
    let d = diff(&HostTensor::from_tensor(&out.pooled), &reference.take("pooled").unwrap());
    assert!(d <= 1e-4, "pooled differs by {d}");
}

#[test]
fn full_clip_configs_give_the_vision_tower_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"model_type": "clip", "vision_config": {"image_size": 224, "patch_size": 16, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "quick_gelu"}}"#,
    )
    .unwrap();
    assert_eq!(VitConfig::from_hf_clip_config(&path).unwrap(), VitConfig::clip_vit_b16());
    std::fs::write(&path, r#"{"model_type": "clip_vision_model", "image_size": 224}"#).unwrap();
    let err = VitConfig::from_hf_clip_config(&path).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("`patch_size`"), "{err}");
    std::fs::write(&path, r#"{"model_type": "vit"}"#).unwrap();
    let err = VitConfig::from_hf_clip_config(&path).unwrap_err().to_string();
    assert!(err.contains("model_type `vit`"), "{err}");
}
