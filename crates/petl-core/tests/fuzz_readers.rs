//! Structured mutation fuzzing of the file readers, on the stable toolchain and in a bounded
//! time (CI): valid seed files — a PyTorch state dict, safetensors, `.npz`, a VTAB list file, a
//! Hugging Face `config.json`, a PNG — are mutated (bytes flipped, truncated, chunks inserted,
//! duplicated or deleted, numbers in text bumped) and read; any outcome is fine except a panic.
//! A panicking input is written to `target/fuzz-crashes/` (to be committed under
//! `tests/fixtures/fuzz_regressions/`, which are replayed first). `PETL_FUZZ_ITERS` sets the
//! mutations per target (default 150; longer local runs: 100000). The entry points are
//! `petl_core::fuzz::run`, which the cargo-fuzz targets in `fuzz/` call too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use petl_core::fuzz::Target;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four structure-aware mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        match rng.below(7) {
            0 => {
                let i = rng.below(len);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => b.truncate(rng.below(len)),
            2 => {
                let i = rng.below(len);
                let chunk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(i.min(b.len())..i.min(b.len()), chunk);
            }
            3 => {
                let (i, n) = (rng.below(len), 1 + rng.below(64));
                let end = (i + n).min(b.len());
                let chunk = b[i.min(end)..end].to_vec();
                b.splice(end..end, chunk);
            }
            4 => {
                let (i, n) = (rng.below(len), 1 + rng.below(64));
                let end = (i + n).min(b.len());
                b.drain(i.min(end)..end);
            }
            5 => {
                // An interesting integer in place: 0, -1, huge.
                let i = rng.below(len);
                let v = [0u8, 0xff, 0x7f, 0x80][rng.below(4)];
                for k in 0..8 {
                    if let Some(x) = b.get_mut(i + k) {
                        *x = v;
                    }
                }
            }
            _ => {
                // A digit in text bumped (JSON sizes, list labels).
                let digits: Vec<usize> =
                    b.iter().enumerate().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
                if !digits.is_empty() {
                    let i = digits[rng.below(digits.len())];
                    b[i] = b'0' + rng.below(10) as u8;
                    if rng.below(2) == 0 {
                        b.splice(i..i, std::iter::repeat_n(b'9', 1 + rng.below(12)));
                    }
                }
            }
        }
    }
    b
}

/// Feeds mutations of `seed` (written to `name` in a scratch folder) to `read`; panics are
/// collected and saved.
fn fuzz(target: &str, seed: &[u8], read: impl Fn(&[u8])) {
    let iters: usize = std::env::var("PETL_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let regressions = fixture("fuzz_regressions").join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&regressions)
        .map(|d| d.flatten().filter_map(|e| std::fs::read(e.path()).ok()).collect())
        .unwrap_or_default();
    let mut rng = Rng(0x5eed ^ target.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    inputs.extend((0..iters).map(|_| mutate(seed, &mut rng)));
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut crashes = vec![];
    for (i, input) in inputs.iter().enumerate() {
        if catch_unwind(AssertUnwindSafe(|| read(input))).is_err() {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes").join(target);
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join(format!("crash-{i}")), input).unwrap();
            crashes.push(i);
        }
    }
    std::panic::set_hook(prev);
    assert!(
        crashes.is_empty(),
        "{target}: {} of {} inputs panicked (saved under target/…/fuzz-crashes)",
        crashes.len(),
        inputs.len()
    );
}

fn seed(target: Target) -> Vec<u8> {
    match target {
        Target::Pth => std::fs::read(fixture("hostile/control_state_dict.pth")).unwrap(),
        Target::Safetensors => std::fs::read(fixture("bert_tiny_ref.safetensors")).unwrap(),
        Target::Npz => std::fs::read(fixture("hostile/control.npz")).unwrap(),
        Target::HfConfig => std::fs::read(fixture("roberta_tiny/config.json")).unwrap(),
        Target::Png => std::fs::read(fixture("pre_b.png")).unwrap(),
        Target::VtabList => (0..6).map(|i| format!("images/{i}.png {}\n", i % 10)).collect::<String>().into_bytes(),
    }
}

#[test]
fn no_reader_panics_on_mutated_files() {
    for target in Target::ALL {
        let scratch = tempfile::tempdir().unwrap();
        fuzz(target.name(), &seed(target), |data| petl_core::fuzz::run(target, data, scratch.path()));
    }
}
