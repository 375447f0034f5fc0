//! The scene model: a textured background, a list of [`SceneObject`]s, a global colour cast
//! and pixel noise, plus the seeded samplers that build random scenes.

use std::f32::consts::TAU;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::shape::{Colour, SceneObject, ShapeKind};

/// Attempts [`Scene::place`] makes before it gives up on an object.
const PLACE_TRIES: usize = 256;

/// The background pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Texture {
    /// One flat colour.
    Plain,
    /// Horizontal stripes.
    HorizontalStripes,
    /// Vertical stripes.
    VerticalStripes,
    /// Stripes along the anti-diagonal.
    DiagonalStripes,
    /// A checkerboard (cells of half a period).
    Checker,
    /// A square lattice of dots.
    Dots,
}

impl Texture {
    /// Every texture, in label order.
    pub const ALL: [Texture; 6] = [
        Texture::Plain,
        Texture::HorizontalStripes,
        Texture::VerticalStripes,
        Texture::DiagonalStripes,
        Texture::Checker,
        Texture::Dots,
    ];

    /// The texture's name, e.g. `"checker"`.
    pub fn name(self) -> &'static str {
        match self {
            Texture::Plain => "plain",
            Texture::HorizontalStripes => "horizontal_stripes",
            Texture::VerticalStripes => "vertical_stripes",
            Texture::DiagonalStripes => "diagonal_stripes",
            Texture::Checker => "checker",
            Texture::Dots => "dots",
        }
    }

    /// Position in [`Texture::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether canvas point `(x, y)` shows the accent colour, for a pattern of the given period
    /// (canvas units) shifted by `phase`.
    pub fn is_accent(self, x: f32, y: f32, period: f32, phase: [f32; 2]) -> bool {
        let (a, b) = ((x + phase[0]) / period, (y + phase[1]) / period);
        match self {
            Texture::Plain => false,
            Texture::HorizontalStripes => b.rem_euclid(1.0) < 0.5,
            Texture::VerticalStripes => a.rem_euclid(1.0) < 0.5,
            Texture::DiagonalStripes => ((a + b) * std::f32::consts::FRAC_1_SQRT_2).rem_euclid(1.0) < 0.5,
            Texture::Checker => ((2.0 * a).floor() + (2.0 * b).floor()).rem_euclid(2.0) >= 1.0,
            Texture::Dots => {
                let (u, v) = (a.rem_euclid(1.0) - 0.5, b.rem_euclid(1.0) - 0.5);
                u * u + v * v < 0.3 * 0.3
            }
        }
    }
}

/// The canvas behind the objects.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Background {
    /// Base RGB in `[0, 1]`.
    pub colour: [f32; 3],
    /// Second RGB of the texture.
    pub accent: [f32; 3],
    /// Pattern.
    pub texture: Texture,
    /// Pattern period, canvas units.
    pub period: f32,
    /// Pattern offset, canvas units.
    pub phase: [f32; 2],
    /// Linear illumination gradient: brightness is multiplied by
    /// `1 + gradient[0]·(x − ½) + gradient[1]·(y − ½)`.
    pub gradient: [f32; 2],
}

impl Background {
    /// A plain background of one colour, without gradient.
    pub fn plain(colour: [f32; 3]) -> Self {
        Background { colour, accent: colour, texture: Texture::Plain, period: 1.0, phase: [0.0; 2], gradient: [0.0; 2] }
    }

    /// RGB at canvas point `(x, y)`.
    pub fn rgb_at(&self, x: f32, y: f32) -> [f32; 3] {
        let base = if self.texture.is_accent(x, y, self.period, self.phase) { self.accent } else { self.colour };
        let light = 1.0 + self.gradient[0] * (x - 0.5) + self.gradient[1] * (y - 0.5);
        base.map(|c| c * light)
    }
}

/// A global colour cast, the "acquisition device" of the scene: `out = gain ⊙ rgb + lift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tint {
    /// No cast.
    Neutral,
    /// Red up, blue down.
    Warm,
    /// Blue up, red down.
    Cool,
    /// Under-exposed: everything at about half brightness.
    Dark,
    /// Low contrast, washed out towards grey.
    Faded,
}

impl Tint {
    /// Every tint, in label order.
    pub const ALL: [Tint; 5] = [Tint::Neutral, Tint::Warm, Tint::Cool, Tint::Dark, Tint::Faded];

    /// The tint's name, e.g. `"warm"`.
    pub fn name(self) -> &'static str {
        match self {
            Tint::Neutral => "neutral",
            Tint::Warm => "warm",
            Tint::Cool => "cool",
            Tint::Dark => "dark",
            Tint::Faded => "faded",
        }
    }

    /// Position in [`Tint::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The nominal `(gain, lift)`.
    fn nominal(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Tint::Neutral => ([1.0; 3], [0.0; 3]),
            Tint::Warm => ([1.1, 0.97, 0.7], [0.08, 0.03, 0.0]),
            Tint::Cool => ([0.72, 0.95, 1.1], [0.0, 0.03, 0.08]),
            Tint::Dark => ([0.5; 3], [0.0; 3]),
            Tint::Faded => ([0.5; 3], [0.36; 3]),
        }
    }
}

/// The colour cast applied to the whole composed image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cast {
    /// The class of the cast.
    pub tint: Tint,
    /// Per-channel gain.
    pub gain: [f32; 3],
    /// Per-channel offset.
    pub lift: [f32; 3],
}

impl Cast {
    /// The identity cast.
    pub fn neutral() -> Self {
        let (gain, lift) = Tint::Neutral.nominal();
        Cast { tint: Tint::Neutral, gain, lift }
    }

    /// `tint`'s nominal cast with a random global brightness change of up to `±jitter` and
    /// per-channel gain changes of up to `±jitter / 2`.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R, tint: Tint, jitter: f32) -> Self {
        let (gain, lift) = tint.nominal();
        let global = 1.0 + uniform(rng, (-jitter, jitter));
        let gain = gain.map(|g| g * global + uniform(rng, (-jitter / 2.0, jitter / 2.0)));
        Cast { tint, gain, lift }
    }

    /// Applies the cast to one RGB value (no clamping).
    pub fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        [0, 1, 2].map(|c| self.gain[c] * rgb[c] + self.lift[c])
    }
}

/// A complete, renderable scene. Rendering is a pure function of it (see
/// [`render`](super::render::render)); objects are painted in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// The canvas.
    pub background: Background,
    /// The shapes, painted first to last.
    pub objects: Vec<SceneObject>,
    /// Global colour cast.
    pub cast: Cast,
    /// Standard deviation of the per-pixel, per-channel noise added after the cast (`[0, 1]`
    /// intensity units).
    pub noise: f32,
    /// Seed of that noise.
    pub noise_seed: u64,
}

/// How random objects are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectConfig {
    /// Kinds to draw from, uniformly.
    pub kinds: Vec<ShapeKind>,
    /// Colours to draw from, uniformly.
    pub colours: Vec<Colour>,
    /// Circumradius range, canvas units.
    pub size: (f32, f32),
}

impl ObjectConfig {
    /// Any kind, any colour, circumradius in `size`.
    pub fn any(size: (f32, f32)) -> Self {
        ObjectConfig { kinds: ShapeKind::ALL.to_vec(), colours: Colour::ALL.to_vec(), size }
    }

    /// A random object, centred on the canvas (use [`Scene::place`] to position it).
    ///
    /// # Panics
    /// If `kinds` or `colours` is empty.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> SceneObject {
        SceneObject {
            kind: self.kinds[rng.random_range(0..self.kinds.len())],
            colour: self.colours[rng.random_range(0..self.colours.len())],
            shade: uniform(rng, (0.85, 1.0)),
            x: 0.5,
            y: 0.5,
            size: uniform(rng, self.size),
            angle: uniform(rng, (0.0, TAU)),
        }
    }
}

/// How random backgrounds are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackgroundConfig {
    /// Textures to draw from, uniformly.
    pub textures: Vec<Texture>,
    /// Accent contrast range: the accent moves this fraction of the way to white or to black.
    pub contrast: (f32, f32),
    /// Texture period range, canvas units.
    pub period: (f32, f32),
    /// Largest magnitude of each illumination-gradient component.
    pub gradient: f32,
}

impl BackgroundConfig {
    /// A random background: muted base colour (saturation ≤ 0.45, value 0.12–0.55), so that
    /// every object colour stands out.
    ///
    /// # Panics
    /// If `textures` is empty.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Background {
        let colour = hsv_to_rgb(uniform(rng, (0.0, 1.0)), uniform(rng, (0.0, 0.45)), uniform(rng, (0.12, 0.55)));
        let contrast = uniform(rng, self.contrast);
        let accent = if rng.random::<bool>() {
            colour.map(|c| c + contrast * (1.0 - c))
        } else {
            colour.map(|c| c * (1.0 - contrast))
        };
        let period = uniform(rng, self.period);
        Background {
            colour,
            accent,
            texture: self.textures[rng.random_range(0..self.textures.len())],
            period,
            phase: [uniform(rng, (0.0, period)), uniform(rng, (0.0, period))],
            gradient: [uniform(rng, (-self.gradient, self.gradient)), uniform(rng, (-self.gradient, self.gradient))],
        }
    }
}

/// How random scenes are drawn by [`Scene::sample`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneConfig {
    /// Inclusive range of the number of objects.
    pub objects: (usize, usize),
    /// How each object is drawn.
    pub object: ObjectConfig,
    /// How the background is drawn.
    pub background: BackgroundConfig,
    /// Gap kept between an object's circumcircle and the canvas edge.
    pub margin: f32,
    /// Gap kept between the circumcircles of two objects (negative values allow overlap).
    pub gap: f32,
    /// Brightness jitter of the (neutral) colour cast, see [`Cast::sample`].
    pub cast_jitter: f32,
    /// Range of the pixel-noise standard deviation.
    pub noise: (f32, f32),
}

impl Default for SceneConfig {
    /// One to five non-overlapping objects of any kind and colour on a low-contrast background.
    fn default() -> Self {
        SceneConfig {
            objects: (1, 5),
            object: ObjectConfig::any((0.06, 0.2)),
            background: BackgroundConfig {
                textures: Texture::ALL.to_vec(),
                contrast: (0.04, 0.2),
                period: (0.1, 0.3),
                gradient: 0.5,
            },
            margin: 0.02,
            gap: 0.02,
            cast_jitter: 0.05,
            noise: (0.0, 0.04),
        }
    }
}

impl Scene {
    /// A random scene: background, neutral cast with jitter, noise, then the objects, placed
    /// one by one without overlap (an object that finds no room after a few hundred tries is
    /// left out, so crowded configurations may yield fewer objects than drawn).
    ///
    /// # Panics
    /// If `config.objects.0 > config.objects.1`, or a kind, colour or texture list is empty.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R, config: &SceneConfig) -> Self {
        let mut scene = Scene {
            background: config.background.sample(rng),
            objects: Vec::new(),
            cast: Cast::sample(rng, Tint::Neutral, config.cast_jitter),
            noise: uniform(rng, config.noise),
            noise_seed: rng.random(),
        };
        let count = rng.random_range(config.objects.0..=config.objects.1);
        scene.scatter(rng, count, &config.object, config.margin, config.gap);
        scene
    }

    /// Draws `count` objects from `config` and [`place`](Scene::place)s each; returns how many
    /// found room.
    pub fn scatter<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        count: usize,
        config: &ObjectConfig,
        margin: f32,
        gap: f32,
    ) -> usize {
        (0..count)
            .filter(|_| {
                let object = config.sample(rng);
                self.place(rng, object, margin, gap)
            })
            .count()
    }

    /// Moves `object` to a uniformly random position where its circumcircle stays `margin`
    /// inside the canvas and `gap` away from every other object's, and adds it. Returns
    /// `false` (and adds nothing) when no such position was found.
    pub fn place<R: Rng + ?Sized>(&mut self, rng: &mut R, mut object: SceneObject, margin: f32, gap: f32) -> bool {
        let range = (margin + object.size, 1.0 - margin - object.size);
        for _ in 0..PLACE_TRIES {
            object.x = uniform(rng, range);
            object.y = uniform(rng, range);
            if self.has_room(&object, gap) {
                self.objects.push(object);
                return true;
            }
        }
        false
    }

    /// Whether `object`'s circumcircle keeps at least `gap` from every object's in the scene.
    pub fn has_room(&self, object: &SceneObject, gap: f32) -> bool {
        self.objects.iter().all(|o| (o.x - object.x).hypot(o.y - object.y) >= o.size + object.size + gap)
    }

    /// The object of largest [`area`](SceneObject::area) (the first one on ties).
    pub fn largest(&self) -> Option<&SceneObject> {
        self.objects.iter().reduce(|best, o| if o.area() > best.area() { o } else { best })
    }
}

/// Uniform in `[lo, hi)`; `lo` when the range is empty.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, (lo, hi): (f32, f32)) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// HSV (all in `[0, 1]`) → RGB.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let f = |n: f32| {
        let k = (n + h * 6.0).rem_euclid(6.0);
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [f(5.0), f(3.0), f(1.0)]
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn placed_objects_keep_their_distance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let config = SceneConfig { objects: (6, 6), object: ObjectConfig::any((0.05, 0.1)), ..SceneConfig::default() };
        let scene = Scene::sample(&mut rng, &config);
        assert_eq!(scene.objects.len(), 6);
        for (i, a) in scene.objects.iter().enumerate() {
            let b = a.bbox();
            assert!(b.x0 >= 0.0 && b.y0 >= 0.0 && b.x1 <= 1.0 && b.y1 <= 1.0);
            for o in &scene.objects[i + 1..] {
                assert!((a.x - o.x).hypot(a.y - o.y) >= a.size + o.size + config.gap);
            }
        }
    }

    #[test]
    fn textures_alternate_at_half_a_period() {
        let at = |t: Texture, x: f32, y: f32| t.is_accent(x, y, 0.2, [0.0; 2]);
        assert!((0..50).all(|i| !at(Texture::Plain, i as f32 / 50.0, 0.3)));
        assert!(at(Texture::HorizontalStripes, 0.3, 0.05) && !at(Texture::HorizontalStripes, 0.3, 0.15));
        assert!(at(Texture::VerticalStripes, 0.05, 0.3) && !at(Texture::VerticalStripes, 0.15, 0.3));
        assert!(at(Texture::Checker, 0.15, 0.05) && !at(Texture::Checker, 0.05, 0.05));
        assert!(at(Texture::Dots, 0.1, 0.1) && !at(Texture::Dots, 0.01, 0.01));
        let diagonal = |x: f32| at(Texture::DiagonalStripes, x, 0.0);
        assert_eq!(diagonal(0.05), at(Texture::DiagonalStripes, 0.0, 0.05), "constant along x + y");
        assert_ne!(diagonal(0.05), diagonal(0.2));
    }

    #[test]
    fn casts_scale_and_lift() {
        assert_eq!(Cast::neutral().apply([0.2, 0.4, 0.6]), [0.2, 0.4, 0.6]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let faded = Cast::sample(&mut rng, Tint::Faded, 0.0);
        let expected = [0.36, 0.86, 0.61];
        assert!(faded.apply([0.0, 1.0, 0.5]).iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6));
        let warm = Cast::sample(&mut rng, Tint::Warm, 0.05).apply([0.5; 3]);
        assert!(warm[0] > warm[2] + 0.1);
    }

    #[test]
    fn largest_is_by_area() {
        let object =
            |kind, size| SceneObject { kind, colour: Colour::Red, shade: 1.0, x: 0.5, y: 0.5, size, angle: 0.0 };
        let mut scene = Scene {
            background: Background::plain([0.0; 3]),
            objects: vec![object(ShapeKind::Bar, 0.2), object(ShapeKind::Circle, 0.15)],
            cast: Cast::neutral(),
            noise: 0.0,
            noise_seed: 0,
        };
        assert_eq!(scene.largest().unwrap().kind, ShapeKind::Circle);
        scene.objects.clear();
        assert!(scene.largest().is_none());
    }

    #[test]
    fn hsv_primaries() {
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(hsv_to_rgb(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]));
        assert!(close(hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), [0.0, 1.0, 0.0]));
        assert!(close(hsv_to_rgb(0.5, 0.0, 0.4), [0.4, 0.4, 0.4]));
    }
}
