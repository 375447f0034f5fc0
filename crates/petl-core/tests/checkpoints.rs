//! Checkpoint integrity and retention: every member is hashed in the manifest (and the manifest
//! beside it), so random single-byte corruptions are caught at load; the newest `k` checkpoints
//! are kept; a write that fails leaves the previous checkpoint loadable; temporaries a crash
//! left are removed. (Determinism is `tests/determinism.rs`: a binary of its own, as the device
//! RNG is shared by the threads of a test binary.)

mod common;
use burn::prelude::*;
use common::{model, trainer};
use petl_core::data::shapes::{ShapesDataset, ShapesTask};

fn data() -> (ShapesDataset, ShapesDataset) {
    (ShapesDataset::new(ShapesTask::Tint, 32, 16, 1), ShapesDataset::new(ShapesTask::Tint, 16, 16, 2))
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_single_byte_corruption_is_caught_at_load() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let (train, test) = data();
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(dir.path());
    t.stop_after = Some(1);
    t.fit(model(&device), &train, &test).unwrap();
    let ck = dir.path().join("checkpoint");
    assert_eq!(t.latest_checkpoint().unwrap(), Some(1));
    let members: Vec<std::path::PathBuf> =
        ["trainable-0001.safetensors", "optimizer-0001.bpk", "progress-0001.json", "progress-0001.sha256"]
            .iter()
            .map(|m| ck.join(m))
            .collect();
    let originals: Vec<Vec<u8>> = members.iter().map(|m| std::fs::read(m).unwrap()).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut caught = 0;
    for _ in 0..1000 {
        let k = (next() % members.len() as u64) as usize;
        let mut bytes = originals[k].clone();
        let at = (next() % bytes.len() as u64) as usize;
        bytes[at] ^= 1 + (next() % 255) as u8;
        std::fs::write(&members[k], &bytes).unwrap();
        let err = t.latest_checkpoint().expect_err("a corrupt checkpoint must not load");
        assert!(err.to_string().contains("checkpoint"), "{err}");
        caught += 1;
        std::fs::write(&members[k], &originals[k]).unwrap();
    }
    assert_eq!(caught, 1000);
    assert_eq!(t.latest_checkpoint().unwrap(), Some(1));
}

#[test]
fn the_newest_k_checkpoints_are_kept_and_stale_temporaries_removed() {
    let device = Device::flex().autodiff();
    let (train, test) = data();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoint");
    let mut t = trainer(dir.path());
    t.config.keep_checkpoints = 2;
    t.stop_after = Some(1);
    t.fit(model(&device), &train, &test).unwrap();
    // A crash inside a write leaves a temporary; the next start removes it.
    std::fs::write(ck.join(".trainable-0002.safetensors.tmp-4242"), b"half a file").unwrap();
    t.stop_after = None;
    t.fit(model(&device), &train, &test).unwrap();
    let names = listing(&ck);
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    for e in ["0002", "0003"] {
        for m in ["trainable-{}.safetensors", "optimizer-{}.bpk", "progress-{}.json", "progress-{}.sha256"] {
            assert!(names.contains(&m.replace("{}", e)), "{e} {m}: {names:?}");
        }
    }
    // Epoch 1 is gone unless it had the best test metric (the best is kept beside the newest k).
    let log: Vec<(usize, f64)> = {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(ck.join("progress.json")).unwrap()).unwrap();
        r["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["epoch"].as_u64().unwrap() as usize, e["test_metric"].as_f64().unwrap()))
            .collect()
    };
    let best = log.iter().fold(log[0], |b, &e| if e.1 > b.1 { e } else { b }).0;
    assert_eq!(names.iter().any(|n| n.contains("0001")), best == 1, "best epoch {best}: {names:?}");
    // The newest checkpoint corrupt: the older kept one is used.
    std::fs::write(ck.join("trainable-0003.safetensors"), b"garbage").unwrap();
    assert_eq!(t.latest_checkpoint().unwrap(), Some(2));
}

#[test]
fn a_failed_checkpoint_write_leaves_the_previous_one_loadable() {
    let device = Device::flex().autodiff();
    let (train, test) = data();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoint");
    let mut t = trainer(dir.path());
    t.stop_after = Some(1);
    t.fit(model(&device), &train, &test).unwrap();
    // The next epoch's tensor file cannot be written (its name is taken by a folder: the rename
    // fails as a full disk would fail the write).
    std::fs::create_dir_all(ck.join("trainable-0002.safetensors/blocked")).unwrap();
    t.stop_after = None;
    let err = t.fit(model(&device), &train, &test).unwrap_err().to_string();
    assert!(err.contains("trainable-0002.safetensors"), "{err}");
    assert_eq!(t.latest_checkpoint().unwrap(), Some(1));
    assert!(!listing(&ck).iter().any(|n| n.contains(".tmp-")));
    std::fs::remove_dir_all(ck.join("trainable-0002.safetensors")).unwrap();
    let (_, report) = t.fit(model(&device), &train, &test).unwrap();
    assert_eq!(report.resumed_from_epoch, 1);
}
