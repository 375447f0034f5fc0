//! Hostile downloaded files: malicious PyTorch pickles, resource bombs in safetensors, `.npz`
//! and images (fixtures from `tools/fixtures/hostile_files.py`, which documents each one).
//!
//! Every reader must return an error that names the file (and, for a refused pickle global,
//! the global), must not panic, must not run the payload, and must fail a bomb within 2 s and
//! 256 MiB of extra peak memory.
//!
//! How it is measured: each case runs in a child process, the test binary itself re-run with
//! only the `hostile_child` test selected and the case in `PETL_HOSTILE_CASE`. The child
//! resets its peak-RSS counter (`/proc/self/clear_refs`), reads `VmRSS`, calls the reader under
//! `catch_unwind`, reads `VmHWM` and prints one result line: outcome, milliseconds, extra peak
//! KiB (`VmHWM` after − `VmRSS` before). A separate process per case keeps the peaks apart,
//! and turns an abort (failed allocation) or a hang into a reported failure instead of the
//! end of the test run: the child runs under `ulimit -v` (4 GiB) and is killed after 60 s.
//!
//! Sentinel: the child's working directory is a fresh temporary directory and
//! `PETL_HOSTILE_SENTINEL` names a file in it. A payload that ran would create that file (or
//! `./PETL_HOSTILE_SENTINEL`); the parent checks that neither exists.
//!
//! `cargo test -p petl-core --test hostile_files -- --nocapture 2>&1 | grep '^HOSTILE'` prints
//! the table of outcomes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use petl_core::data::preprocess::{Normalization, Preprocess, load_image};
use petl_core::weights::{read_checkpoint, read_npz, read_pth, read_safetensors};

const CASE_ENV: &str = "PETL_HOSTILE_CASE";
const SENTINEL_ENV: &str = "PETL_HOSTILE_SENTINEL";
const RESULT_TAG: &str = "HOSTILE-RESULT";
/// Time and extra peak memory a refusal may cost.
const MAX_MS: u64 = 2000;
const MAX_EXTRA_KIB: u64 = 256 * 1024;
/// Address-space ceiling of a child, so an undefended bomb aborts instead of swapping.
const CHILD_AS_LIMIT_KIB: u64 = 4 << 20;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn hostile(name: &str) -> PathBuf {
    fixture("hostile").join(name)
}

/// The reader a case goes through.
#[derive(Clone, Copy)]
enum Reader {
    Pth,
    Checkpoint,
    Safetensors,
    Npz,
    Image,
}

impl Reader {
    fn tag(self) -> &'static str {
        match self {
            Reader::Pth => "pth",
            Reader::Checkpoint => "checkpoint",
            Reader::Safetensors => "safetensors",
            Reader::Npz => "npz",
            Reader::Image => "image",
        }
    }

    fn from_tag(tag: &str) -> Self {
        match tag {
            "pth" => Reader::Pth,
            "checkpoint" => Reader::Checkpoint,
            "safetensors" => Reader::Safetensors,
            "npz" => Reader::Npz,
            "image" => Reader::Image,
            other => panic!("unknown reader tag {other}"),
        }
    }

    /// Runs the reader: a one-line summary on success.
    fn call(self, path: &Path) -> petl_core::Result<String> {
        let summary = |map: petl_core::weights::TensorMap| {
            let mut names: Vec<_> = map.tensors.keys().cloned().collect();
            names.sort();
            format!("{} tensors: {}", names.len(), names.join(" "))
        };
        match self {
            Reader::Pth => read_pth(path).map(summary),
            Reader::Checkpoint => read_checkpoint(path).map(summary),
            Reader::Safetensors => read_safetensors(path).map(summary),
            Reader::Npz => read_npz(path).map(summary),
            Reader::Image => {
                let pre = Preprocess::Vtab { size: 224, norm: Normalization::Imagenet };
                load_image(path, &pre, None).map(|v| format!("{} values", v.len()))
            }
        }
    }
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child side: a no-op unless `PETL_HOSTILE_CASE` selects a case.
#[test]
fn hostile_child() {
    let Ok(spec) = std::env::var(CASE_ENV) else { return };
    let (tag, path) = spec.split_once(':').expect("reader:path");
    let reader = Reader::from_tag(tag);
    // Reset the peak-RSS counter (Linux ≥ 4.0), so VmHWM reports this call's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = proc_status_kib("VmRSS");
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(|| reader.call(Path::new(path)));
    let ms = start.elapsed().as_millis();
    let extra = proc_status_kib("VmHWM").saturating_sub(rss_before);
    let (kind, msg) = match outcome {
        Ok(Ok(summary)) => ("ok", summary),
        Ok(Err(e)) => ("err", e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            ("panic", msg)
        }
    };
    println!("{RESULT_TAG}\t{kind}\t{ms}\t{extra}\t{}", msg.replace(['\n', '\t'], " "));
}

struct Outcome {
    kind: String,
    ms: u64,
    extra_kib: u64,
    msg: String,
}

/// Runs one case in a child process (see the module docs) and returns what it reported, with
/// whether a sentinel appeared.
fn run_child(reader: Reader, path: &Path) -> (Outcome, bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sentinel = dir.path().join("sentinel");
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CHILD_AS_LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args(["hostile_child", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .env(CASE_ENV, format!("{}:{}", reader.tag(), path.display()))
        .env(SENTINEL_ENV, &sentinel)
        .env("RUST_BACKTRACE", "0")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(output) => output.expect("child output"),
        Err(_) => {
            // Our own child, by its id.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{}: the reader did not finish within {CHILD_TIMEOUT:?}", path.display());
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().find(|l| l.starts_with(RESULT_TAG)).unwrap_or_else(|| {
        let tail: String = stderr.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{}: the child died ({}) without a result (an abort: allocation failure?): {tail}",
            path.display(),
            output.status
        )
    });
    let mut fields = line.splitn(5, '\t').skip(1);
    let mut next = || fields.next().unwrap_or_default().to_string();
    let outcome = Outcome {
        kind: next(),
        ms: next().parse().unwrap_or(u64::MAX),
        extra_kib: next().parse().unwrap_or(u64::MAX),
        msg: next(),
    };
    let fired = sentinel.exists() || dir.path().join("PETL_HOSTILE_SENTINEL").exists();
    (outcome, fired)
}

/// A hostile file: the reader must refuse it, naming the file and every `want` substring.
fn refuse(reader: Reader, path: &Path, want: &[&str]) {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let (o, fired) = run_child(reader, path);
    eprintln!("HOSTILE {file:30} {:5} {:>5} ms {:>8.1} MiB  {}", o.kind, o.ms, o.extra_kib as f64 / 1024.0, o.msg);
    let mut problems = Vec::new();
    if fired {
        problems.push("THE PAYLOAD RAN: the sentinel file exists".to_string());
    }
    match o.kind.as_str() {
        "err" => {}
        "panic" => problems.push(format!("the reader panicked: {}", o.msg)),
        other => problems.push(format!("expected an error, got `{other}`: {}", o.msg)),
    }
    if o.kind == "err" {
        if !o.msg.contains(&file) {
            problems.push("the error does not name the file".into());
        }
        for w in want {
            if !o.msg.contains(w) {
                problems.push(format!("the error does not mention `{w}`"));
            }
        }
    }
    if o.ms > MAX_MS {
        problems.push(format!("took {} ms (limit {MAX_MS})", o.ms));
    }
    if o.extra_kib > MAX_EXTRA_KIB {
        problems.push(format!("peak memory grew {} MiB (limit {})", o.extra_kib / 1024, MAX_EXTRA_KIB / 1024));
    }
    assert!(problems.is_empty(), "{file}: {}\n  error was: {}", problems.join("; "), o.msg);
}

/// A clean file in the same hand-made layout: it must load (the screens refuse no honest file).
fn accept(reader: Reader, path: &Path) -> String {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let (o, fired) = run_child(reader, path);
    eprintln!("HOSTILE {file:30} {:5} {:>5} ms {:>8.1} MiB  {}", o.kind, o.ms, o.extra_kib as f64 / 1024.0, o.msg);
    assert!(!fired && o.kind == "ok", "{file}: expected to load, got {}: {}", o.kind, o.msg);
    o.msg
}

macro_rules! refuse {
    ($($test:ident: $reader:ident $file:literal $([$($want:literal),*])?;)*) => {$(
        #[test]
        fn $test() {
            refuse(Reader::$reader, &hostile($file), &[$($($want),*)?]);
        }
    )*};
}

// Code execution through the pickle: refused by the global's name before parsing.
refuse! {
    reduce_os_system: Pth "reduce_os_system.pth" ["posix.system"];
    reduce_subprocess_popen: Pth "reduce_subprocess_popen.pth" ["subprocess.Popen"];
    reduce_builtins_exec: Pth "reduce_builtins_exec.pth" ["builtins.exec"];
    reduce_builtins_eval_popped: Pth "reduce_builtins_eval.pth" ["builtins.eval"];
    stack_global_literal: Pth "stack_global_os_system.pth" ["os.system"];
    stack_global_from_memo: Pth "stack_global_memo.pth" ["posix.system"];
    newobj_partial: Pth "newobj_partial_system.pth" ["functools.partial", "posix.system"];
    build_setstate_on_allowed_object: Pth "build_setstate.pth" ["posix.system"];
    ext1_after_copyreg: Pth "ext1_copyreg.pth" ["copyreg.add_extension", "EXT1 code 240"];
    ext2_bare: Pth "ext2_bare.pth" ["EXT2 code 4660"];
    persistent_id_with_global_type: Pth "persid_global_type.pth" ["posix.system"];
    inst_opcode: Pth "inst_opcode.pth" ["posix.system"];
    deflated_data_pkl: Pth "deflated_datapkl.pth" ["posix.system"];
    second_data_pkl: Pth "second_datapkl.pth" ["posix.system"];
    duplicate_data_pkl: Pth "duplicate_datapkl.pth" ["posix.system"];
    legacy_container: Pth "legacy_os_system.pt" ["posix.system"];
    plain_pickle: Pth "plain_pickle_eval.pth" ["builtins.eval"];
    tar_container: Pth "tar_container.pth" ["TAR"];
    through_read_checkpoint: Checkpoint "reduce_os_system.pth" ["posix.system"];
}

// Malformed pickles and resource bombs in them.
refuse! {
    persistent_id_not_a_tuple: Pth "persid_not_storage.pth" ["persistent id"];
    setitem_on_list: Pth "setitem_on_list.pth" ["SetItem"];
    setitems_on_list: Pth "setitems_on_list.pth" ["SetItems"];
    memo_bomb: Pth "memo_bomb.pth" ["memo bomb"];
    dup_bomb: Pth "dup_bomb.pth" ["memo bomb"];
    memo_index_huge: Pth "memo_index_huge.pth" ["memo reference 4294967294"];
    deep_nesting: Pth "deep_nesting.pth" ["nesting"];
    zero_stride_broadcast: Pth "zero_stride_broadcast.pth" ["`big`", "zero-stride"];
    numel_overflow: Pth "numel_overflow.pth" ["overflows"];
    nbytes_overflow: Pth "nbytes_overflow.pth" ["overflows"];
    storage_claims_2gib: Pth "storage_claims_2gib.pth" ["`big`", "materialize"];
    storage_larger_than_entry: Pth "storage_larger_than_entry.pth" ["`big`", "available"];
}

// safetensors.
refuse! {
    safetensors_header_len_2_40: Safetensors "st_header_len_huge.safetensors" ["1099511627776"];
    safetensors_shape_2_36: Safetensors "st_shape_huge.safetensors";
    safetensors_shape_overflow: Safetensors "st_shape_overflow.safetensors";
    safetensors_offsets_beyond_file: Safetensors "st_offsets_beyond.safetensors";
}

// npz.
refuse! {
    npz_bzip2_bomb_4gib: Npz "npz_bzip2_bomb.npz" ["zip bomb"];
    npz_deflate_lying_size: Npz "npz_deflate_lying_size.npz" ["zip bomb"];
    npz_header_claims_2_36: Npz "npz_header_claims_huge.npz" ["`w`", "68719476736"];
    npz_shape_overflow: Npz "npz_shape_overflow.npz" ["`w`", "overflows"];
}

// Images: headers claiming 100000² (PNG) and 65535² (JPEG's maximum) pixels, and a 1-bit PNG
// that decodes to 400 MB of 8-bit gray (1.2 GB as RGB) from 48 KB.
refuse! {
    png_100k_by_100k: Image "png_100k.png";
    jpeg_65535_by_65535: Image "jpeg_65535.jpg";
    png_1bit_bomb: Image "png_1bit_bomb.png";
}

#[test]
fn control_state_dict_loads() {
    let summary = accept(Reader::Pth, &hostile("control_state_dict.pth"));
    assert_eq!(summary, "2 tensors: b w");
    let map = read_pth(&hostile("control_state_dict.pth")).unwrap();
    assert_eq!(map.tensors["w"].data, [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(map.tensors["b"].data, [3.0, 4.0]);
}

#[test]
fn control_npz_loads_in_c_order() {
    accept(Reader::Npz, &hostile("control.npz"));
    let map = read_npz(&hostile("control.npz")).unwrap();
    let want: Vec<f32> = (0..6).map(|i| i as f32).collect();
    for name in ["c", "f"] {
        assert_eq!(map.tensors[name].shape, [2, 3], "{name}");
        assert_eq!(map.tensors[name].data, want, "{name} (f is stored in Fortran order)");
    }
}

/// The project's real fixtures (torch.save output, a Lightning `.ckpt`, numpy's `.npz`,
/// safetensors) still pass the screens.
#[test]
fn real_checkpoints_still_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        fixture("vit_tiny_timm.pth"),
        fixture("swin_tiny_ms_release.pth"),
        root.join("../apt/tests/fixtures/vilt_tiny_apt_lightning.ckpt"),
        root.join("../arc/tests/fixtures/arc_official.pth"),
        fixture("vit_tiny_google.npz"),
        fixture("preprocess_ref.npz"),
        fixture("vit_tiny_timm.safetensors"),
    ] {
        let map = read_checkpoint(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!map.tensors.is_empty(), "{}", file.display());
    }
    let pre = Preprocess::Vtab { size: 32, norm: Normalization::Imagenet };
    load_image(&fixture("pre_a.png"), &pre, None).unwrap();
}
