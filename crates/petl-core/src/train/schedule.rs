//! Learning-rate schedule: linear warm-up then cosine, stepped per update (as the official ARC/VPT
//! training loops step it), or linear warm-up then linear decay to 0 (ViLT's and METER's
//! `get_linear_schedule_with_warmup`).

/// Warm-up cosine factor `f(k)`: `k / W` for `k < W`, else
/// `max(min_factor, ½(1 + cos(π (k − W) / (T − W))))`. The first update (k = 0) gets 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Warm-up updates `W`.
    pub warmup: usize,
    /// Total updates `T`.
    pub total: usize,
    /// Floor of the cosine part (1e-6 in the official code).
    pub min_factor: f64,
    /// Linear decay `(T − k) / (T − W)` after the warm-up instead of the cosine.
    pub linear: bool,
}

impl WarmupCosine {
    /// A schedule with the official floor of 1e-6.
    pub fn new(warmup: usize, total: usize) -> Self {
        Self { warmup, total, min_factor: 1e-6, linear: false }
    }

    /// Linear warm-up then linear decay to 0 at `total` (Hugging Face's
    /// `get_linear_schedule_with_warmup`).
    pub fn linear(warmup: usize, total: usize) -> Self {
        Self { warmup, total, min_factor: 0.0, linear: true }
    }

    /// `f(k)` for update `k`.
    pub fn factor(&self, k: usize) -> f64 {
        if k < self.warmup {
            return k as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = (k - self.warmup) as f64 / span;
        if self.linear {
            return (1.0 - progress).max(0.0);
        }
        (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(self.min_factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_of_the_spec() {
        let s = WarmupCosine::new(320, 3200);
        let cases = [(0, 0.0), (1, 3.125e-3), (160, 0.5), (319, 0.996875), (320, 1.0), (1760, 0.5), (3199, 1e-6)];
        for (k, want) in cases {
            assert!((s.factor(k) - want).abs() < 1e-9, "f({k}) = {} != {want}", s.factor(k));
        }
        assert!((s.factor(3198) - 1.19e-6).abs() < 1e-8);
    }

    #[test]
    fn linear_decay_as_get_linear_schedule_with_warmup() {
        let s = WarmupCosine::linear(10, 110);
        for (k, want) in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.5), (110, 0.0), (120, 0.0)] {
            assert!((s.factor(k) - want).abs() < 1e-12, "f({k}) = {}", s.factor(k));
        }
    }
}
