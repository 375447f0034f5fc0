//! The image pipelines of ViLT and METER as Arrow image views ([`ArrowImageView`]), and the
//! RandAugment both fine-tune with.
//!
//! - ViLT (`vilt/transforms/pixelbert.py`, `MinMaxResize`): the shorter side to `shorter`
//!   (384), the longer side capped at `⌊1333 / 800 · shorter⌋` (639), each side rounded and then
//!   floored to a multiple of the patch size (32), bicubic; `[0, 1]` then `(x − 0.5) / 0.5`. ViLT
//!   batches zero-pad every image at the bottom and right to the batch's largest; here every
//!   image is zero-padded to one square canvas of the largest possible side (608 at 384 / 32),
//!   which gives the same outputs — padded patches are masked keys and position embeddings are
//!   resized to each image's own grid ([`crate::vilt::Vilt::embed_images`]) — at the cost of
//!   attending over more masked keys.
//! - METER (`meter/transforms/transform.py`, `clip_transform`): the shorter side to the
//!   resolution (bicubic), the centre square crop, CLIP's normalisation.
//!
//! Bicubic is the `image` crate's Catmull-Rom (Keys a = −0.5, support scaled when shrinking),
//! PIL's antialiased `BICUBIC`, resized in PIL's order; not bit-exact to PIL.
//! With an augmentation seed, [`rand_augment`] runs first (training only).

use image::RgbImage;
use image::imageops::{self, FilterType};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::arrow::ArrowImageView;
use super::preprocess::{Normalization, resize_like_pil, to_chw_unit};

/// The longer side ViLT allows for a shorter side of `shorter` (`⌊1333 / 800 · shorter⌋`).
pub fn vilt_longest(shorter: u32) -> u32 {
    (1333.0 / 800.0 * f64::from(shorter)) as u32
}

/// ViLT's resize: `(width, height)` of an image of `w × h` (module docs).
pub fn vilt_size(w: u32, h: u32, shorter: u32, patch: u32) -> (u32, u32) {
    let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let short = f64::from(shorter);
    let scale = short / w.min(h);
    let (mut nw, mut nh) = (w * scale, h * scale);
    let longest = f64::from(vilt_longest(shorter));
    if nw.max(nh) > longest {
        let s = longest / nw.max(nh);
        nw *= s;
        nh *= s;
    }
    let floor = |v: f64| ((v + 0.5).floor() as u32 / patch * patch).max(patch);
    (floor(nw), floor(nh))
}

/// Side of the square canvas every ViLT image is padded to.
pub fn vilt_canvas(shorter: u32, patch: u32) -> u32 {
    (vilt_longest(shorter) / patch * patch).max(shorter / patch * patch)
}

/// ViLT's view (module docs): resized, normalised, zero-padded into the canvas; `[3, C, C]`.
pub fn vilt_view(shorter: u32, patch: u32) -> ArrowImageView {
    let canvas = vilt_canvas(shorter, patch) as usize;
    ArrowImageView::custom(format!("vilt(shorter {shorter}, patch {patch}, canvas {canvas})"), move |img, augment| {
        let img = augmented(img, augment);
        let (w, h) = vilt_size(img.width(), img.height(), shorter, patch);
        let resized = resize_like_pil(&img, w, h, FilterType::CatmullRom);
        let mut chw = to_chw_unit(&resized);
        Normalization::Half.apply(&mut chw);
        let (w, h) = (w as usize, h as usize);
        let mut out = vec![0.0f32; 3 * canvas * canvas];
        for c in 0..3 {
            for y in 0..h {
                let src = &chw[(c * h + y) * w..(c * h + y + 1) * w];
                out[(c * canvas + y) * canvas..(c * canvas + y) * canvas + w].copy_from_slice(src);
            }
        }
        Ok(out)
    })
}

/// METER's view (module docs): `[3, R, R]`.
pub fn meter_view(resolution: u32) -> ArrowImageView {
    ArrowImageView::custom(format!("meter({resolution})"), move |img, augment| {
        let img = augmented(img, augment);
        let (w, h) = (u64::from(img.width().max(1)), u64::from(img.height().max(1)));
        let r = u64::from(resolution);
        // torchvision Resize(int): the shorter side to r, the longer ⌊r · long / short⌋.
        let (nw, nh) = if w <= h { (r, r * h / w) } else { (r * w / h, r) };
        let resized = resize_like_pil(&img, nw as u32, nh as u32, FilterType::CatmullRom);
        let left = ((nw - r) as f64 / 2.0).round() as u32;
        let top = ((nh - r) as f64 / 2.0).round() as u32;
        let crop = imageops::crop_imm(&resized, left, top, resolution, resolution).to_image();
        let mut chw = to_chw_unit(&crop);
        Normalization::Clip.apply(&mut chw);
        Ok(chw)
    })
}

/// `img` through [`rand_augment`] (N 2, M 9) when training (`augment` seeds it), as it is
/// otherwise.
fn augmented(img: &RgbImage, augment: Option<u64>) -> std::borrow::Cow<'_, RgbImage> {
    match augment {
        Some(seed) => std::borrow::Cow::Owned(rand_augment(img, 2, 9, seed)),
        None => std::borrow::Cow::Borrowed(img),
    }
}

/// RandAugment (Cubuk et al. 2020) as ViLT's and METER's `randaug.py`: `n` operations drawn
/// with replacement from the 14 below, each at magnitude `m / 30` of its range (ops with a
/// signed range flip the sign with p = 0.5): AutoContrast, Equalize, Rotate (≤ 30°), Posterize
/// (0–4 bits), Solarize (threshold 0–256), SolarizeAdd (0–110), Color, Contrast, Brightness,
/// Sharpness (factors 0.1–1.9), ShearX/Y (≤ 0.3), TranslateX/Y (≤ 100 px). Deterministic in
/// `seed`. Geometric ops fill with black, as PIL's defaults.
pub fn rand_augment(img: &RgbImage, n: usize, m: u32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let frac = f64::from(m) / 30.0;
    let mut img = img.clone();
    for _ in 0..n {
        let op = rng.random_range(0..14u32);
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let v = |lo: f64, hi: f64| frac * (hi - lo) + lo;
        img = match op {
            0 => auto_contrast(&img),
            1 => equalize(&img),
            2 => affine(&img, Affine::rotate(sign * v(0.0, 30.0), &img)),
            3 => {
                // PIL's posterize(bits): keep the top `bits` bits (0 bits: black).
                let bits = v(0.0, 4.0) as u32;
                let mask = if bits == 0 { 0u8 } else { (0xFFu16 << (8 - bits)) as u8 };
                map_pixels(&img, |p| p & mask)
            }
            4 => {
                let t = v(0.0, 256.0);
                map_pixels(&img, |p| if f64::from(p) >= t { 255 - p } else { p })
            }
            5 => {
                let add = v(0.0, 110.0) as i32;
                map_pixels(&img, |p| if p < 128 { (i32::from(p) + add).clamp(0, 255) as u8 } else { p })
            }
            6 => blend(&grey(&img), &img, v(0.1, 1.9)),
            7 => {
                let mean = grey_mean(&img);
                blend(&RgbImage::from_pixel(img.width(), img.height(), image::Rgb([mean; 3])), &img, v(0.1, 1.9))
            }
            8 => blend(&RgbImage::new(img.width(), img.height()), &img, v(0.1, 1.9)),
            9 => blend(&smooth(&img), &img, v(0.1, 1.9)),
            10 => affine(&img, Affine([1.0, sign * v(0.0, 0.3), 0.0, 0.0, 1.0, 0.0])),
            11 => affine(&img, Affine([1.0, 0.0, 0.0, sign * v(0.0, 0.3), 1.0, 0.0])),
            12 => affine(&img, Affine([1.0, 0.0, sign * v(0.0, 100.0), 0.0, 1.0, 0.0])),
            _ => affine(&img, Affine([1.0, 0.0, 0.0, 0.0, 1.0, sign * v(0.0, 100.0)])),
        };
    }
    img
}

/// PIL's inverse affine map: output pixel `(x, y)` reads input `(a x + b y + c, d x + e y + f)`.
struct Affine([f64; 6]);

impl Affine {
    /// PIL's `rotate(deg)` about the centre (counter-clockwise for positive angles).
    fn rotate(deg: f64, img: &RgbImage) -> Self {
        let (cx, cy) = (f64::from(img.width()) / 2.0, f64::from(img.height()) / 2.0);
        let (s, c) = (-deg.to_radians()).sin_cos();
        Affine([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])
    }
}

fn affine(img: &RgbImage, Affine([a, b, c, d, e, f]): Affine) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
        let (sx, sy) = (a * xf + b * yf + c, d * xf + e * yf + f);
        if sx >= 0.0 && sy >= 0.0 && (sx as u32) < w && (sy as u32) < h {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

fn map_pixels(img: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    for p in out.iter_mut() {
        *p = f(*p);
    }
    out
}

fn luma(p: &image::Rgb<u8>) -> u8 {
    ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000) as u8
}

fn grey(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let l = luma(img.get_pixel(x, y));
        image::Rgb([l; 3])
    })
}

fn grey_mean(img: &RgbImage) -> u8 {
    let n = u64::from(img.width()) * u64::from(img.height());
    (img.pixels().map(|p| u64::from(luma(p))).sum::<u64>() / n.max(1)) as u8
}

/// PIL's `ImageEnhance`: `degenerate + factor · (img − degenerate)`, clamped.
fn blend(degenerate: &RgbImage, img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    for (o, (d, i)) in out.iter_mut().zip(degenerate.iter().zip(img.iter())) {
        *o = (f64::from(*d) + factor * (f64::from(*i) - f64::from(*d))).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// PIL's `SMOOTH` filter (3 × 3, centre weight 5 of 13), borders unchanged: Sharpness's
/// degenerate image.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            for c in 0..3 {
                let mut acc = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let wgt = if dx == 1 && dy == 1 { 5 } else { 1 };
                        acc += wgt * u32::from(img.get_pixel(x + dx - 1, y + dy - 1)[c]);
                    }
                }
                out.get_pixel_mut(x, y)[c] = ((acc + 6) / 13) as u8;
            }
        }
    }
    out
}

/// Per channel, the darkest value to 0 and the brightest to 255.
fn auto_contrast(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for c in 0..3 {
        let (lo, hi) = img.pixels().fold((255u8, 0u8), |(lo, hi), p| (lo.min(p[c]), hi.max(p[c])));
        if hi > lo {
            let scale = 255.0 / f64::from(hi - lo);
            for p in out.pixels_mut() {
                p[c] = (f64::from(p[c] - lo) * scale).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Per channel histogram equalisation (PIL's `ImageOps.equalize`).
fn equalize(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for c in 0..3 {
        let mut hist = [0u32; 256];
        for p in img.pixels() {
            hist[p[c] as usize] += 1;
        }
        let nonzero: Vec<u32> = hist.iter().copied().filter(|&v| v > 0).collect();
        if nonzero.len() <= 1 {
            continue;
        }
        let step = (nonzero.iter().sum::<u32>() - nonzero[nonzero.len() - 1]) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut acc = step / 2;
        for (i, &v) in hist.iter().enumerate() {
            lut[i] = (acc / step).min(255) as u8;
            acc += v;
        }
        for p in out.pixels_mut() {
            p[c] = lut[p[c] as usize];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vilt_sizes_follow_min_max_resize() {
        // 640 × 480 → shorter 384: 512 × 384; a 1000 × 200 panorama is capped at 639 → 608 × 96
        // after flooring to multiples of 32.
        assert_eq!(vilt_size(640, 480, 384, 32), (512, 384));
        assert_eq!(vilt_size(1000, 200, 384, 32), (608, 128));
        assert_eq!(vilt_canvas(384, 32), 608);
        let img = RgbImage::from_pixel(64, 48, image::Rgb([200, 10, 30]));
        let out = vilt_view(32, 8).apply(&img, None).unwrap();
        let c = vilt_canvas(32, 8) as usize;
        assert_eq!(out.len(), 3 * c * c);
        // 64 × 48 → 40 × 32 (shorter 32, longest 53): pixels inside, zeros outside.
        assert!((out[0] - (200.0 / 255.0 - 0.5) / 0.5).abs() < 1e-2);
        assert_eq!(out[40], 0.0);
        assert_eq!(out[32 * c], 0.0);
    }

    #[test]
    fn meter_view_is_a_centre_crop_with_clip_statistics() {
        let img = RgbImage::from_pixel(60, 30, image::Rgb([255, 255, 255]));
        let out = meter_view(24).apply(&img, None).unwrap();
        assert_eq!(out.len(), 3 * 24 * 24);
        assert!((out[0] - (1.0 - 0.481_454_66) / 0.268_629_54).abs() < 1e-3);
    }

    #[test]
    fn rand_augment_is_deterministic_and_keeps_the_size() {
        let img = RgbImage::from_fn(20, 12, |x, y| image::Rgb([(x * 12) as u8, (y * 20) as u8, 90]));
        for seed in 0..40 {
            let a = rand_augment(&img, 2, 9, seed);
            assert_eq!(a.dimensions(), (20, 12));
            assert_eq!(a, rand_augment(&img, 2, 9, seed));
        }
        assert!((0..40).any(|s| rand_augment(&img, 2, 9, s) != img));
    }
}
