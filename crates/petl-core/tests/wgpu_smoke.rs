//! wgpu smoke test (only with `--features wgpu`): one tiny forward and backward on the GPU
//! backend (or Mesa's software Vulkan, lavapipe, in CI) agrees with flex.
#![cfg(feature = "wgpu")]

use burn::optim::GradientsParams;
use burn::prelude::*;
use petl_core::model::{BackboneConfig, Classifier, HeadInit, init_head};
use petl_core::train::Classify;
use petl_core::tuners::LoraConfig;
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, apply, collect};

fn model(device: &Device) -> Classifier<petl_core::tuners::Lora> {
    let backbone = BackboneConfig::Vit(VitConfig::tiny_test());
    let layout = backbone.layout();
    Classifier {
        backbone: backbone.init(device).no_grad(),
        tuner: LoraConfig::new().with_rank(2).init(&layout, device),
        head: init_head(64, 5, HeadInit::TruncNormal, device),
    }
}

#[test]
fn forward_and_backward_match_flex() {
    let flex = Device::flex().autodiff();
    let gpu = petl_core::device::device_from_name("wgpu").unwrap().autodiff();
    let reference = model(&flex);
    let (on_gpu, report) = apply(model(&gpu), collect(&reference, |_, _| true));
    report.check("flex model", |_| false).unwrap();

    let data: Vec<f32> = (0..2 * 3 * 16 * 16).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let x = |d: &Device| Tensor::<4>::from_data(burn::tensor::TensorData::new(data.clone(), [2, 3, 16, 16]), d);
    let (a, b) = (reference.logits(x(&flex)), on_gpu.logits(x(&gpu)));
    let (ha, hb) = (HostTensor::from_tensor(&a), HostTensor::from_tensor(&b));
    let d = ha.data.iter().zip(&hb.data).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-4, "wgpu logits differ from flex by {d}");

    let grads = GradientsParams::from_grads(b.sum().backward(), &on_gpu);
    assert_eq!(grads.len(), 2 * 2 * 2 + 2, "LoRA A/B on q and v of 2 blocks, head weight and bias");
}
