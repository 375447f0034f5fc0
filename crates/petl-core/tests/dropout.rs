//! Dropout in the vision–language backbones: active while training on an autodiff device, also
//! in a frozen backbone (the official ViLT / METER fine-tuning keeps it in train mode), off in
//! validation; the rate-0 default draws nothing.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use petl_core::bert::{BertConfig, TextInput};
use petl_core::meter::MeterConfig;
use petl_core::tuners::LoraConfig;
use petl_core::vilt::ViltConfig;
use petl_core::vit::{VitConfig, VitPooling};
use petl_core::vl_model::{VlBackbone, VlHeadKind, VlModel};

fn text(device: &Device) -> TextInput {
    let ids: Vec<i64> = vec![0, 7, 9, 11, 13, 2, 0, 8, 10, 2, 1, 1];
    let mask: Vec<i64> = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    TextInput {
        input_ids: Tensor::from_data(TensorData::new(ids, [2, 6]), device),
        attention_mask: Tensor::from_data(TensorData::new(mask, [2, 6]), device),
        token_type_ids: None,
    }
}

fn images(device: &Device) -> Tensor<4> {
    Tensor::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), device)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Two training forwards of the PETL-frozen model differ; its validation form is
/// deterministic; with every rate 0 two training forwards agree.
fn check<E: VlBackbone>(with_dropout: impl Fn(&Device) -> E, without: impl Fn(&Device) -> E) {
    let ad = Device::flex().autodiff();
    ad.seed(3);
    let pixels = images(&ad);
    let build = |backbone: E| {
        let lora =
            LoraConfig::new().with_rank(2).with_a_std(Some(1.0)).with_dropout(Some(0.3)).init(&backbone.layout(), &ad);
        VlModel::new(backbone, lora, VlHeadKind::Nlvr2, Some(0), None, &ad).petl_trainable()
    };
    let model = build(with_dropout(&ad));
    let run = |m: &VlModel<E, petl_core::tuners::Lora>| host(m.pooled(text(&ad), pixels.clone(), 1));
    let (a, b) = (run(&model), run(&model));
    assert!(max_diff(&a, &b) > 1e-4, "training forwards of a frozen backbone should differ by dropout");
    let valid = model.valid();
    let flex = Device::flex();
    let px = pixels.clone().inner();
    let (c, d) = (host(valid.pooled(text(&flex), px.clone(), 1)), host(valid.pooled(text(&flex), px, 1)));
    assert_eq!(c, d, "validation is deterministic");
    let plain = build(without(&ad));
    assert_eq!(run(&plain), run(&plain), "rate 0 draws nothing");
}

#[test]
fn vilt_drops_in_training_only_also_when_frozen() {
    let cfg = ViltConfig::new(32, 16, 2, 2, 32, 6, 8, 16);
    check(|d| cfg.clone().with_dropout(Some(0.3)).init(d), |d| cfg.init(d));
}

#[test]
fn meter_drops_in_training_only_also_when_frozen() {
    let text = BertConfig::new(32, 16, 1, 2, 32, 8);
    let vision = VitConfig::new(16, 8, 16, 1, 2, 32).clip().with_pooling(VitPooling::NormedClass);
    let cfg = MeterConfig::new(text.clone(), vision).with_hidden_size(16).with_num_layers(1).with_num_heads(2);
    let cfg = cfg.with_intermediate_size(32);
    let mut dropped = cfg.clone().with_hidden_dropout(Some(0.3)).with_attention_dropout(Some(0.3));
    dropped.text = text.with_hidden_dropout_prob(Some(0.3)).with_attention_probs_dropout_prob(Some(0.3));
    check(|d| dropped.init(d), |d| cfg.init(d));
}

#[test]
fn official_configs_carry_the_papers_rates_and_configs_written_before_them_load_without() {
    assert_eq!(ViltConfig::vilt_b32().dropout, Some(0.1));
    assert_eq!(ViltConfig::vilt_b32().vit().dropout, Some(0.1));
    let meter = MeterConfig::meter_clip16_roberta(384);
    assert_eq!((meter.hidden_dropout, meter.attention_dropout), (Some(0.1), Some(0.1)));
    assert_eq!((meter.text.hidden_dropout_prob, meter.text.attention_probs_dropout_prob), (Some(0.1), Some(0.1)));
    assert_eq!(meter.vision.dropout, None, "CLIP's tower has none");
    let mut json = serde_json::to_value(ViltConfig::vilt_b32()).unwrap();
    json.as_object_mut().unwrap().remove("dropout");
    let old: ViltConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old.dropout, None);
    let mut json = serde_json::to_value(LoraConfig::new()).unwrap();
    json.as_object_mut().unwrap().remove("dropout");
    assert_eq!(serde_json::from_value::<LoraConfig>(json).unwrap().dropout, None);
    assert!(ViltConfig::vilt_b32().with_dropout(Some(1.0)).validate().unwrap_err().to_string().contains("dropout 1"));
}

#[test]
fn lora_drops_its_input_in_training_only() {
    use petl_core::hooks::{BlockHooks, BlockId, LinearSite};
    let ad = Device::flex().autodiff();
    ad.seed(5);
    let layout = ViltConfig::new(32, 16, 1, 2, 32, 6, 8, 16).layout();
    let mut lora = LoraConfig::new().with_rank(2).with_dropout(Some(0.5)).init(&layout, &ad);
    lora.query[0].b = burn::module::Param::from_tensor(Tensor::ones([2, 16], &ad));
    let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &ad);
    let y = Tensor::<3>::zeros([2, 5, 16], &ad);
    let at = BlockId::vision(0, 0);
    let out = |l: &petl_core::tuners::Lora, x: &Tensor<3>, y: Tensor<3>| {
        l.linear(at, LinearSite::Query, x, y).into_data().try_to_vec::<f32>().unwrap()
    };
    let (a, b) = (out(&lora, &x, y.clone()), out(&lora, &x, y.clone()));
    assert!(max_diff(&a, &b) > 1e-4, "the low-rank path's input is dropped in training");
    let valid = lora.valid();
    let (x, y) = (x.inner(), y.inner());
    assert_eq!(out(&valid, &x, y.clone()), out(&valid, &x, y));
}
