//! Files: atomic writes shared by checkpoints, reports and exports, and reading Hugging Face
//! `config.json` files with errors that name the file and the key.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder (`.NAME.tmp-PID`),
/// fsync, rename, fsync of the folder (so the rename itself survives a power cut). A crash leaves
/// either the old file or the new one, never half of one; a failed write (disk full) removes the
/// temporary and leaves the old file as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        crash_point();
        std::fs::rename(&tmp, path)?;
        // The folder entry: best effort (not every platform opens folders for syncing).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Crash testing: with `PETL_CRASH_AT_WRITE=k` in the environment, the process aborts (no
/// unwinding, no cleanup, like a power cut or `SIGKILL`) inside its `k`-th atomic write, after
/// the temporary is complete and before the rename. Unset, this costs one atomic increment.
fn crash_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let at = *AT.get_or_init(|| std::env::var("PETL_CRASH_AT_WRITE").ok().and_then(|v| v.parse().ok()));
    let n = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    if at == Some(n) {
        std::process::abort();
    }
}

/// The SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a temporary of [`write_atomic`] (`.NAME.tmp-PID`), which a crash may leave.
pub fn is_atomic_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// A Hugging Face `config.json` (or a part of one, e.g. CLIP's `vision_config`) with field
/// accessors whose errors name the file and the key.
pub struct HfConfig<'a> {
    /// The file, for messages.
    pub path: &'a Path,
    /// The JSON object read.
    pub value: &'a serde_json::Value,
}

impl HfConfig<'_> {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// A missing file, or one that is not JSON.
    pub fn read(path: &Path) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))
    }

    /// A required non-negative integer field.
    ///
    /// # Errors
    /// The field is missing or not a non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.value[key]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| Error::format(self.path, format!("`{key}` is missing or not a non-negative integer")))
    }

    /// `hidden_act`, which must be `expected` when present.
    ///
    /// # Errors
    /// Another activation.
    pub fn expect_activation(&self, expected: &str) -> Result<()> {
        match self.value["hidden_act"].as_str() {
            Some(act) if act != expected => {
                Err(Error::format(self.path, format!("hidden_act `{act}`: this model uses `{expected}`")))
            }
            _ => Ok(()),
        }
    }
}
