//! `cargo +nightly fuzz run read_vtab_list`: see `petl_core::fuzz`.
#![no_main]

use petl_core::fuzz::{Target, run};

thread_local! {
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().expect("a scratch folder");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SCRATCH.with(|dir| run(Target::VtabList, data, dir.path()));
});
