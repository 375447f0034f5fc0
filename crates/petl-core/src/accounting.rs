//! Accounting: parameter counts by role, adapter bytes, peak memory, throughput.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Parameter counts of a method on a backbone, in the papers' terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    /// Parameters the method adds to the backbone (0 for linear probing and full fine-tuning).
    pub adapter_params: usize,
    /// Classification head `(F + 1)·K`.
    pub head_params: usize,
    /// Parameters that receive gradients.
    pub trainable_params: usize,
    /// Parameters that do not.
    pub frozen_params: usize,
}

impl ParamCounts {
    /// Bytes of what an adapter-only checkpoint stores (trainable tensors, f32).
    pub fn adapter_bytes(&self) -> usize {
        self.trainable_params * 4
    }
}

/// `(trainable, frozen)` parameter counts of an allocated module, read off the tensors:
/// a parameter is trainable when its tensor requires a gradient.
pub fn measure_trainable<M: Module>(module: &M) -> (usize, usize) {
    struct Counter(usize, usize);
    impl ModuleVisitor for Counter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            if param.val().is_require_grad() {
                self.0 += n;
            } else {
                self.1 += n;
            }
        }
    }
    let mut c = Counter(0, 0);
    module.visit(&mut c);
    (c.0, c.1)
}

/// What one backward pass left for the optimizer, read off the gradients themselves.
///
/// These are laws, not measurements that depend on the machine: every trainable parameter has
/// one gradient of its own size, and a frozen parameter has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradientCounts {
    /// Gradient tensors present.
    pub tensors: usize,
    /// Bytes of those gradients (elements × element size).
    pub bytes: usize,
    /// Gradients present for parameters that do not require one (0 when frozen means frozen).
    pub frozen_with_gradient: usize,
}

/// Counts the gradients `grads` holds for the parameters of `module`.
pub fn measure_gradients<M: Module>(module: &M, grads: &GradientsParams) -> GradientCounts {
    struct Counter<'a>(&'a GradientsParams, GradientCounts);
    impl ModuleVisitor for Counter<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1.tensors += 1;
                self.1.bytes += g.shape().num_elements() * g.dtype().size();
                if !param.val().is_require_grad() {
                    self.1.frozen_with_gradient += 1;
                }
            }
        }
    }
    let mut c = Counter(grads, GradientCounts::default());
    module.visit(&mut c);
    c.1
}

/// Peak resident set size of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak-RSS counter (`VmHWM`) so that the next [`peak_rss_bytes`] measures from
/// now (Linux `clear_refs` 5). Returns whether the OS allowed it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// Human-readable millions with two decimals, as the papers print "Params (M)".
pub fn millions(n: usize) -> String {
    format!("{:.2}", n as f64 / 1e6)
}
