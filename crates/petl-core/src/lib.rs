//! # petl-core
//!
//! Everything the petl method crates share and nothing that names a paper: encoders (ViT,
//! Swin, CLIP's image tower, BERT/RoBERTa), the shared attention, weight import, datasets,
//! tokenisation and preprocessing, the procedural *shapes world*, the one training loop,
//! accounting (parameters, bytes, memory, throughput), checkpoints and the baseline tuners
//! (LoRA, bottleneck adapter, deep prompts).
//!
//! ## Encoders
//!
//! Every backbone implements [`encoder::Encoder`]: a typed input (images `[B, C, H, W]`; token
//! ids with a padding mask, [`bert::TextInput`]), the method's hooks, and an
//! [`encoder::EncoderOutput`] with the last hidden state, every layer's hidden states on request
//! (Hugging Face's `output_hidden_states`) and the pooled feature. Presets are functions on the
//! configs (`VitConfig::vit_b16()`, `VitConfig::clip_vit_b16()`, `BertConfig::roberta_base()`);
//! Hugging Face folders are read with `from_hf_config`-style constructors and one pure renaming
//! function per checkpoint family ([`weights::families`]).
//!
//! ## Insertion points: one mechanism for every method
//!
//! Backbones are written once and never forked per method. Every transformer block calls a
//! [`hooks::BlockHooks`] object at fixed *insertion points*; each hook defaults to the identity,
//! so the frozen backbone is the same struct driven by [`hooks::NoHooks`]. A hook learns where
//! it is called from a [`hooks::BlockId`] (tower: vision / text / fusion / decoder, stage,
//! index):
//!
//! | hook | where, in a pre-LN block | used by |
//! |---|---|---|
//! | `attn_input` | after LN1, before q/k/v | ARC, ARC_att |
//! | `linear(site, x, y)` | after each frozen linear `y = x W + c` (q, k, v, out, fc1, fc2; cross-attention sites) | LoRA |
//! | `kv_prompts(at)` | extra key/value tokens before LN1 and the frozen k/v projections | deep prompt |
//! | `attention(at, q, k, v, heads, mask)` | the attention itself (default: [`nn::multi_head_attention`], `N_q ≠ N_kv`, masks) | replacements of the attention |
//! | `attn_output(at, o, query_input)` | attention branch output (after the output projection), before the residual add | bottleneck adapter, APT |
//! | `attn_residual(at, x, input)` | residual stream after the attention sub-layer (post-LN: after its LayerNorm), with the branch input | scaled parallel adapter |
//! | `mlp_residual` | residual stream before LN2 | ARC on Swin (official site) |
//! | `mlp_input` | after LN2, before fc1 | ARC |
//! | `mlp_output` | FFN branch output, before the residual add | bottleneck adapter |
//!
//! Post-LN blocks (BERT) call the same hooks at the same branch positions (see [`bert`]); the
//! fusion layers of two-stream models ([`meter`]) call them at each of their three sub-layers
//! (self-attention, cross-attention to the other stream, FFN), naming the sub-layer.
//!
//! A method is a [`burn::module::Module`] that implements `BlockHooks` (its parameters live in
//! it, not in the backbone) plus the rule that merges it back, where the method merges. The
//! backbone's layout ([`hooks::BlockInfo`] per block: position, width, MLP width) is known from
//! its config alone, so tuners are built, and parameters counted, without allocating the
//! backbone. [`model::Classifier`] ties backbone, tuner and head together.
//!
//! Each hook call names tower, stage, block and sub-layer ([`hooks::BlockId`], with
//! [`hooks::SubLayer`]: self-attention, cross-attention, FFN). Context a method needs per
//! forward pass (the task id of a multi-task batch) reaches it through a borrowed view of its
//! tuner that implements `BlockHooks` for that pass.
//!
//! ## Methods, tasks, merging
//!
//! - [`method::PetlMethod`] is a method (tuner type, serde config, parameter count from the
//!   layout, build, merge); [`method::Entry`] registers it under a name, and a binary's method
//!   list is the concatenation of the crates' entry lists ([`method::builtin`], `arc::methods`),
//!   used through [`method::MethodEntry`] and [`method::AnyModel`] without naming a method.
//! - [`train::Task`] is what the one loop ([`train::Trainer::fit_task`]) trains: batches
//!   (Burn's `Batcher` role over [`data::Samples`]), loss, evaluation. Classification, VQA,
//!   NLVR2-style pairs and contrastive retrieval are built in ([`train::vl`]); parameter
//!   groups, gradient accumulation and multi-dataset sampling are the loop's.
//! - [`merge`] folds methods into frozen weights once, against linear sites that every backbone
//!   locates ([`merge::LinearSites`]).
//!
//! ## How the next methods plug in
//!
//! - **APT** (`crates/apt`, built): a tuner whose `attn_output(at, o, query_input)` returns
//!   `(o + w ⊙ ReLU(H K_Pᵀ) P)·e^s`; its baselines are the shared tuners (deep prompts, LoRA,
//!   the bottleneck adapter with ReLU / normal init, [`tuners::ParallelAdapter`]). ViLT is
//!   [`vilt::Vilt`] (text embeddings + padded-image embeddings over a [`vit::Vit`]'s blocks
//!   with key masks); [`vl_model::ViltModel`] adds the class token, the VQA / NLVR2 / retrieval
//!   heads and the trainable sets; [`vilt::pretrain`] pretrains it with ITM + MLM;
//!   [`train::vl::PairRetrieval`] is cross-encoder retrieval. METER, still to come, is a
//!   two-stream encoder whose cross-attention sub-layers call the hooks at
//!   [`hooks::SubLayer::CrossAttention`] with the cross-attention [`hooks::LinearSite`]s.
//! - **UniPT**: the frozen encoders run on a device without autodiff and return every layer's
//!   hidden states ([`encoder::EncodeOptions::with_hidden_states`]) as constants; the side
//!   network is a plain module of the method crate that reads them (the pattern of
//!   `tests/side_network.rs`); retrieval trains with [`train::vl::Retrieval`] (VSE∞'s hardest
//!   triplet or CLIP4Clip's InfoNCE).
//! - **VL-Adapter**: adapters, LoRA and prompts are tuners on the encoder and decoder towers
//!   (`BlockId::tower` tells them apart); Hyperformer and Compacter generate their weights from
//!   the task id through a per-task view of the tuner; multi-task training is the loop's
//!   several datasets with [`train::Sampling`], generation is [`train::objectives`]'
//!   seq2seq cross-entropy and [`train::generate::Greedy`].
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
pub mod fuzz;
pub mod hooks;
pub mod io;
pub mod merge;
pub mod meter;
pub mod method;
pub mod model;
pub mod nn;
pub mod ops;
pub mod swin;
pub mod train;
pub mod tuners;
pub mod vilt;
pub mod vit;
pub mod vl_model;
pub mod weights;

pub use error::{Error, Result};
