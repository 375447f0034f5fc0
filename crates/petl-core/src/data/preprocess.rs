//! Image decoding and the papers' preprocessing (the official ARC/NOAH data loaders).
//!
//! Every view is: decode (any mode → RGB8) → geometry ([`Preprocess`]: resize, crop, flip) →
//! float CHW in `[0, 1]` → per-channel normalisation ([`Normalization`]).
//!
//! Resampling uses the `image` crate, which widens the kernel support by the down-scale factor
//! (antialiasing), as PIL does. Like PIL, the horizontal pass runs first and its result is
//! rounded and clamped to `u8` before the vertical pass (a single `image` resize filters
//! vertically first and keeps the intermediate in `f32`, which differs from PIL by up to 5/255
//! next to sharp edges where the bicubic undershoots). Rounding still differs from PIL's fixed
//! point, so parity is checked with a tolerance of 2/255.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{ImageReader, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Per-channel normalisation applied after scaling pixels to `[0, 1]` (ImageNet statistics for
/// VTAB, as the official code uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): the official code's
    /// choice for every backbone and the project default.
    #[default]
    Imagenet,
    /// Mean 0.5 and std 0.5, i.e. inputs in `[-1, 1]`, what the Google IN-21k ViTs were trained on.
    Half,
    /// CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258,
    /// 0.27577711) (METER's image tower).
    Clip,
}

impl Normalization {
    /// Per-channel `(mean, std)` in RGB order.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalization::Imagenet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalization::Half => ([0.5; 3], [0.5; 3]),
            Normalization::Clip => {
                ([0.481_454_66, 0.457_827_5, 0.408_210_73], [0.268_629_54, 0.261_302_58, 0.275_777_1])
            }
        }
    }

    /// Normalises CHW pixels in `[0, 1]` in place: `(x - mean[c]) / std[c]`.
    ///
    /// A trailing remainder that is not a whole number of channel planes is left untouched, so
    /// callers should pass exactly `3 * H * W` values.
    pub fn apply(self, chw: &mut [f32]) {
        let (mean, std) = self.mean_std();
        let plane = chw.len() / 3;
        if plane == 0 {
            return;
        }
        for (c, values) in chw.chunks_exact_mut(plane).take(3).enumerate() {
            for v in values {
                *v = (*v - mean[c]) / std[c];
            }
        }
    }
}

/// The geometric part of a view plus its normalisation.
///
/// Serialised with a `kind` tag, e.g. `{"kind": "vtab", "size": 224, "norm": "imagenet"}`;
/// `norm` may be omitted (ImageNet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Preprocess {
    /// VTAB-1k, train and test: resize to exactly `size × size` (aspect ratio not kept) with
    /// [`FilterType::CatmullRom`], the Keys cubic with a = −0.5 and support scaled by the
    /// down-scale factor, i.e. PIL's antialiased `BICUBIC`. Never augmented.
    Vtab {
        /// Output side.
        size: u32,
        /// Normalisation.
        #[serde(default)]
        norm: Normalization,
    },
    /// FGVC training: resize the shorter side to `resize` (bilinear, antialiased; the longer
    /// side is `⌊resize · long / short⌋` as in torchvision), then, when an augmentation seed is
    /// given, a uniformly random `size × size` crop and a horizontal flip with p = 0.5. Without a
    /// seed it gives the [`Preprocess::FgvcEval`] view.
    FgvcTrain {
        /// Output side (crop size).
        size: u32,
        /// Shorter side after the resize.
        resize: u32,
        /// Normalisation.
        #[serde(default)]
        norm: Normalization,
    },
    /// FGVC evaluation: resize the shorter side to `resize` (bilinear, antialiased), then the
    /// centre `size × size` crop (offsets rounded half-to-even, as torchvision). Ignores seeds.
    FgvcEval {
        /// Output side (crop size).
        size: u32,
        /// Shorter side after the resize.
        resize: u32,
        /// Normalisation.
        #[serde(default)]
        norm: Normalization,
    },
}

impl Preprocess {
    /// The VTAB view of side `size` with ImageNet normalisation.
    pub fn vtab(size: u32) -> Self {
        Preprocess::Vtab { size, norm: Normalization::Imagenet }
    }

    /// The FGVC training view of side `size`, resizing to `round(size · 256 / 224)` first
    /// (256 for 224), ImageNet normalisation.
    pub fn fgvc_train(size: u32) -> Self {
        Preprocess::FgvcTrain { size, resize: fgvc_resize(size), norm: Normalization::Imagenet }
    }

    /// The FGVC evaluation view of side `size`, resizing to `round(size · 256 / 224)` first
    /// (256 for 224), ImageNet normalisation.
    pub fn fgvc_eval(size: u32) -> Self {
        Preprocess::FgvcEval { size, resize: fgvc_resize(size), norm: Normalization::Imagenet }
    }

    /// The same view with normalisation `norm`.
    pub fn with_norm(self, norm: Normalization) -> Self {
        match self {
            Preprocess::Vtab { size, .. } => Preprocess::Vtab { size, norm },
            Preprocess::FgvcTrain { size, resize, .. } => Preprocess::FgvcTrain { size, resize, norm },
            Preprocess::FgvcEval { size, resize, .. } => Preprocess::FgvcEval { size, resize, norm },
        }
    }

    /// Side of the square output image.
    pub fn size(&self) -> u32 {
        match *self {
            Preprocess::Vtab { size, .. } | Preprocess::FgvcTrain { size, .. } | Preprocess::FgvcEval { size, .. } => {
                size
            }
        }
    }

    /// The normalisation of this view.
    pub fn norm(&self) -> Normalization {
        match *self {
            Preprocess::Vtab { norm, .. } | Preprocess::FgvcTrain { norm, .. } | Preprocess::FgvcEval { norm, .. } => {
                norm
            }
        }
    }

    /// Checks that the view can be produced: `size > 0` and, for FGVC, `resize >= size`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Preprocess::Vtab { size: 0, .. }
            | Preprocess::FgvcTrain { size: 0, .. }
            | Preprocess::FgvcEval { size: 0, .. } => Err(Error::Config("preprocess: size must be positive".into())),
            Preprocess::FgvcTrain { size, resize, .. } | Preprocess::FgvcEval { size, resize, .. } if resize < size => {
                Err(Error::Config(format!("preprocess: resize {resize} is smaller than the crop size {size}")))
            }
            _ => Ok(()),
        }
    }
}

fn fgvc_resize(size: u32) -> u32 {
    ((u64::from(size) * 256 + 112) / 224) as u32
}

/// Largest side of a decoded image: a header claiming more is refused before any pixel buffer
/// exists (a 48 KB 1-bit PNG can claim 20000 × 20000).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest pixel count of a decoded image (2^24: 4096 × 4096).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 24;

/// Decodes an image file (format guessed from its content) and converts any mode to RGB8.
/// Images whose header claims more than [`MAX_IMAGE_SIDE`] per side or [`MAX_IMAGE_PIXELS`]
/// pixels are refused before decoding (image bombs).
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened, [`Error::Image`] if it cannot be decoded, is
/// empty or too large; both name `path`.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    use image::ImageDecoder as _;
    let mut reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let image_err = |e: image::ImageError| Error::Image { path: path.to_path_buf(), msg: e.to_string() };
    let decoder = reader.into_decoder().map_err(image_err)?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(Error::Image {
            path: path.to_path_buf(),
            msg: format!("{w} x {h} pixels, more than the {MAX_IMAGE_PIXELS} decoded (an image bomb?)"),
        });
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(image_err)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Image { path: path.to_path_buf(), msg: "the image is empty".into() });
    }
    Ok(img.to_rgb8())
}

/// Decodes every image of `paths` (in parallel) and returns the first failure in list order, so
/// that a data set whose files cannot all be read is refused before a run writes anything, not
/// in the middle of training.
///
/// # Errors
/// The first path (in order) that [`decode_rgb`] refuses, named.
pub fn check_images(paths: &[PathBuf]) -> Result<()> {
    use rayon::prelude::*;
    let failures: Vec<Error> = paths.par_iter().filter_map(|p| decode_rgb(p).err()).collect();
    failures.into_iter().next().map_or(Ok(()), Err)
}

/// The geometric part of `pre`: resize, crop and flip, giving a `size × size` RGB image.
/// `augment` seeds the random crop and flip of [`Preprocess::FgvcTrain`] (deterministically:
/// same seed, same output); it is ignored by the other views.
///
/// # Errors
/// [`Error::Config`] if `pre` is invalid ([`Preprocess::validate`]) or `img` is empty.
pub fn resize_crop(img: &RgbImage, pre: &Preprocess, augment: Option<u64>) -> Result<RgbImage> {
    pre.validate()?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Config("preprocess: empty image".into()));
    }
    match *pre {
        Preprocess::Vtab { size, .. } => Ok(resize_like_pil(img, size, size, FilterType::CatmullRom)),
        Preprocess::FgvcTrain { size, resize, .. } | Preprocess::FgvcEval { size, resize, .. } => {
            let img = resize_shorter_side(img, resize);
            let (dx, dy) = (img.width() - size, img.height() - size);
            match (pre, augment) {
                (Preprocess::FgvcTrain { .. }, Some(seed)) => {
                    let mut rng = StdRng::seed_from_u64(seed);
                    let top = rng.random_range(0..=dy);
                    let left = rng.random_range(0..=dx);
                    let mut out = imageops::crop_imm(&img, left, top, size, size).to_image();
                    if rng.random_bool(0.5) {
                        imageops::flip_horizontal_in_place(&mut out);
                    }
                    Ok(out)
                }
                _ => {
                    let (left, top) = (half_to_even(dx), half_to_even(dy));
                    Ok(imageops::crop_imm(&img, left, top, size, size).to_image())
                }
            }
        }
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `short`, the longer one
/// `⌊short · long / shorter⌋`; bilinear with antialiasing ([`FilterType::Triangle`]).
fn resize_shorter_side(img: &RgbImage, short: u32) -> RgbImage {
    let (w, h) = (u64::from(img.width()), u64::from(img.height()));
    let scaled = |long: u64, shorter: u64| (u64::from(short) * long / shorter).min(u64::from(u32::MAX)) as u32;
    let (nw, nh) = if w <= h { (short, scaled(h, w)) } else { (scaled(w, h), short) };
    resize_like_pil(img, nw, nh, FilterType::Triangle)
}

/// Separable resize in PIL's order: horizontal pass, `u8` intermediate, vertical pass. (A pass
/// whose side is unchanged is the identity in `image`: the kernels vanish at non-zero integers.)
pub(crate) fn resize_like_pil(img: &RgbImage, w: u32, h: u32, filter: FilterType) -> RgbImage {
    if w == img.width() {
        return imageops::resize(img, w, h, filter);
    }
    let wide = imageops::resize(img, w, img.height(), filter);
    if h == img.height() { wide } else { imageops::resize(&wide, w, h, filter) }
}

/// Python's `round(d / 2)` (ties to even), torchvision's centre-crop offset.
fn half_to_even(d: u32) -> u32 {
    (f64::from(d) / 2.0).round_ties_even() as u32
}

/// RGB8 → float CHW in `[0, 1]` (`ToTensor`).
pub fn to_chw_unit(img: &RgbImage) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(p.0[c]) / 255.0;
        }
    }
    out
}

/// Geometry of `pre` then [`to_chw_unit`]: `[3, size, size]` in `[0, 1]`, before normalisation.
///
/// # Errors
/// As [`resize_crop`].
pub fn preprocess_rgb_unit(img: &RgbImage, pre: &Preprocess, augment: Option<u64>) -> Result<Vec<f32>> {
    Ok(to_chw_unit(&resize_crop(img, pre, augment)?))
}

/// The full view: geometry, `[0, 1]` CHW, normalisation; `[3, size, size]` row-major.
///
/// # Errors
/// As [`resize_crop`].
pub fn preprocess_rgb(img: &RgbImage, pre: &Preprocess, augment: Option<u64>) -> Result<Vec<f32>> {
    let mut chw = preprocess_rgb_unit(img, pre, augment)?;
    pre.norm().apply(&mut chw);
    Ok(chw)
}

/// Decodes `path` and applies the full view ([`preprocess_rgb`]).
///
/// # Errors
/// As [`decode_rgb`] (naming `path`), and [`Error::Config`] if `pre` is invalid.
pub fn load_image(path: &Path, pre: &Preprocess, augment: Option<u64>) -> Result<Vec<f32>> {
    preprocess_rgb(&decode_rgb(path)?, pre, augment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbaImage};

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x * y) % 256) as u8]))
    }

    #[test]
    fn output_shapes() {
        let img = pattern(300, 200);
        for pre in [Preprocess::vtab(224), Preprocess::fgvc_train(224), Preprocess::fgvc_eval(224)] {
            for aug in [None, Some(3)] {
                let out = resize_crop(&img, &pre, aug).unwrap();
                assert_eq!(out.dimensions(), (224, 224), "{pre:?}");
                assert_eq!(preprocess_rgb(&img, &pre, aug).unwrap().len(), 3 * 224 * 224);
            }
        }
        let tall = pattern(20, 50);
        assert_eq!(resize_shorter_side(&tall, 256).dimensions(), (256, 640));
        assert_eq!(resize_shorter_side(&pattern(37, 23), 256).dimensions(), (411, 256));
        assert_eq!(resize_crop(&pattern(5, 9), &Preprocess::vtab(16), None).unwrap().dimensions(), (16, 16));
    }

    #[test]
    fn fgvc_defaults_and_validation() {
        assert_eq!(
            Preprocess::fgvc_eval(224),
            Preprocess::FgvcEval { size: 224, resize: 256, norm: Normalization::Imagenet }
        );
        let bad = Preprocess::FgvcTrain { size: 224, resize: 200, norm: Normalization::Half };
        let err = resize_crop(&pattern(8, 8), &bad, None).unwrap_err().to_string();
        assert!(err.contains("resize 200"), "{err}");
        assert!(Preprocess::vtab(0).validate().is_err());
        assert!(resize_crop(&RgbImage::new(0, 4), &Preprocess::vtab(4), None).is_err());
    }

    #[test]
    fn augmentation_is_deterministic_and_varies() {
        let img = pattern(300, 260);
        let pre = Preprocess::fgvc_train(224);
        let a = preprocess_rgb(&img, &pre, Some(7)).unwrap();
        assert_eq!(a, preprocess_rgb(&img, &pre, Some(7)).unwrap());
        let views: Vec<_> = (0..8).map(|s| resize_crop(&img, &pre, Some(s)).unwrap()).collect();
        assert!(views.iter().any(|v| *v != views[0]), "seeds never change the crop/flip");
        // Without a seed the training view is the evaluation view; the eval view ignores seeds.
        let eval = resize_crop(&img, &Preprocess::fgvc_eval(224), None).unwrap();
        assert_eq!(resize_crop(&img, &pre, None).unwrap(), eval);
        assert_eq!(resize_crop(&img, &Preprocess::fgvc_eval(224), Some(5)).unwrap(), eval);
        // VTAB is never augmented.
        let v = Preprocess::vtab(32);
        assert_eq!(resize_crop(&img, &v, Some(1)).unwrap(), resize_crop(&img, &v, Some(2)).unwrap());
    }

    #[test]
    fn flips_happen_and_crop_is_a_window() {
        // A resize-free FGVC view (resize == image side): crops are exact windows of the input.
        let img = pattern(40, 40);
        let pre = Preprocess::FgvcTrain { size: 32, resize: 40, norm: Normalization::Imagenet };
        let (mut flipped, mut plain) = (0, 0);
        for seed in 0..64 {
            let out = resize_crop(&img, &pre, Some(seed)).unwrap();
            let found = |cand: &RgbImage| {
                (0..=8).any(|t| (0..=8).any(|l| imageops::crop_imm(&img, l, t, 32, 32).to_image() == *cand))
            };
            if found(&out) {
                plain += 1;
            } else {
                let mut back = out.clone();
                imageops::flip_horizontal_in_place(&mut back);
                assert!(found(&back), "seed {seed}: neither a window nor a flipped window");
                flipped += 1;
            }
        }
        assert!(flipped > 10 && plain > 10, "flipped {flipped}, plain {plain}");
    }

    #[test]
    fn centre_crop_rounds_half_to_even() {
        assert_eq!((half_to_even(187), half_to_even(33), half_to_even(32)), (94, 16, 16));
    }

    #[test]
    fn normalisation() {
        let img = RgbImage::from_pixel(2, 2, Rgb([255, 0, 128]));
        let unit = preprocess_rgb_unit(&img, &Preprocess::vtab(2), None).unwrap();
        assert_eq!(unit[0..4], [1.0; 4]);
        assert_eq!(unit[4..8], [0.0; 4]);
        let half = preprocess_rgb(&img, &Preprocess::vtab(2).with_norm(Normalization::Half), None).unwrap();
        assert_eq!((half[0], half[4]), (1.0, -1.0));
        let inet = preprocess_rgb(&img, &Preprocess::vtab(2), None).unwrap();
        assert!((inet[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((inet[4] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
    }

    #[test]
    fn decodes_any_mode_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let gray = dir.path().join("gray.png");
        GrayImage::from_pixel(3, 2, Luma([200])).save(&gray).unwrap();
        assert_eq!(decode_rgb(&gray).unwrap().get_pixel(0, 0), &Rgb([200, 200, 200]));
        let rgba = dir.path().join("rgba.png");
        RgbaImage::from_pixel(3, 2, image::Rgba([1, 2, 3, 0])).save(&rgba).unwrap();
        assert_eq!(decode_rgb(&rgba).unwrap().get_pixel(1, 1), &Rgb([1, 2, 3]));
        // A PNG saved under a .jpg name is still decoded (format guessed from content).
        let misnamed = dir.path().join("misnamed.jpg");
        std::fs::copy(&gray, &misnamed).unwrap();
        assert_eq!(load_image(&misnamed, &Preprocess::vtab(4), None).unwrap().len(), 48);
        let garbage = dir.path().join("garbage.jpg");
        std::fs::write(&garbage, b"not an image").unwrap();
        let err = load_image(&garbage, &Preprocess::vtab(4), None).unwrap_err().to_string();
        assert!(err.contains("garbage.jpg"), "{err}");
        let err = decode_rgb(&dir.path().join("missing.png")).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
