//! The losses and metrics of the vision–language tasks, in one place:
//!
//! - VQA: soft-score binary cross-entropy (ViLT/METER, LXMERT-style: mean over `B × A` entries,
//!   times `A`) and the local VQA score (`target_score[argmax]`);
//! - contrastive retrieval: symmetric InfoNCE (CLIP, CLIP4Clip) and the VSE++ hinge triplet loss
//!   with all or the hardest negatives (VSE∞);
//! - retrieval recall@K in both directions for images with several captions (Flickr30K, COCO);
//! - sequence-to-sequence token cross-entropy with ignored positions (VL-BART/VL-T5, Hugging
//!   Face's `labels` with −100), and exact-match accuracy of generated answers;
//! - image classification's cross-entropy and top-1 live in [`super::task::Classification`].

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Soft-score binary cross-entropy with logits, averaged over all `B × A` entries and multiplied
/// by `A` (a sum over answers, a mean over the batch), as ViLT, METER and LXMERT train VQA.
///
/// # Shapes
/// logits, targets: `[B, A]` (targets are soft scores in `[0, 1]`) -> `[1]`.
pub fn vqa_soft_bce(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let [_, answers] = logits.dims();
    // max(x, 0) − x·y + log(1 + e^{−|x|}): stable for large |x|.
    let loss = logits.clone().clamp_min(0.0) - logits.clone() * targets + logits.abs().neg().exp().log1p();
    loss.mean().mul_scalar(answers as f64)
}

/// The local VQA score: mean over questions of the target score of the arg-max answer (%).
///
/// # Panics
/// If `logits` and `targets` differ in length or are not whole rows of `answers`.
pub fn vqa_score(logits: &[f32], targets: &[f32], answers: usize) -> f64 {
    assert_eq!(logits.len(), targets.len(), "logits and targets of one shape");
    assert!(answers > 0 && logits.len() % answers == 0, "whole rows");
    let rows = logits.len() / answers;
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = logits
        .chunks(answers)
        .zip(targets.chunks(answers))
        .map(|(l, t)| {
            let best = l.iter().enumerate().fold(0, |b, (i, v)| if *v > l[b] { i } else { b });
            f64::from(t[best])
        })
        .sum();
    100.0 * total / rows as f64
}

/// Symmetric InfoNCE on a square similarity matrix whose diagonal holds the positives:
/// `½ (CE over rows + CE over columns)`, each a mean over the batch.
///
/// # Shapes
/// logits: `[B, B]` (already scaled by the temperature) -> `[1]`.
pub fn symmetric_infonce(logits: Tensor<2>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let eye = Tensor::<2>::eye(b, &logits.device());
    let rows = (log_softmax(logits.clone(), 1) * eye.clone()).sum().neg();
    let cols = (log_softmax(logits, 0) * eye).sum().neg();
    (rows + cols).div_scalar(2.0 * b as f64)
}

/// VSE++ hinge triplet loss on a square similarity matrix (diagonal = positives):
/// `Σ_i Σ_{j≠i} [m + S_ij − S_ii]₊ + Σ_j Σ_{i≠j} [m + S_ij − S_jj]₊`, or with `hardest`, only the
/// largest violation per row and per column (summed, not averaged).
///
/// # Shapes
/// scores: `[B, B]` -> `[1]`.
pub fn triplet_loss(scores: Tensor<2>, margin: f64, hardest: bool) -> Tensor<1> {
    let [b, _] = scores.dims();
    let device = scores.device();
    let diag = (scores.clone() * Tensor::<2>::eye(b, &device)).sum_dim(1); // [B, 1]
    let off_diagonal = Tensor::<2>::eye(b, &device).neg().add_scalar(1.0);
    // Rows: an image against the other captions; columns: a caption against the other images.
    let cost_s = (scores.clone() - diag.clone()).add_scalar(margin).clamp_min(0.0) * off_diagonal.clone();
    let cost_im = (scores - diag.transpose()).add_scalar(margin).clamp_min(0.0) * off_diagonal;
    if hardest { cost_s.max_dim(1).sum() + cost_im.max_dim(0).sum() } else { cost_s.sum() + cost_im.sum() }
}

/// Hugging Face's ignore index of `labels`: positions with this target add nothing to the loss.
pub const IGNORE_INDEX: i64 = -100;

/// Token-level cross-entropy of a decoder, averaged over the target tokens that are not
/// [`IGNORE_INDEX`] (padding), as `CrossEntropyLoss(ignore_index=-100)` on
/// `logits.view(-1, V)` in Hugging Face's BART and T5.
///
/// # Shapes
/// logits: `[B, T, V]`, targets: `[B, T]` (token ids or −100) -> `[1]`.
pub fn seq2seq_cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let keep = targets.clone().not_equal_elem(IGNORE_INDEX).float().reshape([b * t, 1]);
    let safe = targets.clamp_min(0).reshape([b * t, 1]);
    let log_p = log_softmax(logits.reshape([b * t, v]), 1).gather(1, safe);
    let count = keep.clone().sum().clamp_min(1.0);
    (log_p * keep).sum().neg() / count
}

/// Exact-match accuracy (%) of generated token sequences against references (each compared
/// up to its end-of-sequence; a VQA answer generated as text, VL-T5-style).
pub fn exact_match(generated: &[Vec<usize>], references: &[Vec<usize>]) -> f64 {
    assert_eq!(generated.len(), references.len(), "one reference per generated sequence");
    if generated.is_empty() {
        return 0.0;
    }
    100.0 * generated.iter().zip(references).filter(|(g, r)| g == r).count() as f64 / generated.len() as f64
}

/// Recall@K of a retrieval evaluation, in %.
#[derive(Clone, Debug, PartialEq)]
pub struct Recall {
    /// The `K`s, in order.
    pub ks: Vec<usize>,
    /// Image → text: an image is a hit when any of its captions is among its top K.
    pub image_to_text: Vec<f64>,
    /// Text → image: a caption is a hit when its image is among its top K.
    pub text_to_image: Vec<f64>,
}

impl Recall {
    /// Sum of all recalls (VSE's `rsum`).
    pub fn rsum(&self) -> f64 {
        self.image_to_text.iter().chain(&self.text_to_image).sum()
    }
}

/// Recall@K in both directions from the `[images, texts]` score matrix (row-major) and the image
/// index of each text. Ties rank in index order.
///
/// # Panics
/// If the matrix is not `images × text_image.len()` or a text names an image out of range.
pub fn retrieval_recall(scores: &[f32], images: usize, text_image: &[usize], ks: &[usize]) -> Recall {
    let texts = text_image.len();
    assert_eq!(scores.len(), images * texts, "scores are [images, texts]");
    assert!(text_image.iter().all(|&i| i < images), "text image index out of range");
    let order = |values: Vec<(usize, f32)>| {
        let mut v = values;
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(i, _)| i).collect::<Vec<_>>()
    };
    // 0-based rank of the best hit per query.
    let i2t: Vec<usize> = (0..images)
        .map(|i| {
            let ranked = order((0..texts).map(|t| (t, scores[i * texts + t])).collect());
            ranked.iter().position(|&t| text_image[t] == i).unwrap_or(usize::MAX)
        })
        .collect();
    let t2i: Vec<usize> = (0..texts)
        .map(|t| {
            let ranked = order((0..images).map(|i| (i, scores[i * texts + t])).collect());
            ranked.iter().position(|&i| i == text_image[t]).unwrap_or(usize::MAX)
        })
        .collect();
    let pct = |ranks: &[usize], k: usize| 100.0 * ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64;
    Recall {
        ks: ks.to_vec(),
        image_to_text: ks.iter().map(|&k| pct(&i2t, k)).collect(),
        text_to_image: ks.iter().map(|&k| pct(&t2i, k)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn device() -> Device {
        crate::device::device_from_name("flex").expect("flex")
    }

    fn t2(v: Vec<f32>, rows: usize, cols: usize) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, [rows, cols]), &device())
    }

    fn scalar(t: Tensor<1>) -> f64 {
        f64::from(t.into_scalar::<f32>())
    }

    #[test]
    fn vqa_bce_is_a_sum_over_answers_and_a_mean_over_questions() {
        let (x, y) = (vec![2.0f32, -1.0, 0.5, 0.0, 3.0, -2.0], vec![1.0f32, 0.0, 0.3, 0.0, 0.6, 1.0]);
        let expected: f64 = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                let p = 1.0 / (1.0 + (-f64::from(x)).exp());
                -(f64::from(y) * p.ln() + (1.0 - f64::from(y)) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / 2.0;
        let ours = scalar(vqa_soft_bce(t2(x, 2, 3), t2(y, 2, 3)));
        assert!((ours - expected).abs() < 1e-5, "{ours} vs {expected}");
        // Stable far from zero.
        assert!(scalar(vqa_soft_bce(t2(vec![80.0, -80.0], 1, 2), t2(vec![1.0, 0.0], 1, 2))).abs() < 1e-6);
    }

    #[test]
    fn vqa_score_takes_the_target_of_the_argmax() {
        let logits = [0.1, 0.9, 0.2, 0.7, 0.3, 0.0];
        let targets = [0.0, 0.6, 1.0, 0.3, 1.0, 0.0];
        assert!((vqa_score(&logits, &targets, 3) - 45.0).abs() < 1e-4);
    }

    #[test]
    fn infonce_matches_cross_entropy_by_hand() {
        let v = vec![3.0f32, 1.0, 0.0, 0.5, 2.0, 1.0, -1.0, 0.0, 1.5];
        let m = |i: usize, j: usize| f64::from(v[i * 3 + j]);
        let ce = |f: &dyn Fn(usize) -> f64, target: f64| -(target - (0..3).map(|k| f(k).exp()).sum::<f64>().ln());
        let rows: f64 = (0..3).map(|i| ce(&|k| m(i, k), m(i, i))).sum::<f64>() / 3.0;
        let cols: f64 = (0..3).map(|j| ce(&|k| m(k, j), m(j, j))).sum::<f64>() / 3.0;
        let ours = scalar(symmetric_infonce(t2(v, 3, 3)));
        assert!((ours - (rows + cols) / 2.0).abs() < 1e-5, "{ours}");
    }

    #[test]
    fn triplet_sums_violations_or_takes_the_hardest() {
        // S: positives on the diagonal.
        let s = vec![0.9f32, 0.8, 0.1, 0.5, 0.6, 0.7, 0.2, 0.0, 0.4];
        // Rows (image i vs captions j≠i, margin 0.2): [0.1, 0], [0.1, 0.3], [0, 0];
        // columns (caption j vs images i≠j): [0, 0], [0.4, 0], [0, 0.5].
        let all = scalar(triplet_loss(t2(s.clone(), 3, 3), 0.2, false));
        assert!((all - 1.4).abs() < 1e-5, "{all}");
        let hardest = scalar(triplet_loss(t2(s, 3, 3), 0.2, true));
        assert!((hardest - (0.1 + 0.3 + 0.4 + 0.5)).abs() < 1e-5, "{hardest}");
    }

    #[test]
    fn seq2seq_cross_entropy_skips_ignored_positions() {
        // B = 1, T = 3, V = 2; the last position is padding.
        let logits =
            Tensor::<3>::from_data(TensorData::new(vec![2.0f32, 0.0, 0.0, 1.0, 5.0, -5.0], [1, 3, 2]), &device());
        let targets = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, IGNORE_INDEX], [1, 3]), &device());
        let nll = |x: f64, other: f64| -(x - (x.exp() + other.exp()).ln());
        let expected = (nll(2.0, 0.0) + nll(1.0, 0.0)) / 2.0;
        let ours = scalar(seq2seq_cross_entropy(logits, targets));
        assert!((ours - expected).abs() < 1e-5, "{ours} vs {expected}");
        assert_eq!(exact_match(&[vec![1, 2], vec![3]], &[vec![1, 2], vec![4]]), 50.0);
    }

    #[test]
    fn recall_on_a_three_by_six_matrix_with_known_images() {
        // Texts 0,1 → image 0; 2,3 → image 1; 4,5 → image 2.
        let text_image = [0, 0, 1, 1, 2, 2];
        #[rustfmt::skip]
        let scores = [
            0.9, 0.1, 0.8, 0.2, 0.0, 0.0, // image 0: best text 0 (its own)
            0.7, 0.6, 0.1, 0.2, 0.9, 0.0, // image 1: ranks 4, 0, 1, 3, 2, 5 → first own at rank 3
            0.0, 0.2, 0.3, 0.1, 0.4, 0.5, // image 2: best text 5 (its own)
        ];
        let r = retrieval_recall(&scores, 3, &text_image, &[1, 5]);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
        assert!(close(&r.image_to_text, &[200.0 / 3.0, 100.0]), "{r:?}");
        // Texts: 0 → image 0 first (hit); 1 → image 1 (0.6) over 0 (0.1): miss at 1; 2 → image 0
        // (0.8) first: miss; 3 → image 1 (0.2) ties image 0 (0.2): index order puts 0 first: miss;
        // 4 → image 1 first: miss; 5 → image 2 first: hit.
        assert!(close(&r.text_to_image, &[200.0 / 6.0, 100.0]), "{r:?}");
        assert!((r.rsum() - (200.0 / 3.0 + 100.0 + 200.0 / 6.0 + 100.0)).abs() < 1e-9);
    }
}
