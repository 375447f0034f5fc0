//! BERT and RoBERTa text encoders (post-LN), as Hugging Face `transformers`' `BertModel` and
//! `RobertaModel`: word + position + token-type embeddings and LayerNorm, `L` blocks of
//! self-attention and FFN each followed by a residual add and LayerNorm, exact (erf) GELU, and a
//! `tanh` pooler on the first token.
//!
//! RoBERTa differs only in its position ids (counted from `pad_token_id + 1` over non-padding
//! tokens, padding keeps `pad_token_id`), selected by [`BertConfig::roberta_positions`].
//!
//! ## Insertion points in a post-LN block
//! `attn_input` receives the block input (the attention branch input: there is no LayerNorm
//! before it), `attn_output` the branch output before the residual add and LayerNorm,
//! `mlp_residual` and then `mlp_input` the FFN branch input (the first LayerNorm's output),
//! `mlp_output` the FFN branch output before the residual add and LayerNorm. Deep prompts join
//! the keys and values before the key/value projections.

use std::path::Path;

use burn::nn::{Dropout, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::encoder::{EncodeOptions, Encoder, EncoderOutput, States};
use crate::hooks::{BlockHooks, BlockId, BlockInfo, Layout, LinearSite};
use crate::io::HfConfig;
use crate::nn::{AttentionMask, prepend_prompts};
use crate::ops::gelu;
use crate::{Error, Result};

/// Configuration of a BERT/RoBERTa encoder (the fields of Hugging Face's `config.json`).
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width `D`.
    pub hidden_size: usize,
    /// Blocks `L`.
    pub num_hidden_layers: usize,
    /// Attention heads (`D` must be divisible by it).
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Rows of the position table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    #[config(default = 2)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[config(default = 0)]
    pub pad_token_id: usize,
    /// RoBERTa's position ids (from `pad_token_id + 1`, padding at `pad_token_id`).
    #[config(default = false)]
    pub roberta_positions: bool,
    /// `hidden_dropout_prob`: dropout on the embeddings and on each sub-layer's output before
    /// its residual add (after `attn_output` / `mlp_output`); training only, also in a frozen
    /// encoder (`no_grad` keeps it, `valid` turns it off). BERT and RoBERTa: 0.1; `None`
    /// (configs written before the field): none.
    #[config(default = "None")]
    pub hidden_dropout_prob: Option<f64>,
    /// `attention_probs_dropout_prob`: dropout on the attention probabilities (0.1).
    #[config(default = "None")]
    pub attention_probs_dropout_prob: Option<f64>,
}

/// A batch of tokenised texts.
#[derive(Clone, Debug)]
pub struct TextInput {
    /// Token ids `[B, T]`.
    pub input_ids: Tensor<2, Int>,
    /// `[B, T]`, 1 for real tokens and 0 for padding (Hugging Face's `attention_mask`).
    pub attention_mask: Tensor<2, Int>,
    /// Segment ids `[B, T]` (zeros when absent).
    pub token_type_ids: Option<Tensor<2, Int>>,
}

impl TextInput {
    /// One text of the single token `id`, unpadded (a class-token initialisation reads its
    /// embedding).
    pub fn single(id: usize, device: &Device) -> Self {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![id as i64], [1, 1]), device);
        Self { input_ids: ids, attention_mask: Tensor::ones([1, 1], device), token_type_ids: None }
    }

    /// Checks the batch against an encoder with `vocab` words and `max_len` positions: mask and
    /// token types of the ids' shape, the length inside the positions, every id in the
    /// vocabulary.
    ///
    /// # Errors
    /// One message naming what does not fit.
    pub fn check(&self, vocab: usize, max_len: usize) -> Result<()> {
        let [b, t] = self.input_ids.dims();
        if self.attention_mask.dims() != [b, t] {
            return Err(Error::Config(format!(
                "attention_mask has shape {:?}, input_ids {:?}",
                self.attention_mask.dims(),
                [b, t]
            )));
        }
        if let Some(tt) = &self.token_type_ids {
            if tt.dims() != [b, t] {
                return Err(Error::Config(format!("token_type_ids has shape {:?}, input_ids {:?}", tt.dims(), [b, t])));
            }
        }
        if t > max_len {
            return Err(Error::Config(format!(
                "text of {t} tokens is longer than the position table allows ({max_len})"
            )));
        }
        let ids: Vec<i64> = self.input_ids.to_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default();
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
            return Err(Error::Config(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        Ok(())
    }
}

/// BERT-style embeddings `LN(word[ids] + position[positions] + type[token types])` (token types
/// zeros when absent), `positions` row-major `[B, T]`: BERT's, RoBERTa's and ViLT's text side.
pub(crate) fn embed_tokens(
    [word, position, token_type]: [&Embedding; 3],
    norm: &LayerNorm,
    input: &TextInput,
    positions: Vec<i64>,
) -> Tensor<3> {
    let device = input.input_ids.device();
    let [b, t] = input.input_ids.dims();
    let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [b, t]), &device);
    let types = input.token_type_ids.clone().unwrap_or_else(|| Tensor::zeros([b, t], &device));
    norm.forward(word.forward(input.input_ids.clone()) + position.forward(positions) + token_type.forward(types))
}

impl BertConfig {
    /// `bert-base-uncased` sizes (also the text side of ViLT).
    pub fn bert_base() -> Self {
        Self::new(30522, 768, 12, 12, 3072, 512)
            .with_hidden_dropout_prob(Some(0.1))
            .with_attention_probs_dropout_prob(Some(0.1))
    }

    /// `roberta-base` sizes (METER's text tower).
    pub fn roberta_base() -> Self {
        Self::new(50265, 768, 12, 12, 3072, 514)
            .with_type_vocab_size(1)
            .with_layer_norm_eps(1e-5)
            .with_pad_token_id(1)
            .with_roberta_positions(true)
            .with_hidden_dropout_prob(Some(0.1))
            .with_attention_probs_dropout_prob(Some(0.1))
    }

    /// Reads a Hugging Face `config.json` of `model_type` `bert` or `roberta`.
    ///
    /// # Errors
    /// A missing file, a missing or mistyped field (named), another `model_type`, or sizes that
    /// cannot work.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let v = HfConfig::read(path)?;
        let model_type = v["model_type"].as_str().unwrap_or("");
        if !matches!(model_type, "bert" | "roberta") {
            return Err(Error::format(path, format!("model_type `{model_type}`: expected `bert` or `roberta`")));
        }
        let hf = HfConfig { path, value: &v };
        let int = |key: &str| hf.usize(key);
        hf.expect_activation("gelu")?;
        let cfg = Self::new(
            int("vocab_size")?,
            int("hidden_size")?,
            int("num_hidden_layers")?,
            int("num_attention_heads")?,
            int("intermediate_size")?,
            int("max_position_embeddings")?,
        )
        .with_type_vocab_size(int("type_vocab_size").unwrap_or(2))
        .with_layer_norm_eps(v["layer_norm_eps"].as_f64().unwrap_or(1e-12))
        .with_pad_token_id(int("pad_token_id").unwrap_or(0))
        .with_roberta_positions(model_type == "roberta")
        // Absent from a config.json, Hugging Face's defaults (0.1) apply.
        .with_hidden_dropout_prob(Some(v["hidden_dropout_prob"].as_f64().unwrap_or(0.1)))
        .with_attention_probs_dropout_prob(Some(v["attention_probs_dropout_prob"].as_f64().unwrap_or(0.1)));
        cfg.validate().map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    /// Checks sizes.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if [self.vocab_size, self.hidden_size, self.intermediate_size, self.max_position_embeddings].contains(&0) {
            return Err(Error::Config("vocab, hidden, intermediate and position sizes must be positive".into()));
        }
        crate::nn::check_dropout("hidden_dropout_prob", self.hidden_dropout_prob)?;
        crate::nn::check_dropout("attention_probs_dropout_prob", self.attention_probs_dropout_prob)?;
        if self.roberta_positions && self.pad_token_id + 1 >= self.max_position_embeddings {
            return Err(Error::Config("RoBERTa positions need max_position_embeddings > pad_token_id + 1".into()));
        }
        Ok(())
    }

    /// Longest text the position table allows (RoBERTa reserves `pad_token_id + 1` rows).
    pub fn max_text_len(&self) -> usize {
        if self.roberta_positions {
            self.max_position_embeddings - self.pad_token_id - 1
        } else {
            self.max_position_embeddings
        }
    }

    /// Block layout (the text tower).
    pub fn layout(&self) -> Layout {
        Layout {
            blocks: (0..self.num_hidden_layers)
                .map(|i| BlockInfo::new(BlockId::text(i), self.hidden_size, self.intermediate_size))
                .collect(),
            feature_dim: self.hidden_size,
        }
    }

    /// Parameters (pooler included), computed without allocating.
    pub fn num_params(&self) -> usize {
        let (d, m) = (self.hidden_size, self.intermediate_size);
        let embed = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d;
        let block = 4 * (d * d + d) + 2 * d + (d * m + m) + (m * d + d) + 2 * d;
        embed + self.num_hidden_layers * block + d * d + d
    }

    /// Allocates the encoder with random weights (`N(0, 0.02)` linears and embeddings).
    ///
    /// # Panics
    /// If [`BertConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Bert {
        self.validate().expect("valid BERT config");
        let d = self.hidden_size;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let lin = |i, o| LinearConfig::new(i, o).with_initializer(normal.clone()).init(device);
        let emb = |n| EmbeddingConfig::new(n, d).with_initializer(normal.clone()).init(device);
        let ln = LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps);
        Bert {
            word_embeddings: emb(self.vocab_size),
            position_embeddings: emb(self.max_position_embeddings),
            token_type_embeddings: emb(self.type_vocab_size),
            embed_norm: ln.init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| BertLayer {
                    query: lin(d, d),
                    key: lin(d, d),
                    value: lin(d, d),
                    attn_out: lin(d, d),
                    attn_norm: ln.init(device),
                    fc1: lin(d, self.intermediate_size),
                    fc2: lin(self.intermediate_size, d),
                    ffn_norm: ln.init(device),
                    num_heads: self.num_attention_heads,
                    dropout: crate::nn::dropout(self.hidden_dropout_prob),
                    attention_dropout: crate::nn::dropout(self.attention_probs_dropout_prob),
                })
                .collect(),
            dropout: crate::nn::dropout(self.hidden_dropout_prob),
            pooler: lin(d, d),
            pad_token_id: self.pad_token_id,
            roberta_positions: self.roberta_positions,
        }
    }
}

/// One post-LN block.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Query projection `[D, D]`.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub attn_out: Linear,
    /// LayerNorm after the attention residual add.
    pub attn_norm: LayerNorm,
    /// FFN up-projection (HF `intermediate.dense`).
    pub fc1: Linear,
    /// FFN down-projection (HF `output.dense`).
    pub fc2: Linear,
    /// LayerNorm after the FFN residual add.
    pub ffn_norm: LayerNorm,
    /// Heads.
    pub num_heads: usize,
    /// Dropout on each sub-layer's output before its residual add.
    pub dropout: Dropout,
    /// Dropout on the attention probabilities.
    pub attention_dropout: Dropout,
}

impl BertLayer {
    /// x: `[B, T, D]` -> `[B, T, D]`; `mask` masks padding keys.
    pub fn forward(&self, x: Tensor<3>, hooks: &dyn BlockHooks, at: BlockId, mask: &AttentionMask) -> Tensor<3> {
        let lin = |layer: &Linear, site, input: Tensor<3>| {
            let y = layer.forward(input.clone());
            hooks.linear(if matches!(site, LinearSite::Fc1 | LinearSite::Fc2) { at.ffn() } else { at }, site, &input, y)
        };
        let y = hooks.attn_input(at, x.clone());
        let q = lin(&self.query, LinearSite::Query, y.clone());
        let (kv, mask) = match hooks.kv_prompts(at) {
            Some(p) => prepend_prompts(p, y.clone(), mask.clone()),
            None => (y.clone(), mask.clone()),
        };
        let mask = mask.with_dropout(&self.attention_dropout);
        let k = lin(&self.key, LinearSite::Key, kv.clone());
        let v = lin(&self.value, LinearSite::Value, kv);
        let ctx = hooks.attention(at, q, k, v, self.num_heads, &mask);
        let a = hooks.attn_output(at, lin(&self.attn_out, LinearSite::AttnOut, ctx), &y);
        let h = hooks.attn_residual(at, self.attn_norm.forward(x + self.dropout.forward(a)), &y);
        let h = hooks.mlp_residual(at.ffn(), h);
        let z = hooks.mlp_input(at.ffn(), h.clone());
        let f = hooks.mlp_output(at.ffn(), lin(&self.fc2, LinearSite::Fc2, gelu(lin(&self.fc1, LinearSite::Fc1, z))));
        self.ffn_norm.forward(h + self.dropout.forward(f))
    }
}

/// A BERT/RoBERTa encoder with its pooler.
#[derive(Module, Debug)]
pub struct Bert {
    /// Word embeddings `[V, D]`.
    pub word_embeddings: Embedding,
    /// Position embeddings `[P, D]`.
    pub position_embeddings: Embedding,
    /// Token-type embeddings `[T, D]`.
    pub token_type_embeddings: Embedding,
    /// LayerNorm of the summed embeddings.
    pub embed_norm: LayerNorm,
    /// Blocks.
    pub layers: Vec<BertLayer>,
    /// Pooler dense layer (`tanh` of it on the first token).
    pub pooler: Linear,
    /// Dropout on the embeddings (after their LayerNorm).
    pub dropout: Dropout,
    /// Padding id (RoBERTa positions).
    pub pad_token_id: usize,
    /// RoBERTa's position ids.
    pub roberta_positions: bool,
}

impl Bert {
    /// Longest text the position table allows (as [`BertConfig::max_text_len`]).
    pub fn max_text_len(&self) -> usize {
        let [positions, _] = self.position_embeddings.weight.dims();
        if self.roberta_positions { positions - self.pad_token_id - 1 } else { positions }
    }

    /// Checks a batch against this encoder: shapes, ids inside the vocabulary, text length
    /// inside the position table.
    ///
    /// # Errors
    /// One message naming what does not fit.
    pub fn check_input(&self, input: &TextInput) -> Result<()> {
        input.check(self.word_embeddings.weight.dims()[0], self.max_text_len())
    }

    /// Summed embeddings after LayerNorm (before the dropout of [`Encoder::encode`]): `[B, T, D]`.
    pub fn embed(&self, input: &TextInput) -> Tensor<3> {
        let [b, t] = input.input_ids.dims();
        let positions: Vec<i64> = if self.roberta_positions {
            let pad = self.pad_token_id as i64;
            let ids: Vec<i64> = input.input_ids.to_data().convert::<i64>().try_to_vec::<i64>().expect("int ids");
            ids.chunks(t)
                .flat_map(|row| {
                    let mut count = 0;
                    row.iter()
                        .map(|&id| {
                            if id == pad {
                                pad
                            } else {
                                count += 1;
                                pad + count
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            (0..b).flat_map(|_| 0..t as i64).collect()
        };
        let tables = [&self.word_embeddings, &self.position_embeddings, &self.token_type_embeddings];
        embed_tokens(tables, &self.embed_norm, input, positions)
    }
}

impl Encoder for Bert {
    /// Token ids with their padding mask.
    type Input = TextInput;

    /// `last`: the last block's output `[B, T, D]` (post-LN: no final norm); `pooled`:
    /// `tanh(pooler(last[:, 0]))`; `hidden_states`: the embeddings and each block's output.
    fn encode(&self, input: TextInput, hooks: &dyn BlockHooks, options: EncodeOptions) -> EncoderOutput {
        let mut states = States::new(options);
        let mask = AttentionMask::none().with_key_padding(input.attention_mask.clone().equal_elem(0));
        let mut x = self.dropout.forward(self.embed(&input));
        states.push(&x);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, hooks, BlockId::text(i), &mask);
            states.push(&x);
        }
        let [b, _, d] = x.dims();
        let pooled = self.pooler.forward(x.clone().narrow(1, 0, 1).reshape([b, d])).tanh();
        EncoderOutput { last: x, hidden_states: states.into_vec(), pooled }
    }

    fn layout(&self) -> Layout {
        let [_, d] = self.word_embeddings.weight.dims();
        Layout {
            blocks: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| BlockInfo::new(BlockId::text(i), d, l.fc1.weight.dims()[1]))
                .collect(),
            feature_dim: d,
        }
    }
}

impl crate::merge::LinearSites for Bert {
    fn linear_mut(
        &mut self,
        index: usize,
        site: crate::hooks::LinearSite,
    ) -> Option<(&mut burn::nn::Linear, std::ops::Range<usize>)> {
        use crate::hooks::LinearSite::*;
        let layer = self.layers.get_mut(index)?;
        let linear = match site {
            Query => &mut layer.query,
            Key => &mut layer.key,
            Value => &mut layer.value,
            AttnOut => &mut layer.attn_out,
            Fc1 => &mut layer.fc1,
            Fc2 => &mut layer.fc2,
            CrossQuery | CrossKey | CrossValue | CrossOut => return None,
        };
        let out = linear.weight.dims()[1];
        Some((linear, 0..out))
    }
}
