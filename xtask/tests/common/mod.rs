//! What the command-line tests share: running the built `xtask` binary and the fixture paths.
#![allow(dead_code)] // each test crate uses its own part

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `xtask` with `args`.
pub fn xtask<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs")
}

/// Runs `xtask`, which must succeed: its stdout.
pub fn ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = xtask(args);
    assert!(
        out.status.success(),
        "xtask {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `xtask`, which must refuse the input (exit code 2) without a panic: its stderr.
pub fn fails<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = xtask(args);
    assert_eq!(out.status.code(), Some(2), "xtask {args:?} should fail as bad input (exit 2)");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "a user mistake must not panic: {err}");
    err
}

/// [`fails`], with a message of one line.
pub fn fails_one_line<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let err = fails(args);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

/// A fixture of the `apt` crate's parity tests.
pub fn apt_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/apt/tests/fixtures").join(name)
}

/// A path as an argument.
pub fn s(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Writes a C-order `.npy` of `data` with `shape`.
pub fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    use npyz::WriterBuilder;
    let mut bytes = vec![];
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(&shape).writer(&mut bytes).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Reads an f32 `.npy`: its shape and values.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec().unwrap())
}

/// The official-format APT fixture `fixture` without its task heads and class token (what a
/// pretraining checkpoint holds: backbone, ITM and MLM heads), written to `dst`.
pub fn pretrained_only(fixture: &str, dst: &Path) {
    let bytes = std::fs::read(apt_fixture(fixture)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !(k.contains("classifier") || k == "token4classifier" || k.starts_with("rank_output")))
        .collect();
    std::fs::write(dst, safetensors::serialize(kept, None).unwrap()).unwrap();
}
