//! Helpers shared by the parity tests.

use std::path::Path;

use petl_core::weights::{HostTensor, TensorMap};

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
