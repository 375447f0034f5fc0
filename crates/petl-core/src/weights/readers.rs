//! Readers for the checkpoint formats: Google `.npz`, safetensors, PyTorch `.pth`.

use std::collections::HashMap;
use std::path::Path;

use super::{HostTensor, TensorMap};
use crate::{Error, Result};

fn bytes_to_f32(bytes: &[u8], dtype: &str, path: &Path, key: &str) -> Result<Vec<f32>> {
    let chunks = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        "f32" => chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        "f64" => chunks(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        "f16" => chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        "bf16" => chunks(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => {
            return Err(Error::format(path, format!("tensor `{key}` has dtype {other}; expected a float type")));
        }
    })
}

/// Reads every array of a `.npz` archive (Google ViT checkpoints: float32, `/` in names).
pub fn read_npz(path: &Path) -> Result<TensorMap> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| Error::format(path, format!("not a valid .npz archive: {e}")))?;
    let names: Vec<String> = archive.array_names().map(str::to_owned).collect();
    let mut map = TensorMap::new(path.display().to_string());
    for name in names {
        let npy = archive
            .by_name(&name)
            .map_err(|e| Error::format(path, format!("array `{name}`: {e}")))?
            .ok_or_else(|| Error::format(path, format!("array `{name}` listed but absent")))?;
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let descr = npy.dtype().descr();
        let data: Vec<f32> = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
            "f4" => npy.into_vec::<f32>(),
            "f8" => npy.into_vec::<f64>().map(|v| v.into_iter().map(|x| x as f32).collect()),
            other => {
                return Err(Error::format(path, format!("array `{name}` has dtype {other}; expected float32")));
            }
        }
        .map_err(|e| Error::format(path, format!("array `{name}` is truncated or corrupt: {e}")))?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::format(path, format!("array `{name}`: shape {shape:?} but {} values", data.len())));
        }
        map.insert(name, HostTensor::new(shape, data));
    }
    Ok(map)
}

/// Reads a `.safetensors` file (float tensors only).
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
    let mut map = TensorMap::new(path.display().to_string());
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => "f32",
            safetensors::Dtype::F64 => "f64",
            safetensors::Dtype::F16 => "f16",
            safetensors::Dtype::BF16 => "bf16",
            other => {
                return Err(Error::format(path, format!("tensor `{name}` has dtype {other:?}; expected a float type")));
            }
        };
        let data = bytes_to_f32(view.data(), dtype, path, &name)?;
        map.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(map)
}

/// Reads a PyTorch `.pth`/`.pt` state dict or a PyTorch Lightning `.ckpt`. A checkpoint that
/// nests its state dict under `model` or `module` is unwrapped; of a checkpoint with a
/// `state_dict` entry only that entry is read (Lightning's optimizer states and the rest are
/// dropped). Non-float entries are skipped.
pub fn read_pth(path: &Path) -> Result<TensorMap> {
    let reader = pytorch_reader::PytorchReader::new(path)
        .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: {e}")))?;
    let mut map = TensorMap::new(path.display().to_string());
    for (name, tensor) in reader.tensors() {
        use pytorch_reader::DType as D;
        let dtype = match tensor.dtype() {
            D::F32 => "f32",
            D::F64 => "f64",
            D::F16 => "f16",
            D::BF16 => "bf16",
            _ => continue,
        };
        let bytes = tensor.read().map_err(|e| Error::format(path, format!("tensor `{name}`: {e}")))?;
        let data = bytes_to_f32(&bytes, dtype, path, name)?;
        map.insert(name.clone(), HostTensor::new(tensor.shape().to_vec(), data));
    }
    // A PyTorch Lightning checkpoint (`.ckpt`: ViLT's, METER's and APT's releases) holds the
    // model under `state_dict` beside optimizer states, schedulers and hyper-parameters: only
    // the state dict is the model.
    if map.tensors.keys().any(|k| k.starts_with("state_dict.")) {
        map.tensors = std::mem::take(&mut map.tensors)
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("state_dict.").map(|inner| (inner.to_string(), v)))
            .collect();
    }
    for wrapper in ["model.", "module."] {
        if !map.tensors.is_empty() && map.tensors.keys().all(|k| k.starts_with(wrapper)) {
            map.tensors = std::mem::take(&mut map.tensors)
                .into_iter()
                .map(|(k, v)| (k[wrapper.len()..].to_string(), v))
                .collect();
        }
    }
    Ok(map)
}

/// Reads a checkpoint by extension: `.npz`, `.safetensors`, `.pth`/`.pt`/`.bin`/`.ckpt`; a tensor
/// holding NaN or infinity is an error naming it.
pub fn read_checkpoint(path: &Path) -> Result<TensorMap> {
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint not found")));
    }
    let map = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "npz" => read_npz(path),
        "safetensors" => read_safetensors(path),
        "pth" | "pt" | "bin" | "ckpt" => read_pth(path),
        other => Err(Error::format(
            path,
            format!("unknown checkpoint extension `.{other}` (expected .npz, .safetensors, .pth, .ckpt)"),
        )),
    }?;
    map.check_finite()?;
    Ok(map)
}

/// Writes tensors as float32 safetensors, atomically (temporary file + rename).
pub fn write_safetensors(path: &Path, map: &TensorMap, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = map
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("consistent f32 view");
            (k.clone(), view)
        })
        .collect();
    let buffer =
        safetensors::serialize(views, metadata).map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    crate::io::write_atomic(path, &buffer)
}
