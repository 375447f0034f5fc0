//! Parity with a PyTorch ViLT + APT and every baseline written from the paper and the official
//! code (fixtures made by `tools/fixtures/apt_vilt.py`, official key names, f64 reference):
//! the APT module and its gradients, ViLT's text and image embeddings (padding, interpolated
//! positions), and the pooled features, last hidden states and head logits of every method.

mod common;

use common::{device, fixture_path, ints, max_diff};

use apt::{AptConfig, AptModule, Variant, VariantConfig, VlTuner, official};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use petl_core::bert::TextInput;
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::train::vl::{VlClassify, VlInput};
use petl_core::vilt::{ViltConfig, ViltInput};
use petl_core::vl_model::{ViltModel, VlHeadKind};
use petl_core::weights::{HostTensor, TensorMap, read_safetensors};

fn fixture(name: &str) -> TensorMap {
    read_safetensors(&fixture_path(name)).unwrap()
}

/// The fixture's tensors, int64 ones converted to f32 (ids and masks are small integers).
fn io_fixture() -> TensorMap {
    common::read_mixed(&fixture_path("vilt_tiny_io.safetensors"))
}

fn config() -> ViltConfig {
    ViltConfig::new(100, 64, 2, 4, 128, 12, 8, 32).with_modality_types(3)
}

fn variants() -> VariantConfig {
    VariantConfig::new()
        .with_apt(AptConfig::new().with_num_prompts(10).with_rank(4))
        .with_deep_prompts(10)
        .with_lora_rank(4)
        .with_adapter_bottleneck(8)
        .with_pa_bottleneck(8)
}

/// The model of `variant` with `head`, loaded from the fixture's official state dict.
fn model(variant: Variant, head: VlHeadKind) -> ViltModel<VlTuner> {
    let device = device();
    let cfg = config();
    let mut src = fixture("vilt_tiny.safetensors");
    if variant != Variant::Classifier {
        for (k, v) in fixture(&format!("vilt_tiny_{}.safetensors", variant.name())).tensors {
            src.insert(k, v);
        }
    }
    let m = ViltModel::new(
        cfg.init(&device),
        variants().init(variant, &cfg.layout(), &device),
        head,
        Some(1),
        None,
        &device,
    );
    let (m, report) = official::load(m, src).unwrap();
    assert!(report.missing.is_empty() && report.mismatched.is_empty(), "{variant:?}: {report}");
    let foreign_heads =
        |k: &String| k.starts_with("token_type") || k.contains("classifier") || k.starts_with("rank_output");
    assert!(report.unexpected.iter().all(foreign_heads), "{variant:?}: {report}");
    m
}

fn text(io: &TensorMap, device: &Device) -> TextInput {
    TextInput {
        input_ids: ints(&io.tensors["input_ids"], device),
        attention_mask: ints(&io.tensors["text_mask"], device),
        token_type_ids: None,
    }
}

fn pixels(io: &TensorMap, name: &str, device: &Device) -> Tensor<4> {
    io.tensors[name].to_tensor(device)
}

#[test]
fn apt_module_and_gradients_match_the_reference() {
    let device = Device::flex().autodiff();
    let fx = fixture("apt_unit.safetensors");
    let t = |k: &str| fx.tensors[k].clone();
    let module = AptModule {
        prompts: burn::module::Param::from_tensor(t("mm_tokens").to_tensor::<2>(&device).require_grad()),
        a: burn::module::Param::from_tensor(t("mm.0.weight").t().to_tensor::<2>(&device).require_grad()),
        b: burn::module::Param::from_tensor(t("mm.1.weight").t().to_tensor::<2>(&device).require_grad()),
        scale: burn::module::Param::from_tensor(t("scale").to_tensor::<1>(&device).require_grad()),
    };
    let out = module.forward(t("O").to_tensor(&device), t("H").to_tensor(&device));
    assert!(max_diff(out.clone(), &t("out")) < 1e-4);
    let loss = (out * t("G").to_tensor::<3>(&device)).sum();
    let grads = loss.backward();
    let grad = |p: &burn::module::Param<Tensor<2>>| p.val().grad(&grads).expect("a gradient");
    let rel = |ours: HostTensor, want: HostTensor| {
        let scale = want.data.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        ours.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
    };
    assert!(rel(HostTensor::from_tensor(&grad(&module.prompts)), t("grad.mm_tokens")) < 1e-4);
    assert!(rel(HostTensor::from_tensor(&grad(&module.a)), t("grad.mm.0.weight").t()) < 1e-4);
    assert!(rel(HostTensor::from_tensor(&grad(&module.b)), t("grad.mm.1.weight").t()) < 1e-4);
    let gs = module.scale.val().grad(&grads).expect("a gradient");
    assert!(rel(HostTensor::from_tensor(&gs), t("grad.scale")) < 1e-4);
}

/// With `B = 0` and `s = 0`, APT is the formula written out by hand: `O + max(S)·S·P` with
/// `S = ReLU(H·Pᵀ)`.
#[test]
fn apt_at_init_is_the_formula() {
    let device = device();
    let module = AptModule::init(8, 3, 2, false, &device);
    let o = Tensor::<3>::random([2, 4, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let h = Tensor::<3>::random([2, 4, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let ours = HostTensor::from_tensor(&module.forward(o.clone(), h.clone()));
    let (o, h) = (HostTensor::from_tensor(&o), HostTensor::from_tensor(&h));
    let p = HostTensor::from_tensor(&module.prompts.val());
    for bn in 0..8 {
        let hrow = &h.data[bn * 8..bn * 8 + 8];
        let s: Vec<f32> = (0..3).map(|m| (0..8).map(|k| hrow[k] * p.data[m * 8 + k]).sum::<f32>().max(0.0)).collect();
        let w = s.iter().cloned().fold(0.0f32, f32::max);
        for k in 0..8 {
            let e: f32 = (0..3).map(|m| s[m] * p.data[m * 8 + k]).sum();
            let want = o.data[bn * 8 + k] + w * e;
            assert!((ours.data[bn * 8 + k] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn vilt_embeddings_match_the_reference() {
    let device = device();
    let io = io_fixture();
    let m = model(Variant::Classifier, VlHeadKind::Vqa { answers: 7 });
    assert!(max_diff(m.backbone.embed_text(&text(&io, &device)), &io.tensors["text_embeds"]) < 1e-4);
    let (tokens, padding) = m.backbone.embed_images(pixels(&io, "pixels", &device));
    assert!(max_diff(tokens, &io.tensors["image_embeds"]) < 1e-4);
    let valid: Vec<f32> =
        padding.into_data().try_to_vec::<bool>().unwrap().iter().map(|p| if *p { 0.0 } else { 1.0 }).collect();
    assert_eq!(valid, io.tensors["image_mask"].data);
}

#[test]
fn every_method_matches_the_reference() {
    let device = device();
    let io = io_fixture();
    for (variant, name) in [
        (Variant::Classifier, "plain"),
        (Variant::Apt, "apt"),
        (Variant::DeepPrompt, "deep-prompt"),
        (Variant::Lora, "lora"),
        (Variant::Adapter, "adapter"),
        (Variant::ScaledPa, "scaled-pa"),
    ] {
        let m = model(variant, VlHeadKind::Vqa { answers: 7 });
        // The reference's plain model keeps the [CLS] embedding (no token4classifier).
        let class_token = if name == "plain" { None } else { m.class_token.as_ref().map(|c| c.val()) };
        let input =
            ViltInput { text: text(&io, &device), images: pixels(&io, "pixels", &device), image_type: 1, class_token };
        m.backbone.check_input(&input).unwrap();
        let out = m.backbone.encode(input, &m.tuner, EncodeOptions::default());
        let d_pooled = max_diff(out.pooled, &io.tensors[&format!("pooled.{name}")]);
        let d_last = max_diff(out.last, &io.tensors[&format!("last.{name}")]);
        assert!(d_pooled < 1e-4 && d_last < 1e-4, "{name}: pooled {d_pooled}, last {d_last}");
    }
}

#[test]
fn heads_match_the_reference() {
    let device = device();
    let io = io_fixture();
    let input = |pair: bool| VlInput {
        text: text(&io, &device),
        images: if pair {
            vec![pixels(&io, "pixels", &device), pixels(&io, "pixels_pair", &device)]
        } else {
            vec![pixels(&io, "pixels", &device)]
        },
    };
    let vqa = model(Variant::Apt, VlHeadKind::Vqa { answers: 7 }).vl_logits(input(false));
    assert!(max_diff(vqa, &io.tensors["vqa_logits.apt"]) < 1e-4);
    let nlvr2 = model(Variant::Apt, VlHeadKind::Nlvr2).vl_logits(input(true));
    assert!(max_diff(nlvr2, &io.tensors["nlvr2_logits.apt"]) < 1e-4);
    let rank = model(Variant::Apt, VlHeadKind::Rank).vl_logits(input(false));
    assert!(max_diff(rank, &io.tensors["rank.apt"]) < 1e-4);
    // The pretrained ITM head on the plain model.
    let src = fixture("vilt_tiny.safetensors");
    let itm = official::itm_head(&src, &device).unwrap();
    let plain = model(Variant::Classifier, VlHeadKind::Rank);
    let input = ViltInput {
        text: text(&io, &device),
        images: pixels(&io, "pixels", &device),
        image_type: 1,
        class_token: None,
    };
    let pooled = plain.backbone.encode(input, &plain.tuner, EncodeOptions::default()).pooled;
    assert!(max_diff(itm.forward(pooled), &io.tensors["itm_logits.plain"]) < 1e-4);
    // The retrieval head starts from the ITM head's "match" row.
    let fresh = ViltModel::new(
        config().init(&device),
        VlTuner::Plain(Default::default()),
        VlHeadKind::Rank,
        None,
        Some(&itm),
        &device,
    );
    let petl_core::vl_model::VlHead::Rank(r) = &fresh.head else { panic!("rank head") };
    let w = HostTensor::from_tensor(&r.weight.val());
    let want = src.tensors["itm_score.fc.weight"].rows(1, 2);
    assert_eq!(w.data, want.data);
    let _ = fresh.num_params();
}

/// The losses and metrics of the tables against the reference's scalars (`losses.json`):
/// VQA soft BCE × answers and VQA score, NLVR2 cross-entropy and accuracy, IR/TR recall.
#[test]
fn losses_and_metrics_match_the_reference() {
    use petl_core::train::objectives::{retrieval_recall, vqa_score, vqa_soft_bce};
    let device = device();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture_path("losses.json")).unwrap()).unwrap();
    let matrix = |x: &serde_json::Value| -> (Vec<f32>, usize) {
        let rows = x.as_array().unwrap();
        let cols = rows[0].as_array().unwrap().len();
        (rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|e| e.as_f64().unwrap() as f32)).collect(), cols)
    };
    let (logits, k) = matrix(&v["vqa"]["logits"]);
    let (targets, _) = matrix(&v["vqa"]["targets"]);
    let b = logits.len() / k;
    let loss = vqa_soft_bce(
        Tensor::from_data(TensorData::new(logits.clone(), [b, k]), &device),
        Tensor::from_data(TensorData::new(targets.clone(), [b, k]), &device),
    )
    .into_scalar::<f32>();
    assert!((f64::from(loss) - v["vqa"]["loss"].as_f64().unwrap()).abs() < 1e-5, "{loss}");
    let score = vqa_score(&logits, &targets, k);
    assert!((score - 100.0 * v["vqa"]["score"].as_f64().unwrap()).abs() < 1e-4, "{score}");

    let (logits, k) = matrix(&v["nlvr2"]["logits"]);
    let labels: Vec<i64> = v["nlvr2"]["labels"].as_array().unwrap().iter().map(|l| l.as_i64().unwrap()).collect();
    let out = petl_core::train::task::cross_entropy_top1(
        Tensor::from_data(TensorData::new(logits, [labels.len(), k]), &device),
        Tensor::from_data(TensorData::new(labels.clone(), [labels.len()]), &device),
        0.0,
    );
    assert!((f64::from(out.loss.into_scalar::<f32>()) - v["nlvr2"]["loss"].as_f64().unwrap()).abs() < 1e-5);
    let correct = f64::from(out.score_sum.unwrap().into_scalar::<f32>());
    assert!((correct / labels.len() as f64 - v["nlvr2"]["accuracy"].as_f64().unwrap()).abs() < 1e-9);

    let (scores, texts) = matrix(&v["irtr"]["scores"]);
    let images = scores.len() / texts;
    let text_image: Vec<usize> =
        v["irtr"]["caption_image_ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
    // K clamped to the candidates, as the reference does (IR R@5 over 3 images is R@3).
    let r = retrieval_recall(&scores, images, &text_image, &[1, 2, 3, 5]);
    let want = |key: &str| 100.0 * v["irtr"][key].as_f64().unwrap();
    assert!((r.image_to_text[0] - want("tr_r1")).abs() < 1e-9 && (r.text_to_image[0] - want("ir_r1")).abs() < 1e-9);
    assert!((r.image_to_text[1] - want("tr_r2")).abs() < 1e-9 && (r.text_to_image[1] - want("ir_r2")).abs() < 1e-9);
    assert!((r.text_to_image[2] - want("ir_r5")).abs() < 1e-9, "IR R@3 over 3 images");
    assert!((r.image_to_text[3] - want("tr_r5")).abs() < 1e-9);
}

/// An official-format PyTorch Lightning checkpoint (`state_dict` beside optimizer states, epoch
/// counters and hyper-parameters, as the released `.ckpt` files are) loads through
/// `read_checkpoint` and the official key names, and reproduces the reference.
#[test]
fn a_lightning_checkpoint_with_official_keys_loads_and_matches() {
    let device = device();
    let map = petl_core::weights::read_checkpoint(&fixture_path("vilt_tiny_apt_lightning.ckpt")).unwrap();
    assert!(map.tensors.keys().all(|k| !k.starts_with("optimizer_states") && !k.starts_with("state_dict")));
    let cfg = config();
    let m = ViltModel::new(
        cfg.init(&device),
        variants().init(Variant::Apt, &cfg.layout(), &device),
        VlHeadKind::Vqa { answers: 7 },
        Some(1),
        None,
        &device,
    );
    let (m, report) = official::load(m, map).unwrap();
    assert!(report.missing.is_empty() && report.mismatched.is_empty(), "{report}");
    let io = io_fixture();
    let logits = m.vl_logits(VlInput { text: text(&io, &device), images: vec![pixels(&io, "pixels", &device)] });
    assert!(max_diff(logits, &io.tensors["vqa_logits.apt"]) < 1e-4);
}
