//! FGVC (the VPT split files): `<root>/<Name>/{train,val,test}.json`, each one
//! JSON object mapping a relative image path to an integer class id.
//!
//! Labels are mapped **per split file** as in the official code (sorted distinct raw ids →
//! `0..`), with a guard of our own: the id sets of `train.json` and `test.json`
//! must be identical, otherwise the two label spaces would silently disagree. `val.json` may
//! lack classes (it is a small random subset), so it is mapped with the `train.json` mapping
//! instead, which equals its per-file mapping whenever it holds every class; an id of
//! `val.json` absent from `train.json` is an error.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::preprocess::Preprocess;
use super::{FileDataset, FileTask};
use crate::{Error, Result};

/// The five FGVC benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FgvcTask {
    /// CUB-200-2011 birds, K = 200.
    #[serde(rename = "CUB_200_2011")]
    Cub200_2011,
    /// NABirds, K = 555 (sparse raw ids).
    #[serde(rename = "NABirds")]
    NaBirds,
    /// Oxford Flowers, K = 102.
    OxfordFlowers,
    /// Stanford Dogs, K = 120.
    StanfordDogs,
    /// Stanford Cars, K = 196.
    StanfordCars,
}

impl FgvcTask {
    /// All tasks in table order.
    pub const ALL: [FgvcTask; 5] = [
        FgvcTask::Cub200_2011,
        FgvcTask::NaBirds,
        FgvcTask::OxfordFlowers,
        FgvcTask::StanfordDogs,
        FgvcTask::StanfordCars,
    ];

    /// The task folder under the FGVC root (also the task's name).
    pub fn folder(self) -> &'static str {
        match self {
            FgvcTask::Cub200_2011 => "CUB_200_2011",
            FgvcTask::NaBirds => "NABirds",
            FgvcTask::OxfordFlowers => "OxfordFlowers",
            FgvcTask::StanfordDogs => "StanfordDogs",
            FgvcTask::StanfordCars => "StanfordCars",
        }
    }

    /// Number of classes `K`.
    pub fn num_classes(self) -> usize {
        match self {
            FgvcTask::Cub200_2011 => 200,
            FgvcTask::NaBirds => 555,
            FgvcTask::OxfordFlowers => 102,
            FgvcTask::StanfordDogs => 120,
            FgvcTask::StanfordCars => 196,
        }
    }

    /// Number of images of `split` in the VPT split files.
    pub fn expected_len(self, split: FgvcSplit) -> usize {
        let [train, val, test] = match self {
            FgvcTask::Cub200_2011 => [5_394, 600, 5_794],
            FgvcTask::NaBirds => [21_536, 2_393, 24_633],
            FgvcTask::OxfordFlowers => [1_020, 1_020, 6_149],
            FgvcTask::StanfordDogs => [10_800, 1_200, 8_580],
            FgvcTask::StanfordCars => [7_329, 815, 8_041],
        };
        match split {
            FgvcSplit::Train => train,
            FgvcSplit::Val => val,
            FgvcSplit::Test => test,
        }
    }

    /// The folder the JSON keys are relative to: `<root>/<Name>/images/` for CUB and NABirds,
    /// `<root>/<Name>/` for the others.
    pub fn image_root(self, root: &Path) -> PathBuf {
        let dir = root.join(self.folder());
        match self {
            FgvcTask::Cub200_2011 | FgvcTask::NaBirds => dir.join("images"),
            _ => dir,
        }
    }
}

impl fmt::Display for FgvcTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

impl FromStr for FgvcTask {
    type Err = Error;

    /// Parses a task folder name, e.g. `CUB_200_2011`.
    fn from_str(s: &str) -> Result<Self> {
        FgvcTask::ALL.into_iter().find(|t| t.folder() == s).ok_or_else(|| {
            let names: Vec<_> = FgvcTask::ALL.iter().map(|t| t.folder()).collect();
            Error::Config(format!("unknown FGVC task '{s}'; expected one of {}", names.join(", ")))
        })
    }
}

/// An FGVC split file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FgvcSplit {
    /// `train.json`: the training set.
    Train,
    /// `val.json`: for hyper-parameter search only.
    Val,
    /// `test.json`: the evaluation set.
    Test,
}

impl FgvcSplit {
    /// The split file name, e.g. `train.json`.
    pub fn file_name(self) -> &'static str {
        match self {
            FgvcSplit::Train => "train.json",
            FgvcSplit::Val => "val.json",
            FgvcSplit::Test => "test.json",
        }
    }
}

/// One split of one FGVC task, validated on open; images are decoded lazily in
/// [`ImageDataset::get`].
pub type FgvcDataset = FileDataset<FgvcTask>;

impl FileTask for FgvcTask {
    fn folder(self) -> &'static str {
        FgvcTask::folder(self)
    }

    fn num_classes(self) -> usize {
        FgvcTask::num_classes(self)
    }
}

/// `(key, raw id)` pairs of a split file, in key order.
fn read_split(path: &Path) -> Result<Vec<(String, i64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::format(path, "expected a JSON object mapping image paths to class ids"));
    };
    map.into_iter()
        .map(|(key, id)| match id.as_i64() {
            Some(id) => Ok((key, id)),
            None => Err(Error::format(path, format!("key \"{key}\": class id must be an integer, found {id}"))),
        })
        .collect()
}

fn id_set(entries: &[(String, i64)]) -> BTreeSet<i64> {
    entries.iter().map(|(_, id)| *id).collect()
}

/// Describes how two id sets differ (a few ids each way).
fn set_difference(a: &BTreeSet<i64>, b: &BTreeSet<i64>) -> String {
    let few = |s: Vec<&i64>| {
        let head: Vec<String> = s.iter().take(5).map(|i| i.to_string()).collect();
        format!("[{}{}]", head.join(", "), if s.len() > 5 { ", …" } else { "" })
    };
    format!(
        "only in the first: {}, only in the second: {}",
        few(a.difference(b).collect()),
        few(b.difference(a).collect())
    )
}

impl FileDataset<FgvcTask> {
    /// Reads and checks `<root>/<Name>/<split>.json` (sample order = key order), maps its ids
    /// to labels (see the module doc), and checks every image exists. Always reads
    /// `train.json` and `test.json` too, to check that their id sets agree.
    ///
    /// # Errors
    /// - [`Error::Config`] if `preprocess` is invalid.
    /// - [`Error::Format`] naming the task folder if it does not exist.
    /// - [`Error::Io`] naming a split file that cannot be read.
    /// - [`Error::Format`] naming the split file (and key) for invalid JSON, a non-object, a
    ///   non-integer id, more distinct ids than `K`, a missing image, or no sample at all.
    /// - [`Error::Format`] naming both files if the id sets of `train.json` and `test.json`
    ///   differ, or `val.json` has an id absent from `train.json`.
    pub fn open(root: &Path, task: FgvcTask, split: FgvcSplit, preprocess: Preprocess) -> Result<Self> {
        preprocess.validate()?;
        let dir = root.join(task.folder());
        if !dir.is_dir() {
            return Err(Error::format(
                &dir,
                format!("no such folder (FGVC task {task} under root {})", root.display()),
            ));
        }
        let file = |s: FgvcSplit| dir.join(s.file_name());
        let (train_file, test_file) = (file(FgvcSplit::Train), file(FgvcSplit::Test));
        let train = read_split(&train_file)?;
        let test = read_split(&test_file)?;
        let (train_ids, test_ids) = (id_set(&train), id_set(&test));
        if train_ids != test_ids {
            return Err(Error::format(
                &train_file,
                format!(
                    "class ids differ from those of {} ({}); per-file label maps would disagree",
                    test_file.display(),
                    set_difference(&train_ids, &test_ids)
                ),
            ));
        }
        let k = task.num_classes();
        if train_ids.len() > k {
            return Err(Error::format(
                &train_file,
                format!("{} distinct class ids, more than K = {k} of {task}", train_ids.len()),
            ));
        }
        let this_file = file(split);
        let entries = match split {
            FgvcSplit::Train => train,
            FgvcSplit::Test => test,
            FgvcSplit::Val => {
                let val = read_split(&this_file)?;
                let val_ids = id_set(&val);
                if !val_ids.is_subset(&train_ids) {
                    return Err(Error::format(
                        &this_file,
                        format!(
                            "class ids absent from {}: {}",
                            train_file.display(),
                            set_difference(&val_ids, &train_ids)
                        ),
                    ));
                }
                val
            }
        };
        let labels: Vec<i64> = train_ids.into_iter().collect();
        let image_root = task.image_root(root);
        let mut samples = Vec::with_capacity(entries.len());
        for (key, id) in entries {
            let label = labels.binary_search(&id).expect("id checked to be a train id");
            let path = super::path_inside(&image_root, &key)
                .map_err(|msg| Error::format(&this_file, format!("key \"{key}\": {msg}")))?;
            if !path.is_file() {
                return Err(Error::format(&this_file, format!("key \"{key}\": image {} not found", path.display())));
            }
            samples.push((path, label));
        }
        if samples.is_empty() {
            return Err(Error::format(&this_file, "no samples: the split maps no image to a class id"));
        }
        Ok(FileDataset::new(task, preprocess, samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageDataset, Samples};
    use image::{Rgb, RgbImage};

    /// OxfordFlowers layout (image root = task folder) with images `jpg/image_{0..6}.jpg`.
    fn setup(train: &str, val: &str, test: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("OxfordFlowers");
        std::fs::create_dir_all(dir.join("jpg")).unwrap();
        for i in 0..6u8 {
            RgbImage::from_pixel(9 + u32::from(i), 7, Rgb([i * 40, 0, 255 - i * 40]))
                .save(dir.join(format!("jpg/image_{i}.jpg")))
                .unwrap();
        }
        for (name, text) in [("train.json", train), ("val.json", val), ("test.json", test)] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        root
    }

    fn open(root: &Path, split: FgvcSplit) -> Result<FgvcDataset> {
        FgvcDataset::open(root, FgvcTask::OxfordFlowers, split, Preprocess::fgvc_eval(8))
    }

    fn labels(ds: &FgvcDataset, root: &Path) -> Vec<(String, usize)> {
        let base = root.join("OxfordFlowers");
        ds.samples().iter().map(|(p, l)| (p.strip_prefix(&base).unwrap().to_string_lossy().into_owned(), *l)).collect()
    }

    // Non-contiguous raw ids {3, 17, 40}; key order is not sorted by path or by id.
    const TRAIN: &str =
        r#"{"jpg/image_4.jpg": 40, "jpg/image_0.jpg": 17, "jpg/image_2.jpg": 3, "jpg/image_1.jpg": 40}"#;
    const TEST: &str = r#"{"jpg/image_5.jpg": 3, "jpg/image_3.jpg": 17, "jpg/image_0.jpg": 40}"#;

    #[test]
    fn per_file_mapping_in_key_order() {
        let root = setup(TRAIN, r#"{"jpg/image_3.jpg": 40, "jpg/image_5.jpg": 17}"#, TEST);
        let r = root.path();
        let train = open(r, FgvcSplit::Train).unwrap();
        let want = [("jpg/image_4.jpg", 2), ("jpg/image_0.jpg", 1), ("jpg/image_2.jpg", 0), ("jpg/image_1.jpg", 2)];
        assert_eq!(labels(&train, r), want.map(|(p, l)| (p.to_string(), l)));
        let test = open(r, FgvcSplit::Test).unwrap();
        let want = [("jpg/image_5.jpg", 0), ("jpg/image_3.jpg", 1), ("jpg/image_0.jpg", 2)];
        assert_eq!(labels(&test, r), want.map(|(p, l)| (p.to_string(), l)));
        // val lacks id 3: it keeps the train mapping (its own per-file map would give 17 → 0).
        let val = open(r, FgvcSplit::Val).unwrap();
        assert_eq!(labels(&val, r), [("jpg/image_3.jpg".to_string(), 2), ("jpg/image_5.jpg".to_string(), 1)]);
        assert_eq!((train.len(), train.num_classes(), train.image_size(), train.name()), (4, 102, 8, "OxfordFlowers"));
        let s = train.get(0, Some(1)).unwrap();
        assert_eq!((s.image.len(), s.label), (3 * 8 * 8, 2));
    }

    #[test]
    fn image_root_rule() {
        let r = Path::new("/d");
        assert_eq!(FgvcTask::Cub200_2011.image_root(r), Path::new("/d/CUB_200_2011/images"));
        assert_eq!(FgvcTask::NaBirds.image_root(r), Path::new("/d/NABirds/images"));
        assert_eq!(FgvcTask::StanfordCars.image_root(r), Path::new("/d/StanfordCars"));
        assert_eq!("NABirds".parse::<FgvcTask>().unwrap().num_classes(), 555);
        assert_eq!(FgvcTask::StanfordDogs.expected_len(FgvcSplit::Val), 1_200);
        assert_eq!(serde_json::to_string(&FgvcTask::Cub200_2011).unwrap(), "\"CUB_200_2011\"");
        assert!("cub".parse::<FgvcTask>().is_err());
    }

    #[test]
    fn id_set_mismatch_names_both_files() {
        let test_missing_17 = r#"{"jpg/image_5.jpg": 3, "jpg/image_0.jpg": 40}"#;
        let root = setup(TRAIN, "{}", test_missing_17);
        for split in [FgvcSplit::Train, FgvcSplit::Test] {
            let err = open(root.path(), split).unwrap_err().to_string();
            assert!(err.contains("train.json") && err.contains("test.json") && err.contains("[17]"), "{err}");
        }
        let root = setup(TRAIN, r#"{"jpg/image_3.jpg": 99}"#, TEST);
        let err = open(root.path(), FgvcSplit::Val).unwrap_err().to_string();
        assert!(err.contains("val.json") && err.contains("train.json") && err.contains("[99]"), "{err}");
    }

    #[test]
    fn bad_inputs_name_file_and_key() {
        let err = open(tempfile::tempdir().unwrap().path(), FgvcSplit::Train).unwrap_err().to_string();
        assert!(err.contains("OxfordFlowers") && err.contains("no such folder"), "{err}");
        let cases = [
            (r#"{"jpg/image_0.jpg": 1,"#, "train.json", "invalid JSON"),
            (r#"[["jpg/image_0.jpg", 1]]"#, "train.json", "JSON object"),
            (r#"{"jpg/image_0.jpg": "1"}"#, "train.json", "key \"jpg/image_0.jpg\""),
            (r#"{"jpg/image_0.jpg": 1.5}"#, "train.json", "key \"jpg/image_0.jpg\""),
            (
                r#"{"jpg/image_0.jpg": 3, "jpg/nope.jpg": 17, "jpg/image_1.jpg": 40}"#,
                "train.json",
                "key \"jpg/nope.jpg\"",
            ),
        ];
        for (train, file, needle) in cases {
            let root = setup(train, "{}", TEST);
            let err = open(root.path(), FgvcSplit::Train).unwrap_err().to_string();
            assert!(err.contains(file) && err.contains(needle), "{err}");
        }
        let root = setup("{}", "{}", "{}");
        let err = open(root.path(), FgvcSplit::Train).unwrap_err().to_string();
        assert!(err.contains("train.json: no samples"), "{err}");
        let root = setup(TRAIN, "{}", TEST);
        let err = open(root.path(), FgvcSplit::Val).unwrap_err().to_string();
        assert!(err.contains("val.json: no samples"), "{err}");
        std::fs::remove_file(root.path().join("OxfordFlowers/val.json")).unwrap();
        let err = open(root.path(), FgvcSplit::Val).unwrap_err().to_string();
        assert!(err.contains("val.json"), "{err}");
        let many: Vec<String> = (0..103).map(|i| format!("\"jpg/image_0.jpg{i}\": {i}")).collect();
        let many = format!("{{{}}}", many.join(","));
        let err = open(setup(&many, "{}", &many).path(), FgvcSplit::Test).unwrap_err().to_string();
        assert!(err.contains("train.json") && err.contains("103 distinct"), "{err}");
    }
}
