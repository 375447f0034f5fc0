//! Host-side f32 tensors and named maps of them.

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::TensorData;

/// A dense row-major f32 tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from shape and values.
    ///
    /// # Panics
    /// If the value count does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} vs {} values", data.len());
        Self { shape, data }
    }

    /// Same values, new shape (row-major reinterpretation).
    ///
    /// # Panics
    /// If the element count differs.
    pub fn reshape(mut self, shape: Vec<usize>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), self.data.len(), "reshape {:?} -> {shape:?}", self.shape);
        self.shape = shape;
        self
    }

    /// Permutes the axes: output axis `i` is input axis `perm[i]`.
    ///
    /// # Panics
    /// If `perm` is not a permutation of the axes.
    pub fn permute(&self, perm: &[usize]) -> Self {
        let rank = self.shape.len();
        assert_eq!(perm.len(), rank, "permutation rank");
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let mut in_strides = vec![1usize; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            in_strides[i] = in_strides[i + 1] * self.shape[i + 1];
        }
        let mut out = Vec::with_capacity(self.data.len());
        let mut idx = vec![0usize; rank];
        for _ in 0..self.data.len() {
            let offset: usize = (0..rank).map(|i| idx[i] * in_strides[perm[i]]).sum();
            out.push(self.data[offset]);
            for i in (0..rank).rev() {
                idx[i] += 1;
                if idx[i] < out_shape[i] {
                    break;
                }
                idx[i] = 0;
            }
        }
        Self { shape: out_shape, data: out }
    }

    /// Transpose of a matrix (`[out, in]` torch Linear weight -> `[in, out]` Burn layout).
    pub fn t(&self) -> Self {
        self.permute(&[1, 0])
    }

    /// Rows `start..end` of the first axis.
    pub fn rows(&self, start: usize, end: usize) -> Self {
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Self { shape, data: self.data[start * row..end * row].to_vec() }
    }

    /// Uploads to a device as a tensor of rank `D`.
    ///
    /// # Panics
    /// If the rank differs from `D`.
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
    }

    /// Downloads a tensor.
    pub fn from_tensor<const D: usize>(t: &Tensor<D>) -> Self {
        let data = t.to_data().convert::<f32>();
        Self { shape: data.shape().to_vec(), data: data.try_into_vec::<f32>().expect("f32 data") }
    }
}

/// Named host tensors from one source (file), in key order.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    /// Where the tensors came from (file path), for error messages.
    pub source: String,
    /// Tensors by name.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl TensorMap {
    /// An empty map for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self { source: source.into(), tensors: BTreeMap::new() }
    }

    /// Removes and returns `key`, or an error naming the key and the source.
    pub fn take(&mut self, key: &str) -> crate::Result<HostTensor> {
        self.tensors.remove(key).ok_or_else(|| crate::Error::Weights {
            source_name: self.source.clone(),
            msg: format!("missing key `{key}`"),
        })
    }

    /// Inserts `tensor` under `key`.
    pub fn insert(&mut self, key: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(key.into(), tensor);
    }

    /// An error naming the first tensor that holds a NaN or an infinity (and the element), so
    /// that a corrupt or diverged checkpoint is refused when read, not trained on.
    ///
    /// # Errors
    /// [`crate::Error::Weights`] naming the source, the key and the flat index.
    pub fn check_finite(&self) -> crate::Result<()> {
        for (key, t) in &self.tensors {
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(crate::Error::Weights {
                    source_name: self.source.clone(),
                    msg: format!("tensor `{key}` holds {} at element {i}", t.data[i]),
                });
            }
        }
        Ok(())
    }

    /// Keys that remain, for "unexpected key" reports.
    pub fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}
