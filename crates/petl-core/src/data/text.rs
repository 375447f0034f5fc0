//! Tokenising text with a checkpoint's own Hugging Face tokenizer (`tokenizer.json`, through the
//! `tokenizers` crate) into the padded batches text encoders read.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::bert::TextInput;
use crate::{Error, Result};

/// A Hugging Face tokenizer and the padding id of its model.
pub struct HfTokenizer {
    tokenizer: tokenizers::Tokenizer,
    path: PathBuf,
    pad_id: u32,
    truncate: bool,
    truncated: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Token ids of several texts, padded to the longest (as HF `tokenizer(texts, padding=True)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// `[N, T]` row-major ids.
    pub ids: Vec<i64>,
    /// `[N, T]` row-major, 1 for tokens and 0 for padding.
    pub mask: Vec<i64>,
    /// Texts `N`.
    pub rows: usize,
    /// Padded length `T`.
    pub len: usize,
}

impl HfTokenizer {
    /// Reads `tokenizer.json`; `pad_id` is the model's padding id (`pad_token_id` of its
    /// config); ids must stay below `vocab_size`, the model's vocabulary.
    ///
    /// # Errors
    /// A missing or unreadable file, or a tokenizer whose vocabulary is larger than the
    /// model's (the tokenizer of another model).
    pub fn from_file(path: &Path, pad_id: u32, vocab_size: usize) -> Result<Self> {
        if !path.exists() {
            return Err(Error::format(path, "no such tokenizer file (the checkpoint's own tokenizer.json is needed)"));
        }
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::format(path, format!("not a Hugging Face tokenizer: {e}")))?;
        let size = tokenizer.get_vocab_size(true);
        if size > vocab_size {
            return Err(Error::format(
                path,
                format!(
                    "the tokenizer has {size} tokens but the model's vocabulary has {vocab_size}: another model's tokenizer?"
                ),
            ));
        }
        Ok(Self { tokenizer, path: path.to_path_buf(), pad_id, truncate: false, truncated: Default::default() })
    }

    /// A tokenizer built in process (the shapes world's word-level tokenizer); `name` stands for
    /// the file in error messages.
    pub fn from_tokenizer(tokenizer: tokenizers::Tokenizer, pad_id: u32, name: &str) -> Self {
        Self { tokenizer, path: PathBuf::from(name), pad_id, truncate: false, truncated: Default::default() }
    }

    /// Texts longer than `max_len` are truncated as Hugging Face's `truncation=True` does for
    /// one sequence (the content is cut, the special tokens at both ends are kept) instead of
    /// refused; [`HfTokenizer::truncated`] counts them (ViLT and METER fine-tune this way).
    pub fn with_truncation(mut self) -> Self {
        self.truncate = true;
        self
    }

    /// Distinct texts truncated so far.
    pub fn truncated(&self) -> usize {
        self.truncated.lock().map_or(0, |t| t.len())
    }

    /// Tokenises `texts` with the special tokens the tokenizer adds and pads them to the
    /// longest; a text longer than `max_len` tokens is an error naming its index.
    ///
    /// # Errors
    /// A text the tokenizer rejects, or one longer than `max_len`.
    pub fn encode(&self, texts: &[String], max_len: usize) -> Result<TokenBatch> {
        let mut rows = vec![];
        for (i, text) in texts.iter().enumerate() {
            let enc = self
                .tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| Error::format(&self.path, format!("text {}: {e}", i + 1)))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > max_len && self.truncate && max_len >= 2 {
                let last = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(last);
                if let Ok(mut t) = self.truncated.lock() {
                    t.insert(text.clone());
                }
            }
            if ids.len() > max_len {
                return Err(Error::Config(format!(
                    "text {} has {} tokens, more than the model's {max_len} positions",
                    i + 1,
                    ids.len()
                )));
            }
            rows.push(ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>());
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut batch = TokenBatch { ids: vec![], mask: vec![], rows: rows.len(), len };
        for row in rows {
            batch.mask.extend(row.iter().map(|_| 1).chain(std::iter::repeat_n(0, len - row.len())));
            batch.ids.extend(row.iter().copied().chain(std::iter::repeat_n(i64::from(self.pad_id), len - row.len())));
        }
        Ok(batch)
    }
}

impl TokenBatch {
    /// Rows `start..end` as an encoder input on `device`.
    pub fn input(&self, start: usize, end: usize, device: &Device) -> TextInput {
        let slice = |v: &[i64]| {
            Tensor::<2, Int>::from_data(
                TensorData::new(v[start * self.len..end * self.len].to_vec(), [end - start, self.len]),
                device,
            )
        };
        TextInput { input_ids: slice(&self.ids), attention_mask: slice(&self.mask), token_type_ids: None }
    }
}
