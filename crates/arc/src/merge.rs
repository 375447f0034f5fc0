//! Re-parameterisation for inference (ARC paper, Sec. 3.3): with `M_l = I + U diag(λ_l) Uᵀ`, a linear
//! `y = z W + c` fed by `A_l(z) = z M_l + b_l` equals `y = z (M_l W) + (c + b_l W)`.
//! Applied to q, k, v (attention pair) and fc1 (MLP pair) of every ViT block, the merged model
//! is the plain backbone: zero extra parameters and FLOPs.

use burn::module::Module;
use petl_core::encoder::Encoder;
use petl_core::hooks::{Layout, LinearSite, NoHooks};
use petl_core::merge::{LinearSites, fold_input_affine};
use petl_core::model::{Classifier, PlainClassifier};

use crate::{ArcClassifier, ArcError, ArcTuner};

/// Merges ARC into the backbone, returning a plain classifier (in evaluation mode, on the
/// model's device without autodiff) with the same eval-mode logits.
///
/// # Errors
/// [`ArcError::NotMergeable`] for an MLP adapter on the residual stream (official Swin site:
/// LN2 sits between it and fc1, and it also changes the skip path).
pub fn merge(model: ArcClassifier) -> Result<PlainClassifier, ArcError> {
    // Merging produces inference weights: work on the evaluation snapshot (no autodiff graph).
    let Classifier { mut backbone, tuner, head } = model.valid();
    let layout = backbone.layout();
    merge_into(&tuner, &mut backbone, &layout)?;
    Ok(Classifier { backbone, tuner: NoHooks, head })
}

/// Folds `tuner` into the q, k, v (and fc1) weights of any backbone with linear sites and
/// `layout` (ViT, Swin's fused qkv, BERT): written once against [`petl_core::merge`].
///
/// # Errors
/// As [`merge`]; also a backbone without the sites.
pub fn merge_into<B: LinearSites + ?Sized>(
    tuner: &ArcTuner,
    backbone: &mut B,
    layout: &Layout,
) -> Result<(), ArcError> {
    if tuner.mlp_on_residual && !tuner.mlp.is_empty() {
        return Err(ArcError::NotMergeable(
            "the MLP adapter sits on the residual stream (official Swin site); use mlp_site = branch-input".into(),
        ));
    }
    let not_mergeable = |e: petl_core::method::NotMergeable| ArcError::NotMergeable(e.0);
    for (i, block) in layout.blocks.iter().enumerate() {
        let stage = block.id.stage;
        let att = &tuner.att[i];
        let m = att.matrix(tuner.att_down[stage].val());
        let sites = [LinearSite::Query, LinearSite::Key, LinearSite::Value];
        fold_input_affine(backbone, i, &sites, &m, Some(&att.bias.val())).map_err(not_mergeable)?;
        if let Some(adapter) = tuner.mlp.get(i) {
            let m = adapter.matrix(tuner.mlp_down[stage].val());
            fold_input_affine(backbone, i, &[LinearSite::Fc1], &m, Some(&adapter.bias.val())).map_err(not_mergeable)?;
        }
    }
    Ok(())
}
