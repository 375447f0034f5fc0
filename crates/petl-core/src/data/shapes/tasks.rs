//! Classification tasks on shapes scenes, in VTAB's three groups, plus the pretraining task.
//!
//! Each task is a label function of the [`Scene`] ([`ShapesTask::label`]) and a sampler that
//! draws a scene for a given label ([`ShapesTask::sample_scene`]); the label function is the
//! source of truth, the sampler redraws until they agree.

use std::f32::consts::{PI, TAU};
use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::scene::{BackgroundConfig, Cast, ObjectConfig, Scene, SceneConfig, Texture, Tint, uniform};
use super::shape::{Colour, ShapeKind};
use crate::data::vtab::VtabGroup;
use crate::{Error, Result};

/// Kinds of the `scene_pair` task; its classes are their 15 unordered pairs of distinct kinds.
const PAIR_KINDS: [ShapeKind; 6] =
    [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle, ShapeKind::Star, ShapeKind::Cross, ShapeKind::Bar];
/// Most objects of the `count` task.
const MAX_COUNT: usize = 6;
/// Centre-to-centre distances of the `distance` task, binned into `DISTANCE_BINS`.
const DISTANCE_RANGE: (f32, f32) = (0.2, 0.8);
const DISTANCE_BINS: usize = 5;
/// Bar angles modulo a half turn, binned into `ORIENTATION_BINS`.
const ORIENTATION_BINS: usize = 8;
/// Object coordinates of the `location_*` tasks, binned into `LOCATION_BINS`.
const LOCATION_RANGE: (f32, f32) = (0.1, 0.9);
const LOCATION_BINS: usize = 8;
/// Gap between objects, canvas units.
const GAP: f32 = 0.02;

/// A classification task of the shapes world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapesTask {
    /// Natural: kind of the largest object among 2–5 small distractors, K = 7.
    Object,
    /// Natural: colour of the largest object; 1–3 others up to 60 % of its area, K = 8.
    Colour,
    /// Natural: the unordered pair of kinds of two medium objects (circle, square, triangle,
    /// star, cross, bar; distinct), K = 15.
    ScenePair,
    /// Specialized: background texture, K = 6.
    Texture,
    /// Specialized: global colour cast / exposure ([`Tint`]), K = 5.
    Tint,
    /// Structured: number of objects, 1–6, K = 6.
    Count,
    /// Structured: distance between the centres of two small objects, 5 bins over 0.2–0.8
    /// canvas widths, K = 5.
    Distance,
    /// Structured: angle of a bar modulo 180°, 8 bins of 22.5°, K = 8.
    Orientation,
    /// Structured: x of a single small object, 8 bins over 0.1–0.9, K = 8.
    LocationX,
    /// Structured: y of a single small object, 8 bins over 0.1–0.9, K = 8.
    LocationY,
    /// Pretraining (no group): kind × colour of the largest object among up to four small
    /// ones, K = 56.
    Pretrain,
}

impl ShapesTask {
    /// The downstream tasks, grouped natural, specialized, structured.
    pub const DOWNSTREAM: [ShapesTask; 10] = [
        ShapesTask::Object,
        ShapesTask::Colour,
        ShapesTask::ScenePair,
        ShapesTask::Texture,
        ShapesTask::Tint,
        ShapesTask::Count,
        ShapesTask::Distance,
        ShapesTask::Orientation,
        ShapesTask::LocationX,
        ShapesTask::LocationY,
    ];

    /// Every task: the downstream ones, then [`ShapesTask::Pretrain`].
    pub const ALL: [ShapesTask; 11] = [
        ShapesTask::Object,
        ShapesTask::Colour,
        ShapesTask::ScenePair,
        ShapesTask::Texture,
        ShapesTask::Tint,
        ShapesTask::Count,
        ShapesTask::Distance,
        ShapesTask::Orientation,
        ShapesTask::LocationX,
        ShapesTask::LocationY,
        ShapesTask::Pretrain,
    ];

    /// The task's name, e.g. `"scene_pair"` (also its serde form).
    pub fn name(self) -> &'static str {
        match self {
            ShapesTask::Object => "object",
            ShapesTask::Colour => "colour",
            ShapesTask::ScenePair => "scene_pair",
            ShapesTask::Texture => "texture",
            ShapesTask::Tint => "tint",
            ShapesTask::Count => "count",
            ShapesTask::Distance => "distance",
            ShapesTask::Orientation => "orientation",
            ShapesTask::LocationX => "location_x",
            ShapesTask::LocationY => "location_y",
            ShapesTask::Pretrain => "pretrain",
        }
    }

    /// The VTAB group the task mimics; `None` for [`ShapesTask::Pretrain`].
    pub fn group(self) -> Option<VtabGroup> {
        match self {
            ShapesTask::Object | ShapesTask::Colour | ShapesTask::ScenePair => Some(VtabGroup::Natural),
            ShapesTask::Texture | ShapesTask::Tint => Some(VtabGroup::Specialized),
            ShapesTask::Count
            | ShapesTask::Distance
            | ShapesTask::Orientation
            | ShapesTask::LocationX
            | ShapesTask::LocationY => Some(VtabGroup::Structured),
            ShapesTask::Pretrain => None,
        }
    }

    /// Number of classes `K`.
    pub fn num_classes(self) -> usize {
        match self {
            ShapesTask::Object => ShapeKind::ALL.len(),
            ShapesTask::Colour => Colour::ALL.len(),
            ShapesTask::ScenePair => PAIR_KINDS.len() * (PAIR_KINDS.len() - 1) / 2,
            ShapesTask::Texture => Texture::ALL.len(),
            ShapesTask::Tint => Tint::ALL.len(),
            ShapesTask::Count => MAX_COUNT,
            ShapesTask::Distance => DISTANCE_BINS,
            ShapesTask::Orientation => ORIENTATION_BINS,
            ShapesTask::LocationX | ShapesTask::LocationY => LOCATION_BINS,
            ShapesTask::Pretrain => ShapeKind::ALL.len() * Colour::ALL.len(),
        }
    }

    /// The label of `scene`, or `None` when the scene does not fit the task (e.g. `distance`
    /// on a scene without exactly two objects).
    pub fn label(self, scene: &Scene) -> Option<usize> {
        let objects = &scene.objects;
        match self {
            ShapesTask::Object => scene.largest().map(|o| o.kind.index()),
            ShapesTask::Colour => scene.largest().map(|o| o.colour.index()),
            ShapesTask::Pretrain => scene.largest().map(|o| o.kind.index() * Colour::ALL.len() + o.colour.index()),
            ShapesTask::ScenePair => match objects.as_slice() {
                [a, b] => pairs().position(|p| p == (a.kind, b.kind) || p == (b.kind, a.kind)),
                _ => None,
            },
            ShapesTask::Texture => Some(scene.background.texture.index()),
            ShapesTask::Tint => Some(scene.cast.tint.index()),
            ShapesTask::Count => (1..=MAX_COUNT).contains(&objects.len()).then(|| objects.len() - 1),
            ShapesTask::Distance => match objects.as_slice() {
                [a, b] => bin((a.x - b.x).hypot(a.y - b.y), DISTANCE_RANGE, DISTANCE_BINS),
                _ => None,
            },
            ShapesTask::Orientation => objects
                .iter()
                .find(|o| o.kind == ShapeKind::Bar)
                .and_then(|bar| bin(bar.angle.rem_euclid(PI), (0.0, PI), ORIENTATION_BINS)),
            ShapesTask::LocationX => match objects.as_slice() {
                [o] => bin(o.x, LOCATION_RANGE, LOCATION_BINS),
                _ => None,
            },
            ShapesTask::LocationY => match objects.as_slice() {
                [o] => bin(o.y, LOCATION_RANGE, LOCATION_BINS),
                _ => None,
            },
        }
    }

    /// A random scene whose [`label`](ShapesTask::label) is `label`.
    ///
    /// # Panics
    /// If `label >= self.num_classes()`.
    pub fn sample_scene<R: Rng + ?Sized>(self, rng: &mut R, label: usize) -> Scene {
        assert!(label < self.num_classes(), "label {label} out of range for {self} (K = {})", self.num_classes());
        loop {
            let scene = self.draw(rng, label);
            if self.label(&scene) == Some(label) {
                return scene;
            }
        }
    }

    /// One attempt at a scene with `label`; crowding may make it miss (too few objects placed).
    fn draw<R: Rng + ?Sized>(self, rng: &mut R, label: usize) -> Scene {
        let background = match self {
            ShapesTask::Texture => BackgroundConfig {
                textures: vec![Texture::ALL[label]],
                contrast: (0.15, 0.35),
                period: (0.14, 0.25),
                gradient: 0.4,
            },
            // Dots are the size of the small objects: no texture that could be taken for one.
            ShapesTask::Count | ShapesTask::Distance | ShapesTask::LocationX | ShapesTask::LocationY => {
                BackgroundConfig {
                    textures: Texture::ALL.into_iter().filter(|&t| t != Texture::Dots).collect(),
                    ..natural_background()
                }
            }
            _ => natural_background(),
        };
        let mut scene = Scene::sample(rng, &SceneConfig { objects: (0, 0), background, ..SceneConfig::default() });
        match self {
            ShapesTask::Object => {
                let main = with_kind(ShapeKind::ALL[label], (0.22, 0.3)).sample(rng);
                scene.place(rng, main, GAP, GAP);
                let distractors = rng.random_range(2..=5);
                scene.scatter(rng, distractors, &ObjectConfig::any((0.06, 0.1)), 0.0, GAP);
            }
            ShapesTask::Colour => {
                let main =
                    ObjectConfig { colours: vec![Colour::ALL[label]], ..ObjectConfig::any((0.16, 0.24)) }.sample(rng);
                scene.place(rng, main, GAP, GAP);
                for _ in 0..rng.random_range(1..=3) {
                    let mut other = ObjectConfig::any((0.06, 0.16)).sample(rng);
                    other.size = other.size.min((0.6 * main.area() / other.kind.area_factor()).sqrt());
                    scene.place(rng, other, 0.0, GAP);
                }
            }
            ShapesTask::ScenePair => {
                let (a, b) = pairs().nth(label).expect("label < K");
                let kinds = if rng.random::<bool>() { [a, b] } else { [b, a] };
                for kind in kinds {
                    let object = with_kind(kind, (0.13, 0.2)).sample(rng);
                    scene.place(rng, object, GAP, 0.03);
                }
            }
            ShapesTask::Texture => {
                let count = rng.random_range(0..=2);
                scene.scatter(rng, count, &ObjectConfig::any((0.08, 0.16)), 0.0, GAP);
            }
            ShapesTask::Tint => {
                scene.cast = Cast::sample(rng, Tint::ALL[label], 0.06);
                let count = rng.random_range(1..=4);
                scene.scatter(rng, count, &ObjectConfig::any((0.07, 0.18)), 0.0, GAP);
            }
            ShapesTask::Count => {
                scene.scatter(rng, label + 1, &ObjectConfig::any((0.08, 0.12)), GAP, GAP);
            }
            ShapesTask::Distance => {
                let distance = in_bin(rng, DISTANCE_RANGE, DISTANCE_BINS, label);
                let (mut a, mut b) =
                    (ObjectConfig::any((0.06, 0.09)).sample(rng), ObjectConfig::any((0.06, 0.09)).sample(rng));
                let range = (a.size + GAP, 1.0 - a.size - GAP);
                loop {
                    (a.x, a.y) = (uniform(rng, range), uniform(rng, range));
                    let direction = uniform(rng, (0.0, TAU));
                    (b.x, b.y) = (a.x + distance * direction.cos(), a.y + distance * direction.sin());
                    let inside = |v: f32| (b.size + GAP..=1.0 - b.size - GAP).contains(&v);
                    if inside(b.x) && inside(b.y) {
                        break;
                    }
                }
                scene.objects = vec![a, b];
            }
            ShapesTask::Orientation => {
                let mut bar = with_kind(ShapeKind::Bar, (0.26, 0.38)).sample(rng);
                bar.angle =
                    in_bin(rng, (0.0, PI), ORIENTATION_BINS, label) + if rng.random::<bool>() { PI } else { 0.0 };
                scene.place(rng, bar, GAP, GAP);
                let round =
                    ObjectConfig { kinds: vec![ShapeKind::Circle, ShapeKind::Ring], ..ObjectConfig::any((0.05, 0.08)) };
                let count = rng.random_range(0..=2);
                scene.scatter(rng, count, &round, 0.0, GAP);
            }
            ShapesTask::LocationX | ShapesTask::LocationY => {
                let mut object = ObjectConfig::any((0.06, 0.09)).sample(rng);
                let (along, across) = (in_bin(rng, LOCATION_RANGE, LOCATION_BINS, label), uniform(rng, LOCATION_RANGE));
                (object.x, object.y) = if self == ShapesTask::LocationX { (along, across) } else { (across, along) };
                scene.objects.push(object);
            }
            ShapesTask::Pretrain => {
                let (kind, colour) =
                    (ShapeKind::ALL[label / Colour::ALL.len()], Colour::ALL[label % Colour::ALL.len()]);
                let main = ObjectConfig { colours: vec![colour], ..with_kind(kind, (0.2, 0.3)) }.sample(rng);
                scene.place(rng, main, GAP, GAP);
                let distractors = rng.random_range(0..=4);
                scene.scatter(rng, distractors, &ObjectConfig::any((0.05, 0.08)), 0.0, GAP);
            }
        }
        scene
    }
}

impl fmt::Display for ShapesTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ShapesTask {
    type Err = Error;

    /// Parses a task name, e.g. `count`.
    fn from_str(s: &str) -> Result<Self> {
        ShapesTask::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = ShapesTask::ALL.iter().map(|t| t.name()).collect();
            Error::Config(format!("unknown shapes task '{s}'; expected one of {}", names.join(", ")))
        })
    }
}

/// Any texture at low contrast: a nuisance, not a cue.
fn natural_background() -> BackgroundConfig {
    SceneConfig::default().background
}

/// Objects of one kind, any colour.
fn with_kind(kind: ShapeKind, size: (f32, f32)) -> ObjectConfig {
    ObjectConfig { kinds: vec![kind], ..ObjectConfig::any(size) }
}

/// The unordered pairs of distinct [`PAIR_KINDS`], in label order.
fn pairs() -> impl Iterator<Item = (ShapeKind, ShapeKind)> {
    (0..PAIR_KINDS.len()).flat_map(|i| (i + 1..PAIR_KINDS.len()).map(move |j| (PAIR_KINDS[i], PAIR_KINDS[j])))
}

/// The bin of `value` among `k` equal bins over `[lo, hi)`, if inside.
fn bin(value: f32, (lo, hi): (f32, f32), k: usize) -> Option<usize> {
    (lo..hi).contains(&value).then(|| (((value - lo) / (hi - lo) * k as f32) as usize).min(k - 1))
}

/// A value in the middle 80 % of bin `index` of `k` equal bins over `[lo, hi)`, so that
/// rounding never moves it to a neighbour.
fn in_bin<R: Rng + ?Sized>(rng: &mut R, (lo, hi): (f32, f32), k: usize, index: usize) -> f32 {
    lo + (hi - lo) / k as f32 * (index as f32 + uniform(rng, (0.1, 0.9)))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn every_label_of_every_task_round_trips() {
        let mut rng = StdRng::seed_from_u64(11);
        for task in ShapesTask::ALL {
            for label in 0..task.num_classes() {
                for _ in 0..3 {
                    let scene = task.sample_scene(&mut rng, label);
                    assert_eq!(task.label(&scene), Some(label), "{task}");
                }
            }
        }
    }

    #[test]
    fn groups_and_names() {
        let count = |g| ShapesTask::DOWNSTREAM.iter().filter(|t| t.group() == Some(g)).count();
        assert_eq!((count(VtabGroup::Natural), count(VtabGroup::Specialized), count(VtabGroup::Structured)), (3, 2, 5));
        assert_eq!(ShapesTask::Pretrain.group(), None);
        assert_eq!(ShapesTask::ScenePair.num_classes(), 15);
        assert!(ShapesTask::Pretrain.num_classes() >= 20);
        for task in ShapesTask::ALL {
            assert_eq!(task.name().parse::<ShapesTask>().unwrap(), task);
            assert_eq!(serde_json::to_string(&task).unwrap(), format!("\"{task}\""));
        }
        assert!(matches!("cifar".parse::<ShapesTask>(), Err(Error::Config(_))));
    }

    #[test]
    fn bins_cover_their_range() {
        assert_eq!(bin(0.2, DISTANCE_RANGE, 5), Some(0));
        assert_eq!(bin(0.799, DISTANCE_RANGE, 5), Some(4));
        assert_eq!(bin(0.8, DISTANCE_RANGE, 5), None);
        assert_eq!(bin(0.1, DISTANCE_RANGE, 5), None);
        assert_eq!(pairs().count(), 15);
    }
}
