//! VTAB-1k (the list files of the NOAH/ARC releases): `<root>/<task>/{train800,val200,train800val200,test}.txt`, one
//! `<relative_image_path> <label>` per line, paths relative to `<root>/<task>/`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::preprocess::Preprocess;
use super::{FileDataset, FileTask};
use crate::{Error, Result};

/// The three VTAB task groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VtabGroup {
    /// Natural images.
    Natural,
    /// Specialised (medical, remote sensing).
    Specialized,
    /// Structured (counting, distances, orientation).
    Structured,
}

macro_rules! vtab_tasks {
    ($($variant:ident = $folder:literal, $group:ident, $k:literal, $test:literal;)*) => {
        /// The 19 VTAB-1k tasks, in the order of the papers' result tables.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum VtabTask {
            $(
                #[doc = concat!("`", $folder, "`: ", stringify!($group), ", K = ", $k, ".")]
                #[serde(rename = $folder)]
                $variant,
            )*
        }

        impl VtabTask {
            /// All tasks in table order.
            pub const ALL: [VtabTask; 19] = [$(VtabTask::$variant),*];

            /// The task folder under the VTAB root (also the task's name).
            pub fn folder(self) -> &'static str {
                match self { $(VtabTask::$variant => $folder),* }
            }

            /// The task group.
            pub fn group(self) -> VtabGroup {
                match self { $(VtabTask::$variant => VtabGroup::$group),* }
            }

            /// Number of classes `K`.
            pub fn num_classes(self) -> usize {
                match self { $(VtabTask::$variant => $k),* }
            }

            /// Number of images of `test.txt` in the standard release.
            pub fn test_size(self) -> usize {
                match self { $(VtabTask::$variant => $test),* }
            }
        }
    };
}

vtab_tasks! {
    Cifar = "cifar", Natural, 100, 10_000;
    Caltech101 = "caltech101", Natural, 102, 6_084;
    Dtd = "dtd", Natural, 47, 1_880;
    OxfordFlowers102 = "oxford_flowers102", Natural, 102, 6_149;
    OxfordIiitPet = "oxford_iiit_pet", Natural, 37, 3_669;
    Svhn = "svhn", Natural, 10, 26_032;
    Sun397 = "sun397", Natural, 397, 21_750;
    PatchCamelyon = "patch_camelyon", Specialized, 2, 32_768;
    Eurosat = "eurosat", Specialized, 10, 5_400;
    Resisc45 = "resisc45", Specialized, 45, 6_300;
    DiabeticRetinopathy = "diabetic_retinopathy", Specialized, 5, 42_670;
    ClevrCount = "clevr_count", Structured, 8, 15_000;
    ClevrDist = "clevr_dist", Structured, 6, 15_000;
    Dmlab = "dmlab", Structured, 6, 22_735;
    Kitti = "kitti", Structured, 4, 711;
    DspritesLoc = "dsprites_loc", Structured, 16, 73_728;
    DspritesOri = "dsprites_ori", Structured, 16, 73_728;
    SmallnorbAzi = "smallnorb_azi", Structured, 18, 12_150;
    SmallnorbEle = "smallnorb_ele", Structured, 9, 12_150;
}

impl fmt::Display for VtabTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

impl FromStr for VtabTask {
    type Err = Error;

    /// Parses a task folder name, e.g. `cifar`.
    fn from_str(s: &str) -> Result<Self> {
        VtabTask::ALL.into_iter().find(|t| t.folder() == s).ok_or_else(|| {
            let names: Vec<_> = VtabTask::ALL.iter().map(|t| t.folder()).collect();
            Error::Config(format!("unknown VTAB task '{s}'; expected one of {}", names.join(", ")))
        })
    }
}

/// A VTAB-1k split file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VtabSplit {
    /// `train800.txt` (hyper-parameter search).
    Train800,
    /// `val200.txt` (hyper-parameter search).
    Val200,
    /// `train800val200.txt`: the 1,000 images of the final training.
    Train800Val200,
    /// `test.txt`: the evaluation set.
    Test,
}

impl VtabSplit {
    /// The list file name, e.g. `train800val200.txt`.
    pub fn file_name(self) -> &'static str {
        match self {
            VtabSplit::Train800 => "train800.txt",
            VtabSplit::Val200 => "val200.txt",
            VtabSplit::Train800Val200 => "train800val200.txt",
            VtabSplit::Test => "test.txt",
        }
    }

    /// Number of images of this split of `task` in the standard release.
    pub fn expected_len(self, task: VtabTask) -> usize {
        match self {
            VtabSplit::Train800 => 800,
            VtabSplit::Val200 => 200,
            VtabSplit::Train800Val200 => 1_000,
            VtabSplit::Test => task.test_size(),
        }
    }
}

/// One split of one VTAB task, validated on open; images are decoded lazily in
/// [`ImageDataset::get`].
pub type VtabDataset = FileDataset<VtabTask>;

impl FileTask for VtabTask {
    fn folder(self) -> &'static str {
        VtabTask::folder(self)
    }

    fn num_classes(self) -> usize {
        VtabTask::num_classes(self)
    }
}

impl FileDataset<VtabTask> {
    /// Reads and checks `<root>/<task>/<split file>`: every non-blank line has exactly two
    /// whitespace-separated fields, the label is an integer in `0..K`, the image exists and is
    /// listed once, and there is at least one sample.
    /// Sample order is line order.
    ///
    /// # Errors
    /// - [`Error::Config`] if `preprocess` is invalid.
    /// - [`Error::Format`] naming the task folder if it does not exist.
    /// - [`Error::Io`] naming the list file if it cannot be read.
    /// - [`Error::Format`] naming the list file and line for a line that is not UTF-8, a
    ///   malformed line, a bad or out-of-range label, a missing image (the image path is in the
    ///   message) or an image listed twice; naming the list file if it lists no sample.
    pub fn open(root: &Path, task: VtabTask, split: VtabSplit, preprocess: Preprocess) -> Result<Self> {
        preprocess.validate()?;
        let dir = root.join(task.folder());
        if !dir.is_dir() {
            return Err(Error::format(
                &dir,
                format!("no such folder (VTAB task {task} under root {})", root.display()),
            ));
        }
        let list = dir.join(split.file_name());
        let bytes = std::fs::read(&list).map_err(|e| Error::io(&list, e))?;
        let k = task.num_classes();
        let mut samples = Vec::new();
        let mut first_line: HashMap<PathBuf, usize> = HashMap::new();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let at = |msg: String| Error::format(&list, format!("line {}: {msg}", i + 1));
            let line = std::str::from_utf8(line).map_err(|e| at(format!("not UTF-8 text ({e})")))?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (rel, label) = match fields[..] {
                [] => continue,
                [rel, label] => (rel, label),
                _ => {
                    return Err(at(format!(
                        "expected `<image path> <label>` (2 fields), found {} fields",
                        fields.len()
                    )));
                }
            };
            let label: usize =
                label.parse().map_err(|_| at(format!("label '{label}' is not a non-negative integer")))?;
            if label >= k {
                return Err(at(format!("label {label} out of range 0..{k} for {task}")));
            }
            let path = super::path_inside(&dir, rel).map_err(at)?;
            if !path.is_file() {
                return Err(at(format!("image {} not found", path.display())));
            }
            if let Some(first) = first_line.insert(path.clone(), i + 1) {
                return Err(at(format!("image '{rel}' is listed again (first on line {first})")));
            }
            samples.push((path, label));
        }
        if samples.is_empty() {
            return Err(Error::format(&list, "no samples: the list has no `<image path> <label>` line"));
        }
        Ok(FileDataset::new(task, preprocess, samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageDataset, Samples};
    use image::{Rgb, RgbImage};

    fn setup(list: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar/images/train");
        std::fs::create_dir_all(&dir).unwrap();
        RgbImage::from_pixel(5, 3, Rgb([10, 20, 30])).save(dir.join("000000.png")).unwrap();
        RgbImage::from_pixel(4, 6, Rgb([200, 100, 0])).save(dir.join("000001.jpg")).unwrap();
        std::fs::write(dir.join("000002.jpg"), b"broken").unwrap();
        std::fs::write(root.path().join("cifar/train800.txt"), list).unwrap();
        root
    }

    fn open_err(list: &str) -> String {
        let root = setup(list);
        VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Train800, Preprocess::vtab(8))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn list_paths_cannot_leave_the_task_folder() {
        for (line, want) in
            [("../../etc/passwd 0", "leaves"), ("/etc/passwd 0", "absolute"), ("images/../../x.png 1", "leaves")]
        {
            let err = open_err(line);
            assert!(err.contains("train800.txt") && err.contains("line 1") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn table_matches_spec() {
        assert_eq!(VtabTask::ALL.len(), 19);
        assert_eq!(VtabTask::ALL[0].folder(), "cifar");
        assert_eq!(VtabTask::ALL[18].folder(), "smallnorb_ele");
        let count = |g| VtabTask::ALL.iter().filter(|t| t.group() == g).count();
        assert_eq!((count(VtabGroup::Natural), count(VtabGroup::Specialized), count(VtabGroup::Structured)), (7, 4, 8));
        let k: usize = VtabTask::ALL.iter().map(|t| t.num_classes()).sum();
        assert_eq!(k, 100 + 102 + 47 + 102 + 37 + 10 + 397 + 2 + 10 + 45 + 5 + 8 + 6 + 6 + 4 + 16 + 16 + 18 + 9);
        assert_eq!(VtabTask::Kitti.test_size(), 711);
        assert_eq!(VtabSplit::Test.expected_len(VtabTask::Dtd), 1_880);
        assert_eq!("dsprites_ori".parse::<VtabTask>().unwrap(), VtabTask::DspritesOri);
        assert!("cifar100".parse::<VtabTask>().unwrap_err().to_string().contains("cifar100"));
        assert_eq!(serde_json::to_string(&VtabTask::OxfordIiitPet).unwrap(), "\"oxford_iiit_pet\"");
        assert_eq!(serde_json::to_string(&VtabSplit::Train800Val200).unwrap(), "\"train800val200\"");
    }

    #[test]
    fn happy_path_keeps_line_order() {
        let root = setup("images/train/000001.jpg 99\n\nimages/train/000000.png\t0  \n");
        let ds = VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Train800, Preprocess::vtab(8)).unwrap();
        let dir = root.path().join("cifar");
        let expected = [(dir.join("images/train/000001.jpg"), 99), (dir.join("images/train/000000.png"), 0)];
        assert_eq!(ds.samples(), &expected[..]);
        assert_eq!((ds.len(), ds.num_classes(), ds.image_size(), ds.name()), (2, 100, 8, "cifar"));
        let s = ds.get(1, None).unwrap();
        assert_eq!((s.image.len(), s.label), (3 * 8 * 8, 0));
        assert!(ds.get(2, None).is_err());
    }

    #[test]
    fn bad_inputs_name_file_and_line() {
        let root = tempfile::tempdir().unwrap();
        let err = VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Test, Preprocess::vtab(8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cifar") && err.contains("no such folder"), "{err}");
        std::fs::create_dir(root.path().join("cifar")).unwrap();
        let err = VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Test, Preprocess::vtab(8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.txt"), "{err}");

        let ok = "images/train/000000.png 1\n";
        let err = open_err(&format!("{ok}images/train/000000.png 1 extra\n"));
        assert!(err.contains("train800.txt: line 2:") && err.contains("3 fields"), "{err}");
        let err = open_err(&format!("{ok}images/train/000000.png\n"));
        assert!(err.contains("train800.txt: line 2:") && err.contains("1 fields"), "{err}");
        let err = open_err(&format!("{ok}images/train/000001.jpg 2\nimages/train/000000.png x1\n"));
        assert!(err.contains("train800.txt: line 3:") && err.contains("'x1'"), "{err}");
        let err = open_err(&format!("{ok}images/train/000001.jpg 2\nimages/train/./000000.png 1\n"));
        assert!(err.contains("train800.txt: line 3:") && err.contains("first on line 1"), "{err}");
        let root = setup("");
        std::fs::write(root.path().join("cifar/train800.txt"), b"images/train/000000.png 1\ncaf\xe9.png 1\n").unwrap();
        let err = VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Train800, Preprocess::vtab(8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train800.txt: line 2: not UTF-8"), "{err}");
        let err = open_err("\n  \n");
        assert!(err.contains("train800.txt: no samples"), "{err}");
        let err = open_err(&format!("{ok}images/train/000000.png -1\n"));
        assert!(err.contains("train800.txt: line 2:") && err.contains("'-1'"), "{err}");
        let err = open_err(&format!("{ok}images/train/000000.png 100\n"));
        assert!(err.contains("train800.txt: line 2: label 100 out of range 0..100 for cifar"), "{err}");
        let err = open_err(&format!("{ok}images/train/nope.jpg 3\n"));
        assert!(err.contains("train800.txt: line 2:") && err.contains("nope.jpg"), "{err}");
    }

    #[test]
    fn decode_errors_name_the_image() {
        let root = setup("images/train/000002.jpg 5\n");
        let ds = VtabDataset::open(root.path(), VtabTask::Cifar, VtabSplit::Train800, Preprocess::vtab(8)).unwrap();
        let err = ds.get(0, None).unwrap_err().to_string();
        assert!(err.contains("000002.jpg"), "{err}");
    }
}
