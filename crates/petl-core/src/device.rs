//! Picking the backend at run time: a name → a [`Device`]. Library code only ever takes a
//! `Device`; binaries call [`device_from_name`] once.

use burn::prelude::*;

/// Backends this build can run, by the names [`device_from_name`] accepts.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = vec![];
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "tch") {
        v.push("tch");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// The device of backend `name` (`flex`, `ndarray`, `wgpu`, `tch`, `cuda`), without autodiff.
///
/// # Errors
/// An unknown name, or a backend whose cargo feature was not compiled in (the message names
/// the feature to enable).
pub fn device_from_name(name: &str) -> crate::Result<Device> {
    let missing = |feature: &str| {
        Err(crate::Error::Config(format!(
            "backend `{name}` is not compiled into this binary: rebuild with `--features {feature}` (compiled: {})",
            compiled_backends().join(", ")
        )))
    };
    match name {
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[allow(unreachable_code)]
            missing("flex")
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            return Ok(Device::ndarray());
            #[allow(unreachable_code)]
            missing("ndarray")
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(Default::default()));
            #[allow(unreachable_code)]
            missing("wgpu")
        }
        "tch" => {
            // burn-tch is deprecated upstream in favour of CubeCL backends; the design keeps
            // libtorch as the reference point for comparisons with PyTorch.
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            return Ok(Device::libtorch());
            #[allow(unreachable_code)]
            missing("tch")
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(Default::default()));
            #[allow(unreachable_code)]
            missing("cuda")
        }
        other => {
            Err(crate::Error::Config(format!("unknown backend `{other}` (known: flex, ndarray, wgpu, tch, cuda)")))
        }
    }
}
