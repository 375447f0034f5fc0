//! Tensor functions whose Burn versions are slow on the default CPU backend.
//!
//! ## GELU on flex
//! Burn 0.22.1's flex backend computes `gelu` and `gelu_backward` element by element with
//! `libm::erff` (scalar, branchy, single-threaded; `burn-flex/src/ops/activation.rs`), and its
//! `exp` and `sign` are scalar single-threaded loops too. On the ViT-Ti/16 benchmark
//! (`[8, 197, 768]` per block) that made GELU the largest non-matmul cost of a training step.
//! [`gelu`] computes the same exact (erf) GELU in one fused pass over the data (rayon chunks,
//! AVX2/FMA or AVX-512 chosen at run time, plain code elsewhere):
//!
//! - `Φ(x)` from Abramowitz & Stegun 7.1.26 (`|erf error| ≤ 1.5e-7`) with a Cody–Waite `exp`
//!   (≤ 3 ulp), so `|gelu error| ≲ |x|·1e-7` — at f32 rounding for the activations a ViT sees,
//!   far inside the 1e-4 logit tolerance the fixtures check against PyTorch (tested against
//!   Burn's own GELU below);
//! - for a tracked input, the derivative `g = Φ(x) + x φ(x)` in the same pass, attached as a
//!   constant: `y = x·g + c` with `c = gelu(x) - x·g`, so backward is one multiplication
//!   (`∂y/∂x = g`) instead of Burn's scalar `gelu_backward`, and the graph keeps one tensor
//!   (`g`), as Burn's own GELU node keeps `x`. The forward value differs from `gelu(x)` by f32
//!   rounding of that sum (≤ 1 ulp of `|x|`).
//!
//! Other backends (libtorch, CubeCL) have fast native GELU and keep it; so does any dtype but
//! f32.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// `erfc` coefficients of Abramowitz & Stegun 7.1.26 (`t = 1 / (1 + p z)`).
const AS_P: f32 = 0.327_591_1;
const AS_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// Exact (erf) GELU, `x Φ(x)`; fused on flex (see the module docs), Burn's own elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x) || x.dtype() != DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    let device = x.device();
    let shape = x.shape();
    if !x.is_tracked() {
        let data = x.without_autodiff().into_data();
        let input = data.as_slice::<f32>().expect("f32 checked above");
        let y = Tensor::from_data(TensorData::new(gelu_values(input), shape), &device);
        return y;
    }
    let data = x.clone().without_autodiff().into_data();
    let input = data.as_slice::<f32>().expect("f32 checked above");
    let (g, c) = gelu_linearised(input);
    let plain = device.clone().inner();
    let g = Tensor::<D>::from_data(TensorData::new(g, shape.clone()), &plain);
    let c = Tensor::<D>::from_data(TensorData::new(c, shape), &plain);
    x * g + c
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

/// `gelu(x)` element-wise.
fn gelu_values(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| dispatch(x, y, None));
    y
}

/// `(g, c)` with `g = gelu'(x)` and `c = gelu(x) - x g`, element-wise.
fn gelu_linearised(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut g = vec![0.0f32; x.len()];
    let mut c = vec![0.0f32; x.len()];
    g.par_chunks_mut(CHUNK)
        .zip(c.par_chunks_mut(CHUNK))
        .zip(x.par_chunks(CHUNK))
        .for_each(|((g, c), x)| dispatch(x, c, Some(g)));
    (g, c)
}

/// Runs [`kernel`] compiled for the best instruction set this CPU has.
fn dispatch(x: &[f32], y: &mut [f32], g: Option<&mut [f32]>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { kernel_avx512(x, y, g) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { kernel_avx2(x, y, g) };
        }
    }
    kernel(x, y, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel_avx512(x: &[f32], y: &mut [f32], g: Option<&mut [f32]>) {
    kernel(x, y, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(x: &[f32], y: &mut [f32], g: Option<&mut [f32]>) {
    kernel(x, y, g)
}

/// Without `g`: `y = gelu(x)`. With `g`: `g = gelu'(x)` and `y = gelu(x) - x g`.
/// Branch-free, index loops over equal-length slices, so that it vectorises.
#[inline(always)]
fn kernel(x: &[f32], y: &mut [f32], g: Option<&mut [f32]>) {
    let n = x.len();
    let y = &mut y[..n];
    match g {
        None => {
            for i in 0..n {
                let (cdf, _) = cdf_and_density(x[i]);
                y[i] = x[i] * cdf;
            }
        }
        Some(g) => {
            let g = &mut g[..n];
            for i in 0..n {
                let x = x[i];
                let (cdf, e) = cdf_and_density(x);
                let d = cdf + x * e * 0.398_942_3; // 1/√(2π)
                g[i] = d;
                y[i] = x * cdf - x * d;
            }
        }
    }
}

/// `(Φ(x), exp(-x²/2))`.
#[inline(always)]
fn cdf_and_density(x: f32) -> (f32, f32) {
    let e = exp_neg(0.5 * x * x);
    let t = 1.0 / (1.0 + (AS_P * core::f32::consts::FRAC_1_SQRT_2) * x.abs());
    let poly = t * (AS_A[0] + t * (AS_A[1] + t * (AS_A[2] + t * (AS_A[3] + t * AS_A[4]))));
    // q = erfc(|x|/√2)/2 = Φ(-|x|).
    let q = 0.5 * poly * e;
    (if x >= 0.0 { 1.0 - q } else { q }, e)
}

/// `exp(-a)` for `a ≥ 0` (Cody–Waite reduction, degree-6 polynomial, ≤ 3 ulp); 0 below f32's
/// normal range (`a > 87`).
#[inline(always)]
fn exp_neg(a: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let w = if a > 87.0 { -87.0 } else { -a };
    let shifted = w * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (w - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.666_666_7e-1 + r * (4.166_664_6e-2 + r * (8.333_932e-3 + r * 1.388_396_5e-3)))));
    // 2^n: the integer n is `shifted`'s bits minus ROUND's (0x4B40_0000); add the bias 127.
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if a > 87.0 { 0.0 } else { p * scale }
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

    /// Every SIMD variant this CPU can run gives the portable kernel's bits exactly, so results
    /// do not depend on which machine (AVX-512, AVX2, neither) the suite runs on.
    #[test]
    fn every_dispatch_level_is_bit_identical_to_the_portable_kernel() {
        let x: Vec<f32> = (0..40_000).map(|i| ((i * 7919) % 20_001) as f32 * 1e-3 - 10.0).collect();
        let run = |f: &dyn Fn(&[f32], &mut [f32], Option<&mut [f32]>)| {
            let (mut y, mut g, mut c) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
            f(&x, &mut y, None);
            f(&x, &mut c, Some(&mut g));
            [y, g, c].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
        };
        let portable = run(&|x, y, g| kernel(x, y, g));
        assert_eq!(run(&|x, y, g| dispatch(x, y, g)), portable, "dispatched");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: checked just above.
                assert_eq!(run(&|x, y, g| unsafe { kernel_avx2(x, y, g) }), portable, "AVX2");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: checked just above.
                assert_eq!(run(&|x, y, g| unsafe { kernel_avx512(x, y, g) }), portable, "AVX-512");
            }
        }
    }

    #[test]
    fn exp_neg_is_within_a_few_ulp() {
        for i in 0..100_000 {
            let a = i as f32 * 1e-3;
            let (ours, libm) = (exp_neg(a), (-a).exp());
            if a > 87.0 {
                assert_eq!(ours, 0.0);
                continue;
            }
            assert!((ours - libm).abs() <= 3.0 * f32::EPSILON * libm, "exp(-{a}): {ours} vs {libm}");
        }
        assert_eq!(exp_neg(200.0), 0.0);
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
