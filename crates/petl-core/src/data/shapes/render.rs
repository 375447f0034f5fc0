//! The rasteriser: scene → CHW pixels in `[0, 1]`, antialiased by supersampling.

use std::path::Path;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::scene::Scene;
use crate::{Error, Result};

/// Samples per pixel side: every pixel averages `SUPERSAMPLE²` point samples of the scene, so
/// edges stay smooth (and sub-pixel positions visible) at 32 px.
pub const SUPERSAMPLE: usize = 3;

/// Renders `scene` at `size × size` pixels.
///
/// Every pixel averages a `SUPERSAMPLE × SUPERSAMPLE` grid of point samples (background, then
/// the objects painted in order); then the [`Cast`](super::scene::Cast) is applied, the pixel
/// noise added and the result clamped to `[0, 1]`. A pure function of the scene and `size`.
///
/// # Shapes
/// `-> [3, size, size]` (CHW, row-major).
pub fn render(scene: &Scene, size: usize) -> Vec<f32> {
    let hi = size * SUPERSAMPLE;
    let step = 1.0 / hi as f32;
    let coord = |i: usize| (i as f32 + 0.5) * step;
    let mut samples = vec![[0.0f32; 3]; hi * hi];
    for (j, row) in samples.chunks_exact_mut(hi.max(1)).enumerate() {
        for (i, s) in row.iter_mut().enumerate() {
            *s = scene.background.rgb_at(coord(i), coord(j));
        }
    }
    for object in &scene.objects {
        let b = object.bbox();
        let span = |lo: f32, hi_edge: f32| {
            let first = (lo * hi as f32).floor().max(0.0) as usize;
            let last = ((hi_edge * hi as f32).ceil().max(0.0) as usize).min(hi);
            first..last
        };
        let (frame, rgb) = (object.frame(), object.rgb());
        for j in span(b.y0, b.y1) {
            for i in span(b.x0, b.x1) {
                let (u, v) = frame.local(coord(i), coord(j));
                if object.kind.contains_local(u, v) {
                    samples[j * hi + i] = rgb;
                }
            }
        }
    }

    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    let mut noise = (scene.noise > 0.0).then(|| StdRng::seed_from_u64(scene.noise_seed));
    let norm = 1.0 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
    for py in 0..size {
        for px in 0..size {
            let mut sum = [0.0f32; 3];
            for sy in 0..SUPERSAMPLE {
                let row = (py * SUPERSAMPLE + sy) * hi + px * SUPERSAMPLE;
                for s in &samples[row..row + SUPERSAMPLE] {
                    (0..3).for_each(|c| sum[c] += s[c]);
                }
            }
            let rgb = scene.cast.apply(sum.map(|v| v * norm));
            for (c, value) in rgb.into_iter().enumerate() {
                let n = noise.as_mut().map_or(0.0, |rng| scene.noise * standard_normal(rng));
                out[c * plane + py * size + px] = (value + n).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// An approximately standard-normal value (the Irwin–Hall sum of four uniforms, rescaled).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let sum: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
    (sum - 2.0) * 3.0f32.sqrt()
}

/// Renders `scenes` at `size` px and tiles them, row by row, `columns` to a row, with a 2 px
/// black border around each tile.
///
/// # Panics
/// If `columns` is 0.
pub fn png_grid(scenes: &[Scene], size: usize, columns: usize) -> RgbImage {
    let cell = size + 2;
    let rows = scenes.len().div_ceil(columns);
    let (width, height) = ((columns * cell + 2) as u32, (rows * cell + 2) as u32);
    let mut grid = RgbImage::new(width, height);
    let plane = size * size;
    for (k, scene) in scenes.iter().enumerate() {
        let chw = render(scene, size);
        let (x0, y0) = ((k % columns) * cell + 2, (k / columns) * cell + 2);
        for y in 0..size {
            for x in 0..size {
                let pixel = [0, 1, 2].map(|c| (chw[c * plane + y * size + x] * 255.0).round() as u8);
                grid.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(pixel));
            }
        }
    }
    grid
}

/// Writes [`png_grid`] of `scenes` to the PNG file `path` (for looking at the data).
///
/// # Panics
/// If `columns` is 0.
pub fn save_png_grid(path: &Path, scenes: &[Scene], size: usize, columns: usize) -> Result<()> {
    png_grid(scenes, size, columns).save(path).map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Background, Cast};
    use super::super::shape::{Colour, SceneObject, ShapeKind};
    use super::*;

    const GREY: [f32; 3] = [0.3, 0.3, 0.3];

    fn red_square_scene() -> Scene {
        Scene {
            background: Background::plain(GREY),
            objects: vec![SceneObject {
                kind: ShapeKind::Square,
                colour: Colour::Red,
                shade: 1.0,
                x: 0.5,
                y: 0.5,
                size: 0.25,
                angle: 0.0,
            }],
            cast: Cast::neutral(),
            noise: 0.0,
            noise_seed: 0,
        }
    }

    fn pixel(chw: &[f32], size: usize, x: usize, y: usize) -> [f32; 3] {
        [0, 1, 2].map(|c| chw[c * size * size + y * size + x])
    }

    fn close(a: [f32; 3], b: [f32; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn red_square_at_the_centre() {
        let size = 32;
        let chw = render(&red_square_scene(), size);
        assert_eq!(chw.len(), 3 * size * size);
        assert!(close(pixel(&chw, size, 16, 16), Colour::Red.rgb()));
        assert!(close(pixel(&chw, size, 0, 0), GREY));
        assert!(close(pixel(&chw, size, 31, 31), GREY));
        // The square spans 0.3..0.7 of the canvas, i.e. pixels 9.6..22.4: edge pixels mix.
        let edge = pixel(&chw, size, 9, 16)[0];
        assert!(edge > GREY[0] + 0.05 && edge < Colour::Red.rgb()[0] - 0.05, "edge {edge}");
    }

    #[test]
    fn cast_and_noise_apply_to_the_whole_image() {
        let mut scene = red_square_scene();
        scene.cast.gain = [0.5; 3];
        let dark = render(&scene, 16);
        assert!(close(pixel(&dark, 16, 0, 0), GREY.map(|c| c * 0.5)));
        scene.noise = 0.05;
        let noisy = render(&scene, 16);
        assert_ne!(noisy, dark);
        assert!(noisy.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(noisy, render(&scene, 16));
    }

    #[test]
    fn grid_tiles_rendered_scenes() {
        let scenes = vec![red_square_scene(); 3];
        let grid = png_grid(&scenes, 8, 2);
        assert_eq!(grid.dimensions(), (2 * 10 + 2, 2 * 10 + 2));
        let centre = grid.get_pixel(2 + 4, 2 + 4).0;
        assert_eq!(centre, [219, 36, 36]);
        assert_eq!(grid.get_pixel(12 + 4, 12 + 4).0, [0, 0, 0], "the fourth tile is empty");
    }

    #[test]
    fn saving_into_a_missing_folder_fails_with_the_path() {
        let path = Path::new("/nonexistent-petl-shapes-folder/grid.png");
        let err = save_png_grid(path, &[red_square_scene()], 8, 1).unwrap_err();
        assert!(matches!(&err, Error::Io { path: p, .. } if p == path), "{err}");
    }
}
