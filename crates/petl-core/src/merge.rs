//! Merging written once, against linear sites: a method that folds into the frozen weights
//! says *what* to fold at which [`LinearSite`] of which block, and every backbone says *where*
//! that site's weights are ([`LinearSites`]), including a fused projection (Swin's `qkv`, whose
//! query site is the first third of its output columns). So ARC and LoRA merge on ViT, Swin
//! and BERT with no per-backbone code.
//!
//! Burn's `Linear` computes `y = x W + c` with `W: [in, out]`.

use std::ops::Range;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use crate::hooks::LinearSite;
use crate::method::NotMergeable;

/// Mutable access to a backbone's frozen linears by block and site.
pub trait LinearSites {
    /// The linear computing `site` of block `index` (forward order, as in the backbone's
    /// `Layout::blocks`) and the columns of its output that belong to the site (all of them
    /// unless the projection is fused); `None` when the block has no such site.
    fn linear_mut(&mut self, index: usize, site: LinearSite) -> Option<(&mut Linear, Range<usize>)>;
}

fn site<'a, B: LinearSites + ?Sized>(
    backbone: &'a mut B,
    index: usize,
    site: LinearSite,
) -> Result<(&'a mut Linear, Range<usize>), NotMergeable> {
    backbone.linear_mut(index, site).ok_or_else(|| NotMergeable(format!("block {index} has no {site:?} projection")))
}

/// Folds an affine map `z ↦ z M + b` that feeds `sites` of block `index` into them (the ARC
/// paper's re-parameterisation): `W' = M W`, `c' = c + b W`, on the site's columns.
///
/// # Errors
/// [`NotMergeable`] when the block has no such site.
pub fn fold_input_affine<B: LinearSites + ?Sized>(
    backbone: &mut B,
    index: usize,
    sites: &[LinearSite],
    m: &Tensor<2>,
    b: Option<&Tensor<1>>,
) -> Result<(), NotMergeable> {
    for &s in sites {
        let (linear, cols) = site(backbone, index, s)?;
        let w = linear.weight.val();
        let [rows, _] = w.dims();
        let part = w.clone().slice([0..rows, cols.clone()]);
        let folded = m.clone().matmul(part.clone());
        linear.weight = Param::from_tensor(w.slice_assign([0..rows, cols.clone()], folded));
        if let Some(b) = b {
            let shift = b.clone().unsqueeze::<2>().matmul(part).squeeze::<1>();
            linear.bias = match linear.bias.take() {
                Some(c) => {
                    let c = c.val();
                    let new = c.clone().slice([cols.clone()]) + shift;
                    Some(Param::from_tensor(c.slice_assign([cols], new)))
                }
                None => return Err(NotMergeable(format!("block {index} {s:?} has no bias to absorb the shift"))),
            };
        }
    }
    Ok(())
}

/// Adds `delta` (`[in, out_site]`) to the weight of `site` in block `index` (a LoRA update
/// `scale · A B`).
///
/// # Errors
/// [`NotMergeable`] when the block has no such site or the shapes differ.
pub fn add_to_weight<B: LinearSites + ?Sized>(
    backbone: &mut B,
    index: usize,
    s: LinearSite,
    delta: Tensor<2>,
) -> Result<(), NotMergeable> {
    let (linear, cols) = site(backbone, index, s)?;
    let w = linear.weight.val();
    let [rows, _] = w.dims();
    if delta.dims() != [rows, cols.len()] {
        return Err(NotMergeable(format!(
            "block {index} {s:?}: update of shape {:?} for a [{rows}, {}] weight",
            delta.dims(),
            cols.len()
        )));
    }
    let new = w.clone().slice([0..rows, cols.clone()]) + delta;
    linear.weight = Param::from_tensor(w.slice_assign([0..rows, cols], new));
    Ok(())
}
