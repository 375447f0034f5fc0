//! Adapter-only checkpoints: the trainable tensors as safetensors, with the run's JSON config in
//! the file's metadata under `petl_config` and beside it as `<file>.json` (the layout of HF PEFT's
//! `adapter_model.safetensors` + `adapter_config.json`, in one file).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::io::write_atomic;
use crate::model::BackboneConfig;
use crate::weights::{TensorMap, read_safetensors, write_safetensors};
use crate::{Error, Result};

/// Metadata key holding the JSON config in adapter checkpoints.
pub const CONFIG_KEY: &str = "petl_config";

/// What every adapter-only checkpoint records about the model its tensors belong to: the
/// method with *its own* hyper-parameters only, the backbone's config and the head's size.
/// Loading is: build the backbone from `backbone`, inject `method` with `method_config`, apply
/// the stored tensors (keys relative to the classifier: `tuner.*`, `head.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Schema tag, [`AdapterConfig::FORMAT`].
    pub format: String,
    /// The method's name (`arc`, `lora`, `linear`, ...).
    pub method: String,
    /// The method's own configuration (its serde form; `{}` for methods without one).
    pub method_config: serde_json::Value,
    /// The backbone the tensors were trained on.
    pub backbone: BackboneConfig,
    /// Classes of the head.
    pub num_classes: usize,
}

impl AdapterConfig {
    /// The schema tag this version writes and reads.
    pub const FORMAT: &'static str = "petl-adapter/1";

    /// A config of the current schema.
    pub fn new(
        method: impl Into<String>,
        method_config: serde_json::Value,
        backbone: BackboneConfig,
        num_classes: usize,
    ) -> Self {
        Self { format: Self::FORMAT.into(), method: method.into(), method_config, backbone, num_classes }
    }

    /// Reads the config stored in the checkpoint `path`, if it has this schema: `Ok(None)` for
    /// configs written before it (no `format` key).
    ///
    /// # Errors
    /// A `format` of another version, or fields that do not parse (named, with the file).
    pub fn from_stored(path: &Path, stored: &serde_json::Value) -> Result<Option<Self>> {
        let Some(format) = stored.get("format") else { return Ok(None) };
        if format != Self::FORMAT {
            return Err(Error::format(
                path,
                format!("adapter config format {format}, this petl reads {:?}", Self::FORMAT),
            ));
        }
        serde_json::from_value(stored.clone())
            .map(Some)
            .map_err(|e| Error::format(path, format!("`{CONFIG_KEY}`: {e}")))
    }
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
    tensors.check_finite()?;
    let config = stored_config(path)?
        .ok_or_else(|| Error::format(path, format!("no `{CONFIG_KEY}` metadata: not a petl adapter checkpoint")))?;
    Ok((tensors, config))
}

/// The config a safetensors file stores under [`CONFIG_KEY`] in its metadata, read from the
/// header alone: `Ok(None)` for a file without one (a plain state dict), so a caller can tell an
/// adapter checkpoint from a state dict before reading any tensor.
///
/// # Errors
/// A file that is not safetensors (its header length or JSON), or a config that is not JSON.
pub fn stored_config(path: &Path) -> Result<Option<serde_json::Value>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_field = [0u8; 8];
    file.read_exact(&mut len_field)
        .map_err(|_| Error::format(path, format!("not a valid safetensors file: only {file_len} bytes")))?;
    let header_len = u64::from_le_bytes(len_field);
    // The format caps its header at 100 MB.
    if header_len > file_len - 8 || header_len > 100 << 20 {
        return Err(Error::format(
            path,
            format!("not a valid safetensors file: its header claims {header_len} bytes, {} follow", file_len - 8),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| Error::format(path, format!("bad safetensors header: {e}")))?;
    let Some(json) = header.get("__metadata__").and_then(|m| m.get(CONFIG_KEY)) else { return Ok(None) };
    let json = json.as_str().ok_or_else(|| Error::format(path, format!("`{CONFIG_KEY}` is not a string")))?;
    serde_json::from_str(json).map(Some).map_err(|e| Error::format(path, format!("`{CONFIG_KEY}` is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::HostTensor;

    #[test]
    fn stored_config_tells_adapters_from_state_dicts() {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = TensorMap::new("test");
        tensors.insert("head.weight", HostTensor::new(vec![2], vec![1.0, 2.0]));
        let adapter = dir.path().join("adapter.safetensors");
        let config = serde_json::json!({ "paper": "apt", "task": "vqa" });
        save_adapter(&adapter, &tensors, &config).unwrap();
        assert_eq!(stored_config(&adapter).unwrap(), Some(config.clone()));
        assert_eq!(load_adapter(&adapter).unwrap().1, config);
        let plain = dir.path().join("plain.safetensors");
        write_safetensors(&plain, &tensors, None).unwrap();
        assert_eq!(stored_config(&plain).unwrap(), None);
        assert!(load_adapter(&plain).unwrap_err().to_string().contains("not a petl adapter checkpoint"));
        std::fs::write(&plain, b"short").unwrap();
        assert!(stored_config(&plain).unwrap_err().to_string().contains("not a valid safetensors file"));
    }
}
