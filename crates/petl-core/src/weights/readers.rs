//! Readers for the checkpoint formats: Google `.npz`, safetensors, PyTorch `.pth`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
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

// ---------------------------------------------------------------------------------------------
// Size ceilings for hostile files. A checkpoint is downloaded, so every size it declares is
// checked against what the file can actually hold before anything of that size is allocated.
// ---------------------------------------------------------------------------------------------

/// Slack over the file's own size that one PyTorch tensor may materialize to: a small buffer
/// saved as an `expand()`ed (zero-stride) view legitimately reads back larger than it is stored.
const TENSOR_SLACK: u128 = 16 << 20;

/// Slack over four times the file size that all of a PyTorch checkpoint's tensors together
/// may materialize to (tied weights share one storage and are read once per name).
const CHECKPOINT_SLACK: u128 = 64 << 20;

/// An `.npz` archive may inflate to at most this many times its file size, plus
/// [`NPZ_INFLATE_SLACK`]. `np.savez` stores its entries (ratio 1); `np.savez_compressed`
/// deflates float weights to ~0.9 of their size. Only an archive bomb inflates further (a
/// small all-zero array fits in the slack).
const NPZ_MAX_INFLATE_RATIO: u64 = 32;
const NPZ_INFLATE_SLACK: u64 = 64 << 20;

/// Largest `.npy` header accepted (numpy writes well under 1 KiB).
const NPY_MAX_HEADER: u64 = 1 << 20;

/// Largest `data.pkl` screened, as `pytorch-reader` caps it (`MAX_PICKLE_SIZE`).
const MAX_PICKLE_SIZE: u64 = pytorch_reader::MAX_PICKLE_SIZE;

/// Reads every array of a `.npz` archive (Google ViT checkpoints: float32, `/` in names).
///
/// The archive is checked as a whole before any entry is inflated: the entries' compressed
/// sizes must fit in the file (overlapping entries are a zip bomb), and their inflated sizes
/// may exceed it at most [`NPZ_MAX_INFLATE_RATIO`]× (+ 64 MiB). Each `.npy` header is parsed
/// here, and its shape × item size must be exactly what the entry holds after the header, so
/// no array is allocated larger than the bytes that back it. Fortran-order arrays are
/// returned in C order.
pub fn read_npz(path: &Path) -> Result<TensorMap> {
    use npyz::zip::{CompressionMethod, ZipArchive};

    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::format(path, format!("not a valid .npz archive: {e}")))?;

    let mut arrays = Vec::new();
    let (mut compressed_total, mut inflated_total) = (0u64, 0u64);
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| Error::format(path, format!("not a valid .npz archive: entry #{index}: {e}")))?;
        if entry.compression() == CompressionMethod::Stored && entry.size() != entry.compressed_size() {
            return Err(Error::format(
                path,
                format!(
                    "entry `{}` is stored but declares {} bytes inflated and {} stored",
                    entry.name(),
                    entry.size(),
                    entry.compressed_size()
                ),
            ));
        }
        compressed_total = compressed_total.saturating_add(entry.compressed_size());
        inflated_total = inflated_total.saturating_add(entry.size());
        if let Some(name) = npyz::npz::array_name_from_file_name(entry.name()) {
            arrays.push((index, name.to_string(), entry.size()));
        }
    }
    if compressed_total > file_len {
        return Err(Error::format(
            path,
            format!(
                "the archive's entries claim {compressed_total} compressed bytes, more than the \
                 {file_len}-byte file holds (overlapping entries: a zip bomb)"
            ),
        ));
    }
    let inflate_limit = file_len.saturating_mul(NPZ_MAX_INFLATE_RATIO).saturating_add(NPZ_INFLATE_SLACK);
    if inflated_total > inflate_limit {
        return Err(Error::format(
            path,
            format!(
                "the archive inflates to {inflated_total} bytes from a {file_len}-byte file, more than \
                 {NPZ_MAX_INFLATE_RATIO}x + 64 MiB (a zip bomb: float weights do not compress like that)"
            ),
        ));
    }

    let mut map = TensorMap::new(path.display().to_string());
    for (index, name, entry_size) in arrays {
        if map.tensors.contains_key(&name) {
            return Err(Error::format(path, format!("array `{name}` appears twice in the archive")));
        }
        let mut entry = archive
            .by_index(index)
            .map_err(|e| Error::format(path, format!("array `{name}`: cannot open its entry: {e}")))?;
        let (shape, data) =
            read_npy(&mut entry, entry_size).map_err(|msg| Error::format(path, format!("array `{name}`: {msg}")))?;
        map.insert(name, HostTensor::new(shape, data));
    }
    Ok(map)
}

/// What an `.npy` header says: element type (`<f4`), Fortran order, shape.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Reads one `.npy` stream of `entry_size` bytes into float32, checking its header against
/// that size before allocating.
fn read_npy(r: &mut impl Read, entry_size: u64) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let mut preamble = [0u8; 8];
    r.read_exact(&mut preamble).map_err(|e| format!("truncated .npy header: {e}"))?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let header_len = match preamble[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| format!("truncated .npy header: {e}"))?;
            u64::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| format!("truncated .npy header: {e}"))?;
            u64::from(u32::from_le_bytes(b))
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if header_len > NPY_MAX_HEADER {
        return Err(format!("its .npy header claims {header_len} bytes (limit {NPY_MAX_HEADER})"));
    }
    let mut text = Vec::new();
    r.take(header_len).read_to_end(&mut text).map_err(|e| format!("truncated .npy header: {e}"))?;
    if text.len() as u64 != header_len {
        return Err("truncated .npy header".into());
    }
    let header = parse_npy_header(&String::from_utf8_lossy(&text))?;

    let item = match header.descr.trim_start_matches(['<', '|', '=']) {
        "f4" => 4u64,
        "f8" => 8u64,
        other => return Err(format!("has dtype {other}; expected float32")),
    };
    let shape = &header.shape;
    let overflow = || format!("shape {shape:?} of {} overflows a 64-bit byte count", header.descr);
    let numel = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    let nbytes = numel.checked_mul(item).ok_or_else(overflow)?;
    let body = entry_size.saturating_sub(preamble.len() as u64 + if preamble[6] == 1 { 2 } else { 4 } + header_len);
    if nbytes != body {
        return Err(format!(
            "its header claims shape {shape:?} of {} ({nbytes} bytes) but the entry holds {body} bytes of data",
            header.descr
        ));
    }
    let numel = usize::try_from(numel).map_err(|_| overflow())?;
    let dims: Vec<usize> =
        shape.iter().map(|&d| usize::try_from(d).map_err(|_| overflow())).collect::<std::result::Result<_, _>>()?;

    // `nbytes` is now known to be backed by the entry (whose inflated size the archive check
    // bounded), so this allocation is as large as the data and no larger.
    let mut data = Vec::with_capacity(numel);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = nbytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n]).map_err(|e| format!("truncated or corrupt data: {e}"))?;
        if item == 4 {
            data.extend(buf[..n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        } else {
            data.extend(buf[..n].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32));
        }
        left -= n as u64;
    }
    // One more read reaches the entry's end, where the zip reader verifies its checksum.
    let mut probe = [0u8; 1];
    match r.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => return Err("the entry holds more bytes than its header describes".into()),
        Err(e) => return Err(format!("truncated or corrupt data: {e}")),
    }
    if header.fortran_order && dims.len() > 1 {
        data = fortran_to_c(&data, &dims);
    }
    Ok((dims, data))
}

/// Reorders a column-major array into row-major order.
fn fortran_to_c(data: &[f32], dims: &[usize]) -> Vec<f32> {
    let mut strides = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        strides[k] = strides[k - 1] * dims[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; dims.len()];
    for _ in 0..data.len() {
        out.push(data[index.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        for k in (0..dims.len()).rev() {
            index[k] += 1;
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// A Python literal as `.npy` headers write them.
enum Lit {
    Str(String),
    Int(u64),
    Bool(bool),
    Other,
    Seq(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

/// Parses the header dict `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_npy_header(text: &str) -> std::result::Result<NpyHeader, String> {
    let bad = |what: &str| format!("malformed .npy header ({what}): {}", text.trim_end());
    let mut p = LitParser { s: text.as_bytes(), at: 0 };
    let Lit::Dict(items) = p.value(0).map_err(|e| bad(&e))? else {
        return Err(bad("not a dict"));
    };
    let get = |key: &str| items.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Lit::Str(s)) => s.clone(),
        Some(_) => return Err("has a structured dtype; expected float32".into()),
        None => return Err(bad("no descr")),
    };
    let fortran_order = match get("fortran_order") {
        Some(Lit::Bool(b)) => *b,
        _ => return Err(bad("no fortran_order")),
    };
    let shape = match get("shape") {
        Some(Lit::Seq(dims)) => dims
            .iter()
            .map(|d| match d {
                Lit::Int(n) => Ok(*n),
                _ => Err(bad("shape holds a non-integer")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        _ => return Err(bad("no shape")),
    };
    Ok(NpyHeader { descr, fortran_order, shape })
}

struct LitParser<'a> {
    s: &'a [u8],
    at: usize,
}

impl LitParser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let hit = self.s.get(self.at) == Some(&c);
        self.at += usize::from(hit);
        hit
    }

    /// Items up to `close`, separated by commas (a trailing comma allowed).
    fn items(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        loop {
            if self.eat(close) {
                return Ok(());
            }
            item(self)?;
            if !self.eat(b',') {
                return if self.eat(close) { Ok(()) } else { Err(format!("expected `,` or `{}`", close as char)) };
            }
        }
    }

    fn value(&mut self, depth: u32) -> std::result::Result<Lit, String> {
        if depth > 8 {
            return Err("nested too deeply".into());
        }
        self.skip_ws();
        let Some(&c) = self.s.get(self.at) else { return Err("unexpected end".into()) };
        match c {
            b'\'' | b'"' => {
                let end = self.s[self.at + 1..].iter().position(|&b| b == c).ok_or("unterminated string")?;
                let text = String::from_utf8_lossy(&self.s[self.at + 1..self.at + 1 + end]).into_owned();
                self.at += end + 2;
                Ok(Lit::Str(text))
            }
            b'0'..=b'9' => {
                let len = self.s[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
                let digits = std::str::from_utf8(&self.s[self.at..self.at + len]).expect("ASCII digits");
                self.at += len;
                if self.s.get(self.at) == Some(&b'L') {
                    self.at += 1; // Python 2 long
                }
                digits.parse().map(Lit::Int).map_err(|_| format!("integer {digits} is too large"))
            }
            b'(' | b'[' => {
                self.at += 1;
                let close = if c == b'(' { b')' } else { b']' };
                let mut seq = Vec::new();
                self.items(close, |p| {
                    seq.push(p.value(depth + 1)?);
                    Ok(())
                })?;
                Ok(Lit::Seq(seq))
            }
            b'{' => {
                self.at += 1;
                let mut dict = Vec::new();
                self.items(b'}', |p| {
                    let Lit::Str(key) = p.value(depth + 1)? else { return Err("a dict key is not a string".into()) };
                    if !p.eat(b':') {
                        return Err("expected `:`".into());
                    }
                    dict.push((key, p.value(depth + 1)?));
                    Ok(())
                })?;
                Ok(Lit::Dict(dict))
            }
            _ => {
                let len = self.s[self.at..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                    .count();
                let word = &self.s[self.at..self.at + len];
                self.at += len;
                match word {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"" => Err(format!("unexpected `{}`", c as char)),
                    _ => Ok(Lit::Other),
                }
            }
        }
    }
}

/// Reads a `.safetensors` file (float tensors only).
///
/// The header length field is checked against the file's size before the file is read, and
/// the `safetensors` crate checks every tensor's shape × dtype against its data offsets and
/// those against the file (with overflow checks) before any tensor is converted.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_field = [0u8; 8];
    file.read_exact(&mut len_field)
        .map_err(|_| Error::format(path, format!("not a valid safetensors file: only {file_len} bytes")))?;
    let header_len = u64::from_le_bytes(len_field);
    if header_len > file_len - 8 {
        return Err(Error::format(
            path,
            format!(
                "not a valid safetensors file: its header length field claims {header_len} bytes, \
                 but only {} follow it (truncated or corrupt?)",
                file_len - 8
            ),
        ));
    }
    drop(file);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        let which = safetensors_culprit(&bytes).map(|t| format!(" (tensor `{t}`)")).unwrap_or_default();
        Error::format(path, format!("not a valid safetensors file (truncated or corrupt?){which}: {e}"))
    })?;
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

/// The first tensor (in header order) whose shape × dtype size differs from its byte range: what
/// the safetensors crate's "invalid shape, data type, or offset" is about, by name.
fn safetensors_culprit(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    for (name, info) in header.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let size = match info["dtype"].as_str()? {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            _ => 1,
        };
        let elements = info["shape"].as_array()?.iter().try_fold(1u128, |acc, d| Some(acc * u128::from(d.as_u64()?)));
        let offsets = info["data_offsets"].as_array()?;
        let (begin, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
        if elements.map(|e| e * size) != Some(u128::from(end.saturating_sub(begin))) || end < begin {
            return Some(name.clone());
        }
    }
    None
}

/// Reads a PyTorch `.pth`/`.pt` state dict or a PyTorch Lightning `.ckpt`. A checkpoint that
/// nests its state dict under `model` or `module` is unwrapped; of a checkpoint with a
/// `state_dict` entry only that entry is read (Lightning's optimizer states and the rest are
/// dropped). Non-float entries are skipped.
///
/// Hostile files: the reader never executes anything (it is not Python's unpickler), but a
/// pickle naming a global outside [`pickle_global_allowed`] is refused by name before it is
/// parsed — `posix.system` in a "checkpoint" is an attack on whoever opens it with
/// `torch.load` next, and no state dict needs it. The pre-0.1.10 TAR container is refused
/// (its pickles are not screened). Every tensor's shape × item size is checked against the
/// file's size before any tensor is read, so a zero-stride (broadcast) view or a storage that
/// claims more than it stores fails by name instead of allocating gigabytes.
pub fn read_pth(path: &Path) -> Result<TensorMap> {
    let globals = list_pickle_globals(path)?;
    let refused: Vec<&str> = globals.iter().map(String::as_str).filter(|g| !pickle_global_allowed(g)).collect();
    if !refused.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "refused: the pickle names {} outside the tensor allow-list (a state dict saved with \
                 torch.save needs none of them; torch.load(weights_only=True) refuses them too); if \
                 you trust the file, list them in PETL_PICKLE_ALLOW (petl runs none of them)",
                refused.join(", ")
            ),
        ));
    }
    let reader = pytorch_reader::PytorchReader::new(path)
        .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: {e}")))?;
    let file_len = u128::from(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len());
    use pytorch_reader::DType as D;
    let float = |t: &pytorch_reader::Tensor| match t.dtype() {
        D::F32 => Some("f32"),
        D::F64 => Some("f64"),
        D::F16 => Some("f16"),
        D::BF16 => Some("bf16"),
        _ => None,
    };
    // Sizes first, in name order, before a single tensor is read.
    let mut names: Vec<&String> = reader.tensors().keys().collect();
    names.sort();
    let mut total = 0u128;
    for name in names {
        let tensor = &reader.tensors()[name];
        if float(tensor).is_none() {
            continue;
        }
        let bytes = tensor.shape().iter().map(|&d| d as u128).product::<u128>() * tensor.dtype().size() as u128;
        if bytes > file_len + TENSOR_SLACK {
            return Err(Error::format(
                path,
                format!(
                    "tensor `{name}` (shape {:?}, {:?}) would materialize {bytes} bytes from a {file_len}-byte \
                     file: a zero-stride (broadcast) view or a storage claiming more than the file stores",
                    tensor.shape(),
                    tensor.dtype()
                ),
            ));
        }
        total += bytes;
        if total > 4 * file_len + CHECKPOINT_SLACK {
            return Err(Error::format(
                path,
                format!(
                    "the tensors up to `{name}` would materialize {total} bytes from a {file_len}-byte file \
                     (more than 4x + 64 MiB): views sharing or broadcasting storages"
                ),
            ));
        }
    }
    let mut map = TensorMap::new(path.display().to_string());
    for (name, tensor) in reader.tensors() {
        let Some(dtype) = float(tensor) else { continue };
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

// ---------------------------------------------------------------------------------------------
// Pickle screening
// ---------------------------------------------------------------------------------------------

/// The globals a checkpoint pickle may name outright: what `torch.save` writes for tensors and
/// state dicts, plus the inert builtins `torch.load(weights_only=True)` (PyTorch's own
/// allow-list, the default since 2.6) also accepts. Storage classes (`torch.FloatStorage` ...)
/// and dtypes (`torch.float32` ...) are matched by [`pickle_global_allowed`].
const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "collections.Counter",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    "torch.UntypedStorage",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.complex",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.bytearray",
    "__builtin__.complex",
];

/// Element types of the legacy typed storages, `torch.<T>Storage`.
const STORAGE_ELEMENTS: &[&str] = &[
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexFloat",
    "ComplexDouble",
];

/// `torch.<dtype>` names a pickle may carry (`_rebuild_tensor_v3`, metadata).
const TORCH_DTYPES: &[&str] = &[
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
];

/// Whether a checkpoint pickle may name `global` (`module.name`): see [`ALLOWED_GLOBALS`],
/// plus the names listed in `PETL_PICKLE_ALLOW` (comma-separated), for checkpoints whose
/// non-tensor parts name classes (a Lightning `.ckpt`'s callback states are keyed by their
/// classes). Listing a name allows nothing to run — petl executes no pickle — it only accepts
/// a file that `torch.load(weights_only=True)` would refuse.
fn pickle_global_allowed(global: &str) -> bool {
    std::env::var("PETL_PICKLE_ALLOW").is_ok_and(|v| v.split(',').any(|a| a.trim() == global))
        || ALLOWED_GLOBALS.contains(&global)
        || global.strip_prefix("torch.").is_some_and(|name| {
            TORCH_DTYPES.contains(&name)
                || name.strip_suffix("Storage").is_some_and(|element| STORAGE_ELEMENTS.contains(&element))
        })
}

/// The globals a PyTorch checkpoint's pickles name (`module.name`, first-seen order, each
/// once), without loading it: every `GLOBAL`, `INST` and `STACK_GLOBAL`, and every
/// extension-registry reference (`EXT1`/`EXT2`/`EXT4`, listed as `<EXT1 code 240>`). A
/// `STACK_GLOBAL` whose operands are not literal strings is listed as `<computed global>`.
/// Every `data.pkl` of a ZIP checkpoint is read (not only the one a loader would pick), and
/// all five pickles of a legacy one.
///
/// # Errors
/// [`Error::Format`] naming `path` if the pickle is malformed or truncated, or the file is a
/// pre-0.1.10 TAR checkpoint.
pub fn list_pickle_globals(path: &Path) -> Result<Vec<String>> {
    let mut header = Vec::new();
    File::open(path).and_then(|f| f.take(262).read_to_end(&mut header)).map_err(|e| Error::io(path, e))?;
    let mut scan = PickleScan::default();
    let fail = |e: String| Error::format(path, format!("not a readable PyTorch checkpoint: pickle: {e}"));
    // The same detection, in the same order, as pytorch-reader's, so both read the same bytes.
    if header.starts_with(b"PK\x03\x04") || header.starts_with(b"PK\x05\x06") {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut archive = npyz::zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: zip archive error: {e}")))?;
        for index in 0..archive.len() {
            let name = archive
                .by_index_raw(index)
                .map_err(|e| {
                    Error::format(path, format!("not a readable PyTorch checkpoint: zip entry #{index}: {e}"))
                })?
                .name()
                .to_string();
            if !name.ends_with("data.pkl") {
                continue;
            }
            let entry = archive
                .by_index(index)
                .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: `{name}`: {e}")))?;
            let mut pickle = Vec::new();
            entry
                .take(MAX_PICKLE_SIZE + 1)
                .read_to_end(&mut pickle)
                .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: `{name}`: {e}")))?;
            if pickle.len() as u64 > MAX_PICKLE_SIZE {
                return Err(Error::format(path, format!("`{name}` is larger than {MAX_PICKLE_SIZE} bytes")));
            }
            scan.run(&mut std::io::Cursor::new(pickle)).map_err(|e| fail(format!("`{name}`: {e}")))?;
        }
    } else if header.get(257..262) == Some(b"ustar") {
        return Err(Error::format(
            path,
            "a pre-0.1.10 TAR checkpoint: not read (its pickles cannot be screened); re-save it with a current PyTorch",
        ));
    } else {
        let window = &header[..header.len().min(64)];
        let legacy = window.windows(10).any(|w| w == [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19])
            || window.windows(24).any(|w| w == b"119547037146038801333356");
        let safetensors_like = header.len() > 8
            && u64::from_le_bytes(header[..8].try_into().expect("8 bytes")) <= 100_000_000
            && header[8] == b'{';
        let pickles = if legacy {
            5 // magic, protocol, sys_info, the object, the storage keys
        } else if matches!(header.first(), Some(0x80 | b'(' | b'}' | b']' | b'c')) && !safetensors_like {
            1
        } else {
            0 // not a pickle at all: pytorch-reader says so
        };
        let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
        for _ in 0..pickles {
            scan.run(&mut reader).map_err(fail)?;
        }
    }
    Ok(scan.globals)
}

/// A stack slot as far as the screen cares: a short string (a possible `STACK_GLOBAL` operand)
/// or anything else.
#[derive(Clone)]
enum Slot {
    Mark,
    Str(String),
    Other,
}

/// Caps that keep the screen's own memory small whatever the pickle: pytorch-reader refuses
/// more than a million memo copies anyway, and a state dict's stack stays shallow.
const SCAN_MAX_STACK: usize = 1 << 20;
const SCAN_MAX_MEMO: usize = 1 << 20;
const SCAN_MAX_GLOBALS: usize = 4096;
const SCAN_MAX_STR: u64 = 256;
const SCAN_MAX_LINE: u64 = 1 << 20;

#[derive(Default)]
struct PickleScan {
    globals: Vec<String>,
    stack: Vec<Slot>,
    memo: HashMap<u32, Slot>,
}

type ScanResult<T> = std::result::Result<T, String>;

impl PickleScan {
    fn record(&mut self, global: String) -> ScanResult<()> {
        if !self.globals.contains(&global) {
            if self.globals.len() >= SCAN_MAX_GLOBALS {
                return Err(format!("more than {SCAN_MAX_GLOBALS} distinct globals"));
            }
            self.globals.push(global);
        }
        Ok(())
    }

    fn push(&mut self, slot: Slot) -> ScanResult<()> {
        if self.stack.len() >= SCAN_MAX_STACK {
            return Err(format!("stack deeper than {SCAN_MAX_STACK} entries"));
        }
        self.stack.push(slot);
        Ok(())
    }

    fn pop(&mut self) -> ScanResult<Slot> {
        match self.stack.pop() {
            Some(Slot::Mark) => Err("expected a value on the stack, found MARK".into()),
            Some(slot) => Ok(slot),
            None => Err("stack underflow".into()),
        }
    }

    fn pop_mark(&mut self) -> ScanResult<()> {
        loop {
            match self.stack.pop() {
                Some(Slot::Mark) => return Ok(()),
                Some(_) => {}
                None => return Err("MARK not found".into()),
            }
        }
    }

    fn memo_put(&mut self, index: u32) -> ScanResult<()> {
        let top = match self.stack.last() {
            Some(Slot::Mark) | None => return Err("nothing to memoize".into()),
            Some(top) => top.clone(),
        };
        if self.memo.len() >= SCAN_MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(format!("more than {SCAN_MAX_MEMO} memo entries"));
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> ScanResult<()> {
        let slot = self.memo.get(&index).cloned().ok_or_else(|| format!("memo reference {index} not found"))?;
        self.push(slot)
    }

    /// Walks one pickle to its `STOP`, recording the globals it names.
    fn run(&mut self, r: &mut impl BufRead) -> ScanResult<()> {
        self.stack.clear();
        self.memo.clear();
        loop {
            let op = read_n::<1>(r)?[0];
            match op {
                b'.' => return Ok(()),
                // Arguments only.
                0x80 => {
                    read_n::<1>(r)?;
                }
                0x95 => {
                    read_n::<8>(r)?;
                }
                // Scalars.
                b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f => self.push(Slot::Other)?,
                b'I' | b'L' | b'F' => {
                    read_line(r)?;
                    self.push(Slot::Other)?;
                }
                b'J' => self.skip_push(r, 4)?,
                b'K' => self.skip_push(r, 1)?,
                b'M' => self.skip_push(r, 2)?,
                b'G' => self.skip_push(r, 8)?,
                0x8a => {
                    let n = u64::from(read_n::<1>(r)?[0]);
                    self.skip_push(r, n)?;
                }
                0x8b => {
                    let n = i32::from_le_bytes(read_n::<4>(r)?);
                    self.skip_push(r, u64::try_from(n).map_err(|_| "negative LONG4 length")?)?;
                }
                // Strings: short ones are kept, as STACK_GLOBAL may use them.
                b'X' | b'T' => {
                    let n = u64::from(u32::from_le_bytes(read_n::<4>(r)?));
                    self.string(r, n)?;
                }
                0x8c | b'U' => {
                    let n = u64::from(read_n::<1>(r)?[0]);
                    self.string(r, n)?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(read_n::<8>(r)?);
                    self.string(r, n)?;
                }
                b'V' | b'S' => {
                    let line = read_line(r)?;
                    let text = if op == b'S' {
                        line.strip_prefix('\'')
                            .and_then(|l| l.strip_suffix('\''))
                            .or_else(|| line.strip_prefix('"').and_then(|l| l.strip_suffix('"')))
                    } else {
                        Some(line.as_str())
                    };
                    let slot = match text {
                        Some(t) if !t.contains('\\') && t.len() as u64 <= SCAN_MAX_STR => Slot::Str(t.to_string()),
                        _ => Slot::Other,
                    };
                    self.push(slot)?;
                }
                b'B' => {
                    let n = u64::from(u32::from_le_bytes(read_n::<4>(r)?));
                    self.skip_push(r, n)?;
                }
                b'C' => {
                    let n = u64::from(read_n::<1>(r)?[0]);
                    self.skip_push(r, n)?;
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(read_n::<8>(r)?);
                    self.skip_push(r, n)?;
                }
                // Containers and the stack.
                b'(' => self.push(Slot::Mark)?,
                b't' | b'l' | b'd' | 0x91 => {
                    self.pop_mark()?;
                    self.push(Slot::Other)?;
                }
                b'e' | b'u' | 0x90 | b'1' => self.pop_mark()?,
                0x85 => {
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                0x86 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                0x87 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                b'a' | b'b' => {
                    self.pop()?;
                }
                b's' => {
                    self.pop()?;
                    self.pop()?;
                }
                b'0' => {
                    if matches!(self.stack.last(), Some(Slot::Mark)) {
                        self.stack.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'2' => {
                    let top = self.pop()?;
                    self.push(top.clone())?;
                    self.push(top)?;
                }
                // Memo.
                b'g' => {
                    let index = parse_memo_index(&read_line(r)?)?;
                    self.memo_get(index)?;
                }
                b'h' => self.memo_get(u32::from(read_n::<1>(r)?[0]))?,
                b'j' => self.memo_get(u32::from_le_bytes(read_n::<4>(r)?))?,
                b'p' => {
                    let index = parse_memo_index(&read_line(r)?)?;
                    self.memo_put(index)?;
                }
                b'q' => self.memo_put(u32::from(read_n::<1>(r)?[0]))?,
                b'r' => self.memo_put(u32::from_le_bytes(read_n::<4>(r)?))?,
                0x94 => self.memo_put(u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?)?,
                // Globals, calls and persistent ids.
                b'c' => {
                    let module = read_line(r)?;
                    let name = read_line(r)?;
                    self.record(format!("{module}.{name}"))?;
                    self.push(Slot::Other)?;
                }
                b'i' => {
                    let module = read_line(r)?;
                    let name = read_line(r)?;
                    self.record(format!("{module}.{name}"))?;
                    self.pop_mark()?;
                    self.push(Slot::Other)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Slot::Str(module), Slot::Str(name)) => self.record(format!("{module}.{name}"))?,
                        _ => self.record("<computed global>".into())?,
                    }
                    self.push(Slot::Other)?;
                }
                0x82 => {
                    let code = read_n::<1>(r)?[0];
                    self.record(format!("<EXT1 code {code}>"))?;
                    self.push(Slot::Other)?;
                }
                0x83 => {
                    let code = u16::from_le_bytes(read_n::<2>(r)?);
                    self.record(format!("<EXT2 code {code}>"))?;
                    self.push(Slot::Other)?;
                }
                0x84 => {
                    let code = i32::from_le_bytes(read_n::<4>(r)?);
                    self.record(format!("<EXT4 code {code}>"))?;
                    self.push(Slot::Other)?;
                }
                b'o' => {
                    self.pop_mark()?;
                    self.push(Slot::Other)?;
                }
                b'P' => {
                    read_line(r)?;
                    self.push(Slot::Other)?;
                }
                b'Q' | 0x98 => {
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                b'R' | 0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.push(Slot::Other)?;
                }
                0x97 => self.push(Slot::Other)?,
                other => return Err(format!("invalid pickle opcode 0x{other:02x}")),
            }
        }
    }

    fn skip_push(&mut self, r: &mut impl BufRead, n: u64) -> ScanResult<()> {
        let skipped = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| e.to_string())?;
        if skipped != n {
            return Err("truncated pickle".into());
        }
        self.push(Slot::Other)
    }

    fn string(&mut self, r: &mut impl BufRead, n: u64) -> ScanResult<()> {
        if n > SCAN_MAX_STR {
            return self.skip_push(r, n);
        }
        let mut bytes = Vec::with_capacity(n as usize);
        r.take(n).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() as u64 != n {
            return Err("truncated pickle".into());
        }
        self.push(String::from_utf8(bytes).map_or(Slot::Other, Slot::Str))
    }
}

fn read_n<const N: usize>(r: &mut impl Read) -> ScanResult<[u8; N]> {
    let mut buf = [0u8; N];
    r.read_exact(&mut buf).map_err(|_| "truncated pickle (no STOP)".to_string())?;
    Ok(buf)
}

/// A protocol-0 text argument, without its newline (and a `\r` before it).
fn read_line(r: &mut impl BufRead) -> ScanResult<String> {
    let mut line = Vec::new();
    r.take(SCAN_MAX_LINE).read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    if line.pop() != Some(b'\n') {
        return Err("unterminated or overlong text field".into());
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "text field is not UTF-8".to_string())
}

fn parse_memo_index(text: &str) -> ScanResult<u32> {
    text.parse().map_err(|_| format!("invalid memo index `{text}`"))
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
    let buffer = safetensors_bytes(map, metadata).map_err(|e| Error::format(path, e))?;
    crate::io::write_atomic(path, &buffer)
}

/// `map` as float32 safetensors bytes, what [`write_safetensors`] writes (callers that also hash
/// or send the bytes serialise once).
///
/// # Errors
/// The serialiser's message.
pub fn safetensors_bytes(
    map: &TensorMap,
    metadata: Option<HashMap<String, String>>,
) -> std::result::Result<Vec<u8>, String> {
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
    safetensors::serialize(views, metadata).map_err(|e| format!("cannot serialise: {e}"))
}
