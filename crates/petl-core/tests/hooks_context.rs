//! Hooks learn where they are called from (tower, block, sub-layer), and per-forward context
//! such as a task id reaches a method through a borrowed view of its tuner.

use std::cell::RefCell;

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use petl_core::bert::{BertConfig, TextInput};
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::{BlockHooks, BlockId, LinearSite, NoHooks, SubLayer, Tower};
use petl_core::vit::VitConfig;

#[derive(Default)]
struct Recorder(RefCell<Vec<(BlockId, String)>>);

impl BlockHooks for Recorder {
    fn attn_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.0.borrow_mut().push((at, "attn_input".into()));
        x
    }
    fn mlp_input(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        self.0.borrow_mut().push((at, "mlp_input".into()));
        x
    }
    fn linear(&self, at: BlockId, site: LinearSite, _x: &Tensor<3>, y: Tensor<3>) -> Tensor<3> {
        self.0.borrow_mut().push((at, format!("{site:?}")));
        y
    }
}

fn sublayer_of(calls: &[(BlockId, String)], what: &str) -> Vec<(Tower, SubLayer)> {
    calls.iter().filter(|(_, w)| w == what).map(|(at, _)| (at.tower, at.sublayer)).collect()
}

#[test]
fn hooks_are_told_tower_block_and_sub_layer() {
    let device = Device::flex();
    let vit = VitConfig::new(16, 4, 32, 2, 2, 64).init(&device);
    let rec = Recorder::default();
    vit.encode(Tensor::random([1, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device), &rec, EncodeOptions::default());
    let calls = rec.0.take();
    let vision = |s| vec![(Tower::Vision, s); 2];
    assert_eq!(sublayer_of(&calls, "attn_input"), vision(SubLayer::SelfAttention));
    assert_eq!(sublayer_of(&calls, "Query"), vision(SubLayer::SelfAttention));
    assert_eq!(sublayer_of(&calls, "mlp_input"), vision(SubLayer::Ffn));
    assert_eq!(sublayer_of(&calls, "Fc1"), vision(SubLayer::Ffn));
    assert_eq!(calls.iter().filter(|(_, w)| w == "Fc2").map(|(at, _)| at.index).collect::<Vec<_>>(), [0, 1]);

    let bert = BertConfig::new(20, 32, 2, 2, 64, 8).init(&device);
    let text = TextInput {
        input_ids: Tensor::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device),
        attention_mask: Tensor::from_data(TensorData::new(vec![1i64; 3], [1, 3]), &device),
        token_type_ids: None,
    };
    bert.encode(text, &rec, EncodeOptions::default());
    let calls = rec.0.take();
    assert_eq!(sublayer_of(&calls, "Value"), vec![(Tower::Text, SubLayer::SelfAttention); 2]);
    assert_eq!(sublayer_of(&calls, "Fc2"), vec![(Tower::Text, SubLayer::Ffn); 2]);
}

/// A multi-task method: one FFN-output bias per task, applied through a view of one task.
struct TaskBias {
    bias: Vec<Tensor<1>>,
}

struct ForTask<'a> {
    tuner: &'a TaskBias,
    task: usize,
}

impl TaskBias {
    fn for_task(&self, task: usize) -> ForTask<'_> {
        ForTask { tuner: self, task }
    }
}

impl BlockHooks for ForTask<'_> {
    fn mlp_output(&self, at: BlockId, x: Tensor<3>) -> Tensor<3> {
        assert_eq!(at.sublayer, SubLayer::Ffn);
        x + self.tuner.bias[self.task].clone().reshape([1, 1, 32])
    }
}

#[test]
fn a_task_id_reaches_the_hooks_through_a_view_of_the_tuner() {
    let device = Device::flex();
    let vit = VitConfig::new(16, 4, 32, 2, 2, 64).init(&device);
    // Not a constant vector: LayerNorm would remove a uniform shift.
    let ramp = Tensor::from_data(TensorData::new((0..32).map(|i| i as f32 / 8.0).collect::<Vec<_>>(), [32]), &device);
    let tuner = TaskBias { bias: vec![Tensor::zeros([32], &device), ramp] };
    let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let pooled = |hooks: &dyn BlockHooks| vit.encode(x.clone(), hooks, EncodeOptions::default()).pooled;
    let (plain, task0, task1) = (pooled(&NoHooks), pooled(&tuner.for_task(0)), pooled(&tuner.for_task(1)));
    assert_eq!((plain.clone() - task0).abs().max().into_scalar::<f32>(), 0.0, "task 0's bias is zero");
    assert!((plain - task1).abs().max().into_scalar::<f32>() > 1e-3, "task 1 changes the forward");
}
