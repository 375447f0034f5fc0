//! Vision–language samples: one text, one or more images and a task-specific target, the unit
//! every image–text task trains on (VQA, NLVR2-style true/false statements over image pairs,
//! referring expressions, captioning, image–text retrieval).
//!
//! Datasets implement [`Samples<VlSample>`](super::Samples); the embedded default is the
//! generated language of the shapes world ([`ShapesVl`](super::shapes::language::ShapesVl)).
//! [`soft_scores`] and [`stack_images`] turn a batch of samples into the dense tensors the
//! models read.

use burn::prelude::*;
use burn::tensor::TensorData;

/// One image–text sample.
#[derive(Clone, Debug, PartialEq)]
pub struct VlSample {
    /// The text: a question, a statement, a referring expression, a caption, or a prompt.
    pub text: String,
    /// One or more images (two for NLVR2-style pairs), each normalised `[3, H, W]` row-major
    /// (CHW), normalised like [`ImageSample`](super::ImageSample).
    pub images: Vec<Vec<f32>>,
    /// What the model should produce.
    pub target: VlTarget,
}

/// The target of a [`VlSample`], by task.
#[derive(Clone, Debug, PartialEq)]
pub enum VlTarget {
    /// VQA soft scores (VQAv2-style): `(answer index, score in [0, 1])` for every answer that
    /// earns credit; [`soft_scores`] makes the dense row.
    Answers(Vec<(usize, f32)>),
    /// A class index, e.g. NLVR2's false (0) / true (1).
    Class(usize),
    /// Target text of a sequence-to-sequence task: a caption or a generated answer.
    Text(String),
    /// A referring expression's box `[x0, y0, x1, y1]`, in `[0, 1]` image coordinates (`x`
    /// to the right, `y` downwards).
    Box([f32; 4]),
    /// Retrieval: the id of the image the text belongs to (several texts may share one).
    Match(usize),
}

/// The dense VQA target row of `answers` over a vocabulary of `vocab` answers: zero everywhere
/// except the listed answers, which get their score (the largest one when an answer is listed
/// twice).
///
/// # Panics
/// If an answer index is not below `vocab`.
pub fn soft_scores(answers: &[(usize, f32)], vocab: usize) -> Vec<f32> {
    let mut row = vec![0.0f32; vocab];
    for &(answer, score) in answers {
        assert!(answer < vocab, "answer index {answer} out of range 0..{vocab}");
        row[answer] = row[answer].max(score);
    }
    row
}

/// Stacks image `which` of every sample into `[B, 3, S, S]` on `device`, as
/// [`batch`](super::batch) does for [`ImageSample`](super::ImageSample)s.
///
/// # Panics
/// If `samples` is empty, a sample has no image `which`, or an image is not `3 × size × size`.
pub fn stack_images(samples: &[VlSample], which: usize, size: usize, device: &Device) -> Tensor<4> {
    assert!(!samples.is_empty(), "empty batch");
    let mut pixels = Vec::with_capacity(samples.len() * 3 * size * size);
    for (i, s) in samples.iter().enumerate() {
        let image = s.images.get(which).unwrap_or_else(|| {
            panic!("sample {i} has {} image(s), no image {which}", s.images.len());
        });
        assert_eq!(image.len(), 3 * size * size, "sample {i}: image size");
        pixels.extend_from_slice(image);
    }
    Tensor::from_data(TensorData::new(pixels, [samples.len(), 3, size, size]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        crate::device::device_from_name("flex").expect("flex")
    }

    #[test]
    fn soft_scores_are_dense_rows() {
        assert_eq!(soft_scores(&[(2, 1.0)], 4), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(soft_scores(&[(0, 0.3), (3, 0.6), (0, 0.9)], 4), vec![0.9, 0.0, 0.0, 0.6]);
        assert_eq!(soft_scores(&[], 2), vec![0.0; 2]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn soft_scores_reject_unknown_answers() {
        soft_scores(&[(4, 1.0)], 4);
    }

    #[test]
    fn stack_images_picks_one_image_per_sample() {
        let size = 2;
        let sample = |v: f32| VlSample {
            text: String::new(),
            images: vec![vec![v; 12], vec![v + 10.0; 12]],
            target: VlTarget::Class(0),
        };
        let samples = [sample(1.0), sample(2.0), sample(3.0)];
        for which in 0..2 {
            let t = stack_images(&samples, which, size, &device());
            assert_eq!(t.dims(), [3, 3, size, size]);
            let values = t.into_data().try_to_vec::<f32>().unwrap();
            let expected: Vec<f32> = [1.0, 2.0, 3.0].iter().flat_map(|&v| vec![v + 10.0 * which as f32; 12]).collect();
            assert_eq!(values, expected);
        }
    }
}
