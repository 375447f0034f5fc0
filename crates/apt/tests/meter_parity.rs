//! Parity with a PyTorch METER + APT and every baseline (fixtures made by
//! `tools/fixtures/apt_meter.py` from the official METER APT classes, official key names, f64
//! reference): the towers (RoBERTa, METER's CLIP image tower with its bicubically adapted
//! position table), the class-token initialisation, one fusion layer with APT, and the pooled
//! features, fused streams and VQA / NLVR2 logits of every method; LoRA merged into the cross
//! layers gives the same logits.

use apt::{AptConfig, Variant, VariantConfig, VlTuner, official};
use burn::module::Module;
use burn::prelude::*;
use petl_core::bert::{BertConfig, TextInput};
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::{BlockId, NoHooks, SubLayer, Tower};
use petl_core::meter::MeterConfig;
use petl_core::nn::AttentionMask;
use petl_core::train::vl::{VlClassify, VlInput};
use petl_core::vilt::ViltInput;
use petl_core::vit::{VitConfig, VitPooling};
use petl_core::vl_model::{MeterModel, VlHeadKind};
use petl_core::weights::{HostTensor, TensorMap, read_safetensors};

mod common;

use common::{device, fixture_path, ints, max_diff};

/// `meter_tiny_config.json`: RoBERTa 2 × 32, CLIP tower 2 × 24 (patch 8) run at 48 px from a
/// 32 px table, 2 fusion layers per stream of width 32.
fn config() -> MeterConfig {
    let text = BertConfig::new(64, 32, 2, 4, 64, 16)
        .with_type_vocab_size(1)
        .with_layer_norm_eps(1e-5)
        .with_pad_token_id(1)
        .with_roberta_positions(true);
    let vision = VitConfig::new(48, 8, 24, 2, 4, 96).clip().with_pooling(VitPooling::NormedClass);
    MeterConfig::new(text, vision).with_hidden_size(32).with_num_layers(2).with_num_heads(4).with_intermediate_size(64)
}

fn variants() -> VariantConfig {
    VariantConfig::new()
        .with_apt(AptConfig::new().with_num_prompts(6).with_rank(2))
        .with_deep_prompts(5)
        .with_meter_deep_prompt_cross_only(true)
        .with_lora_rank(3)
        .with_adapter_bottleneck(8)
        .with_pa_bottleneck(8)
}

fn io() -> TensorMap {
    common::read_mixed(&fixture_path("meter_tiny_ref.safetensors"))
}

/// The model of `variant` with `head`, loaded from the fixture's official state dict.
fn model(variant: Variant, head: VlHeadKind) -> MeterModel<VlTuner> {
    let device = device();
    let cfg = config();
    let mut src = read_safetensors(&fixture_path("meter_tiny.safetensors")).unwrap();
    if !matches!(variant, Variant::Classifier | Variant::Full) {
        for (k, v) in
            read_safetensors(&fixture_path(&format!("meter_tiny_{}.safetensors", variant.name()))).unwrap().tensors
        {
            src.insert(k, v);
        }
    }
    let class_token = if variant == Variant::Full { None } else { Some(0) };
    let m = MeterModel::new(
        cfg.init(&device),
        variants().init(variant, &cfg.layout(), &device),
        head,
        class_token,
        None,
        &device,
    );
    let (m, report) = official::load(m, src).unwrap();
    assert!(report.missing.is_empty() && report.mismatched.is_empty(), "{variant:?}: {report}");
    let foreign = |k: &String| k.contains("classifier") || (variant == Variant::Full && k == "token4classifier");
    assert!(report.unexpected.iter().all(foreign), "{variant:?}: {report}");
    m
}

fn text(io: &TensorMap, device: &Device) -> TextInput {
    TextInput {
        input_ids: ints(&io.tensors["input_ids"], device),
        attention_mask: ints(&io.tensors["text_mask"], device),
        token_type_ids: None,
    }
}

#[test]
fn meter_towers_position_table_and_class_token_match_the_reference() {
    let device = device();
    let io = io();
    let m = model(Variant::Classifier, VlHeadKind::Vqa { answers: 10 });
    assert_eq!(m.backbone.num_params(), config().num_params());
    assert_eq!(m.backbone.resolution(), 48);
    let table = HostTensor::from_tensor(&m.backbone.vision.pos_embed.val());
    let want = &io.tensors["pos_adapted"];
    let d = table.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d < 1e-5, "bicubic position table differs by {d}");
    let vision = m.backbone.vision.forward_features(io.tensors["pixels"].to_tensor(&device), &NoHooks);
    assert!(max_diff(vision, &io.tensors["vision_out"]) < 1e-4);
    let roberta = m.backbone.text.encode(text(&io, &device), &NoHooks, EncodeOptions::default()).last;
    assert!(max_diff(roberta, &io.tensors["text_out"]) < 1e-4);
    let cls = m.backbone.class_token_init(0).reshape([1, 1, 32]);
    assert!(max_diff(cls, &io.tensors["token4classifier_init"]) < 1e-5);
}

#[test]
fn one_fusion_layer_with_apt_matches_the_reference() {
    let device = device();
    let io = io();
    let m = model(Variant::Apt, VlHeadKind::Vqa { answers: 10 });
    let padding = |name: &str| AttentionMask::none().with_key_padding(ints(&io.tensors[name], &device).equal_elem(0));
    let at = BlockId { tower: Tower::Fusion, stage: 0, index: 0, sublayer: SubLayer::SelfAttention };
    let out = m.backbone.text_layers[0].forward(
        io.tensors["cross.x"].to_tensor(&device),
        io.tensors["cross.y"].to_tensor(&device),
        &padding("cross.x_mask"),
        &padding("cross.y_mask"),
        &m.tuner,
        at,
    );
    assert!(max_diff(out, &io.tensors["cross.out"]) < 1e-4);
}

#[test]
fn every_method_on_meter_matches_the_reference() {
    let device = device();
    let io = io();
    let pixels = |name: &str| io.tensors[name].to_tensor::<4>(&device);
    for (variant, name) in [
        (Variant::Full, "plain"),
        (Variant::Apt, "apt"),
        (Variant::DeepPrompt, "deep-prompt"),
        (Variant::Lora, "lora"),
        (Variant::Adapter, "adapter"),
        (Variant::ScaledPa, "scaled-pa"),
    ] {
        let m = model(variant, VlHeadKind::Vqa { answers: 10 });
        assert_eq!(m.tuner.num_params(), variants().num_params(variant, &config().layout()), "{name}");
        let input = ViltInput {
            text: text(&io, &device),
            images: pixels("pixels"),
            image_type: 1,
            class_token: m.class_token.as_ref().map(|c| c.val()),
        };
        m.backbone.check_input(&input).unwrap();
        let out = m.backbone.encode(input, &m.tuner, EncodeOptions::default());
        let want = |k: &str| &io.tensors[&format!("{name}.{k}")];
        let d_pooled = max_diff(out.pooled, want("cls_feats"));
        let d_text = max_diff(out.last.clone().narrow(1, 0, 7), want("text_feats"));
        let d_image = max_diff(out.last.narrow(1, 7, 37), want("image_feats"));
        assert!(d_pooled < 1e-4 && d_text < 1e-4 && d_image < 1e-4, "{name}: {d_pooled} {d_text} {d_image}");
        let vqa = m.vl_logits(VlInput { text: text(&io, &device), images: vec![pixels("pixels")] });
        assert!(max_diff(vqa, want("vqa_logits")) < 1e-4, "{name} VQA");
        let pair = model(variant, VlHeadKind::Nlvr2);
        let nlvr2 =
            pair.vl_logits(VlInput { text: text(&io, &device), images: vec![pixels("pixels"), pixels("pixels2")] });
        assert!(max_diff(nlvr2, want("nlvr2_logits")) < 1e-4, "{name} NLVR2");
    }
}

#[test]
fn lora_merges_into_meters_cross_layers() {
    let device = device();
    let io = io();
    let m = model(Variant::Lora, VlHeadKind::Vqa { answers: 10 });
    let input = || VlInput { text: text(&io, &device), images: vec![io.tensors["pixels"].to_tensor(&device)] };
    let before = HostTensor::from_tensor(&m.vl_logits(input()));
    let VlTuner::Lora(lora) = &m.tuner else { panic!("LoRA") };
    assert_eq!(lora.cross_query.len(), 4);
    let mut merged = m.clone();
    lora.merge_into(&mut merged.backbone).unwrap();
    merged.tuner = VlTuner::Plain(NoHooks);
    let after = merged.vl_logits(input());
    assert!(max_diff(after, &before) < 1e-4);
}

#[test]
fn meter_configs_are_checked() {
    let bad = config().with_num_heads(5);
    assert!(bad.validate().unwrap_err().to_string().contains("num_heads 5"));
    assert!(config().with_modality_types(1).validate().is_err());
    let m = config().init(&device());
    let input = ViltInput {
        text: TextInput {
            input_ids: Tensor::zeros([1, 3], &device()),
            attention_mask: Tensor::ones([1, 3], &device()),
            token_type_ids: None,
        },
        images: Tensor::zeros([1, 3, 32, 32], &device()),
        image_type: 1,
        class_token: None,
    };
    assert!(m.check_input(&input).unwrap_err().to_string().contains("48 px"));
}

/// The released METER code's re-initialisation is a switch: with it APT's `A` and `B` start at
/// `N(0, 0.02²)` (B not zero) and the adapters at `N(0, 0.02²)`; without it the paper's values.
#[test]
fn the_released_meter_initialisation_is_a_switch() {
    let device = device();
    let layout = config().layout();
    let std_of = |t: Tensor<2>| {
        let h = HostTensor::from_tensor(&t);
        (h.data.iter().map(|v| v * v).sum::<f32>() / h.data.len() as f32).sqrt()
    };
    let VlTuner::Apt(paper) = VariantConfig::new().init(Variant::Apt, &layout, &device) else { panic!("APT") };
    assert!(HostTensor::from_tensor(&paper.modules[0].b.val()).data.iter().all(|v| *v == 0.0));
    assert!((0.8..1.2).contains(&std_of(paper.cross[0].a.val())));
    let code = VariantConfig::new().with_meter_official_init(true);
    let VlTuner::Apt(apt) = code.init(Variant::Apt, &layout, &device) else { panic!("APT") };
    for t in [apt.modules[0].b.val(), apt.cross[1].a.val()] {
        let s = std_of(t);
        assert!((0.012..0.028).contains(&s), "std {s}");
    }
    let VlTuner::Adapter(adapter) = code.init(Variant::Adapter, &layout, &device) else { panic!("adapter") };
    let s = std_of(adapter.cross[0].down.weight.val());
    assert!((0.012..0.028).contains(&s), "std {s}");
}

/// With `freeze_scale` (the released METER filter) APT's scales stay counted in the tables'
/// "Updated Param" but do not train: one per attention, 2 per fusion layer.
#[test]
fn frozen_scales_are_counted_but_do_not_train() {
    let layout = config().layout();
    let frozen =
        VariantConfig::new().with_apt(AptConfig::new().with_num_prompts(6).with_rank(2).with_freeze_scale(true));
    let n = frozen.num_params(Variant::Apt, &layout);
    assert_eq!(n, variants().num_params(Variant::Apt, &layout));
    assert_eq!(frozen.trainable_params(Variant::Apt, &layout), n - 2 * layout.blocks.len());
    let device = device().autodiff();
    let VlTuner::Apt(apt) = frozen.init(Variant::Apt, &layout, &device) else { panic!("APT") };
    assert!(apt.cross.iter().chain(&apt.modules).all(|m| !m.scale.val().is_require_grad()));
}
