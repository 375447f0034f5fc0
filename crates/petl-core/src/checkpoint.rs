//! Checkpoints: atomic writes, and adapter-only checkpoints (the trainable tensors as
//! safetensors, with the run's JSON config in the file's metadata under `petl_config`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::weights::{TensorMap, read_safetensors, write_safetensors};
use crate::{Error, Result};

/// Metadata key holding the JSON config in adapter checkpoints.
pub const CONFIG_KEY: &str = "petl_config";

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
/// A crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Saves `tensors` with `config` (any JSON) as an adapter-only checkpoint, atomically.
/// A human-readable copy of the config is written beside it as `<file>.json`.
pub fn save_adapter(path: &Path, tensors: &TensorMap, config: &serde_json::Value) -> Result<()> {
    let json = serde_json::to_string_pretty(config).expect("JSON value serialises");
    let meta = HashMap::from([(CONFIG_KEY.to_string(), json.clone())]);
    write_safetensors(path, tensors, Some(meta))?;
    write_atomic(&path.with_extension("json"), json.as_bytes())
}

/// Reads an adapter-only checkpoint: its tensors and its config.
pub fn load_adapter(path: &Path) -> Result<(TensorMap, serde_json::Value)> {
    let tensors = read_safetensors(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("bad safetensors header: {e}")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| Error::format(path, format!("no `{CONFIG_KEY}` metadata: not a petl adapter checkpoint")))?;
    let config =
        serde_json::from_str(json).map_err(|e| Error::format(path, format!("`{CONFIG_KEY}` is not JSON: {e}")))?;
    Ok((tensors, config))
}
