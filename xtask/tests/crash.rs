//! Crash consistency of a training run: `reproduce arc --scale smoke` is killed again and again —
//! with `SIGKILL` at random moments, and by an abort inside a checkpoint write
//! (`PETL_CRASH_AT_WRITE`, after the temporary is complete, before the rename) — and restarted
//! each time. After every kill, every file under a final name is complete (JSON parses,
//! safetensors load, checkpoints pass their SHA-256 manifests) and the finished run's results
//! equal those of an uninterrupted run. `PETL_SOAK_KILLS` sets the number of kills (default 8;
//! `PETL_SOAK_KILLS=50 cargo test -p xtask --test crash -- --nocapture` is the long soak).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

fn args(out: &Path) -> Vec<String> {
    [
        "reproduce",
        "arc",
        "--scale",
        "smoke",
        "--tasks",
        "tint",
        "--methods",
        "arc,lora",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Every file under a final name is complete: JSON parses, safetensors load.
fn check_complete(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with('.') {
                // A temporary a crash left: not under a final name.
            } else if name.ends_with(".json") {
                let bytes = std::fs::read(&p).unwrap();
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("{} is not complete JSON: {e}", p.display()));
                n += 1;
            } else if name.ends_with(".safetensors") {
                petl_core::weights::read_safetensors(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
    }
    n
}

fn metrics(out: &Path) -> Vec<(String, String, f64, f64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["task"].as_str().unwrap().to_string(),
                c["method"].as_str().unwrap().to_string(),
                c["best_acc"].as_f64().unwrap(),
                c["final_acc"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn killed_runs_leave_complete_files_and_finish_with_the_same_results() {
    let kills: usize = std::env::var("PETL_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let start = Instant::now();
    let status = xtask().args(args(&reference)).status().unwrap();
    assert!(status.success());
    let full = start.elapsed();
    let want = metrics(&reference);

    let out = dir.path().join("killed");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let (mut sigkills, mut in_write, mut finished_early) = (0, 0, 0);
    let mut k = 0;
    while sigkills + in_write < kills {
        assert!(k < 4 * kills, "runs keep finishing before they can be killed");
        k += 1;
        let mut cmd = xtask();
        // Killed processes may dump core where they run: the scratch folder.
        cmd.args(args(&out))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if k % 3 == 0 {
            // Abort inside one of the next few atomic writes (a checkpoint, a report).
            cmd.env("PETL_CRASH_AT_WRITE", (1 + rand(6)).to_string());
            let status = cmd.status().unwrap();
            if status.success() {
                finished_early += 1;
            } else {
                in_write += 1;
            }
        } else {
            let mut child = cmd.spawn().unwrap();
            let delay = Duration::from_millis(rand(full.as_millis() as u64));
            std::thread::sleep(delay);
            match child.try_wait().unwrap() {
                Some(_) => finished_early += 1,
                None => {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    sigkills += 1;
                }
            }
        }
        check_complete(&out);
        if out.join("results.json").exists() {
            // Finished: start the next round from scratch.
            assert_eq!(metrics(&out), want, "a run finished after kills differs from the uninterrupted one");
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    let status = xtask().args(args(&out)).status().unwrap();
    assert!(status.success());
    let files = check_complete(&out);
    assert_eq!(metrics(&out), want, "the run finished after kills differs from the uninterrupted one");
    println!(
        "{} kills: {sigkills} SIGKILL at random moments, {in_write} aborts inside atomic writes, \
         {finished_early} runs that finished first; {files} files complete; results equal the uninterrupted run",
        sigkills + in_write
    );
    assert!(in_write >= kills / 5, "too few kills inside writes: {in_write}");
}
