//! Weight import: read a foreign checkpoint into a [`TensorMap`] (name → host tensor), rename
//! it to our parameter paths with one pure function per checkpoint family, then [`apply`] it
//! to a module. Loading is strict: missing, unexpected and mis-shaped keys are reported by name.

mod apply;
pub mod families;
mod host;
mod readers;

pub use apply::{LoadReport, apply, apply_with_ids, collect, collect_with_ids, stable_param_ids};
pub use host::{HostTensor, TensorMap};
pub use readers::{
    list_pickle_globals, read_checkpoint, read_npz, read_pth, read_safetensors, safetensors_bytes, write_safetensors,
};
