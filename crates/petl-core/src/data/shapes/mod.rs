//! The *shapes world*: a procedural, deterministic, seedable image generator that stands in for
//! the real datasets in the embedded default (guide section 3).
//!
//! - [`shape`]: shape kinds, named colours, posed objects with area and bounding box.
//! - [`scene`]: the scene model (background, objects, colour cast, pixel noise) and its random
//!   samplers; rich enough for questions, captions and referring expressions, which build on
//!   the same scenes.
//! - [`render`](mod@render): the supersampled rasteriser, scene → CHW pixels in `[0, 1]`.
//! - [`tasks`]: classification tasks in VTAB's three groups plus a pretraining task.
//! - [`language`]: generated captions, questions, statements, referring expressions and
//!   retrieval pairs over the same scenes, the vision–language tasks ([`ShapesVl`]).
//! - [`ShapesDataset`]: a task as an [`ImageDataset`].
//!
//! | task | group | K | label |
//! |---|---|---|---|
//! | `object` | natural | 7 | kind of the largest object; 2–5 small distractors |
//! | `colour` | natural | 8 | colour of the largest object; 1–3 others up to 60 % of its area |
//! | `scene_pair` | natural | 15 | unordered pair of the kinds of two medium objects |
//! | `texture` | specialized | 6 | background texture (plain, 3 stripe directions, checker, dots) |
//! | `tint` | specialized | 5 | colour cast: neutral, warm, cool, dark, faded |
//! | `count` | structured | 6 | number of objects, 1–6 |
//! | `distance` | structured | 5 | centre distance of two objects, bins over 0.2–0.8 |
//! | `orientation` | structured | 8 | bar angle mod 180°, bins of 22.5° |
//! | `location_x` | structured | 8 | x of one small object, bins over 0.1–0.9 |
//! | `location_y` | structured | 8 | y of one small object, bins over 0.1–0.9 |
//! | `pretrain` | — | 56 | kind × colour of the largest object |
//!
//! Every downstream task varies backgrounds (hue, texture, illumination gradient), casts and
//! noise as nuisances; `pretrain` teaches shapes and colours but none of the structured
//! quantities, so the structured group is where adaptation must do the work, as on VTAB.

pub mod language;
pub mod render;
pub mod scene;
pub mod shape;
pub mod tasks;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use language::{
    CAPTION_PROMPT, CAPTIONS_PER_IMAGE, SPECIAL_TOKENS, ShapesVl, ShapesVlExample, VlTask, answer_vocab, split_words,
    word_tokenizer, word_vocab,
};
pub use render::{png_grid, render, save_png_grid};
pub use scene::{Background, BackgroundConfig, Cast, ObjectConfig, Scene, SceneConfig, Texture, Tint};
pub use shape::{BBox, Colour, SceneObject, ShapeKind};
pub use tasks::ShapesTask;

use super::preprocess::Normalization;
use super::{ImageDataset, ImageSample, Samples, splitmix64};
use crate::{Error, Result};

/// `len` generated samples of a [`ShapesTask`] at `size × size` pixels.
///
/// Sample `i` is a pure function of `(seed, task, i)`, generated on demand in
/// [`get`](ImageDataset::get) (nothing is cached or written). Labels cycle through the classes
/// (`label = i mod K`), so any contiguous range of indices is balanced. Disjoint splits use
/// different seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapesDataset {
    task: ShapesTask,
    len: usize,
    size: usize,
    seed: u64,
    norm: Normalization,
}

impl ShapesDataset {
    /// `len` samples of `task` at `size` px from `seed`, normalised with ImageNet statistics.
    pub fn new(task: ShapesTask, len: usize, size: usize, seed: u64) -> Self {
        ShapesDataset { task, len, size, seed, norm: Normalization::Imagenet }
    }

    /// The same samples with another normalisation.
    pub fn with_norm(self, norm: Normalization) -> Self {
        ShapesDataset { norm, ..self }
    }

    /// The task.
    pub fn task(&self) -> ShapesTask {
        self.task
    }

    /// Label of sample `index`.
    pub fn label(&self, index: usize) -> usize {
        index % self.task.num_classes()
    }

    /// The scene of sample `index` (any index; [`get`](ImageDataset::get) checks the range).
    pub fn scene(&self, index: usize) -> Scene {
        let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, self.task.name(), index));
        self.task.sample_scene(&mut rng, self.label(index))
    }
}

impl ImageDataset for ShapesDataset {
    fn num_classes(&self) -> usize {
        self.task.num_classes()
    }

    fn image_size(&self) -> usize {
        self.size
    }
}

impl Samples<ImageSample> for ShapesDataset {
    fn name(&self) -> &str {
        self.task.name()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Renders and normalises sample `index`. `augment` is ignored: the generator already
    /// varies every nuisance, and flips or crops would change the labels of the structured
    /// tasks (location, orientation).
    fn get(&self, index: usize, _augment: Option<u64>) -> Result<ImageSample> {
        if index >= self.len {
            return Err(Error::Config(format!("shapes/{}: index {index} out of range 0..{}", self.task, self.len)));
        }
        let mut image = render(&self.scene(index), self.size);
        self.norm.apply(&mut image);
        Ok(ImageSample { image, label: self.label(index) })
    }
}

/// The RNG seed of sample `index` of the task named `name` under `seed`: SplitMix64 steps over
/// the seed, an FNV-1a hash of the name (stable under reordering of the task enums) and the
/// index. Shared by the classification tasks and the generated language.
pub(super) fn sample_seed(seed: u64, name: &str, index: usize) -> u64 {
    let name_hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    [name_hash, index as u64].into_iter().fold(splitmix64(seed), |h, v| splitmix64(h ^ v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_samples_other_seed_other_pixels() {
        for task in ShapesTask::ALL {
            let (a, b, c) = (
                ShapesDataset::new(task, 4, 32, 7),
                ShapesDataset::new(task, 4, 32, 7),
                ShapesDataset::new(task, 4, 32, 8),
            );
            for i in 0..4 {
                let (sa, sb, sc) = (a.get(i, None).unwrap(), b.get(i, None).unwrap(), c.get(i, None).unwrap());
                assert_eq!(sa, sb, "{task} #{i}");
                assert_eq!(sa.label, sc.label);
                assert_ne!(sa.image, sc.image, "{task} #{i}");
                assert_eq!(a.get(i, Some(99)).unwrap(), sa, "augment is ignored");
            }
            let other_task = ShapesDataset::new(ShapesTask::Pretrain, 1, 32, 7).scene(0);
            if task != ShapesTask::Pretrain {
                assert_ne!(a.scene(0), other_task, "tasks draw independent scenes");
            }
        }
    }

    #[test]
    fn every_class_appears_in_200_samples_with_its_scene_label() {
        for task in ShapesTask::DOWNSTREAM {
            let data = ShapesDataset::new(task, 200, 16, 1);
            let mut seen = vec![0usize; task.num_classes()];
            for i in 0..data.len() {
                let label = data.label(i);
                assert_eq!(task.label(&data.scene(i)), Some(label), "{task} #{i}");
                seen[label] += 1;
            }
            assert!(seen.iter().all(|&n| n > 0), "{task}: {seen:?}");
        }
    }

    #[test]
    fn samples_are_normalised_chw_images() {
        let data = ShapesDataset::new(ShapesTask::Count, 3, 24, 0);
        assert_eq!((data.name(), data.num_classes(), data.image_size()), ("count", 6, 24));
        let (mean, std) = Normalization::Imagenet.mean_std();
        for i in 0..3 {
            let sample = data.get(i, None).unwrap();
            assert_eq!(sample.image.len(), 3 * 24 * 24);
            assert!(sample.label < 6);
            for (c, plane) in sample.image.chunks_exact(24 * 24).enumerate() {
                let (lo, hi) = (-mean[c] / std[c], (1.0 - mean[c]) / std[c]);
                assert!(plane.iter().all(|v| (lo - 1e-5..=hi + 1e-5).contains(v)), "channel {c}");
            }
        }
        let half = data.with_norm(Normalization::Half).get(0, None).unwrap();
        assert!(half.image.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(matches!(data.get(3, None), Err(Error::Config(_))));
    }
}
