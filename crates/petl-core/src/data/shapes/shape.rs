//! Shapes and colours: the unit outlines (circle, square, triangle, star, cross, bar, ring),
//! the eight named colours, and a posed object with its area and bounding box.
//!
//! Coordinates are *canvas units*, independent of the rendered size: `x` grows to the right,
//! `y` grows downwards, the canvas is `[0, 1]²`. An object's `size` is the radius of the circle
//! that circumscribes it (its unit shape fits in `[-1, 1]²`); its `angle` (radians) rotates the
//! unit shape clockwise on screen.

use std::f32::consts::PI;

use serde::{Deserialize, Serialize};

/// Square half-side, bar half-width, cross arm half-width and ring inner radius of the unit
/// shapes (in units of `size`).
const SQUARE_HALF: f32 = 0.8;
const BAR_HALF_WIDTH: f32 = 0.22;
const CROSS_HALF_WIDTH: f32 = 0.28;
const RING_INNER: f32 = 0.55;

const SQUARE: [[f32; 2]; 4] = [
    [-SQUARE_HALF, -SQUARE_HALF],
    [SQUARE_HALF, -SQUARE_HALF],
    [SQUARE_HALF, SQUARE_HALF],
    [-SQUARE_HALF, SQUARE_HALF],
];
const TRIANGLE: [[f32; 2]; 3] = [[0.0, -1.0], [0.866_025_4, 0.5], [-0.866_025_4, 0.5]];
/// Five points, outer radius 1, inner radius 0.45, first point up.
const STAR: [[f32; 2]; 10] = [
    [0.0, -1.0],
    [0.264_503, -0.364_058],
    [0.951_057, -0.309_017],
    [0.427_975, 0.139_058],
    [0.587_785, 0.809_017],
    [0.0, 0.45],
    [-0.587_785, 0.809_017],
    [-0.427_975, 0.139_058],
    [-0.951_057, -0.309_017],
    [-0.264_503, -0.364_058],
];
const CROSS: [[f32; 2]; 12] = {
    let a = CROSS_HALF_WIDTH;
    [
        [a, -1.0],
        [a, -a],
        [1.0, -a],
        [1.0, a],
        [a, a],
        [a, 1.0],
        [-a, 1.0],
        [-a, a],
        [-1.0, a],
        [-1.0, -a],
        [-a, -a],
        [-a, -1.0],
    ]
};
const BAR: [[f32; 2]; 4] =
    [[-1.0, -BAR_HALF_WIDTH], [1.0, -BAR_HALF_WIDTH], [1.0, BAR_HALF_WIDTH], [-1.0, BAR_HALF_WIDTH]];

/// The kind of a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    /// A filled disc.
    Circle,
    /// A filled square (a diamond when rotated by 45°).
    Square,
    /// An equilateral triangle, point up at angle 0.
    Triangle,
    /// A five-pointed star, point up at angle 0.
    Star,
    /// A plus-shaped cross.
    Cross,
    /// A long thin rectangle, horizontal at angle 0 (symmetric under a half turn).
    Bar,
    /// An annulus (a disc with a hole).
    Ring,
}

/// The outline of a unit shape.
enum Outline {
    /// An annulus of outer radius 1 and the given inner radius (0 for a disc).
    Disc { inner: f32 },
    /// A simple polygon (not necessarily convex).
    Polygon(&'static [[f32; 2]]),
}

impl ShapeKind {
    /// Every kind, in label order.
    pub const ALL: [ShapeKind; 7] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Star,
        ShapeKind::Cross,
        ShapeKind::Bar,
        ShapeKind::Ring,
    ];

    /// The kind's English name, e.g. `"triangle"`.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Star => "star",
            ShapeKind::Cross => "cross",
            ShapeKind::Bar => "bar",
            ShapeKind::Ring => "ring",
        }
    }

    /// Position in [`ShapeKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn outline(self) -> Outline {
        match self {
            ShapeKind::Circle => Outline::Disc { inner: 0.0 },
            ShapeKind::Ring => Outline::Disc { inner: RING_INNER },
            ShapeKind::Square => Outline::Polygon(&SQUARE),
            ShapeKind::Triangle => Outline::Polygon(&TRIANGLE),
            ShapeKind::Star => Outline::Polygon(&STAR),
            ShapeKind::Cross => Outline::Polygon(&CROSS),
            ShapeKind::Bar => Outline::Polygon(&BAR),
        }
    }

    /// Whether the unit shape (circumradius 1, angle 0, centred at the origin) contains the
    /// local point `(u, v)`.
    pub fn contains_local(self, u: f32, v: f32) -> bool {
        match self.outline() {
            Outline::Disc { inner } => {
                let r2 = u * u + v * v;
                r2 <= 1.0 && r2 >= inner * inner
            }
            Outline::Polygon(vertices) => {
                // Even-odd rule: count the edges a ray towards +u crosses.
                let mut inside = false;
                let mut prev = vertices[vertices.len() - 1];
                for &cur in vertices {
                    if (cur[1] > v) != (prev[1] > v) {
                        let cross_u = cur[0] + (v - cur[1]) * (prev[0] - cur[0]) / (prev[1] - cur[1]);
                        if u < cross_u {
                            inside = !inside;
                        }
                    }
                    prev = cur;
                }
                inside
            }
        }
    }

    /// Area of the unit shape; an object covers `area_factor · size²` canvas units².
    pub fn area_factor(self) -> f32 {
        match self.outline() {
            Outline::Disc { inner } => PI * (1.0 - inner * inner),
            Outline::Polygon(vertices) => {
                // Shoelace formula.
                let mut twice = 0.0;
                let mut prev = vertices[vertices.len() - 1];
                for &cur in vertices {
                    twice += prev[0] * cur[1] - cur[0] * prev[1];
                    prev = cur;
                }
                twice.abs() / 2.0
            }
        }
    }
}

/// The eight named object colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
    /// Cyan.
    Cyan,
    /// White.
    White,
}

impl Colour {
    /// Every colour, in label order.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::Cyan,
        Colour::White,
    ];

    /// The colour's English name, e.g. `"purple"`.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Cyan => "cyan",
            Colour::White => "white",
        }
    }

    /// Position in [`Colour::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Linear RGB in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [0.86, 0.14, 0.14],
            Colour::Green => [0.18, 0.72, 0.24],
            Colour::Blue => [0.16, 0.32, 0.92],
            Colour::Yellow => [0.96, 0.88, 0.14],
            Colour::Purple => [0.60, 0.24, 0.84],
            Colour::Orange => [0.98, 0.55, 0.08],
            Colour::Cyan => [0.14, 0.82, 0.86],
            Colour::White => [0.96, 0.96, 0.96],
        }
    }
}

/// An axis-aligned box in canvas units (may extend past the canvas for objects at its edge).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

/// One shape in a scene.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    /// Shape kind.
    pub kind: ShapeKind,
    /// Named colour.
    pub colour: Colour,
    /// Brightness multiplier applied to the colour (about 0.85–1).
    pub shade: f32,
    /// Centre, canvas units.
    pub x: f32,
    /// Centre, canvas units.
    pub y: f32,
    /// Circumradius, canvas units.
    pub size: f32,
    /// Clockwise rotation on screen, radians.
    pub angle: f32,
}

/// An object's pose, with its rotation precomputed, mapping canvas points to the unit shape.
pub(crate) struct LocalFrame {
    x: f32,
    y: f32,
    cos: f32,
    sin: f32,
    inv_size: f32,
}

impl LocalFrame {
    /// Canvas point → local point of the unit shape.
    pub(crate) fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.x, y - self.y);
        ((dx * self.cos + dy * self.sin) * self.inv_size, (dy * self.cos - dx * self.sin) * self.inv_size)
    }
}

impl SceneObject {
    /// Whether the object covers the canvas point `(x, y)`.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (u, v) = self.frame().local(x, y);
        self.kind.contains_local(u, v)
    }

    pub(crate) fn frame(&self) -> LocalFrame {
        let (sin, cos) = self.angle.sin_cos();
        LocalFrame { x: self.x, y: self.y, cos, sin, inv_size: 1.0 / self.size }
    }

    /// Covered area, canvas units² (what "largest" means).
    pub fn area(&self) -> f32 {
        self.kind.area_factor() * self.size * self.size
    }

    /// The tight axis-aligned bounding box of the rotated shape.
    pub fn bbox(&self) -> BBox {
        let (x, y, s) = (self.x, self.y, self.size);
        match self.kind.outline() {
            Outline::Disc { .. } => BBox { x0: x - s, y0: y - s, x1: x + s, y1: y + s },
            Outline::Polygon(vertices) => {
                let (sin, cos) = self.angle.sin_cos();
                let mut b = BBox { x0: f32::INFINITY, y0: f32::INFINITY, x1: f32::NEG_INFINITY, y1: f32::NEG_INFINITY };
                for &[u, v] in vertices {
                    let (px, py) = (x + s * (u * cos - v * sin), y + s * (u * sin + v * cos));
                    b = BBox { x0: b.x0.min(px), y0: b.y0.min(py), x1: b.x1.max(px), y1: b.y1.max(py) };
                }
                b
            }
        }
    }

    /// Rendered colour: the named colour times `shade`.
    pub fn rgb(&self) -> [f32; 3] {
        self.colour.rgb().map(|c| c * self.shade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ShapeKind, angle: f32) -> SceneObject {
        SceneObject { kind, colour: Colour::Red, shade: 1.0, x: 0.5, y: 0.5, size: 0.2, angle }
    }

    #[test]
    fn unit_shapes_cover_their_centre_except_the_ring() {
        for kind in ShapeKind::ALL {
            assert_eq!(kind.contains_local(0.0, 0.05), kind != ShapeKind::Ring, "{}", kind.name());
            assert!(!kind.contains_local(1.01, 0.0) && !kind.contains_local(0.0, 1.01), "{}", kind.name());
        }
        assert!(ShapeKind::Ring.contains_local(0.8, 0.0));
        assert!(ShapeKind::Star.contains_local(0.0, -0.9) && !ShapeKind::Star.contains_local(0.5, -0.8));
        assert!(ShapeKind::Cross.contains_local(0.9, 0.0) && !ShapeKind::Cross.contains_local(0.6, 0.6));
        assert!(ShapeKind::Bar.contains_local(0.9, 0.0) && !ShapeKind::Bar.contains_local(0.0, 0.5));
    }

    #[test]
    fn areas_follow_the_outlines() {
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        assert!(close(ShapeKind::Square.area_factor(), 4.0 * SQUARE_HALF * SQUARE_HALF));
        assert!(close(ShapeKind::Bar.area_factor(), 4.0 * BAR_HALF_WIDTH));
        assert!(close(ShapeKind::Triangle.area_factor(), 1.299));
        assert!(close(ShapeKind::Star.area_factor(), 1.3225));
        assert!(close(ShapeKind::Ring.area_factor(), PI * (1.0 - RING_INNER * RING_INNER)));
    }

    #[test]
    fn bounding_boxes_rotate_with_the_shape() {
        let b = object(ShapeKind::Bar, 0.0).bbox();
        assert!((b.x1 - b.x0 - 0.4).abs() < 1e-5 && (b.y1 - b.y0 - 0.4 * BAR_HALF_WIDTH).abs() < 1e-5);
        let b = object(ShapeKind::Bar, PI / 2.0).bbox();
        assert!((b.y1 - b.y0 - 0.4).abs() < 1e-5 && (b.x1 - b.x0 - 0.4 * BAR_HALF_WIDTH).abs() < 1e-5);
        let b = object(ShapeKind::Square, PI / 4.0).bbox();
        let half = 0.2 * SQUARE_HALF * std::f32::consts::SQRT_2;
        assert!((b.x0 - (0.5 - half)).abs() < 1e-5 && (b.y1 - (0.5 + half)).abs() < 1e-5);
        let circle = object(ShapeKind::Circle, 1.0).bbox();
        assert_eq!(circle, BBox { x0: 0.3, y0: 0.3, x1: 0.7, y1: 0.7 });
    }

    #[test]
    fn contains_matches_the_rotated_shape() {
        let bar = object(ShapeKind::Bar, PI / 2.0);
        assert!(bar.contains(0.5, 0.68) && !bar.contains(0.68, 0.5));
    }
}
