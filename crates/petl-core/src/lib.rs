//! # petl-core
//!
//! Everything the petl method crates share and nothing that names a paper: backbones (ViT,
//! Swin), weight import, datasets and preprocessing, the procedural *shapes world*, the one
//! training loop, accounting (parameters, bytes, memory, throughput) and checkpoints.
//!
//! ## Insertion points: one mechanism for every method
//!
//! Backbones are written once and never forked per method. Every transformer block calls a
//! [`hooks::BlockHooks`] object at fixed *insertion points*; each hook defaults to the identity,
//! so the frozen backbone is the same struct driven by [`hooks::NoHooks`]:
//!
//! | hook | where, in a pre-LN block | used by |
//! |---|---|---|
//! | `attn_input` | after LN1, before q/k/v | ARC, ARC_att |
//! | `linear(site, x, y)` | after each frozen linear `y = x W + c` (q, k, v, out, fc1, fc2) | LoRA |
//! | `kv_prompts(at)` | extra key/value tokens before LN1 and the frozen k/v projections | deep prompt |
//! | `attention(at, q, k, v, heads, mask)` | the attention computation (default: [`nn::multi_head_attention`]) | (APT-style replacements) |
//! | `attn_output(at, o, query_input)` | attention branch output, before the residual add | bottleneck adapter |
//! | `mlp_residual` | residual stream before LN2 | ARC on Swin (official site) |
//! | `mlp_input` | after LN2, before fc1 | ARC |
//! | `mlp_output` | FFN branch output, before the residual add | bottleneck adapter |
//!
//! A method is a [`burn::module::Module`] that implements `BlockHooks` (its parameters live in
//! it, not in the backbone) plus the rule that merges it back, where the method merges. The
//! backbone's layout ([`hooks::BlockInfo`] per block: stage, width, MLP width) is known from
//! its config alone, so tuners are built, and parameters counted, without allocating the
//! backbone. [`model::Classifier`] ties backbone, tuner and head together.
//!
//! The backend is never named here: code takes a [`burn::tensor::Device`]; the choice
//! (flex, ndarray, wgpu, libtorch, cuda) happens once, in the binary.
#![warn(missing_docs)]

pub mod accounting;
pub mod bert;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod encoder;
pub mod error;
pub mod hooks;
pub mod io;
pub mod model;
pub mod nn;
pub mod ops;
pub mod swin;
pub mod train;
pub mod tuners;
pub mod vit;
pub mod weights;

pub use error::{Error, Result};
