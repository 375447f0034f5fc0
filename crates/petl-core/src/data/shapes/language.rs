//! Generated language over the shapes world: captions, questions with answers, true/false
//! statements over image pairs, referring expressions and caption–image pairs, so that every
//! vision–language method has an offline default dataset.
//!
//! In the embedded default these tasks stand in for the real image–text benchmarks:
//!
//! | task | stands in for | text | target |
//! |---|---|---|---|
//! | `shapes-caption` | COCO Captions | the prompt [`CAPTION_PROMPT`] | [`VlTarget::Text`]: a caption |
//! | `shapes-vqa` | VQAv2 | a question | [`VlTarget::Answers`]: the answer, score 1 |
//! | `shapes-nlvr` | NLVR2 | a statement about two images | [`VlTarget::Class`]: false 0 / true 1 |
//! | `shapes-refer` | RefCOCO | a referring expression | [`VlTarget::Box`] of the referent |
//! | `shapes-retrieval` | Flickr30K retrieval | a caption | [`VlTarget::Match`]: its image id |
//!
//! # The language
//!
//! Lower-case English from a small template grammar over the objects of a [`Scene`]: a noun
//! phrase names an object by colour and kind ("a red circle", "an orange star"), optionally
//! with a relative size ("a large red circle" when it covers at least twice the area of the
//! other object described). Spatial relations compare centres: *a* is left of (right of,
//! above, below) *b* when its centre is at least 0.05 canvas units further that way;
//! expressions and questions that rely on a relation are only generated when no other object
//! sits within 0.05 of the reference on that axis, so the relation is never borderline.
//! "Largest" and "smallest" are used only when the extreme object's area differs from the
//! runner-up's by a factor of 1.5 or more.
//!
//! - Captions describe every object of a scene of one to three: "a large red circle above a
//!   small blue square", "there are three shapes: a cyan ring, a white bar and a red star",
//!   in five template variants (one per caption of a retrieval image, as Flickr30K has five).
//! - Questions (VQAv2-style, one of [`answer_vocab`] each, balanced over seven types): "what
//!   colour is the circle?", "how many shapes are there?", "how many stars are there?", "is
//!   there a green triangle?" (yes and no alternate), "what shape is left of the red square?",
//!   "which shape is blue?", "what colour is the largest shape?".
//! - Statements over image pairs (NLVR2-style, true and false alternate): "the left image has
//!   more circles than the right image", "both images contain a blue shape", "both images
//!   contain a star", "exactly one image contains a bar", "both images have the same number
//!   of shapes".
//! - Referring expressions (RefCOCO-style, always with a unique referent; scenes of two to
//!   five objects over three kinds and three colours, so distractors often share its colour
//!   or kind): "the red circle", "the blue shape", "the square", "the
//!   largest square", "the shape left of the blue triangle".
//!
//! Punctuation (`,`, `:`, `?`) is attached to the preceding word; [`split_words`] splits text
//! as the Hugging Face `Whitespace` pre-tokenizer does (`\w+|[^\w\s]+`), and [`word_vocab`]
//! lists every word any generator emits, so [`word_tokenizer`] never produces `[UNK]` on
//! generated text.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::render::render;
use super::sample_seed;
use super::scene::{ObjectConfig, Scene, SceneConfig};
use super::shape::{Colour, SceneObject, ShapeKind};
use crate::data::Samples;
use crate::data::preprocess::Normalization;
use crate::data::vl::{VlSample, VlTarget};
use crate::{Error, Result};

/// Captions per retrieval image, as in Flickr30K (and COCO).
pub const CAPTIONS_PER_IMAGE: usize = 5;

/// The text of every `shapes-caption` sample: the captioning prompt.
pub const CAPTION_PROMPT: &str = "describe the image";

/// The special tokens, first in [`word_vocab`] in this order (ids 0–4): padding, unknown,
/// classification, separator, mask (BERT's names).
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Least centre offset (canvas units) for a spatial relation to hold, and least offset of every
/// other object from a relation's reference on its axis.
const SEP: f32 = 0.05;
/// Least area ratio between the extreme object and the runner-up for "largest"/"smallest".
const EXTREME_RATIO: f32 = 1.5;
/// Least area ratio between two captioned objects for "large"/"small".
const SIZE_RATIO: f32 = 2.0;
/// Gap between objects and margin to the canvas edge.
const GAP: f32 = 0.03;
/// Count answers.
const NUMBERS: [&str; 7] = ["zero", "one", "two", "three", "four", "five", "six"];
/// Question types of `shapes-vqa`, cycled by sample index.
const VQA_TYPES: usize = 7;
/// Expression types of `shapes-refer`, cycled by sample index.
const REFER_TYPES: usize = 5;
/// The words of the templates that are neither answers nor plurals.
const FUNCTION_WORDS: [&str; 43] = [
    "a", "an", "the", "there", "is", "are", "of", "to", "and", "with", "from", "than", "describe", "image", "images",
    "picture", "single", "shape", "shapes", "left", "right", "above", "below", "large", "small", "largest", "smallest",
    "what", "colour", "which", "how", "many", "both", "contain", "contains", "has", "have", "more", "exactly", "same",
    "number", ",", ":",
];
/// Sentence-final punctuation of questions.
const QUESTION_MARK: &str = "?";

/// A vision–language task of the shapes world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VlTask {
    /// Captioning (COCO Captions): the prompt [`CAPTION_PROMPT`] → a caption of the scene.
    Caption,
    /// Visual question answering (VQAv2): a question → soft scores over [`answer_vocab`].
    Vqa,
    /// Visual reasoning over image pairs (NLVR2): a statement about two images → true (1) or
    /// false (0).
    Nlvr,
    /// Referring expressions (RefCOCO): an expression → the box of its unique referent.
    Refer,
    /// Image–text retrieval (Flickr30K): a caption → the id of its image;
    /// [`CAPTIONS_PER_IMAGE`] captions per image.
    Retrieval,
}

impl VlTask {
    /// Every task.
    pub const ALL: [VlTask; 5] = [VlTask::Caption, VlTask::Vqa, VlTask::Nlvr, VlTask::Refer, VlTask::Retrieval];

    /// The task's name, e.g. `"shapes-vqa"` (also the dataset's [`Samples::name`]).
    pub fn name(self) -> &'static str {
        match self {
            VlTask::Caption => "shapes-caption",
            VlTask::Vqa => "shapes-vqa",
            VlTask::Nlvr => "shapes-nlvr",
            VlTask::Refer => "shapes-refer",
            VlTask::Retrieval => "shapes-retrieval",
        }
    }

    /// Images per sample: two for [`VlTask::Nlvr`], one otherwise.
    pub fn images_per_sample(self) -> usize {
        if self == VlTask::Nlvr { 2 } else { 1 }
    }
}

impl fmt::Display for VlTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VlTask {
    type Err = Error;

    /// Parses a task name, e.g. `shapes-vqa`.
    fn from_str(s: &str) -> Result<Self> {
        VlTask::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = VlTask::ALL.iter().map(|t| t.name()).collect();
            Error::Config(format!("unknown shapes vision-language task '{s}'; expected one of {}", names.join(", ")))
        })
    }
}

/// A sample before rendering: its scene(s), text and target.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapesVlExample {
    /// One scene, or two (left, right) for [`VlTask::Nlvr`].
    pub scenes: Vec<Scene>,
    /// The question, statement, expression, caption or prompt.
    pub text: String,
    /// The target.
    pub target: VlTarget,
}

/// `len` generated samples of a [`VlTask`] at `size × size` pixels.
///
/// Sample `i` is a pure function of `(seed, task, i)`, generated on demand in
/// [`get`](Samples::get); disjoint splits use different seeds. Question types (VQA) and
/// expression types (referring) cycle with the index, yes/no answers and true/false labels
/// alternate, so any contiguous range of indices is balanced. For retrieval, sample `i` pairs
/// caption `i / n` of image `i mod n`, `n` = [`num_images`](ShapesVl::num_images): samples
/// `0..n` show every image once, in id order, and a contiguous batch of up to `n` samples has
/// no repeated image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapesVl {
    task: VlTask,
    len: usize,
    size: usize,
    seed: u64,
    norm: Normalization,
}

impl ShapesVl {
    /// `len` samples of `task` at `size` px from `seed`, normalised with ImageNet statistics.
    pub fn new(task: VlTask, len: usize, size: usize, seed: u64) -> Self {
        ShapesVl { task, len, size, seed, norm: Normalization::Imagenet }
    }

    /// The same samples with another normalisation.
    pub fn with_norm(self, norm: Normalization) -> Self {
        ShapesVl { norm, ..self }
    }

    /// The task.
    pub fn task(&self) -> VlTask {
        self.task
    }

    /// Side of the square images produced.
    pub fn image_size(&self) -> usize {
        self.size
    }

    /// Number of distinct image ids: `len / CAPTIONS_PER_IMAGE` rounded up for retrieval
    /// ([`VlTarget::Match`] ids are `0..num_images`), `len` for the other tasks (every sample
    /// its own image or pair).
    pub fn num_images(&self) -> usize {
        if self.task == VlTask::Retrieval { self.len.div_ceil(CAPTIONS_PER_IMAGE) } else { self.len }
    }

    /// Scene(s), text and target of sample `index` (any index; [`get`](Samples::get) checks
    /// the range).
    pub fn example(&self, index: usize) -> ShapesVlExample {
        let mut rng = StdRng::seed_from_u64(sample_seed(self.seed, self.task.name(), index));
        let single =
            |scene: Scene, text: String, target: VlTarget| ShapesVlExample { scenes: vec![scene], text, target };
        match self.task {
            VlTask::Caption => {
                let scene = caption_scene(&mut rng);
                let variant = rng.random_range(0..CAPTIONS_PER_IMAGE);
                let text = caption(&scene, variant);
                single(scene, CAPTION_PROMPT.to_string(), VlTarget::Text(text))
            }
            VlTask::Vqa => {
                let (scene, question, answer) = vqa(&mut rng, index % VQA_TYPES, (index / VQA_TYPES).is_multiple_of(2));
                let answer = answer_vocab().iter().position(|&a| a == answer).expect("answers are in the vocabulary");
                single(scene, question, VlTarget::Answers(vec![(answer, 1.0)]))
            }
            VlTask::Nlvr => {
                let label = index % 2;
                let (left, right, statement) = nlvr(&mut rng, label == 1);
                ShapesVlExample { scenes: vec![left, right], text: statement, target: VlTarget::Class(label) }
            }
            VlTask::Refer => {
                let (scene, expression, referent) = refer(&mut rng, index % REFER_TYPES);
                let b = scene.objects[referent].bbox();
                let target = VlTarget::Box([b.x0, b.y0, b.x1, b.y1].map(|v| v.clamp(0.0, 1.0)));
                single(scene, expression, target)
            }
            VlTask::Retrieval => {
                let images = self.num_images().max(1);
                let (id, variant) = (index % images, index / images);
                let mut image_rng = StdRng::seed_from_u64(sample_seed(self.seed, "shapes-retrieval/image", id));
                let scene = caption_scene(&mut image_rng);
                let text = caption(&scene, variant);
                single(scene, text, VlTarget::Match(id))
            }
        }
    }
}

impl Samples<VlSample> for ShapesVl {
    fn name(&self) -> &str {
        self.task.name()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Renders and normalises sample `index`. `augment` is ignored: flips and crops would
    /// falsify the spatial language ("left of", boxes).
    fn get(&self, index: usize, _augment: Option<u64>) -> Result<VlSample> {
        if index >= self.len {
            return Err(Error::Config(format!("{}: index {index} out of range 0..{}", self.task, self.len)));
        }
        if self.size == 0 {
            return Err(Error::Config(format!("{}: image size must be positive", self.task)));
        }
        let example = self.example(index);
        let images = example
            .scenes
            .iter()
            .map(|scene| {
                let mut image = render(scene, self.size);
                self.norm.apply(&mut image);
                image
            })
            .collect();
        Ok(VlSample { text: example.text, images, target: example.target })
    }
}

/// Every VQA answer, in target-index order: yes, no, the counts zero to six, the colours
/// ([`Colour::ALL`] order), the kinds ([`ShapeKind::ALL`] order); 24 answers.
pub fn answer_vocab() -> Vec<&'static str> {
    ["yes", "no"]
        .into_iter()
        .chain(NUMBERS)
        .chain(Colour::ALL.map(Colour::name))
        .chain(ShapeKind::ALL.map(ShapeKind::name))
        .collect()
}

/// Every word any generator emits, after [`SPECIAL_TOKENS`] (ids 0–4): the answers
/// ([`answer_vocab`] order), the plural kinds, the template words, then the punctuation;
/// each once. A token's id is its position.
pub fn word_vocab() -> Vec<String> {
    let mut vocab: Vec<String> = Vec::new();
    let words = SPECIAL_TOKENS
        .into_iter()
        .chain(answer_vocab())
        .chain(ShapeKind::ALL.map(plural))
        .chain(FUNCTION_WORDS)
        .chain([QUESTION_MARK]);
    for word in words {
        if !vocab.iter().any(|w| w == word) {
            vocab.push(word.to_string());
        }
    }
    vocab
}

/// Splits `text` into words as the Hugging Face `Whitespace` pre-tokenizer does
/// (`\w+|[^\w\s]+`): runs of letters, digits and `_`, and runs of other non-space characters.
pub fn split_words(text: &str) -> Vec<&str> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Space,
        Word,
        Other,
    }
    let class = |c: char| {
        if c.is_whitespace() {
            Class::Space
        } else if c.is_alphanumeric() || c == '_' {
            Class::Word
        } else {
            Class::Other
        }
    };
    let mut words = Vec::new();
    let mut run: Option<(usize, Class)> = None;
    for (i, c) in text.char_indices() {
        let k = class(c);
        match run {
            Some((_, current)) if current == k => {}
            _ => {
                if let Some((start, current)) = run
                    && current != Class::Space
                {
                    words.push(&text[start..i]);
                }
                run = Some((i, k));
            }
        }
    }
    if let Some((start, current)) = run
        && current != Class::Space
    {
        words.push(&text[start..]);
    }
    words
}

/// A word-level Hugging Face tokenizer over [`word_vocab`], built in process: a `WordLevel`
/// model (unknown words → `[UNK]`), the `Whitespace` pre-tokenizer, the specials registered
/// as special tokens, and BERT's post-processing (`[CLS] A [SEP]`, pairs `[CLS] A [SEP] B
/// [SEP]` with type ids 0/1), applied when encoding with `add_special_tokens`. Padding id:
/// 0 (`[PAD]`).
///
/// # Errors
/// Only if the `tokenizers` crate rejects the model or the template (a bug).
pub fn word_tokenizer() -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, Tokenizer};

    let fail = |e: &dyn fmt::Display| Error::Config(format!("shapes word tokenizer: {e}"));
    let vocab = word_vocab().into_iter().enumerate().map(|(i, w)| (w, i as u32)).collect();
    let model =
        WordLevel::builder().vocab(vocab).unk_token(SPECIAL_TOKENS[1].to_string()).build().map_err(|e| fail(&e))?;
    let mut template = TemplateProcessing::builder();
    template.try_single("[CLS] $A [SEP]").map_err(|e| fail(&e))?;
    template.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1").map_err(|e| fail(&e))?;
    template.special_tokens(vec![(SPECIAL_TOKENS[2], 2), (SPECIAL_TOKENS[3], 3)]);
    let template = template.build().map_err(|e| fail(&e))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace));
    tokenizer.with_post_processor(Some(template));
    tokenizer.add_special_tokens(&SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)));
    Ok(tokenizer)
}

/// The plural of a kind's name, e.g. `"crosses"`.
fn plural(kind: ShapeKind) -> &'static str {
    match kind {
        ShapeKind::Circle => "circles",
        ShapeKind::Square => "squares",
        ShapeKind::Triangle => "triangles",
        ShapeKind::Star => "stars",
        ShapeKind::Cross => "crosses",
        ShapeKind::Bar => "bars",
        ShapeKind::Ring => "rings",
    }
}

/// `phrase` with its indefinite article: `"an orange star"`, `"a red circle"`.
fn indefinite(phrase: &str) -> String {
    let article = if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {phrase}")
}

/// `"{size} {colour} {kind}"` of an object, without article.
fn describe(object: &SceneObject, size: Option<&str>) -> String {
    let core = format!("{} {}", object.colour.name(), object.kind.name());
    match size {
        Some(s) => format!("{s} {core}"),
        None => core,
    }
}

/// A spatial relation of one object to a reference object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    const ALL: [Relation; 4] = [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below];

    /// The phrase of questions and expressions: "left of".
    fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// The phrase of captions: "to the left of".
    fn caption_phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    fn inverse(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Offset of `a` from `reference` in the relation's direction (positive when it holds).
    fn offset(self, a: &SceneObject, reference: &SceneObject) -> f32 {
        match self {
            Relation::LeftOf => reference.x - a.x,
            Relation::RightOf => a.x - reference.x,
            Relation::Above => reference.y - a.y,
            Relation::Below => a.y - reference.y,
        }
    }

    /// Whether `a` is clearly in this relation to `reference`.
    fn holds(self, a: &SceneObject, reference: &SceneObject) -> bool {
        self.offset(a, reference) >= SEP
    }

    /// The relation of `a` to `b` along the axis of their larger centre offset.
    fn dominant(a: &SceneObject, b: &SceneObject) -> Relation {
        let (dx, dy) = (a.x - b.x, a.y - b.y);
        match (dx.abs() >= dy.abs(), dx < 0.0, dy < 0.0) {
            (true, true, _) => Relation::LeftOf,
            (true, false, _) => Relation::RightOf,
            (false, _, true) => Relation::Above,
            (false, _, false) => Relation::Below,
        }
    }
}

/// The unique object in `relation` to object `reference`, when every other object is clearly
/// on one side of it on the relation's axis and exactly one is on the relation's side.
fn related(scene: &Scene, reference: usize, relation: Relation) -> Option<usize> {
    let r = &scene.objects[reference];
    let others = move || scene.objects.iter().enumerate().filter(move |&(i, _)| i != reference);
    if others().any(|(_, o)| relation.offset(o, r).abs() < SEP) {
        return None;
    }
    let mut holders = others().filter(|(_, o)| relation.holds(o, r)).map(|(i, _)| i);
    match (holders.next(), holders.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// The object of largest (or smallest) area among `candidates`, when there are at least two
/// and it beats the runner-up by [`EXTREME_RATIO`].
fn extreme(scene: &Scene, candidates: &[usize], largest: bool) -> Option<usize> {
    if candidates.len() < 2 {
        return None;
    }
    let mut order = candidates.to_vec();
    let area = |i: usize| scene.objects[i].area();
    order.sort_by(|&a, &b| area(b).total_cmp(&area(a)));
    let (first, second) = if largest { (order[0], order[1]) } else { (order[order.len() - 1], order[order.len() - 2]) };
    let ratio = if largest { area(first) / area(second) } else { area(second) / area(first) };
    (ratio >= EXTREME_RATIO).then_some(first)
}

/// Whether object `i` is the only one with its `key`.
fn unique_by<K: PartialEq>(scene: &Scene, i: usize, key: impl Fn(&SceneObject) -> K) -> bool {
    let k = key(&scene.objects[i]);
    scene.objects.iter().filter(|o| key(o) == k).count() == 1
}

/// A uniformly chosen element, `None` when empty.
fn pick<'a, T, R: Rng + ?Sized>(rng: &mut R, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.random_range(0..items.len())])
}

/// `n` distinct elements of `all` in random order (partial Fisher–Yates).
fn subset<T: Copy, R: Rng + ?Sized>(rng: &mut R, all: &[T], n: usize) -> Vec<T> {
    let mut items = all.to_vec();
    for i in 0..n.min(items.len()) {
        let j = rng.random_range(i..items.len());
        items.swap(i, j);
    }
    items.truncate(n);
    items
}

/// A scene of `objects` objects drawn from `object`, on the natural (any texture, low
/// contrast) background.
fn draw<R: Rng + ?Sized>(rng: &mut R, objects: (usize, usize), object: ObjectConfig) -> Scene {
    Scene::sample(rng, &SceneConfig { objects, object, margin: GAP, gap: GAP, ..SceneConfig::default() })
}

/// Objects of three random kinds and three random colours, so that distractors share the
/// referent's colour or kind.
fn palette<R: Rng + ?Sized>(rng: &mut R, size: (f32, f32)) -> ObjectConfig {
    ObjectConfig { kinds: subset(rng, &ShapeKind::ALL, 3), colours: subset(rng, &Colour::ALL, 3), size }
}

/// A scene of one to three objects of any kind and colour, for captions.
fn caption_scene<R: Rng + ?Sized>(rng: &mut R) -> Scene {
    loop {
        let scene = draw(rng, (1, 3), ObjectConfig::any((0.07, 0.2)));
        if !scene.objects.is_empty() {
            return scene;
        }
    }
}

/// Caption template `variant` (taken mod [`CAPTIONS_PER_IMAGE`]) of `scene`; the variants of
/// one scene differ.
fn caption(scene: &Scene, variant: usize) -> String {
    let objects = &scene.objects;
    match objects.as_slice() {
        [] => "an image with no shapes".to_string(),
        [o] => {
            let d = describe(o, None);
            match variant % CAPTIONS_PER_IMAGE {
                0 => indefinite(&d),
                1 => format!("there is {}", indefinite(&d)),
                2 => format!("a single {d}"),
                3 => format!("a picture of {}", indefinite(&d)),
                _ => format!("an image with one {d}"),
            }
        }
        [a, b] => {
            let ratio = a.area() / b.area();
            let (sa, sb) = if ratio >= SIZE_RATIO {
                (Some("large"), Some("small"))
            } else if ratio <= 1.0 / SIZE_RATIO {
                (Some("small"), Some("large"))
            } else {
                (None, None)
            };
            let (da, db) = (indefinite(&describe(a, sa)), indefinite(&describe(b, sb)));
            let relation = Relation::dominant(a, b);
            let (rel, inv) = (relation.caption_phrase(), relation.inverse().caption_phrase());
            match variant % CAPTIONS_PER_IMAGE {
                0 => format!("{da} {rel} {db}"),
                1 => format!("{db} {inv} {da}"),
                2 => format!("there is {da} {rel} {db}"),
                3 => format!("{da} and {db}"),
                _ => format!("a picture of {da} {rel} {db}"),
            }
        }
        _ => {
            let mut sorted: Vec<&SceneObject> = objects.iter().collect();
            sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
            let separated = sorted.windows(2).all(|w| w[1].x - w[0].x >= SEP);
            let list = |order: &[&SceneObject]| {
                let items: Vec<String> = order.iter().map(|o| indefinite(&describe(o, None))).collect();
                let (last, rest) = items.split_last().expect("at least three objects");
                format!("{} and {last}", rest.join(", "))
            };
            let n = NUMBERS.get(objects.len()).copied().unwrap_or("many");
            let reversed: Vec<&SceneObject> = sorted.iter().rev().copied().collect();
            match variant % CAPTIONS_PER_IMAGE {
                0 => list(&sorted),
                1 => format!("{n} shapes: {}", list(&sorted)),
                2 => format!("there are {n} shapes: {}", list(&reversed)),
                3 if separated => format!("from left to right: {}", list(&sorted)),
                3 => format!("a picture of {}", list(&sorted)),
                _ => format!("an image with {}", list(&reversed)),
            }
        }
    }
}

/// A scene, a question of type `kind` (`0..VQA_TYPES`) and its answer; `yes` picks the answer
/// of the yes/no type.
fn vqa<R: Rng + ?Sized>(rng: &mut R, kind: usize, yes: bool) -> (Scene, String, &'static str) {
    loop {
        if let Some(found) = vqa_attempt(rng, kind, yes) {
            return found;
        }
    }
}

/// One attempt at [`vqa`]: `None` when the scene drawn admits no question of the type.
fn vqa_attempt<R: Rng + ?Sized>(rng: &mut R, kind: usize, yes: bool) -> Option<(Scene, String, &'static str)> {
    let any = ObjectConfig::any((0.07, 0.16));
    match kind {
        // What colour is the <kind>? (a kind that occurs once)
        0 => {
            let scene = draw(rng, (1, 5), any);
            let unique: Vec<usize> = (0..scene.objects.len()).filter(|&i| unique_by(&scene, i, |o| o.kind)).collect();
            let o = scene.objects[*pick(rng, &unique)?];
            Some((scene, format!("what colour is the {}?", o.kind.name()), o.colour.name()))
        }
        // How many shapes are there?
        1 => {
            let n = rng.random_range(1..=6);
            let scene = draw(rng, (n, n), ObjectConfig::any((0.06, 0.12)));
            let answer = *NUMBERS.get(scene.objects.len()).filter(|_| !scene.objects.is_empty())?;
            Some((scene, "how many shapes are there?".to_string(), answer))
        }
        // How many <kinds> are there? (zero to three of them among others)
        2 => {
            let target = *pick(rng, &ShapeKind::ALL)?;
            let (count, others) = (rng.random_range(0..=3), rng.random_range(0..=3));
            let mut scene = draw(rng, (0, 0), any.clone());
            let (config, rest) = (
                ObjectConfig { kinds: vec![target], ..any.clone() },
                ObjectConfig { kinds: ShapeKind::ALL.into_iter().filter(|&k| k != target).collect(), ..any },
            );
            scene.scatter(rng, count, &config, GAP, GAP);
            scene.scatter(rng, others, &rest, GAP, GAP);
            if scene.objects.is_empty() {
                return None;
            }
            let n = scene.objects.iter().filter(|o| o.kind == target).count();
            Some((scene, format!("how many {} are there?", plural(target)), NUMBERS[n]))
        }
        // Is there a <colour> <kind>? (a near miss when the answer is no)
        3 => {
            let scene = draw(rng, (1, 5), any);
            let present = |c: Colour, k: ShapeKind| scene.objects.iter().any(|o| o.colour == c && o.kind == k);
            let (colour, kind) = if yes {
                let o = pick(rng, &scene.objects)?;
                (o.colour, o.kind)
            } else {
                let absent: Vec<(Colour, ShapeKind)> = Colour::ALL
                    .into_iter()
                    .flat_map(|c| ShapeKind::ALL.map(|k| (c, k)))
                    .filter(|&(c, k)| !present(c, k))
                    .collect();
                let near: Vec<(Colour, ShapeKind)> = absent
                    .iter()
                    .copied()
                    .filter(|&(c, k)| scene.objects.iter().any(|o| o.colour == c || o.kind == k))
                    .collect();
                *pick(rng, if near.is_empty() { &absent } else { &near })?
            };
            let question = format!("is there {}?", indefinite(&format!("{} {}", colour.name(), kind.name())));
            Some((scene, question, if yes { "yes" } else { "no" }))
        }
        // What shape is <relation> the <colour> <kind>?
        4 => {
            let object = palette(rng, (0.07, 0.15));
            let scene = draw(rng, (2, 5), object);
            let mut found = Vec::new();
            for r in (0..scene.objects.len()).filter(|&i| unique_by(&scene, i, |o| (o.colour, o.kind))) {
                for relation in Relation::ALL {
                    if let Some(i) = related(&scene, r, relation) {
                        let question =
                            format!("what shape is {} the {}?", relation.phrase(), describe(&scene.objects[r], None));
                        found.push((question, scene.objects[i].kind.name()));
                    }
                }
            }
            let (question, answer) = pick(rng, &found)?.clone();
            Some((scene, question, answer))
        }
        // Which shape is <colour>? (a colour that occurs once)
        5 => {
            let scene = draw(rng, (1, 5), any);
            let unique: Vec<usize> = (0..scene.objects.len()).filter(|&i| unique_by(&scene, i, |o| o.colour)).collect();
            let o = scene.objects[*pick(rng, &unique)?];
            Some((scene, format!("which shape is {}?", o.colour.name()), o.kind.name()))
        }
        // What colour is the largest / smallest shape?
        _ => {
            let scene = draw(rng, (2, 5), ObjectConfig::any((0.06, 0.18)));
            let largest = rng.random::<bool>();
            let all: Vec<usize> = (0..scene.objects.len()).collect();
            let o = scene.objects[extreme(&scene, &all, largest)?];
            let which = if largest { "largest" } else { "smallest" };
            Some((scene, format!("what colour is the {which} shape?"), o.colour.name()))
        }
    }
}

/// A true/false statement about an image pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Statement {
    /// One image has more objects (of a kind, or in all) than the other.
    More { kind: Option<ShapeKind>, left: bool },
    /// Both images contain an object of the colour.
    BothColour(Colour),
    /// Both images contain an object of the kind.
    BothKind(ShapeKind),
    /// Exactly one image contains an object of the kind.
    ExactlyOneKind(ShapeKind),
    /// Both images have as many objects.
    SameCount,
}

impl Statement {
    fn text(self) -> String {
        match self {
            Statement::More { kind, left } => {
                let (a, b) = if left { ("left", "right") } else { ("right", "left") };
                let what = kind.map_or("shapes", plural);
                format!("the {a} image has more {what} than the {b} image")
            }
            Statement::BothColour(c) => format!("both images contain {} shape", indefinite(c.name())),
            Statement::BothKind(k) => format!("both images contain {}", indefinite(k.name())),
            Statement::ExactlyOneKind(k) => format!("exactly one image contains {}", indefinite(k.name())),
            Statement::SameCount => "both images have the same number of shapes".to_string(),
        }
    }

    fn holds(self, left: &Scene, right: &Scene) -> bool {
        let has_kind = |s: &Scene, k: ShapeKind| s.objects.iter().any(|o| o.kind == k);
        match self {
            Statement::More { kind, left: on_left } => {
                let count = |s: &Scene| s.objects.iter().filter(|o| kind.is_none_or(|k| o.kind == k)).count();
                let (a, b) = if on_left { (count(left), count(right)) } else { (count(right), count(left)) };
                a > b
            }
            Statement::BothColour(c) => [left, right].iter().all(|s| s.objects.iter().any(|o| o.colour == c)),
            Statement::BothKind(k) => has_kind(left, k) && has_kind(right, k),
            Statement::ExactlyOneKind(k) => has_kind(left, k) != has_kind(right, k),
            Statement::SameCount => left.objects.len() == right.objects.len(),
        }
    }
}

/// Two scenes and a statement about them whose truth is `truth`: the statement is drawn
/// first (over a palette of three kinds and three colours shared by both images), then image
/// pairs until its truth matches.
fn nlvr<R: Rng + ?Sized>(rng: &mut R, truth: bool) -> (Scene, Scene, String) {
    let object = palette(rng, (0.07, 0.16));
    let (kinds, colours) = (object.kinds.clone(), object.colours.clone());
    let statement = match rng.random_range(0..5) {
        0 => {
            let kind = if rng.random::<bool>() { Some(kinds[rng.random_range(0..kinds.len())]) } else { None };
            Statement::More { kind, left: rng.random::<bool>() }
        }
        1 => Statement::BothColour(colours[rng.random_range(0..colours.len())]),
        2 => Statement::BothKind(kinds[rng.random_range(0..kinds.len())]),
        3 => Statement::ExactlyOneKind(kinds[rng.random_range(0..kinds.len())]),
        _ => Statement::SameCount,
    };
    loop {
        let left = draw(rng, (1, 4), object.clone());
        let right = draw(rng, (1, 4), object.clone());
        if statement.holds(&left, &right) == truth {
            return (left, right, statement.text());
        }
    }
}

/// A scene, a referring expression of type `kind` (`0..REFER_TYPES`) and its referent.
fn refer<R: Rng + ?Sized>(rng: &mut R, kind: usize) -> (Scene, String, usize) {
    loop {
        let object = palette(rng, (0.06, 0.17));
        let scene = draw(rng, (2, 5), object);
        let found = expressions(&scene, kind);
        if let Some((expression, referent)) = pick(rng, &found).cloned() {
            return (scene, expression, referent);
        }
    }
}

/// Every unambiguous expression of type `kind` for `scene`, with its referent.
fn expressions(scene: &Scene, kind: usize) -> Vec<(String, usize)> {
    let n = scene.objects.len();
    let name = |i: usize| describe(&scene.objects[i], None);
    let unique_pair = move || (0..n).filter(move |&i| unique_by(scene, i, |o| (o.colour, o.kind)));
    match kind {
        0 => unique_pair().map(|i| (format!("the {}", name(i)), i)).collect(),
        1 => (0..n)
            .filter(|&i| unique_by(scene, i, |o| o.colour))
            .map(|i| (format!("the {} shape", scene.objects[i].colour.name()), i))
            .collect(),
        2 => (0..n)
            .filter(|&i| unique_by(scene, i, |o| o.kind))
            .map(|i| (format!("the {}", scene.objects[i].kind.name()), i))
            .collect(),
        3 => {
            let mut found = Vec::new();
            let groups = std::iter::once(None).chain(ShapeKind::ALL.map(Some));
            for group in groups {
                let members: Vec<usize> =
                    (0..n).filter(|&i| group.is_none_or(|k| scene.objects[i].kind == k)).collect();
                for largest in [true, false] {
                    if let Some(i) = extreme(scene, &members, largest) {
                        let which = if largest { "largest" } else { "smallest" };
                        found.push((format!("the {which} {}", group.map_or("shape", ShapeKind::name)), i));
                    }
                }
            }
            found
        }
        _ => {
            let mut found = Vec::new();
            for r in unique_pair() {
                for relation in Relation::ALL {
                    if let Some(i) = related(scene, r, relation) {
                        found.push((format!("the shape {} the {}", relation.phrase(), name(r)), i));
                    }
                }
            }
            found
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn kind(word: &str) -> ShapeKind {
        ShapeKind::ALL.into_iter().find(|k| k.name() == word).unwrap_or_else(|| panic!("not a kind: {word}"))
    }

    fn colour(word: &str) -> Colour {
        Colour::ALL.into_iter().find(|c| c.name() == word).unwrap_or_else(|| panic!("not a colour: {word}"))
    }

    fn plural_kind(word: &str) -> ShapeKind {
        ShapeKind::ALL.into_iter().find(|&k| plural(k) == word).unwrap_or_else(|| panic!("not a plural: {word}"))
    }

    fn relation(words: &[&str]) -> Relation {
        match words {
            ["left", "of"] | ["to", "the", "left", "of"] => Relation::LeftOf,
            ["right", "of"] | ["to", "the", "right", "of"] => Relation::RightOf,
            ["above"] => Relation::Above,
            ["below"] => Relation::Below,
            _ => panic!("not a relation: {words:?}"),
        }
    }

    fn article_ok(article: &str, next: &str) {
        let expected = if next.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        assert_eq!(article, expected, "article before {next}");
    }

    /// Indices of the objects of `colour` and `kind`.
    fn matching(scene: &Scene, c: Colour, k: ShapeKind) -> Vec<usize> {
        (0..scene.objects.len()).filter(|&i| scene.objects[i].colour == c && scene.objects[i].kind == k).collect()
    }

    /// The single object `relation` to the object named `c k`, checked from scratch.
    fn related_checked(scene: &Scene, rel: Relation, c: &str, k: &str) -> usize {
        let refs = matching(scene, colour(c), kind(k));
        assert_eq!(refs.len(), 1, "reference {c} {k} is not unique");
        let r = scene.objects[refs[0]];
        let offset = |o: &SceneObject| match rel {
            Relation::LeftOf => r.x - o.x,
            Relation::RightOf => o.x - r.x,
            Relation::Above => r.y - o.y,
            Relation::Below => o.y - r.y,
        };
        let others: Vec<usize> = (0..scene.objects.len()).filter(|&i| i != refs[0]).collect();
        assert!(others.iter().all(|&i| offset(&scene.objects[i]).abs() >= 0.05), "borderline relation");
        let holders: Vec<usize> = others.into_iter().filter(|&i| offset(&scene.objects[i]) > 0.0).collect();
        assert_eq!(holders.len(), 1, "{rel:?} the {c} {k}: {holders:?}");
        holders[0]
    }

    /// The largest / smallest of `candidates`, checked to beat the runner-up by 1.5× in area.
    fn extreme_checked(scene: &Scene, candidates: &[usize], largest: bool) -> usize {
        assert!(candidates.len() >= 2);
        let mut areas: Vec<(f32, usize)> = candidates.iter().map(|&i| (scene.objects[i].area(), i)).collect();
        areas.sort_by(|a, b| a.0.total_cmp(&b.0));
        if largest {
            areas.reverse();
            assert!(areas[0].0 >= 1.5 * areas[1].0);
        } else {
            assert!(areas[1].0 >= 1.5 * areas[0].0);
        }
        areas[0].1
    }

    /// The answer of a generated question, computed from the scene.
    fn answer(scene: &Scene, question: &str) -> String {
        let objects = &scene.objects;
        let w = split_words(question);
        let count = |f: &dyn Fn(&SceneObject) -> bool| objects.iter().filter(|o| f(o)).count();
        match w.as_slice() {
            ["what", "colour", "is", "the", sup @ ("largest" | "smallest"), "shape", "?"] => {
                let all: Vec<usize> = (0..objects.len()).collect();
                objects[extreme_checked(scene, &all, *sup == "largest")].colour.name().into()
            }
            ["what", "colour", "is", "the", k, "?"] => {
                let found: Vec<_> = objects.iter().filter(|o| o.kind == kind(k)).collect();
                assert_eq!(found.len(), 1, "{question}");
                found[0].colour.name().into()
            }
            ["how", "many", "shapes", "are", "there", "?"] => NUMBERS[objects.len()].into(),
            ["how", "many", p, "are", "there", "?"] => NUMBERS[count(&|o| o.kind == plural_kind(p))].into(),
            ["is", "there", art, c, k, "?"] => {
                article_ok(art, c);
                let n = matching(scene, colour(c), kind(k)).len();
                (if n > 0 { "yes" } else { "no" }).into()
            }
            ["which", "shape", "is", c, "?"] => {
                let found: Vec<_> = objects.iter().filter(|o| o.colour == colour(c)).collect();
                assert_eq!(found.len(), 1, "{question}");
                found[0].kind.name().into()
            }
            ["what", "shape", "is", rest @ .., "the", c, k, "?"] => {
                objects[related_checked(scene, relation(rest), c, k)].kind.name().into()
            }
            _ => panic!("unexpected question: {question}"),
        }
    }

    /// The truth of a generated statement, computed from the two scenes.
    fn truth(left: &Scene, right: &Scene, statement: &str) -> bool {
        let w = split_words(statement);
        let has = |s: &Scene, f: &dyn Fn(&SceneObject) -> bool| s.objects.iter().any(|o| f(o));
        match w.as_slice() {
            ["the", a, "image", "has", "more", what, "than", "the", b, "image"] => {
                let count =
                    |s: &Scene| s.objects.iter().filter(|o| *what == "shapes" || o.kind == plural_kind(what)).count();
                match (*a, *b) {
                    ("left", "right") => count(left) > count(right),
                    ("right", "left") => count(right) > count(left),
                    _ => panic!("{statement}"),
                }
            }
            ["both", "images", "contain", art, c, "shape"] => {
                article_ok(art, c);
                has(left, &|o| o.colour == colour(c)) && has(right, &|o| o.colour == colour(c))
            }
            ["both", "images", "contain", art, k] => {
                article_ok(art, k);
                has(left, &|o| o.kind == kind(k)) && has(right, &|o| o.kind == kind(k))
            }
            ["exactly", "one", "image", "contains", art, k] => {
                article_ok(art, k);
                has(left, &|o| o.kind == kind(k)) != has(right, &|o| o.kind == kind(k))
            }
            ["both", "images", "have", "the", "same", "number", "of", "shapes"] => {
                left.objects.len() == right.objects.len()
            }
            _ => panic!("unexpected statement: {statement}"),
        }
    }

    /// The referent of a generated expression, checked to be unique.
    fn referent(scene: &Scene, expression: &str) -> usize {
        let w = split_words(expression);
        let n = scene.objects.len();
        let only = |found: Vec<usize>| {
            assert_eq!(found.len(), 1, "{expression}: {found:?}");
            found[0]
        };
        match w.as_slice() {
            ["the", "shape", rest @ .., "the", c, k] => related_checked(scene, relation(rest), c, k),
            ["the", sup @ ("largest" | "smallest"), what] => {
                let members: Vec<usize> =
                    (0..n).filter(|&i| *what == "shape" || scene.objects[i].kind == kind(what)).collect();
                extreme_checked(scene, &members, *sup == "largest")
            }
            ["the", c, "shape"] => only((0..n).filter(|&i| scene.objects[i].colour == colour(c)).collect()),
            ["the", c, k] => only(matching(scene, colour(c), kind(k))),
            ["the", k] => only((0..n).filter(|&i| scene.objects[i].kind == kind(k)).collect()),
            _ => panic!("unexpected expression: {expression}"),
        }
    }

    /// Checks a caption against its scene: every object named (colour and kind, with the right
    /// article), and for two objects the relation and the size words.
    fn check_caption(scene: &Scene, caption: &str) {
        let w = split_words(caption);
        let objects = &scene.objects;
        // Noun phrases: article, optional size, colour, kind.
        let mut phrases = Vec::new();
        let mut i = 0;
        while i < w.len() {
            if (w[i] == "a" || w[i] == "an" || w[i] == "one" || w[i] == "single")
                && i + 2 < w.len()
                && Colour::ALL.iter().any(|c| c.name() == w[i + 1] || ["large", "small"].contains(&w[i + 1]))
            {
                let size = ["large", "small"].contains(&w[i + 1]).then_some(w[i + 1]);
                let at = i + 1 + usize::from(size.is_some());
                if ["a", "an"].contains(&w[i]) {
                    article_ok(w[i], w[i + 1]);
                }
                phrases.push((i, size, colour(w[at]), kind(w[at + 1])));
                i = at + 2;
            } else {
                i += 1;
            }
        }
        assert_eq!(phrases.len(), objects.len(), "{caption}");
        let mut described: Vec<_> = phrases.iter().map(|&(_, _, c, k)| (c.index(), k.index())).collect();
        let mut actual: Vec<_> = objects.iter().map(|o| (o.colour.index(), o.kind.index())).collect();
        described.sort_unstable();
        actual.sort_unstable();
        assert_eq!(described, actual, "{caption}");
        if w.first() == Some(&"from") {
            let mut sorted = objects.clone();
            sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
            assert!(sorted.windows(2).all(|p| p[1].x - p[0].x >= 0.05), "{caption}");
            let in_order: Vec<_> = sorted.iter().map(|o| (o.colour, o.kind)).collect();
            assert_eq!(phrases.iter().map(|p| (p.2, p.3)).collect::<Vec<_>>(), in_order, "{caption}");
        }
        if let [a, b] = objects.as_slice() {
            let ratio = a.area() / b.area();
            let sized = ratio >= 2.0 || ratio <= 0.5;
            assert!(phrases.iter().all(|p| p.1.is_some() == sized), "{caption}");
            let (p, q) = (phrases[0], phrases[1]);
            let between = &w[p.0 + 3 + usize::from(p.1.is_some())..q.0];
            if between != ["and"] {
                let rel = relation(between);
                // Some assignment of the two phrases to the two objects fits the words.
                let fits = |x: &SceneObject, y: &SceneObject| {
                    let size_ok = |s: Option<&str>, o: &SceneObject, other: &SceneObject| {
                        s.is_none_or(|s| (s == "large") == (o.area() > other.area()))
                    };
                    (x.colour, x.kind, y.colour, y.kind) == (p.2, p.3, q.2, q.3)
                        && rel.holds(x, y)
                        && size_ok(p.1, x, y)
                        && size_ok(q.1, y, x)
                };
                assert!(fits(a, b) || fits(b, a), "{caption}");
            }
        }
    }

    #[test]
    fn same_seed_same_sample_other_index_or_seed_other_sample() {
        for task in VlTask::ALL {
            let (a, b, c) =
                (ShapesVl::new(task, 6, 16, 7), ShapesVl::new(task, 6, 16, 7), ShapesVl::new(task, 6, 16, 8));
            for i in 0..6 {
                let sample = a.get(i, None).unwrap();
                assert_eq!(sample, b.get(i, None).unwrap(), "{task} #{i}");
                assert_eq!(sample, a.get(i, Some(5)).unwrap(), "augment is ignored");
                assert_ne!(sample, c.get(i, None).unwrap(), "{task} #{i}: other seed");
                assert_eq!(sample.images.len(), task.images_per_sample());
                assert!(sample.images.iter().all(|im| im.len() == 3 * 16 * 16));
                for j in 0..i {
                    assert_ne!(sample, a.get(j, None).unwrap(), "{task} #{i} = #{j}");
                }
            }
        }
    }

    #[test]
    fn names_parse_and_bad_input_is_an_error() {
        for task in VlTask::ALL {
            assert_eq!(task.name().parse::<VlTask>().unwrap(), task);
            let data = ShapesVl::new(task, 3, 8, 0);
            assert_eq!((data.name(), data.len(), data.image_size()), (task.name(), 3, 8));
            match data.get(3, None) {
                Err(Error::Config(msg)) => assert!(msg.contains(task.name()) && msg.contains('3'), "{msg}"),
                other => panic!("{other:?}"),
            }
            assert!(matches!(ShapesVl::new(task, 3, 0, 0).get(0, None), Err(Error::Config(_))));
        }
        assert!(matches!("vqa2".parse::<VlTask>(), Err(Error::Config(_))));
    }

    #[test]
    fn every_generated_word_is_in_the_vocabulary_and_every_word_is_used() {
        let vocab = word_vocab();
        assert_eq!(&vocab[..5], SPECIAL_TOKENS.map(String::from).as_slice());
        assert_eq!(vocab.iter().collect::<BTreeSet<_>>().len(), vocab.len(), "no duplicates");
        let mut used = BTreeSet::new();
        for task in VlTask::ALL {
            let data = ShapesVl::new(task, 400, 16, 3);
            for i in 0..data.len() {
                let example = data.example(i);
                let mut texts = vec![example.text.clone()];
                match &example.target {
                    VlTarget::Text(t) => texts.push(t.clone()),
                    VlTarget::Answers(a) => texts.extend(a.iter().map(|&(i, _)| answer_vocab()[i].to_string())),
                    _ => {}
                }
                for text in &texts {
                    for word in split_words(text) {
                        assert!(vocab.iter().any(|v| v == word), "{task} #{i}: '{word}' in '{text}'");
                        used.insert(word.to_string());
                    }
                }
            }
        }
        let unused: Vec<_> = vocab[5..].iter().filter(|w| !used.contains(*w)).collect();
        assert!(unused.is_empty(), "never generated: {unused:?}");
    }

    #[test]
    fn the_word_tokenizer_covers_generated_text() {
        let tokenizer = word_tokenizer().unwrap();
        let vocab = word_vocab();
        assert_eq!(tokenizer.get_vocab_size(true), vocab.len());
        let text = "what shape is left of the orange star?";
        let raw = tokenizer.encode(text, false).unwrap();
        let expected: Vec<u32> =
            split_words(text).iter().map(|w| vocab.iter().position(|v| v == w).unwrap() as u32).collect();
        assert_eq!(raw.get_ids(), expected.as_slice());
        assert_eq!(raw.get_tokens().last().map(String::as_str), Some("?"));
        let with = tokenizer.encode(text, true).unwrap();
        assert_eq!(with.get_ids().first(), Some(&2), "[CLS]");
        assert_eq!(with.get_ids().last(), Some(&3), "[SEP]");
        assert_eq!(tokenizer.encode("a purple zebra", false).unwrap().get_ids()[2], 1, "[UNK]");
        assert_eq!(tokenizer.encode("[MASK] circle", false).unwrap().get_ids()[0], 4, "specials are atomic");
        let data = ShapesVl::new(VlTask::Vqa, 50, 8, 1);
        for i in 0..data.len() {
            let text = data.example(i).text;
            let ids = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            assert_eq!(ids.len(), split_words(&text).len());
            assert!(!ids.contains(&1), "{text}");
        }
    }

    #[test]
    fn split_words_matches_the_whitespace_pre_tokenizer() {
        assert_eq!(split_words("  is there a red circle?"), ["is", "there", "a", "red", "circle", "?"]);
        assert_eq!(split_words("three shapes: a, b and c"), ["three", "shapes", ":", "a", ",", "b", "and", "c"]);
        assert_eq!(split_words("[CLS] x?!"), ["[", "CLS", "]", "x", "?!"]);
        assert!(split_words(" ").is_empty());
    }

    #[test]
    fn vqa_answers_are_in_the_vocabulary_and_right_for_their_scene() {
        let answers = answer_vocab();
        assert_eq!(answers.len(), 24);
        let data = ShapesVl::new(VlTask::Vqa, 350, 16, 5);
        let (mut yes, mut no) = (0, 0);
        let mut types = BTreeSet::new();
        for i in 0..data.len() {
            let example = data.example(i);
            let VlTarget::Answers(scores) = &example.target else { panic!("{:?}", example.target) };
            assert_eq!(scores.len(), 1);
            let (index, score) = scores[0];
            assert_eq!(score, 1.0);
            let given = answers[index];
            assert_eq!(given, answer(&example.scenes[0], &example.text), "#{i}: {}", example.text);
            yes += usize::from(given == "yes");
            no += usize::from(given == "no");
            types.insert(split_words(&example.text)[..2].join(" "));
        }
        assert_eq!((yes, no), (25, 25));
        assert_eq!(types.len(), 5, "{types:?}"); // what colour, how many, is there, what shape, which shape
    }

    #[test]
    fn nlvr_labels_are_balanced_and_true_of_the_pair() {
        let data = ShapesVl::new(VlTask::Nlvr, 200, 16, 9);
        let mut positives = 0;
        let mut kinds = BTreeSet::new();
        for i in 0..data.len() {
            let example = data.example(i);
            let [left, right] = example.scenes.as_slice() else { panic!("two scenes") };
            let VlTarget::Class(label) = example.target else { panic!("{:?}", example.target) };
            assert_eq!(truth(left, right, &example.text), label == 1, "#{i}: {}", example.text);
            positives += label;
            kinds.insert(split_words(&example.text)[..3].join(" "));
        }
        assert!((90..=110).contains(&positives), "{positives} true of 200");
        assert!(kinds.len() >= 4, "{kinds:?}");
        let sample = data.get(0, None).unwrap();
        assert_eq!(sample.images.len(), 2);
        assert_ne!(sample.images[0], sample.images[1]);
    }

    #[test]
    fn referring_boxes_hold_the_unique_referent() {
        let data = ShapesVl::new(VlTask::Refer, 300, 16, 2);
        for i in 0..data.len() {
            let example = data.example(i);
            let scene = &example.scenes[0];
            let VlTarget::Box([x0, y0, x1, y1]) = example.target else { panic!("{:?}", example.target) };
            assert!(0.0 <= x0 && x0 < x1 && x1 <= 1.0 && 0.0 <= y0 && y0 < y1 && y1 <= 1.0);
            let o = scene.objects[referent(scene, &example.text)];
            assert!((x0..=x1).contains(&o.x) && (y0..=y1).contains(&o.y), "#{i}: {}", example.text);
            // The box is the referent's own: no other object's centre is inside it.
            let inside = scene.objects.iter().filter(|p| (x0..=x1).contains(&p.x) && (y0..=y1).contains(&p.y));
            assert_eq!(inside.count(), 1, "#{i}: {}", example.text);
        }
    }

    #[test]
    fn captions_describe_their_scene() {
        let data = ShapesVl::new(VlTask::Caption, 300, 16, 4);
        for i in 0..data.len() {
            let example = data.example(i);
            assert_eq!(example.text, CAPTION_PROMPT);
            let VlTarget::Text(caption) = &example.target else { panic!("{:?}", example.target) };
            check_caption(&example.scenes[0], caption);
        }
    }

    #[test]
    fn retrieval_captions_match_their_image() {
        let data = ShapesVl::new(VlTask::Retrieval, 48, 16, 6);
        let n = data.num_images();
        assert_eq!(n, 10);
        let mut captions: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
        for i in 0..data.len() {
            let example = data.example(i);
            assert_eq!(example.target, VlTarget::Match(i % n));
            assert_eq!(example.scenes, data.example(i % n).scenes, "one scene per image id");
            check_caption(&example.scenes[0], &example.text);
            assert!(captions[i % n].insert(example.text.clone()), "repeated caption of image {}", i % n);
        }
        assert!(captions.iter().all(|c| (4..=5).contains(&c.len())));
        let ids: BTreeSet<_> = (0..n).map(|i| format!("{:?}", data.example(i).scenes)).collect();
        assert_eq!(ids.len(), n, "distinct images");
    }

    #[test]
    fn samples_render_normalised_images() {
        let (mean, std) = Normalization::Imagenet.mean_std();
        let data = ShapesVl::new(VlTask::Refer, 2, 24, 0);
        let sample = data.get(1, None).unwrap();
        assert_eq!(sample.images.len(), 1);
        for (c, plane) in sample.images[0].chunks_exact(24 * 24).enumerate() {
            let (lo, hi) = (-mean[c] / std[c], (1.0 - mean[c]) / std[c]);
            assert!(plane.iter().all(|v| (lo - 1e-5..=hi + 1e-5).contains(v)), "channel {c}");
        }
        let mut raw = render(&data.example(1).scenes[0], 24);
        Normalization::Half.apply(&mut raw);
        assert_eq!(data.with_norm(Normalization::Half).get(1, None).unwrap().images[0], raw);
    }

    #[test]
    fn stacked_batches_have_the_image_shape() {
        let device = crate::device::device_from_name("flex").expect("flex");
        let data = ShapesVl::new(VlTask::Nlvr, 3, 16, 1);
        let samples: Vec<VlSample> = (0..3).map(|i| data.get(i, None).unwrap()).collect();
        for which in 0..2 {
            let images = crate::data::vl::stack_images(&samples, which, 16, &device);
            assert_eq!(images.dims(), [3, 3, 16, 16]);
        }
        let row = crate::data::vl::soft_scores(&[(3, 1.0)], answer_vocab().len());
        assert_eq!((row.len(), row.iter().sum::<f32>(), row[3]), (24, 1.0, 1.0));
    }
}
