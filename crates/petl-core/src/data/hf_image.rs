//! Hugging Face image processors (`preprocessor_config.json`) as `CLIPImageProcessor` and
//! `ViTImageProcessor` apply them: resize (shortest edge, or an exact height × width) with PIL's
//! resampling, centre crop, rescale and per-channel normalisation.

use std::path::Path;

use image::RgbImage;
use image::imageops::{self, FilterType};

use super::preprocess::{decode_rgb, resize_like_pil, to_chw_unit};
use crate::{Error, Result};

/// How the image is resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side becomes this; the longer one `⌊s · long / short⌋` (aspect kept).
    ShortestEdge(u32),
    /// Exactly `height × width`.
    Exact(u32, u32),
}

/// A Hugging Face image processor's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HfImageProcessor {
    /// Resize step, if any.
    pub resize: Option<Resize>,
    /// PIL filter of the resize (`resample`: 2 bilinear, 3 bicubic).
    pub filter: FilterType,
    /// Centre crop `(height, width)`, if any.
    pub crop: Option<(u32, u32)>,
    /// Multiplier of the 0–255 pixel values (`rescale_factor`, 1/255), if rescaling.
    pub rescale: Option<f32>,
    /// `(mean, std)` per channel, if normalising.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl HfImageProcessor {
    /// Reads `preprocessor_config.json`.
    ///
    /// # Errors
    /// A missing file, non-JSON, or a field of the wrong form (named).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
        let flag = |k: &str| v[k].as_bool().unwrap_or(true);
        let bad = |k: &str| Error::format(path, format!("`{k}` has an unexpected form: {}", v[k]));
        let side = |x: &serde_json::Value| x.as_u64().map(|n| n as u32);
        let resize = if flag("do_resize") {
            let size = &v["size"];
            Some(if let Some(s) = side(size).or_else(|| side(&size["shortest_edge"])) {
                Resize::ShortestEdge(s)
            } else if let (Some(h), Some(w)) = (side(&size["height"]), side(&size["width"])) {
                Resize::Exact(h, w)
            } else {
                return Err(bad("size"));
            })
        } else {
            None
        };
        let filter = match v["resample"].as_u64().unwrap_or(3) {
            2 => FilterType::Triangle,
            3 => FilterType::CatmullRom,
            _ => return Err(bad("resample")),
        };
        let crop = if v.get("do_center_crop").and_then(|c| c.as_bool()).unwrap_or(false) {
            let c = &v["crop_size"];
            Some(match (side(c), side(&c["height"]), side(&c["width"])) {
                (Some(s), _, _) => (s, s),
                (None, Some(h), Some(w)) => (h, w),
                _ => return Err(bad("crop_size")),
            })
        } else {
            None
        };
        let rescale = flag("do_rescale").then(|| v["rescale_factor"].as_f64().unwrap_or(1.0 / 255.0) as f32);
        let triple = |k: &str| -> Result<[f32; 3]> {
            let a = v[k].as_array().filter(|a| a.len() == 3).ok_or_else(|| bad(k))?;
            let f = |i: usize| a[i].as_f64().map(|x| x as f32).ok_or_else(|| bad(k));
            Ok([f(0)?, f(1)?, f(2)?])
        };
        let normalize = if flag("do_normalize") { Some((triple("image_mean")?, triple("image_std")?)) } else { None };
        Ok(Self { resize, filter, crop, rescale, normalize })
    }

    /// Side of the output: `(height, width)` for an input of `(h, w)`.
    pub fn output_size(&self, h: u32, w: u32) -> (u32, u32) {
        if let Some(c) = self.crop {
            return c;
        }
        match self.resize {
            Some(Resize::Exact(h, w)) => (h, w),
            Some(Resize::ShortestEdge(s)) => resized(h, w, s),
            None => (h, w),
        }
    }

    /// `[3, H, W]` float pixels of `img`.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        let img = match self.resize {
            Some(Resize::ShortestEdge(s)) => {
                let (h, w) = resized(img.height(), img.width(), s);
                resize_like_pil(img, w, h, self.filter)
            }
            Some(Resize::Exact(h, w)) => resize_like_pil(img, w, h, self.filter),
            None => img.clone(),
        };
        let img = match self.crop {
            // HF `center_crop`: offsets `(size − crop) // 2`, floor.
            Some((ch, cw)) if img.height() >= ch && img.width() >= cw => {
                imageops::crop_imm(&img, (img.width() - cw) / 2, (img.height() - ch) / 2, cw, ch).to_image()
            }
            _ => img,
        };
        let mut chw = to_chw_unit(&img);
        let scale = self.rescale.map_or(255.0, |r| 255.0 * r);
        let plane = chw.len() / 3;
        for (c, values) in chw.chunks_exact_mut(plane.max(1)).take(3).enumerate() {
            for x in values {
                *x *= scale;
                if let Some((mean, std)) = self.normalize {
                    *x = (*x - mean[c]) / std[c];
                }
            }
        }
        chw
    }

    /// Decodes `path` and applies the processor.
    ///
    /// # Errors
    /// As [`decode_rgb`], naming the file.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(self.apply(&decode_rgb(path)?))
    }
}

/// HF `get_resize_output_image_size` with `default_to_square = False`.
fn resized(h: u32, w: u32, short: u32) -> (u32, u32) {
    let scaled = |long: u32, shorter: u32| (u64::from(short) * u64::from(long) / u64::from(shorter)) as u32;
    if h <= w { (short, scaled(w, h)) } else { (scaled(h, w), short) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_processor_config_reads_and_keeps_the_aspect_before_cropping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preprocessor_config.json");
        std::fs::write(
            &path,
            r#"{"crop_size": {"height": 8, "width": 8}, "do_center_crop": true, "do_normalize": true,
                "do_rescale": true, "do_resize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 8}}"#,
        )
        .unwrap();
        let p = HfImageProcessor::from_file(&path).unwrap();
        assert_eq!(p.resize, Some(Resize::ShortestEdge(8)));
        assert_eq!(resized(20, 10, 8), (16, 8));
        let img = RgbImage::from_pixel(10, 20, image::Rgb([255, 0, 128]));
        let x = p.apply(&img);
        assert_eq!(x.len(), 3 * 8 * 8);
        assert!((x[0] - 1.0).abs() < 1e-6 && (x[64] + 1.0).abs() < 1e-6, "{} {}", x[0], x[64]);
        std::fs::write(&path, r#"{"size": "big"}"#).unwrap();
        let err = HfImageProcessor::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json") && err.contains("`size`"), "{err}");
    }
}
