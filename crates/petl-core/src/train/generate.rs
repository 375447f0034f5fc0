//! Greedy decoding for sequence-to-sequence models (VL-BART/VL-T5 answers and captions), as
//! Hugging Face's `generate(num_beams=1, do_sample=False)`: start from the decoder start token,
//! append the arg-max token each step, stop a row at its end-of-sequence token and pad it after.

use burn::prelude::*;
use burn::tensor::TensorData;

/// Tokens and length limit of greedy decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greedy {
    /// The decoder's start token (BART: `</s>` = 2; T5: pad = 0).
    pub start: usize,
    /// End of sequence.
    pub eos: usize,
    /// Padding written after a row ended.
    pub pad: usize,
    /// Most tokens generated per row (the start token not counted).
    pub max_new_tokens: usize,
}

impl Greedy {
    /// Decodes `batch` rows. `next_logits(prefix [B, t]) -> [B, V]` gives the logits of the next
    /// token after each row's prefix (the model's encoder output captured by the closure). No
    /// key/value cache: the whole prefix is decoded again each step, which is exact and fine at
    /// the lengths of answers and captions.
    ///
    /// Returns each row's generated tokens, up to and without its end-of-sequence token.
    pub fn decode(
        &self,
        batch: usize,
        device: &Device,
        mut next_logits: impl FnMut(Tensor<2, Int>) -> Tensor<2>,
    ) -> Vec<Vec<usize>> {
        let mut rows: Vec<Vec<i64>> = vec![vec![self.start as i64]; batch];
        let mut done = vec![false; batch];
        let mut out: Vec<Vec<usize>> = vec![vec![]; batch];
        for _ in 0..self.max_new_tokens {
            if batch == 0 || done.iter().all(|&d| d) {
                break;
            }
            let t = rows[0].len();
            let flat: Vec<i64> = rows.iter().flatten().copied().collect();
            let prefix = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, t]), device);
            let next = next_logits(prefix).argmax(1).into_data();
            let next: Vec<i64> = next.try_to_vec_as::<i64>().expect("argmax gives integers");
            for (i, row) in rows.iter_mut().enumerate() {
                let token = if done[i] { self.pad as i64 } else { next[i] };
                if !done[i] {
                    if token as usize == self.eos {
                        done[i] = true;
                    } else {
                        out[i].push(token as usize);
                    }
                }
                row.push(token);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "model" over a vocabulary of 8 whose next token is the last one plus the row's stride,
    /// and end-of-sequence (7) once that passes 6.
    fn counting(prefix: Tensor<2, Int>, strides: &[i64]) -> Tensor<2> {
        let [b, t] = prefix.dims();
        let tokens: Vec<i64> = prefix.into_data().try_to_vec_as::<i64>().unwrap();
        let mut logits = vec![0.0f32; b * 8];
        for i in 0..b {
            let last = tokens[i * t + t - 1];
            let next = if last + strides[i] > 6 { 7 } else { last + strides[i] };
            logits[i * 8 + next as usize] = 1.0;
        }
        Tensor::from_data(TensorData::new(logits, [b, 8]), &Device::flex())
    }

    #[test]
    fn greedy_stops_each_row_at_its_eos_and_pads_after() {
        let g = Greedy { start: 0, eos: 7, pad: 0, max_new_tokens: 10 };
        let mut calls = 0;
        let out = g.decode(2, &Device::flex(), |p| {
            calls += 1;
            counting(p, &[1, 3])
        });
        assert_eq!(out, vec![vec![1, 2, 3, 4, 5, 6], vec![3, 6]]);
        assert_eq!(calls, 7, "stops when every row has ended");
        let short = Greedy { max_new_tokens: 2, ..g }.decode(1, &Device::flex(), |p| counting(p, &[1]));
        assert_eq!(short, vec![vec![1, 2]], "length limit");
    }
}
