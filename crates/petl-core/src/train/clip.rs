//! Global-norm gradient clipping over the trainable set (torch `clip_grad_norm_`): Burn's
//! own `GradientClipping::Norm` clips each tensor separately, which is not what the papers do.

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Scales all gradients by `min(1, max_norm / (‖g‖₂ + 1e-6))`, `‖g‖₂` over every gradient of
/// a parameter in `trainable`. Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
    trainable: &HashSet<ParamId>,
) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        trainable: &'a HashSet<ParamId>,
        /// Running sum on the device: one read-back for the whole model, not one per tensor.
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !self.trainable.contains(&param.id) {
                return;
            }
            if let Some(g) = self.grads.get::<D>(param.id) {
                let sq = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, trainable, total: None };
    module.visit(&mut sum);
    let norm = sum.total.map_or(0.0, |t| t.into_scalar::<f32>() as f64).sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}
