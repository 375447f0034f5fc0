//! Baseline tuners shared by several papers, written against the insertion points of
//! [`crate::hooks`]: LoRA (inside a linear), the bottleneck adapter (after a sub-layer) and deep
//! prompts (extra keys and values of every attention).

use burn::prelude::*;

pub mod adapter;
pub mod lora;
pub mod parallel;
pub mod prompt;

pub use adapter::{Activation, Bottleneck, BottleneckAdapter, BottleneckAdapterConfig};
pub use lora::{Lora, LoraConfig};
pub use parallel::{ParallelAdapter, ParallelAdapterConfig};
pub use prompt::{DeepPrompt, DeepPromptConfig};

/// `x [B, N, D_in] · w [D_in, D_out] -> [B, N, D_out]`.
pub fn matmul_tokens(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    burn::tensor::module::linear(x, w, None)
}
