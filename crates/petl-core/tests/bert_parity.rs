//! BERT and RoBERTa against Hugging Face `transformers` (fixtures from
//! `tools/fixtures/bert_hf.py`): every layer's hidden states and the pooled output on a padded
//! batch, loaded from HF model folders through `BertConfig::from_hf_config` and
//! `weights::families::bert_hf`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use petl_core::bert::{BertConfig, TextInput};
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::NoHooks;
use petl_core::weights::{HostTensor, apply, families::bert_hf, read_safetensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn ids(t: &HostTensor, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = t.data.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, [t.shape[0], t.shape[1]]), device)
}

fn check(name: &str) {
    let device = petl_core::device::device_from_name("flex").expect("flex");
    let folder = fixture(&format!("{name}_tiny"));
    let cfg = BertConfig::from_hf_config(&folder.join("config.json")).expect("config");
    let state = bert_hf(read_safetensors(&folder.join("model.safetensors")).expect("weights")).expect("rename");
    let (model, report) = apply(cfg.init(&device), state);
    report.check(name, |_| false).expect("strict load");
    let mut reference = read_safetensors(&fixture(&format!("{name}_tiny_ref.safetensors"))).expect("reference");
    let input = TextInput {
        input_ids: ids(&reference.take("input_ids").unwrap(), &device),
        attention_mask: ids(&reference.take("attention_mask").unwrap(), &device),
        token_type_ids: Some(ids(&reference.take("token_type_ids").unwrap(), &device)),
    };
    model.check_input(&input).expect("valid input");
    let out = model.encode(input, &NoHooks, EncodeOptions::with_hidden_states());
    assert_eq!(out.hidden_states.len(), cfg.num_hidden_layers + 1);
    let diff = |ours: &HostTensor, theirs: &HostTensor| {
        assert_eq!(ours.shape, theirs.shape);
        ours.data.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
    };
    for (i, h) in out.hidden_states.iter().enumerate() {
        let d = diff(&HostTensor::from_tensor(h), &reference.take(&format!("hidden_states.{i}")).unwrap());
        assert!(d <= 1e-4, "{name}: hidden_states.{i} differs by {d}");
    }
    let d = diff(&HostTensor::from_tensor(&out.pooled), &reference.take("pooled").unwrap());
    assert!(d <= 1e-4, "{name}: pooled differs by {d}");
    assert_eq!(cfg.num_params(), burn::module::Module::num_params(&model));
}

#[test]
fn bert_matches_transformers_layer_by_layer() {
    check("bert");
}

#[test]
fn roberta_matches_transformers_layer_by_layer() {
    check("roberta");
}

#[test]
fn configs_and_weights_of_another_model_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"model_type": "gpt2", "vocab_size": 10}"#).unwrap();
    let err = BertConfig::from_hf_config(&cfg).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("gpt2"), "{err}");
    std::fs::write(&cfg, r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 30}"#).unwrap();
    let err = BertConfig::from_hf_config(&cfg).unwrap_err().to_string();
    assert!(err.contains("num_hidden_layers"), "{err}");

    // A checkpoint of another width, and one missing a layer: strict load names the keys.
    let device = petl_core::device::device_from_name("flex").expect("flex");
    let folder = fixture("bert_tiny");
    let state = || bert_hf(read_safetensors(&folder.join("model.safetensors")).unwrap()).unwrap();
    let wide = BertConfig::new(99, 64, 2, 4, 37, 40).init(&device);
    let err = apply(wide, state()).1.check("bert_tiny", |_| false).unwrap_err().to_string();
    assert!(err.contains("word_embeddings.weight") && err.contains("another backbone size"), "{err}");
    let deeper = BertConfig::new(99, 32, 3, 4, 37, 40).init(&device);
    let err = apply(deeper, state()).1.check("bert_tiny", |_| false).unwrap_err().to_string();
    assert!(err.contains("layers.2.query.weight"), "{err}");

    // Inputs that do not fit: one message each.
    let model = BertConfig::new(99, 32, 2, 4, 37, 40).init(&device);
    let ok_ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
    let bad_mask = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 1], [1, 2]), &device);
    let err = model
        .check_input(&TextInput { input_ids: ok_ids.clone(), attention_mask: bad_mask, token_type_ids: None })
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention_mask"), "{err}");
    let long = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64; 41], [1, 41]), &device);
    let err = model
        .check_input(&TextInput { input_ids: long.clone(), attention_mask: long.ones_like(), token_type_ids: None })
        .unwrap_err()
        .to_string();
    assert!(err.contains("41 tokens"), "{err}");
    let oov = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 99], [1, 2]), &device);
    let err = model
        .check_input(&TextInput { input_ids: oov.clone(), attention_mask: oov.ones_like(), token_type_ids: None })
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 99"), "{err}");
}
