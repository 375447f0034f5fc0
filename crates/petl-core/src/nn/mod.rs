//! Layers shared by every backbone.

pub mod attention;

pub use attention::{AttentionMask, multi_head_attention, prepend_prompts};
