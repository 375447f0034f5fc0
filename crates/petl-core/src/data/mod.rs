//! Data: raw files → [`ImageDataset`] (typed samples) → [`batch`] (tensors on a device).
//!
//! - [`arrow`]: the Apache Arrow IPC files of ViLT/METER (VQAv2, NLVR2, Flickr30K).
//! - [`vtab`]: VTAB-1k folders (`<root>/<task>/{train800,val200,train800val200,test}.txt`).
//! - [`fgvc`]: FGVC json splits (CUB, NABirds, Oxford Flowers, Stanford Dogs, Stanford Cars).
//! - [`preprocess`]: decoding and the papers' resize / crop / flip / normalisation.
//! - [`shapes`]: the procedural, seedable shapes world of the embedded default.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;

use self::preprocess::{Preprocess, load_image};

pub mod arrow;
pub mod arrow_samples;
pub mod fgvc;
pub mod hf_image;
pub mod preprocess;
pub mod shapes;
pub mod text;
pub mod vl;
pub mod vl_views;
pub mod vtab;

/// One preprocessed image and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSample {
    /// Normalised pixels, `[3, H, W]` row-major (CHW).
    pub image: Vec<f32>,
    /// Class index in `0..num_classes`.
    pub label: usize,
}

/// A random-access source of typed samples: Burn's `Dataset` (`get`, `len`) with a per-sample
/// augmentation seed, so that training-time augmentation is reproducible and a resumed run sees
/// the same views. Every task's data implements it ([`ImageDataset`]: `Samples<ImageSample>`;
/// the vision–language data of [`shapes::language`]: `Samples<VlSample>`).
pub trait Samples<I>: Send + Sync {
    /// Human-readable name (task name).
    fn name(&self) -> &str;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether the dataset is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index`. `augment` carries a per-sample seed when training-time augmentation
    /// (random crop, flip) should be applied; `None` gives the deterministic evaluation view.
    ///
    /// # Errors
    /// A sample that cannot be read (the file named) or an index out of range.
    fn get(&self, index: usize, augment: Option<u64>) -> crate::Result<I>;
}

/// A labelled image dataset.
pub trait ImageDataset: Samples<ImageSample> {
    /// Number of classes `K`.
    fn num_classes(&self) -> usize;
    /// Side of the square images produced.
    fn image_size(&self) -> usize;
}

/// One SplitMix64 output for state `x` (Steele, Lea, Flood 2014): the seed mixer of the shapes
/// world's samples and of the training loop's per-epoch RNG seeds.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds the bytes of `texts` into the state `h` with [`splitmix64`]: a seed that follows a
/// batch's content (the same batch draws the same negatives or masks on every run and resume).
pub(crate) fn fold_texts<'a>(mut h: u64, texts: impl IntoIterator<Item = &'a str>) -> u64 {
    for text in texts {
        for b in text.bytes() {
            h = splitmix64(h ^ u64::from(b));
        }
    }
    h
}

/// `root/rel` for a path read from a list or annotation file, when `rel` is relative and stays
/// inside `root` (no absolute path, no `..` climbing above it; symbolic links are not followed
/// here). A file that names `../../etc/passwd` gets an error, not that file.
pub(crate) fn path_inside(root: &Path, rel: &str) -> std::result::Result<PathBuf, String> {
    use std::path::Component;
    let mut depth = 0usize;
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir => return Err(format!("path '{rel}' leaves {}", root.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path '{rel}' is absolute; paths are relative to {}", root.display()));
            }
        }
    }
    Ok(root.join(rel))
}

/// A task whose samples are image files on disk (VTAB-1k, FGVC).
pub trait FileTask: Copy + std::fmt::Display + Send + Sync {
    /// Folder name of the task under the dataset root.
    fn folder(self) -> &'static str;
    /// Number of classes `K`.
    fn num_classes(self) -> usize;
}

/// One split of a file-based task: `(image file, label)` pairs, checked when opened (see
/// `VtabDataset::open`, `FgvcDataset::open`), decoded and preprocessed lazily in `get`.
#[derive(Clone, Debug)]
pub struct FileDataset<T> {
    task: T,
    preprocess: Preprocess,
    samples: Vec<(PathBuf, usize)>,
}

impl<T: FileTask> FileDataset<T> {
    pub(crate) fn new(task: T, preprocess: Preprocess, samples: Vec<(PathBuf, usize)>) -> Self {
        Self { task, preprocess, samples }
    }

    /// The task.
    pub fn task(&self) -> T {
        self.task
    }

    /// The view applied by [`ImageDataset::get`].
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// `(absolute image path, label)` in file order (list-file lines, JSON keys).
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// The split without its samples whose image cannot be decoded, when they are at most
    /// `max_fraction` of it (at least one may always be skipped): the kept split and `(file,
    /// reason)` of every skipped sample, in file order (deterministic: every image is decoded
    /// once, in parallel, and the failures are listed in file order).
    ///
    /// # Errors
    /// More unreadable images than allowed (the count and the first one named), or no readable
    /// one left.
    pub fn skip_unreadable(self, max_fraction: f64) -> crate::Result<(Self, Vec<(PathBuf, String)>)> {
        use rayon::prelude::*;
        let failures: Vec<Option<String>> =
            self.samples.par_iter().map(|(p, _)| preprocess::decode_rgb(p).err().map(|e| e.to_string())).collect();
        let skipped: Vec<(PathBuf, String)> = self
            .samples
            .iter()
            .zip(&failures)
            .filter_map(|((p, _), f)| f.clone().map(|reason| (p.clone(), reason)))
            .collect();
        let allowed = ((self.samples.len() as f64 * max_fraction).floor() as usize).max(1);
        if skipped.len() > allowed {
            return Err(crate::Error::Config(format!(
                "{}: {} of {} images cannot be read, more than the {allowed} that skipping allows; first: {}",
                self.task.folder(),
                skipped.len(),
                self.samples.len(),
                skipped[0].1
            )));
        }
        let samples: Vec<(PathBuf, usize)> =
            self.samples.into_iter().zip(&failures).filter(|(_, f)| f.is_none()).map(|(s, _)| s).collect();
        if samples.is_empty() {
            return Err(crate::Error::Config(format!("{}: no readable image left", self.task.folder())));
        }
        Ok((Self { samples, ..self }, skipped))
    }
}

impl<T: FileTask> Samples<ImageSample> for FileDataset<T> {
    fn name(&self) -> &str {
        self.task.folder()
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize, augment: Option<u64>) -> crate::Result<ImageSample> {
        let (path, label) = self.samples.get(index).ok_or_else(|| {
            crate::Error::Config(format!("{}: sample index {index} out of range 0..{}", self.task, self.samples.len()))
        })?;
        Ok(ImageSample { image: load_image(path, &self.preprocess, augment)?, label: *label })
    }
}

impl<T: FileTask> ImageDataset for FileDataset<T> {
    fn num_classes(&self) -> usize {
        self.task.num_classes()
    }

    fn image_size(&self) -> usize {
        self.preprocess.size() as usize
    }
}

/// Stacks samples into `images [B, 3, S, S]` and `labels [B]` on `device`.
///
/// # Panics
/// If `samples` is empty or the images differ in size from `size`.
pub fn batch(samples: &[ImageSample], size: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    assert!(!samples.is_empty(), "empty batch");
    let mut pixels = Vec::with_capacity(samples.len() * 3 * size * size);
    for s in samples {
        assert_eq!(s.image.len(), 3 * size * size, "image size");
        pixels.extend_from_slice(&s.image);
    }
    let labels: Vec<i64> = samples.iter().map(|s| s.label as i64).collect();
    let images = Tensor::from_data(TensorData::new(pixels, [samples.len(), 3, size, size]), device);
    let labels = Tensor::from_data(TensorData::new(labels, [samples.len()]), device);
    (images, labels)
}
