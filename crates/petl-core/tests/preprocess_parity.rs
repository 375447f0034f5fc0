//! Spec test T10 (preprocessing half): the Rust views against PIL / torchvision, before
//! normalisation, max |diff| <= 2/255. Fixtures from `tools/fixtures/preprocess_ref.py`.

use std::path::{Path, PathBuf};

use petl_core::data::preprocess::{Preprocess, decode_rgb, preprocess_rgb_unit};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(name: &str) -> Vec<f32> {
    let path = fixtures().join("preprocess_ref.npz");
    let mut npz = npyz::npz::NpzArchive::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npz.by_name(name).unwrap().unwrap_or_else(|| panic!("{}: no array {name}", path.display()));
    assert_eq!(npy.shape(), &[3, 224, 224], "{name}");
    npy.into_vec::<f32>().unwrap()
}

fn check(image: &str, pre: Preprocess, key: &str) {
    let img = decode_rgb(&fixtures().join(image)).unwrap();
    let ours = preprocess_rgb_unit(&img, &pre, None).unwrap();
    let theirs = reference(key);
    assert_eq!(ours.len(), theirs.len(), "{key}");
    let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let mean = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).sum::<f32>() / ours.len() as f32;
    println!("{key}: max |diff| = {:.2}/255, mean = {:.4}/255", max * 255.0, mean * 255.0);
    assert!(max <= 2.0 / 255.0 + 1e-6, "{key}: max |diff| {} > 2/255", max * 255.0);
}

#[test]
fn vtab_bicubic_matches_pil() {
    check("pre_a.png", Preprocess::vtab(224), "vtab.a");
    check("pre_b.png", Preprocess::vtab(224), "vtab.b");
}

#[test]
fn fgvc_eval_matches_torchvision() {
    check("pre_a.png", Preprocess::fgvc_eval(224), "fgvc.a");
    check("pre_b.png", Preprocess::fgvc_eval(224), "fgvc.b");
}
