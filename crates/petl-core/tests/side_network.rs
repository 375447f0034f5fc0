//! UniPT's pattern on the shared pieces: a frozen encoder that runs on a device *without*
//! autodiff hands every layer's hidden states, as constants, to a small side network on the
//! autodiff device; the one training loop trains the side network only.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use petl_core::accounting::measure_gradients;
use petl_core::data::shapes::{ShapesDataset, ShapesTask};
use petl_core::encoder::{EncodeOptions, Encoder};
use petl_core::hooks::NoHooks;
use petl_core::train::{Classification, Classify, Task, TrainConfig, Trainer, backward};
use petl_core::vit::{Vit, VitConfig};

/// Side network: one linear per layer over the mean-pooled hidden state, summed, then a head.
#[derive(Module, Debug)]
struct Side {
    layers: Vec<Linear>,
    head: Linear,
    backbone: Vit,
}

impl Classify for Side {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let side_device = self.head.weight.val().device();
        let frozen_device = self.backbone.pos_embed.val().device();
        let out = self.backbone.encode(images.to_device(&frozen_device), &NoHooks, EncodeOptions::with_hidden_states());
        let mut acc: Option<Tensor<2>> = None;
        for (state, layer) in out.hidden_states.into_iter().zip(&self.layers) {
            let [b, _, d] = state.dims();
            let pooled = state.to_device(&side_device).mean_dim(1).reshape([b, d]);
            let y = layer.forward(pooled);
            acc = Some(match acc {
                Some(a) => a + y,
                None => y,
            });
        }
        self.head.forward(acc.expect("at least the embeddings").tanh())
    }
}

#[test]
fn a_side_network_trains_on_the_hidden_states_of_an_encoder_without_autodiff() {
    let side = Device::flex().autodiff();
    let frozen = Device::flex();
    let cfg = VitConfig::new(16, 4, 32, 2, 2, 64);
    let model = Side {
        layers: (0..=cfg.num_layers).map(|_| LinearConfig::new(32, 16).init(&side)).collect(),
        head: LinearConfig::new(16, 5).init(&side),
        backbone: cfg.init(&frozen),
    };
    let data = ShapesDataset::new(ShapesTask::Tint, 32, 16, 1);

    // One step by hand: gradients exist for the side network only.
    let task = Classification::default();
    let items = petl_core::train::task::load(&data, &(0..8).collect::<Vec<_>>(), None).unwrap();
    let batch = <Classification as Task<Side>>::batch(&task, items, &side).unwrap();
    let (grads, _, _) = backward(&task, &model, batch, None);
    let counts = measure_gradients(&model, &grads);
    assert_eq!(counts.tensors, 2 * (cfg.num_layers + 1) + 2, "weight and bias of every side linear and the head");
    assert_eq!(counts.frozen_with_gradient, 0);
    let (trainable, frozen_params) = petl_core::accounting::measure_trainable(&model);
    assert_eq!(frozen_params, cfg.num_params(), "the encoder on the plain device is frozen by construction");
    assert_eq!(trainable, (cfg.num_layers + 1) * (32 * 16 + 16) + 16 * 5 + 5);

    // And the loop trains it, leaving the encoder as it was.
    let before = petl_core::weights::collect(&model.backbone, |_, _| true);
    let mut trainer =
        Trainer::new(TrainConfig::new().with_epochs(2).with_warmup_epochs(0).with_batch_size(8).with_lr(1e-2));
    trainer.progress = false;
    let (model, report) = trainer.fit(model, &data, &data).unwrap();
    assert_eq!(report.trainable_params, trainable);
    assert_eq!(report.optimizer_state_tensors, 2 * (2 * (cfg.num_layers + 1) + 2));
    assert_eq!(petl_core::weights::collect(&model.backbone, |_, _| true).tensors, before.tensors);
    assert!(report.epochs[1].train_loss.is_finite());
}
