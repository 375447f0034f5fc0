//! Re-parameterisation for inference (ARC paper, Sec. 3.3): with `M_l = I + U diag(λ_l) Uᵀ`, a linear
//! `y = z W + c` fed by `A_l(z) = z M_l + b_l` equals `y = z (M_l W) + (c + b_l W)`.
//! Applied to q, k, v (attention pair) and fc1 (MLP pair) of every ViT block, the merged model
//! is the plain backbone: zero extra parameters and FLOPs.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use petl_core::hooks::NoHooks;
use petl_core::model::{Backbone, Classifier, PlainClassifier};

use crate::{ArcClassifier, ArcError, LayerAdapter};

/// Folds `A(z) = z M + b` into `linear`: `W' = M W`, `c' = c + b W`.
fn fold(linear: &mut Linear, m: &Tensor<2>, b: &Tensor<1>) {
    let w = linear.weight.val();
    let shift = b.clone().unsqueeze::<2>().matmul(w.clone()).squeeze::<1>();
    linear.weight = Param::from_tensor(m.clone().matmul(w));
    linear.bias = linear.bias.take().map(|c| Param::from_tensor(c.val() + shift.clone()));
}

fn fold_all(linears: &mut [&mut Linear], adapter: &LayerAdapter, u: Tensor<2>) {
    let m = adapter.matrix(u);
    let b = adapter.bias.val();
    for l in linears.iter_mut() {
        fold(l, &m, &b);
    }
}

/// Merges ARC into the backbone, returning a plain classifier (in evaluation mode, on the
/// model's device without autodiff) with the same eval-mode logits.
///
/// # Errors
/// [`ArcError::NotMergeable`] for an MLP adapter on the residual stream (official Swin site:
/// LN2 sits between it and fc1, and it also changes the skip path).
pub fn merge(model: ArcClassifier) -> Result<PlainClassifier, ArcError> {
    // Merging produces inference weights: work on the evaluation snapshot (no autodiff graph).
    let Classifier { backbone, tuner, head } = model.valid();
    if tuner.mlp_on_residual && !tuner.mlp.is_empty() {
        return Err(ArcError::NotMergeable(
            "the MLP adapter sits on the residual stream (official Swin site); use mlp_site = branch-input".into(),
        ));
    }
    let backbone = match backbone {
        Backbone::Vit(mut vit) => {
            for (i, block) in vit.blocks.iter_mut().enumerate() {
                let u_att = tuner.att_down[0].val();
                fold_all(&mut [&mut block.query, &mut block.key, &mut block.value], &tuner.att[i], u_att);
                if let Some(adapter) = tuner.mlp.get(i) {
                    fold_all(&mut [&mut block.fc1], adapter, tuner.mlp_down[0].val());
                }
            }
            Backbone::Vit(vit)
        }
        Backbone::Swin(mut swin) => {
            let mut i = 0;
            for (stage_index, stage) in swin.stages.iter_mut().enumerate() {
                for block in stage.blocks.iter_mut() {
                    fold_all(&mut [&mut block.qkv], &tuner.att[i], tuner.att_down[stage_index].val());
                    if let Some(adapter) = tuner.mlp.get(i) {
                        fold_all(&mut [&mut block.fc1], adapter, tuner.mlp_down[stage_index].val());
                    }
                    i += 1;
                }
            }
            Backbone::Swin(swin)
        }
    };
    Ok(Classifier { backbone, tuner: NoHooks, head })
}
