//! Helpers shared by the parity tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use petl_core::weights::{HostTensor, TensorMap};

/// A file of `crates/apt/tests/fixtures`.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The portable CPU backend.
pub fn device() -> Device {
    petl_core::device::device_from_name("flex").unwrap()
}

/// Largest absolute difference to a reference of the same shape.
pub fn max_diff<const D: usize>(ours: Tensor<D>, want: &HostTensor) -> f32 {
    let ours = HostTensor::from_tensor(&ours);
    assert_eq!(ours.shape, want.shape);
    ours.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// A `[B, T]` integer tensor from a reference read as f32.
pub fn ints(t: &HostTensor, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, [t.shape[0], t.shape[1]]), device)
}

/// A safetensors fixture whose int64 tensors (ids, masks: small integers) become f32.
pub fn read_mixed(path: &Path) -> TensorMap {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map = TensorMap::new(path.display().to_string());
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::I64 => {
                view.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
            }
            safetensors::Dtype::F32 => {
                view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            }
            other => panic!("{name}: {other:?}"),
        };
        map.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    map
}
