//! Fuzz entry points: each feeds one file format, given as bytes, to its reader, which must
//! return `Ok` or `Err` and never panic. The readers take paths, so the bytes are written to a
//! file in a scratch folder first. Used by the stable mutation fuzzer that CI runs
//! (`tests/fuzz_readers.rs`) and by the cargo-fuzz targets for long local runs (`fuzz/`).

use std::path::Path;

use crate::data::preprocess::Preprocess;
use crate::data::vtab::{VtabDataset, VtabSplit, VtabTask};

/// A reader under fuzzing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// PyTorch `.pth` (the pickle scan and the reader).
    Pth,
    /// safetensors.
    Safetensors,
    /// NumPy `.npz`.
    Npz,
    /// A Hugging Face `config.json` (BERT and CLIP readers).
    HfConfig,
    /// A PNG through decoding and the VTAB view.
    Png,
    /// A VTAB list file (`train800.txt` of a task folder with six images).
    VtabList,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 6] =
        [Target::Pth, Target::Safetensors, Target::Npz, Target::HfConfig, Target::Png, Target::VtabList];

    /// Short name (regression-input folder names).
    pub fn name(self) -> &'static str {
        match self {
            Target::Pth => "pth",
            Target::Safetensors => "safetensors",
            Target::Npz => "npz",
            Target::HfConfig => "json",
            Target::Png => "png",
            Target::VtabList => "vtab_list",
        }
    }
}

/// Feeds `data` to the reader of `target`, using `scratch` (an existing folder) for files.
///
/// # Panics
/// Only if the reader panics (what fuzzing looks for) or `scratch` cannot be written.
pub fn run(target: Target, data: &[u8], scratch: &Path) {
    let write = |name: &str| {
        let path = scratch.join(name);
        std::fs::write(&path, data).expect("scratch folder writable");
        path
    };
    match target {
        Target::Pth => {
            let p = write("x.pth");
            let _ = crate::weights::read_pth(&p);
            let _ = crate::weights::list_pickle_globals(&p);
        }
        Target::Safetensors => {
            let _ = crate::weights::read_safetensors(&write("x.safetensors"));
        }
        Target::Npz => {
            let _ = crate::weights::read_npz(&write("x.npz"));
        }
        Target::HfConfig => {
            let p = write("config.json");
            let _ = crate::bert::BertConfig::from_hf_config(&p);
            let _ = crate::vit::VitConfig::from_hf_clip_config(&p);
        }
        Target::Png => {
            let _ = crate::data::preprocess::load_image(&write("x.png"), &Preprocess::vtab(8), None);
        }
        Target::VtabList => {
            let task = scratch.join("cifar");
            if !task.join("images/5.png").exists() {
                std::fs::create_dir_all(task.join("images")).expect("scratch folder writable");
                let img = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 200, 30]));
                for i in 0..6 {
                    img.save(task.join(format!("images/{i}.png"))).expect("scratch folder writable");
                }
            }
            std::fs::write(task.join("train800.txt"), data).expect("scratch folder writable");
            let _ = VtabDataset::open(scratch, VtabTask::Cifar, VtabSplit::Train800, Preprocess::vtab(8));
        }
    }
}
