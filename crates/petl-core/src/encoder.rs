//! Encoders: one interface for every backbone, in the manner of timm's
//! `forward_intermediates` and Hugging Face's `output_hidden_states`.
//!
//! An [`Encoder`] takes its own typed input (images; token ids with a padding mask; ...) and the
//! method's [`BlockHooks`], and returns an [`EncoderOutput`]: the last hidden state, every
//! layer's hidden states when asked for, and the pooled feature a head reads. A side network
//! (UniPT) asks for the hidden states of a frozen encoder run on a device without autodiff, so
//! they come back as constants.

use burn::prelude::*;

use crate::hooks::{BlockHooks, Layout};

/// What one encoding returns.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    /// The last hidden state, after the encoder's final norm where it has one: `[B, N, D]`.
    pub last: Tensor<3>,
    /// When requested: the embeddings (`[0]`) and the output of each block `1..=L`, before the
    /// final norm, as Hugging Face's `hidden_states`. Widths and token counts may change
    /// between stages (Swin). Empty when not requested.
    pub hidden_states: Vec<Tensor<3>>,
    /// The pooled feature: `[B, F]`.
    pub pooled: Tensor<2>,
}

/// Options of one encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Keep every layer's hidden state.
    pub hidden_states: bool,
}

impl EncodeOptions {
    /// Keep every layer's hidden state.
    pub fn with_hidden_states() -> Self {
        Self { hidden_states: true }
    }
}

/// A transformer encoder driven by insertion-point hooks.
pub trait Encoder {
    /// What the encoder reads (images `[B, C, H, W]`, token ids with masks, ...).
    type Input;

    /// Encodes `input`, calling `hooks` at every block's insertion points.
    fn encode(&self, input: Self::Input, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput;

    /// The blocks in forward order (what tuners are built for).
    fn layout(&self) -> Layout;
}

/// Collects hidden states when asked to.
pub(crate) struct States {
    keep: bool,
    states: Vec<Tensor<3>>,
}

impl States {
    pub(crate) fn new(options: EncodeOptions) -> Self {
        Self { keep: options.hidden_states, states: vec![] }
    }

    pub(crate) fn push(&mut self, x: &Tensor<3>) {
        if self.keep {
            self.states.push(x.clone());
        }
    }

    pub(crate) fn into_vec(self) -> Vec<Tensor<3>> {
        self.states
    }
}
