//! Tensor functions whose Burn versions are slow on the default CPU backend.
//!
//! ## GELU on flex
//! Burn 0.22.1's flex backend computes `gelu` and `gelu_backward` element by element with
//! `libm::erff` (scalar, branchy; `burn-flex/src/ops/activation.rs`). On the ViT-Ti/16 benchmark
//! (`[8, 197, 768]` per block) that is the largest non-matmul cost of a training step. [`gelu`]
//! computes the same exact (erf) GELU from vectorised element-wise ops instead:
//!
//! - `Φ(x)` from Abramowitz & Stegun 7.1.26 (`|erf error| ≤ 1.5e-7`), so `|gelu error| ≤
//!   |x|·7.5e-8` — below f32 rounding for the activations a ViT sees, and far inside the
//!   1e-4 logit tolerance the fixtures check against PyTorch;
//! - the derivative `Φ(x) + x φ(x)` in the same pass (it shares `exp(-x²/2)`), computed without
//!   autodiff, then attached as a constant: `y = (x - x̄)·g + gelu(x̄)` where `x̄` is `x` without
//!   its graph. `x - x̄` is exactly zero, so the value is `gelu(x)` bit for bit, and backward is
//!   one multiplication `∂y/∂x = g` instead of Burn's scalar `gelu_backward`. The graph keeps one
//!   tensor (`g`), as Burn's own GELU node keeps `x`.
//!
//! Other backends (libtorch, CubeCL) have fast native GELU and keep it.

use burn::prelude::*;

/// `erfc` coefficients of Abramowitz & Stegun 7.1.26 (`t = 1 / (1 + p z)`).
const AS_P: f32 = 0.327_591_1;
const AS_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// Exact (erf) GELU, `x Φ(x)`; fast on flex (see the module docs), Burn's own elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x) {
        return burn::tensor::activation::gelu(x);
    }
    let plain = x.clone().without_autodiff();
    if !x.is_autodiff() {
        return gelu_and_grad(plain, false).0;
    }
    if !x.is_tracked() {
        return gelu_and_grad(plain, false).0.autodiff();
    }
    let (y, g) = gelu_and_grad(plain.clone(), true);
    (x - plain) * g.expect("asked for") + y
}

fn is_flex<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    return x.device() == Device::flex();
    #[allow(unreachable_code)]
    {
        let _ = x;
        false
    }
}

/// `gelu(x)` and, when asked, `gelu'(x) = Φ(x) + x φ(x)`, from element-wise ops (no autodiff).
fn gelu_and_grad<const D: usize>(x: Tensor<D>, grad: bool) -> (Tensor<D>, Option<Tensor<D>>) {
    // e = exp(-x²/2) = exp(-z²) with z = x/√2.
    let e = (x.clone() * x.clone()).mul_scalar(-0.5).exp();
    let t = x.clone().abs().mul_scalar(AS_P / core::f32::consts::SQRT_2).add_scalar(1.0).recip();
    let mut poly = t.clone().mul_scalar(AS_A[4]);
    for a in AS_A[..4].iter().rev() {
        poly = poly.add_scalar(*a) * t.clone();
    }
    // q = erfc(|z|)/2 = Φ(-|x|); Φ(x) = 1/2 + sign(x)(1/2 - q).
    let q = (poly * e.clone()).mul_scalar(0.5);
    let cdf = q.neg().add_scalar(0.5) * x.clone().sign() + 0.5;
    let y = x.clone() * cdf.clone();
    let g = grad.then(|| cdf + x * e.mul_scalar(1.0 / (2.0 * core::f32::consts::PI).sqrt()));
    (y, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn matches_burn_gelu_values_and_gradients() {
        let device = crate::device::device_from_name("flex").expect("default build has flex");
        let ad = device.clone().autodiff();
        let x = Tensor::<2>::random([64, 257], Distribution::Normal(0.0, 3.0), &device);
        let edge = Tensor::<2>::from_floats([[0.0, -0.0, 1e-8, -1e-8, 8.0, -8.0, 30.0, -30.0]], &device);
        for x in [x, edge] {
            let reference = burn::tensor::activation::gelu(x.clone());
            assert!(max_diff(gelu(x.clone()), reference.clone()) < 2e-6);

            let leaf = Tensor::<2>::from_data(x.to_data(), &ad).require_grad();
            let y = gelu(leaf.clone());
            assert!(max_diff(y.clone().without_autodiff(), reference) < 2e-6);
            let ours = leaf.grad(&(y * 1.5).sum().backward()).expect("tracked");
            let leaf = Tensor::<2>::from_data(x.to_data(), &ad).require_grad();
            let y = burn::tensor::activation::gelu(leaf.clone());
            let burns = leaf.grad(&(y * 1.5).sum().backward()).expect("tracked");
            assert!(max_diff(ours, burns) < 2e-6);
        }
    }

    #[test]
    fn untracked_autodiff_input_stays_on_autodiff() {
        let ad = crate::device::device_from_name("flex").expect("flex").autodiff();
        let x = Tensor::<1>::from_floats([-1.0, 0.5, 2.0], &ad);
        let y = gelu(x);
        assert!(y.is_autodiff());
        assert!(!y.is_tracked());
    }
}
