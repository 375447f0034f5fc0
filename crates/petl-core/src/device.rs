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
/// GPU and libtorch devices are started here with one tiny read-back, so that a machine without
/// the driver fails now, with one line, rather than with a panic inside Burn at the first op.
///
/// # Errors
/// An unknown name, a backend whose cargo feature was not compiled in (the message names the
/// feature to enable), or a backend that cannot start here (no Vulkan/Metal/DX12 adapter, no
/// CUDA driver, libtorch failing).
pub fn device_from_name(name: &str) -> crate::Result<Device> {
    let device = compiled_device(name)?;
    match name {
        "wgpu" => probe(
            name,
            device,
            "no usable GPU adapter: install a Vulkan, Metal or DX12 driver (without a GPU, Mesa's software Vulkan: `apt-get install mesa-vulkan-drivers`)",
        ),
        "cuda" => probe(name, device, "no usable CUDA device: check the NVIDIA driver and CUDA runtime"),
        "tch" => probe(
            name,
            device,
            "libtorch failed to start: burn-tch 0.22 needs PyTorch 2.9.0 and its lib/ folder on LD_LIBRARY_PATH",
        ),
        _ => Ok(device),
    }
}

/// Runs one tiny op on `device`; Burn's GPU runtimes panic when they cannot start, so the panic
/// is caught and returned as an error naming the backend. While probing, panic reports from
/// the sources of Burn, CubeCL, wgpu and tch crates (a path component `burn-*`, `cubecl*`,
/// `wgpu*`, `tch-*`, `torch-sys-*`) are silenced (they may come from the runtime's server
/// thread); any other panic is reported by the previous hook as usual.
fn probe(name: &str, device: Device, hint: &str) -> crate::Result<Device> {
    let previous: std::sync::Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> = std::panic::take_hook().into();
    let delegate = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        let file = std::path::Path::new(info.location().map(|l| l.file()).unwrap_or(""));
        let inside = file.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            ["burn-", "cubecl", "wgpu", "tch-", "torch-sys-"].iter().any(|crate_dir| c.starts_with(crate_dir))
        });
        if !inside {
            delegate(info);
        }
    }));
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Tensor::<1>::from_floats([1.0], &device).into_scalar::<f32>()
    }));
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match started {
        Ok(_) => Ok(device),
        Err(payload) => {
            let cause = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            Err(crate::Error::Config(format!("backend `{name}` cannot start on this machine: {hint} ({cause})")))
        }
    }
}

/// The device of a compiled-in backend, unstarted.
fn compiled_device(name: &str) -> crate::Result<Device> {
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

/// The CPU this process runs on, for benchmark headers: model name, architecture, the widest
/// SIMD level the CPU kernels (gemm, petl's GELU) will dispatch to, and rayon's thread count,
/// e.g. `AMD EPYC (x86_64, AVX2+FMA, 2 threads)`.
pub fn host_cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{model} ({}, {}, {} threads)", std::env::consts::ARCH, simd_level(), rayon::current_num_threads())
}

/// The widest SIMD instruction set this CPU offers to run-time dispatched kernels.
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "AVX2+FMA";
        }
        "SSE2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}
