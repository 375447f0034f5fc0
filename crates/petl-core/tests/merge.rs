//! Merging written once against linear sites: LoRA folds exactly into ViT, Swin (the q and v
//! thirds of its fused qkv) and BERT, through the same code.

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use petl_core::bert::{BertConfig, TextInput};
use petl_core::encoder::Encoder;
use petl_core::hooks::NoHooks;
use petl_core::method::{LoraMethod, PetlMethod};
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::swin::SwinConfig;
use petl_core::tuners::{Lora, LoraConfig};
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, apply, collect};

/// LoRA with non-zero B (B starts at zero, which would make merging trivially exact).
fn perturbed(lora: Lora) -> Lora {
    let mut tensors = collect(&lora, |_, _| true);
    for (i, t) in tensors.tensors.values_mut().enumerate() {
        for (j, v) in t.data.iter_mut().enumerate() {
            *v = (((i * 31 + j * 17) % 23) as f32 - 11.0) * 0.01;
        }
    }
    apply(lora, tensors).0
}

fn max_diff(a: &Tensor<2>, b: &Tensor<2>) -> f32 {
    let (a, b) = (HostTensor::from_tensor(a), HostTensor::from_tensor(b));
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn lora_merges_exactly_into_vit_and_swin() {
    let device = Device::flex();
    for backbone in
        [BackboneConfig::Vit(VitConfig::new(16, 4, 32, 2, 2, 64)), BackboneConfig::Swin(SwinConfig::tiny_test())]
    {
        device.seed(3);
        let mut model = LoraMethod::build(&LoraConfig::new().with_rank(2), &backbone, 5, &device);
        model.tuner = perturbed(model.tuner);
        let size = backbone.image_size();
        let x = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
        let before = model.forward(x.clone());
        let merged = LoraMethod::merge(model).expect("LoRA merges");
        let diff = max_diff(&before, &merged.forward(x));
        assert!(diff < 1e-4, "{backbone:?}: merged logits differ by {diff}");
    }
}

#[test]
fn lora_merges_exactly_into_a_bert_text_classifier() {
    let device = Device::flex();
    device.seed(5);
    let bert = BertConfig::new(50, 32, 2, 2, 64, 16).init(&device);
    let lora = perturbed(LoraConfig::new().with_rank(2).init(&bert.layout(), &device));
    let ids: Vec<i64> = (0..12).map(|i| 1 + (i * 7) % 49).collect();
    let mask: Vec<i64> = (0..12).map(|i| if i % 6 < 5 { 1 } else { 0 }).collect();
    let input = TextInput {
        input_ids: Tensor::from_data(TensorData::new(ids, [2, 6]), &device),
        attention_mask: Tensor::from_data(TensorData::new(mask, [2, 6]), &device),
        token_type_ids: None,
    };
    // A text classifier is the same Classifier with BERT as its encoder.
    let classifier = Classifier { backbone: bert, tuner: lora, head: init_head(32, 3, HeadInit::TruncNormal, &device) };
    let before = classifier.forward(input.clone());
    assert_eq!(before.dims(), [2, 3]);
    let Classifier { backbone: mut merged, tuner, head } = classifier;
    tuner.merge_into(&mut merged).expect("BERT has q and v sites");
    let merged = Classifier { backbone: merged, tuner: NoHooks, head };
    let diff = max_diff(&before, &merged.forward(input));
    assert!(diff < 1e-4, "merged BERT differs by {diff}");
}
