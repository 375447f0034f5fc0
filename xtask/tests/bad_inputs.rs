//! The bad-input corpus of the reliability issue: malformed `.pth` pickles, safetensors and
//! `.npz` checkpoints, VTAB list files, FGVC split JSON, image files, command-line arguments and
//! model JSON, each given to the command that reads it (`reproduce arc` on a tiny VTAB/FGVC
//! folder, `predict`). Every input must be refused as documented: exit code 2 (not 101, a
//! panic; not 0, accepted), exactly one non-empty line on stderr starting `error: ` that names
//! the file or the argument and, where there is one, the tensor, line or key, and the output
//! folder (`--out` / the folder of `--output`) byte for byte as it was before the run.
//!
//! The corpus is one table, built here in Rust (no stored fixtures besides the tiny parity
//! fixtures it starts from); the test prints how many inputs of each kind it tried and how many
//! passed. A case marked `pending` documents a defect whose fix belongs to a file owned
//! elsewhere: it must still fail (strict), so the marker is removed when the fix lands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use petl_core::weights::{HostTensor, TensorMap, read_npz, read_pth, read_safetensors};
use sha2::{Digest, Sha256};

/// The kinds of input the issue asks for, at least five cases each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pth,
    Safetensors,
    Npz,
    VtabList,
    FgvcJson,
    Image,
    Cli,
    ConfigJson,
}

const KINDS: [Kind; 8] =
    [Kind::Pth, Kind::Safetensors, Kind::Npz, Kind::VtabList, Kind::FgvcJson, Kind::Image, Kind::Cli, Kind::ConfigJson];

/// One malformed input: the command that reads it, the folder its output goes to, and what the
/// one line on stderr must name.
struct Case {
    kind: Kind,
    name: &'static str,
    args: Vec<String>,
    /// The output folder, compared before and after the run.
    output: PathBuf,
    /// Substrings the error line must contain (the file or argument, the tensor/line/key).
    names: Vec<String>,
    /// Where the fix belongs when it is outside the files this corpus' author could change.
    pending: Option<&'static str>,
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn arc_fixture(name: &str) -> PathBuf {
    manifest().join("../crates/arc/tests/fixtures").join(name)
}

fn core_fixture(name: &str) -> PathBuf {
    manifest().join("../crates/petl-core/tests/fixtures").join(name)
}

fn s(p: &Path) -> String {
    p.to_str().expect("UTF-8 temp path").to_string()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Writers of good and bad files.

fn png_bytes(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * 7 + y * 3 + seed * 31) % 255) as u8;
        image::Rgb([v, v.wrapping_mul(3), 255 - v])
    });
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// CRC-32 (IEEE), for hand-made PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header declares a `0 × 0` image (chunk checksums correct).
fn zero_size_png() -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        c.extend(&body);
        c.extend(crc32(&body).to_be_bytes());
        c
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &[0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0]));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A tensor as a checkpoint stores it: dtype name, shape, raw little-endian bytes.
#[derive(Clone)]
struct Raw {
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn f32(shape: Vec<usize>, data: &[f32]) -> Self {
        Raw { dtype: "F32", shape, bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    fn from_host(t: &HostTensor) -> Self {
        Raw::f32(t.shape.clone(), &t.data)
    }

    fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product::<usize>();
        Raw::f32(shape, &vec![0.0; n])
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

type Tensors = BTreeMap<String, Raw>;

fn raw_map(map: &TensorMap) -> Tensors {
    map.tensors.iter().map(|(k, t)| (k.clone(), Raw::from_host(t))).collect()
}

/// `tensors` with the first value of `key` replaced by `value` (NaN, infinity).
fn poisoned(mut tensors: Tensors, key: &str, value: f32) -> Tensors {
    let t = tensors.get_mut(key).unwrap_or_else(|| panic!("no {key}"));
    t.bytes[..4].copy_from_slice(&value.to_le_bytes());
    tensors
}

fn with(mut tensors: Tensors, key: &str, raw: Raw) -> Tensors {
    tensors.insert(key.to_string(), raw);
    tensors
}

fn without(mut tensors: Tensors, key: &str) -> Tensors {
    tensors.remove(key).unwrap_or_else(|| panic!("no {key}"));
    tensors
}

/// A safetensors file assembled by hand (so that its header can lie), with optional metadata.
fn safetensors_bytes(tensors: &Tensors, metadata: Option<(&str, &str)>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some((k, v)) = metadata {
        header.insert("__metadata__".into(), serde_json::json!({ k: v }));
    }
    let mut data: Vec<u8> = vec![];
    for (name, t) in tensors {
        let start = data.len();
        data.extend(&t.bytes);
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [start, data.len()] }),
        );
    }
    let header = serde_json::to_string(&serde_json::Value::Object(header)).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A PyTorch zip checkpoint (`torch.save` of a flat state dict, pickle protocol 2), assembled
/// opcode by opcode. `numel` overrides a storage's element count (a storage shorter than its
/// tensor).
fn write_pth(path: &Path, tensors: &Tensors, numel: &BTreeMap<&str, usize>) {
    fn unicode(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    fn tuple(p: &mut Vec<u8>, values: &[usize]) {
        p.push(b'(');
        for &v in values {
            int(p, v);
        }
        p.push(b't');
    }
    let mut pkl = vec![0x80, 2, b'}', b'('];
    let mut storages = vec![];
    for (i, (name, t)) in tensors.iter().enumerate() {
        unicode(&mut pkl, name);
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pkl.push(b'(');
        unicode(&mut pkl, "storage");
        let storage = match t.dtype {
            "F32" => "FloatStorage",
            "I64" => "LongStorage",
            other => panic!("{other}"),
        };
        pkl.extend(format!("ctorch\n{storage}\n").as_bytes());
        unicode(&mut pkl, &i.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, numel.get(name.as_str()).copied().unwrap_or(t.numel()));
        pkl.extend(b"tQ");
        int(&mut pkl, 0);
        tuple(&mut pkl, &t.shape);
        let strides: Vec<usize> = (0..t.shape.len()).map(|d| t.shape[d + 1..].iter().product()).collect();
        tuple(&mut pkl, &strides);
        pkl.push(0x89);
        pkl.extend(b"ccollections\nOrderedDict\n)RtR");
        let keep = numel.get(name.as_str()).map_or(t.bytes.len(), |n| n * t.bytes.len() / t.numel().max(1));
        storages.push(t.bytes[..keep.min(t.bytes.len())].to_vec());
    }
    pkl.extend(b"u.");
    let file = std::fs::File::create(path).unwrap();
    let mut zip = npyz::zip::ZipWriter::new(file);
    let stored = npyz::zip::write::FileOptions::default().compression_method(npyz::zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pkl).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    for (i, bytes) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("archive/version", stored).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// One array as `.npy` bytes: float32 or, when `int32`, int32.
fn npy_bytes(t: &Raw, int32: bool) -> Vec<u8> {
    use npyz::WriterBuilder;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let values: Vec<f32> = t.bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let mut bytes = vec![];
    if int32 {
        let mut w =
            npyz::WriteOptions::<i32>::new().default_dtype().shape(&shape).writer(&mut bytes).begin_nd().unwrap();
        w.extend(values.iter().map(|&v| v as i32)).unwrap();
        w.finish().unwrap();
    } else {
        let opts = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape);
        let mut w = opts.writer(&mut bytes).begin_nd().unwrap();
        w.extend(values).unwrap();
        w.finish().unwrap();
    }
    bytes
}

/// An `.npy` stream assembled by hand, so that its header can lie about the data after it.
fn npy_raw(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// An `.npz` archive (as `np.savez`, entries stored) with the `.npy` bytes `npy(name, tensor)`.
fn write_npz_as(path: &Path, tensors: &Tensors, npy: impl Fn(&str, &Raw) -> Vec<u8>) {
    let mut zip = npyz::zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = npyz::zip::write::FileOptions::default().compression_method(npyz::zip::CompressionMethod::Stored);
    for (name, t) in tensors {
        zip.start_file(format!("{name}.npy"), stored).unwrap();
        zip.write_all(&npy(name, t)).unwrap();
    }
    zip.finish().unwrap();
}

/// An `.npz` archive of float32 arrays, except those named in `int32`.
fn write_npz(path: &Path, tensors: &Tensors, int32: &[&str]) {
    write_npz_as(path, tensors, |name, t| npy_bytes(t, int32.contains(&name)));
}

fn write_npy(path: &Path, shape: &[u64], data: impl IntoIterator<Item = f32>) {
    use npyz::WriterBuilder;
    let mut bytes = vec![];
    let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(shape).writer(&mut bytes).begin_nd().unwrap();
    w.extend(data).unwrap();
    w.finish().unwrap();
    write(path, bytes);
}

/// Writes a copy of `from` (for the `make` closures of the corpus).
fn copy_of(from: &Path) -> impl FnOnce(&Path) + '_ {
    move |to| {
        std::fs::copy(from, to).unwrap();
    }
}

fn truncated(path: &Path, share: f64) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[..(bytes.len() as f64 * share) as usize].to_vec()
}

/// A VTAB-1k root with the `kitti` task (4 classes): 8 training and 4 test PNGs of 20 × 20.
fn vtab_root(dir: &Path) -> PathBuf {
    let root = dir.join("vtab");
    for (split, n) in [("train800val200", 8u32), ("test", 4)] {
        let mut lines = String::new();
        for i in 0..n {
            let rel = format!("images/{split}/{i:06}.png");
            write(&root.join("kitti").join(&rel), png_bytes(20, 20, i + if split == "test" { 100 } else { 0 }));
            lines += &format!("{rel} {}\n", i % 4);
        }
        write(&root.join("kitti").join(format!("{split}.txt")), lines);
    }
    root
}

/// An FGVC root with OxfordFlowers (images under the task folder), ids 1 and 7 in every split.
fn fgvc_root(dir: &Path) -> PathBuf {
    let root = dir.join("fgvc");
    for split in ["train", "val", "test"] {
        let entries: Vec<String> = (0..4)
            .map(|i| {
                let rel = format!("jpg/{split}_{i}.png");
                write(&root.join("OxfordFlowers").join(&rel), png_bytes(20, 20, i));
                format!("\"{rel}\": {}", if i % 2 == 0 { 1 } else { 7 })
            })
            .collect();
        write(&root.join("OxfordFlowers").join(format!("{split}.json")), format!("{{{}}}", entries.join(", ")));
    }
    root
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// The tiny official ARC model's JSON (the fixture `arc_official.pth`).
const TINY_ARC: &str = r#"{"image_size":16,"patch_size":4,"hidden_size":64,"num_layers":2,"num_heads":4,"mlp_dim":128,"num_classes":5,"adapter_dim":8,"variant":"arc"}"#;

struct Corpus {
    root: PathBuf,
    /// Good inputs every case starts from.
    npz: PathBuf,
    timm: Tensors,
    google: Tensors,
    official: Tensors,
    input: PathBuf,
    adapter: PathBuf,
    adapter_tensors: Tensors,
    adapter_config: String,
    cases: Vec<Case>,
}

impl Corpus {
    fn new(root: &Path) -> Self {
        let shared = root.join("shared");
        let input = shared.join("x.npy");
        write_npy(&input, &[2, 3, 16, 16], (0..2 * 3 * 16 * 16).map(|i| (i % 11) as f32 * 0.1));
        // A linear-probe adapter checkpoint of the tiny ViT with 4 classes (head only).
        let backbone = petl_core::model::BackboneConfig::preset("vit-tiny-test").unwrap();
        let config = petl_core::checkpoint::AdapterConfig::new("linear", serde_json::json!({}), backbone, 4);
        let adapter_config = serde_json::to_string(&config).unwrap();
        let mut head = TensorMap::new("head");
        head.insert("head.weight", HostTensor::new(vec![64, 4], (0..256).map(|i| (i % 5) as f32 * 0.01).collect()));
        head.insert("head.bias", HostTensor::new(vec![4], vec![0.1, 0.0, -0.1, 0.2]));
        let adapter = shared.join("linear.safetensors");
        std::fs::create_dir_all(&shared).unwrap();
        petl_core::checkpoint::save_adapter(&adapter, &head, &serde_json::to_value(&config).unwrap()).unwrap();
        Corpus {
            root: root.to_path_buf(),
            npz: core_fixture("vit_tiny_google.npz"),
            timm: raw_map(&read_safetensors(&core_fixture("vit_tiny_timm.safetensors")).unwrap()),
            google: raw_map(&read_npz(&core_fixture("vit_tiny_google.npz")).unwrap()),
            official: raw_map(&read_pth(&arc_fixture("arc_official.pth")).unwrap()),
            input,
            adapter,
            adapter_tensors: raw_map(&head),
            adapter_config,
            cases: vec![],
        }
    }

    /// A fresh folder for one case.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join("cases").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn push(&mut self, kind: Kind, name: &'static str, (args, output): (Vec<String>, PathBuf), names: &[&str]) {
        assert!(self.cases.iter().all(|c| c.name != name), "duplicate case {name}");
        let names = names.iter().map(|n| n.to_string()).collect();
        self.cases.push(Case { kind, name, args, output, names, pending: None });
    }

    fn pending(&mut self, owner: &'static str) {
        self.cases.last_mut().unwrap().pending = Some(owner);
    }

    /// `reproduce arc` on a data root: the output folder holds an earlier file, and `--out` is a
    /// run folder inside it that does not exist yet.
    fn reproduce(
        &self,
        dir: &Path,
        data: (&str, &Path),
        task: &str,
        weights: &Path,
        extra: &[&str],
    ) -> (Vec<String>, PathBuf) {
        let output = dir.join("out");
        write(&output.join("earlier.txt"), "results of an earlier run\n");
        let mut base = vec![
            (data.0, s(data.1)),
            ("--tasks", task.to_string()),
            ("--weights", s(weights)),
            ("--backbone", "vit-tiny-test".to_string()),
            ("--epochs", "1".to_string()),
            ("--bottleneck", "4".to_string()),
        ];
        base.retain(|(flag, _)| !extra.contains(flag));
        let mut args = strings(&["reproduce", "arc", "--quiet"]);
        for (flag, value) in base {
            args.extend([flag.to_string(), value]);
        }
        args.extend(strings(extra));
        args.extend(["--out".into(), s(&output.join("run"))]);
        (args, output)
    }

    /// `reproduce arc` on this case's own copy of the tiny VTAB folder, changed by `edit`.
    fn vtab(
        &self,
        name: &str,
        weights: Option<&Path>,
        extra: &[&str],
        edit: impl FnOnce(&Path),
    ) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let root = vtab_root(&dir);
        edit(&root.join("kitti"));
        self.reproduce(&dir, ("--vtab-root", &root), "kitti", weights.unwrap_or(&self.npz), extra)
    }

    /// `reproduce arc` on this case's own copy of the tiny FGVC folder, changed by `edit`.
    fn fgvc(&self, name: &str, extra: &[&str], edit: impl FnOnce(&Path)) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let root = fgvc_root(&dir);
        edit(&root.join("OxfordFlowers"));
        self.reproduce(&dir, ("--fgvc-root", &root), "OxfordFlowers", &self.npz, extra)
    }

    /// `reproduce arc` on the tiny VTAB folder with `file` (written by `make`) as `--weights`.
    fn weights(&self, name: &str, file: &str, make: impl FnOnce(&Path)) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let path = dir.join(file);
        make(&path);
        self.vtab(name, Some(&path), &[], |_| {})
    }

    /// `predict <method>`: the output `.npy` goes into a folder holding an earlier output of the
    /// same name, which must survive a refused run.
    fn predict(&self, dir: &Path, method: &str, args: &[&str]) -> (Vec<String>, PathBuf) {
        let output = dir.join("out");
        write(&output.join("logits.npy"), "earlier logits\n");
        let mut all = strings(&["predict", method]);
        all.extend(strings(args));
        all.extend(["--output".into(), s(&output.join("logits.npy"))]);
        (all, output)
    }

    /// `predict arc` on the official checkpoint `file` (written by `make`) with the tiny JSON.
    fn official_pth(&self, name: &str, file: &str, make: impl FnOnce(&Path)) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let path = dir.join(file);
        make(&path);
        self.predict(&dir, "arc", &["--checkpoint", &s(&path), "--config", TINY_ARC, "--input", &s(&self.input)])
    }

    /// `predict arc` on the official fixture with `--config` `config` (inline JSON or a file).
    fn official_config(&self, name: &str, config: &str) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let ckpt = arc_fixture("arc_official.pth");
        self.predict(&dir, "arc", &["--checkpoint", &s(&ckpt), "--config", config, "--input", &s(&self.input)])
    }

    /// `predict linear` with an adapter checkpoint (written by `make`) and `--weights`.
    fn adapter(&self, name: &str, make: impl FnOnce(&Path), weights: &Path, extra: &[&str]) -> (Vec<String>, PathBuf) {
        let dir = self.dir(name);
        let path = dir.join("adapter.safetensors");
        make(&path);
        let mut args = strings(&["--checkpoint", &s(&path), "--weights", &s(weights)]);
        args.extend(strings(extra));
        if !extra.contains(&"--images") {
            args.extend(["--input".into(), s(&self.input)]);
        }
        self.predict(&dir, "linear", &args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

fn build(corpus: &mut Corpus) {
    use Kind::*;
    let c = corpus;
    let official = c.official.clone();
    let timm = c.timm.clone();
    let google = c.google.clone();
    let none = BTreeMap::new();

    // ---- .pth pickles: the official ARC loader (`predict arc --checkpoint X.pth`) and timm
    // ViT weights (`reproduce arc --weights X.pth`).
    let case = c.official_pth("pth-empty", "empty.pth", |p| write(p, b""));
    c.push(Pth, "pth-empty", case, &["empty.pth"]);
    let case = c.official_pth("pth-text", "notes.pth", |p| write(p, "these are my notes, not a checkpoint\n"));
    c.push(Pth, "pth-text", case, &["notes.pth"]);
    let case =
        c.official_pth("pth-truncated-zip", "cut.pth", |p| write(p, truncated(&arc_fixture("arc_official.pth"), 0.6)));
    c.push(Pth, "pth-truncated-zip", case, &["cut.pth"]);
    let case = c.official_pth("pth-png", "picture.pth", |p| write(p, png_bytes(8, 8, 1)));
    c.push(Pth, "pth-png", case, &["picture.pth"]);
    let t = with(official.clone(), "head_mlp.head.weight", Raw::zeros(vec![5, 32]));
    let case = c.official_pth("pth-head-shape", "head.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-head-shape", case, &["head.pth", "head"]);
    let t = with(official.clone(), "embedding.position_embedding", Raw::zeros(vec![17 * 64]));
    let case = c.official_pth("pth-pos-embed-rank", "pos.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-pos-embed-rank", case, &["pos.pth", "embedding.position_embedding"]);
    let t = with(official.clone(), "head_mlp.head.weight", Raw::zeros(vec![5 * 64]));
    let dir = c.dir("pth-head-rank");
    write_pth(&dir.join("head_rank.pth"), &t, &none);
    let head_rank = s(&dir.join("head_rank.pth"));
    let case =
        c.predict(&dir, "arc", &["--checkpoint", &head_rank, "--backbone", "vit-tiny-test", "--input", &s(&c.input)]);
    c.push(Pth, "pth-head-rank", case, &["head_rank.pth", "head_mlp.head.weight"]);
    let t = without(official.clone(), "transformer.layer.1.mlp.fc2.bias");
    let case = c.official_pth("pth-missing-key", "missing.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-missing-key", case, &["missing.pth", "transformer.layer.1.mlp.fc2.bias"]);
    let t = poisoned(official.clone(), "transformer.layer.0.attention.query.weight", f32::NAN);
    let case = c.official_pth("pth-nan", "nan.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-nan", case, &["nan.pth", "transformer.layer.0.attention.query.weight"]);
    let long = Raw { dtype: "I64", shape: vec![5, 64], bytes: vec![0; 5 * 64 * 8] };
    let t = with(official.clone(), "head_mlp.head.weight", long);
    let case = c.official_pth("pth-int-tensor", "ints.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-int-tensor", case, &["ints.pth", "head_mlp.head.weight"]);
    let short = BTreeMap::from([("transformer.layer.0.mlp.fc1.weight", 100usize)]);
    let case = c.official_pth("pth-short-storage", "short.pth", |p| write_pth(p, &official, &short));
    c.push(Pth, "pth-short-storage", case, &["short.pth", "transformer.layer.0.mlp.fc1.weight"]);
    c.pending(
        "crates/petl-core/src/weights/readers.rs (read_pth: pytorch-reader's error names the storage, not the tensor)",
    );
    let t = with(timm.clone(), "blocks.1.mlp.fc1.weight", Raw::zeros(vec![128, 32]));
    let case = c.weights("pth-timm-shape", "timm.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-timm-shape", case, &["timm.pth", "fc1"]);
    let t = with(timm.clone(), "blocks.0.attn.qkv.weight", Raw::zeros(vec![192 * 64]));
    let case = c.weights("pth-timm-qkv-rank", "qkv.pth", |p| write_pth(p, &t, &none));
    c.push(Pth, "pth-timm-qkv-rank", case, &["qkv.pth", "blocks.0.attn.qkv.weight"]);

    // ---- safetensors: backbone weights (`reproduce arc --weights`) and adapter checkpoints
    // (`predict --checkpoint`).
    let case = c.weights("st-header-len", "huge.safetensors", |p| {
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend(b"{}");
        write(p, b)
    });
    c.push(Safetensors, "st-header-len", case, &["huge.safetensors"]);
    let case = c.weights("st-header-not-json", "garbled.safetensors", |p| {
        let mut b = 12u64.to_le_bytes().to_vec();
        b.extend(b"not json at all");
        write(p, b)
    });
    c.push(Safetensors, "st-header-not-json", case, &["garbled.safetensors"]);
    let mut t = timm.clone();
    let pos = t.get_mut("pos_embed").unwrap();
    pos.dtype = "I32";
    let case = c.weights("st-int32", "ints.safetensors", |p| write(p, safetensors_bytes(&t, None)));
    c.push(Safetensors, "st-int32", case, &["ints.safetensors", "pos_embed"]);
    let mut t = timm.clone();
    t.get_mut("blocks.0.norm1.weight").unwrap().shape = vec![128];
    let case = c.weights("st-size-mismatch", "sizes.safetensors", |p| write(p, safetensors_bytes(&t, None)));
    c.push(Safetensors, "st-size-mismatch", case, &["sizes.safetensors", "blocks.0.norm1.weight"]);
    let t = poisoned(timm.clone(), "blocks.0.mlp.fc1.weight", f32::NAN);
    let case = c.weights("st-nan", "nan.safetensors", |p| write(p, safetensors_bytes(&t, None)));
    c.push(Safetensors, "st-nan", case, &["nan.safetensors", "blocks.0.mlp.fc1.weight"]);
    let t = with(timm.clone(), "blocks.1.mlp.fc2.weight", Raw::zeros(vec![64, 64]));
    let case = c.weights("st-wrong-shape", "shape.safetensors", |p| write(p, safetensors_bytes(&t, None)));
    c.push(Safetensors, "st-wrong-shape", case, &["shape.safetensors", "fc2"]);
    let swin = core_fixture("swin_tiny_timm.safetensors");
    let case = c.weights("st-swin-for-vit", "swin.safetensors", copy_of(&swin));
    c.push(Safetensors, "st-swin-for-vit", case, &["swin.safetensors", "missing key `cls_token`"]);
    let case = c.weights("st-truncated", "cut.safetensors", |p| {
        write(p, truncated(&core_fixture("vit_tiny_timm.safetensors"), 0.7))
    });
    c.push(Safetensors, "st-truncated", case, &["cut.safetensors"]);
    let meta = c.adapter_config.clone();
    let t = with(c.adapter_tensors.clone(), "head.weight", Raw::zeros(vec![32, 4]));
    let npz = c.npz.clone();
    let case =
        c.adapter("st-adapter-head", |p| write(p, safetensors_bytes(&t, Some(("petl_config", &meta)))), &npz, &[]);
    c.push(Safetensors, "st-adapter-head", case, &["adapter.safetensors", "head.weight"]);
    let t = c.adapter_tensors.clone();
    let case = c.adapter("st-adapter-no-config", |p| write(p, safetensors_bytes(&t, None)), &npz, &[]);
    c.push(Safetensors, "st-adapter-no-config", case, &["adapter.safetensors", "petl_config"]);
    let case = c.adapter(
        "st-adapter-config-not-json",
        |p| write(p, safetensors_bytes(&t, Some(("petl_config", "{oops")))),
        &npz,
        &[],
    );
    c.push(Safetensors, "st-adapter-config-not-json", case, &["adapter.safetensors", "petl_config"]);
    let t = poisoned(c.adapter_tensors.clone(), "head.bias", f32::INFINITY);
    let case =
        c.adapter("st-adapter-inf", |p| write(p, safetensors_bytes(&t, Some(("petl_config", &meta)))), &npz, &[]);
    c.push(Safetensors, "st-adapter-inf", case, &["adapter.safetensors", "head.bias"]);

    // ---- .npz: Google ViT weights (`reproduce arc --weights`, `predict --weights`).
    let case = c.weights("npz-not-zip", "text.npz", |p| write(p, "kernel = [[1, 2], [3, 4]]\n"));
    c.push(Npz, "npz-not-zip", case, &["text.npz"]);
    let case = c.weights("npz-empty", "empty.npz", |p| write(p, b""));
    c.push(Npz, "npz-empty", case, &["empty.npz"]);
    let case =
        c.weights("npz-truncated", "cut.npz", |p| write(p, truncated(&core_fixture("vit_tiny_google.npz"), 0.5)));
    c.push(Npz, "npz-truncated", case, &["cut.npz"]);
    let lie =
        |name: &str, t: &Raw| if name == "cls" { npy_raw("<f4", "(1000,)", &[0; 16]) } else { npy_bytes(t, false) };
    let case = c.weights("npz-header-lies", "lies.npz", |p| write_npz_as(p, &google, lie));
    c.push(Npz, "npz-header-lies", case, &["lies.npz", "cls"]);
    let t = with(google.clone(), "cls", Raw::f32(vec![], &[0.5]));
    let case = c.weights("npz-scalar", "scalar.npz", |p| write_npz(p, &t, &[]));
    c.push(Npz, "npz-scalar", case, &["scalar.npz", "cls"]);
    let case = c.weights("npz-int", "ints.npz", |p| write_npz(p, &google, &["cls"]));
    c.push(Npz, "npz-int", case, &["ints.npz", "cls"]);
    let t = without(google.clone(), "Transformer/encoder_norm/scale");
    let case = c.weights("npz-missing-key", "missing.npz", |p| write_npz(p, &t, &[]));
    c.push(Npz, "npz-missing-key", case, &["missing.npz", "Transformer/encoder_norm/scale"]);
    let key = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel";
    let t = with(google.clone(), key, Raw::zeros(vec![64, 4, 8]));
    let case = c.weights("npz-query-shape", "query.npz", |p| write_npz(p, &t, &[]));
    c.push(Npz, "npz-query-shape", case, &["query.npz", key]);
    let t = with(google.clone(), "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel", Raw::zeros(vec![64, 64]));
    let case = c.weights("npz-fc1-shape", "fc1.npz", |p| write_npz(p, &t, &[]));
    c.push(Npz, "npz-fc1-shape", case, &["fc1.npz", "fc1"]);
    let t = poisoned(google.clone(), "Transformer/posembed_input/pos_embedding", f32::INFINITY);
    let case = c.weights("npz-inf", "inf.npz", |p| write_npz(p, &t, &[]));
    c.push(Npz, "npz-inf", case, &["inf.npz", "Transformer/posembed_input/pos_embedding"]);
    let t = with(google.clone(), "cls", Raw::zeros(vec![64]));
    let dir = c.dir("npz-predict-weights");
    let weights = dir.join("cls.npz");
    write_npz(&weights, &t, &[]);
    let adapter = c.adapter.clone();
    let case = c.adapter("npz-predict-weights", copy_of(&adapter), &weights, &[]);
    c.push(Npz, "npz-predict-weights", case, &["cls.npz", "cls_token"]);

    // ---- VTAB list files.
    let case = c.vtab("vtab-missing-list", None, &[], |k| std::fs::remove_file(k.join("test.txt")).unwrap());
    c.push(VtabList, "vtab-missing-list", case, &["test.txt"]);
    let case = c.vtab("vtab-no-label", None, &[], |k| {
        write(&k.join("train800val200.txt"), "images/train800val200/000000.png 0\nimages/train800val200/000001.png 1\nimages/train800val200/000002.png\n")
    });
    c.push(VtabList, "vtab-no-label", case, &["train800val200.txt", "line 3"]);
    let case = c.vtab("vtab-label-range", None, &[], |k| {
        write(&k.join("test.txt"), "images/test/000000.png 0\nimages/test/000001.png 4\n")
    });
    c.push(VtabList, "vtab-label-range", case, &["test.txt", "line 2", "label 4"]);
    let case =
        c.vtab("vtab-dotdot", None, &[], |k| write(&k.join("train800val200.txt"), "images/../../../secret.png 0\n"));
    c.push(VtabList, "vtab-dotdot", case, &["train800val200.txt", "line 1", "leaves"]);
    let case = c.vtab("vtab-absolute", None, &[], |k| write(&k.join("test.txt"), "/etc/hostname 0\n"));
    c.push(VtabList, "vtab-absolute", case, &["test.txt", "line 1", "absolute"]);
    let case = c.vtab("vtab-empty-train", None, &[], |k| write(&k.join("train800val200.txt"), ""));
    c.push(VtabList, "vtab-empty-train", case, &["train800val200.txt", "no samples"]);
    let case = c.vtab("vtab-blank-test", None, &[], |k| write(&k.join("test.txt"), "\n  \n\n"));
    c.push(VtabList, "vtab-blank-test", case, &["test.txt", "no samples"]);
    let case = c.vtab("vtab-duplicate", None, &[], |k| {
        let mut text = std::fs::read_to_string(k.join("train800val200.txt")).unwrap();
        text += "images/train800val200/000001.png 1\n";
        write(&k.join("train800val200.txt"), text)
    });
    c.push(VtabList, "vtab-duplicate", case, &["train800val200.txt", "line 9", "line 2"]);
    let case = c.vtab("vtab-non-utf8", None, &[], |k| {
        let mut bytes = b"images/test/000000.png 0\nimages/test/000001.png 1\nimages/test/000002.png 2\n".to_vec();
        bytes.extend(b"images/test/caf\xe9.png 3\n");
        write(&k.join("test.txt"), bytes)
    });
    c.push(VtabList, "vtab-non-utf8", case, &["test.txt", "line 4"]);
    let case = c.vtab("vtab-label-word", None, &[], |k| {
        write(&k.join("test.txt"), "images/test/000000.png 0\nimages/test/000001.png cat\n")
    });
    c.push(VtabList, "vtab-label-word", case, &["test.txt", "line 2", "cat"]);
    let case = c.vtab("vtab-missing-image", None, &[], |k| {
        write(&k.join("test.txt"), "images/test/000000.png 0\nimages/test/missing.png 1\n")
    });
    c.push(VtabList, "vtab-missing-image", case, &["test.txt", "line 2", "missing.png"]);
    let case = c.vtab("vtab-three-fields", None, &[], |k| {
        write(&k.join("train800val200.txt"), "images/train800val200/000000.png 0 extra\n")
    });
    c.push(VtabList, "vtab-three-fields", case, &["train800val200.txt", "line 1", "3 fields"]);
    let case = c.vtab("vtab-task-folder", None, &[], |k| std::fs::remove_dir_all(k).unwrap());
    c.push(VtabList, "vtab-task-folder", case, &["kitti", "no such folder"]);

    // ---- FGVC split JSON.
    let case = c.fgvc("fgvc-invalid-json", &[], |f| write(&f.join("train.json"), r#"{"jpg/train_0.png": 1,"#));
    c.push(FgvcJson, "fgvc-invalid-json", case, &["train.json", "invalid JSON"]);
    let case = c.fgvc("fgvc-missing-file", &[], |f| std::fs::remove_file(f.join("test.json")).unwrap());
    c.push(FgvcJson, "fgvc-missing-file", case, &["test.json"]);
    let case = c.fgvc("fgvc-wrong-type", &[], |f| {
        write(&f.join("train.json"), r#"{"jpg/train_0.png": 1, "jpg/train_1.png": "7"}"#)
    });
    c.push(FgvcJson, "fgvc-wrong-type", case, &["train.json", "jpg/train_1.png"]);
    let case = c
        .fgvc("fgvc-float-id", &[], |f| write(&f.join("test.json"), r#"{"jpg/test_0.png": 1, "jpg/test_1.png": 7.5}"#));
    c.push(FgvcJson, "fgvc-float-id", case, &["test.json", "jpg/test_1.png"]);
    let case =
        c.fgvc("fgvc-no-image", &[], |f| write(&f.join("test.json"), r#"{"jpg/test_0.png": 1, "jpg/ghost.png": 7}"#));
    c.push(FgvcJson, "fgvc-no-image", case, &["test.json", "jpg/ghost.png"]);
    let case = c.fgvc("fgvc-empty-split", &[], |f| {
        write(&f.join("train.json"), "{}");
        write(&f.join("test.json"), "{}")
    });
    c.push(FgvcJson, "fgvc-empty-split", case, &["train.json", "no samples"]);
    let case = c.fgvc("fgvc-array", &[], |f| write(&f.join("train.json"), r#"[["jpg/train_0.png", 1]]"#));
    c.push(FgvcJson, "fgvc-array", case, &["train.json", "JSON object"]);
    let case = c.fgvc("fgvc-unknown-id", &[], |f| {
        write(&f.join("test.json"), r#"{"jpg/test_0.png": 1, "jpg/test_1.png": 7, "jpg/test_2.png": 9}"#)
    });
    c.push(FgvcJson, "fgvc-unknown-id", case, &["train.json", "test.json", "[9]"]);
    let case = c.fgvc("fgvc-dotdot", &[], |f| {
        write(&f.join("test.json"), r#"{"jpg/test_0.png": 1, "../../../etc/hostname": 7}"#)
    });
    c.push(FgvcJson, "fgvc-dotdot", case, &["test.json", "../../../etc/hostname", "leaves"]);
    let case = c.fgvc("fgvc-task-folder", &["--tasks", "CUB_200_2011"], |_| {});
    c.push(FgvcJson, "fgvc-task-folder", case, &["CUB_200_2011", "no such folder"]);

    // ---- Image files (named by the lists above; decoded before anything is written).
    let case = c.vtab("img-truncated-png", None, &[], |k| {
        let p = k.join("images/train800val200/000003.png");
        write(&p, truncated(&p, 0.5))
    });
    c.push(Image, "img-truncated-png", case, &["000003.png"]);
    let case = c.vtab("img-text-as-jpg", None, &[], |k| {
        write(&k.join("images/test/notes.jpg"), "a text file with a .jpg name\n");
        write(&k.join("test.txt"), "images/test/000000.png 0\nimages/test/notes.jpg 1\n")
    });
    c.push(Image, "img-text-as-jpg", case, &["notes.jpg"]);
    let case = c.vtab("img-empty-file", None, &[], |k| write(&k.join("images/train800val200/000001.png"), b""));
    c.push(Image, "img-empty-file", case, &["000001.png"]);
    let case = c.vtab("img-zero-size", None, &[], |k| write(&k.join("images/test/000002.png"), zero_size_png()));
    c.push(Image, "img-zero-size", case, &["000002.png"]);
    let case = c.vtab("img-unsupported", None, &[], |k| {
        write(&k.join("images/test/anim.gif"), b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;");
        write(&k.join("test.txt"), "images/test/000000.png 0\nimages/test/anim.gif 1\n")
    });
    c.push(Image, "img-unsupported", case, &["anim.gif"]);
    let case = c.fgvc("img-fgvc-truncated", &[], |f| {
        let p = f.join("jpg/test_3.png");
        write(&p, truncated(&p, 0.4))
    });
    c.push(Image, "img-fgvc-truncated", case, &["test_3.png"]);
    let dir = c.dir("img-predict-truncated");
    let images = dir.join("images");
    write(&images.join("a.png"), png_bytes(16, 16, 1));
    write(&images.join("b.png"), &png_bytes(16, 16, 2)[..40]);
    let case = c.adapter("img-predict-truncated", copy_of(&adapter), &npz, &["--images", &s(&images)]);
    c.push(Image, "img-predict-truncated", case, &["b.png"]);
    let dir = c.dir("img-predict-none");
    let images = dir.join("images");
    write(&images.join("readme.txt"), "no images here\n");
    let case = c.adapter("img-predict-none", copy_of(&adapter), &npz, &["--images", &s(&images)]);
    c.push(Image, "img-predict-none", case, &["images", "no .png/.jpg"]);

    // ---- Command-line arguments.
    let case = c.vtab("cli-lr-nan", None, &["--lr", "NaN"], |_| {});
    c.push(Cli, "cli-lr-nan", case, &["lr", "NaN"]);
    let case = c.vtab("cli-lr-negative", None, &["--lr=-0.01"], |_| {});
    c.push(Cli, "cli-lr-negative", case, &["lr", "-0.01"]);
    let case = c.vtab("cli-epochs-zero", None, &["--epochs", "0"], |_| {});
    c.push(Cli, "cli-epochs-zero", case, &["epochs", "0"]);
    let case = c.vtab("cli-epochs-huge", None, &["--epochs", "10000000"], |_| {});
    c.push(Cli, "cli-epochs-huge", case, &["--epochs", "10000000"]);
    let case = c.vtab("cli-epochs-word", None, &["--epochs", "ten"], |_| {});
    c.push(Cli, "cli-epochs-word", case, &["--epochs", "ten"]);
    let case = c.vtab("cli-unknown-method", None, &["--methods", "arc,vpt"], |_| {});
    c.push(Cli, "cli-unknown-method", case, &["vpt"]);
    let case = c.vtab("cli-unknown-backbone", None, &["--backbone", "vit-x"], |_| {});
    c.push(Cli, "cli-unknown-backbone", case, &["vit-x"]);
    let case = c.vtab("cli-unknown-task", None, &["--tasks", "kitty"], |_| {});
    c.push(Cli, "cli-unknown-task", case, &["kitty"]);
    let case = c.vtab("cli-unknown-backend", None, &["--backend", "vulkan-x"], |_| {});
    c.push(Cli, "cli-unknown-backend", case, &["vulkan-x"]);
    let case = c.vtab("cli-unknown-setting", None, &["--set", "rnak=4"], |_| {});
    c.push(Cli, "cli-unknown-setting", case, &["rnak"]);
    let case = c.vtab("cli-apt-flag", None, &["--batch", "8"], |_| {});
    c.push(Cli, "cli-apt-flag", case, &["--batch"]);
    let case = c.fgvc("cli-task-of-other-root", &["--tasks", "kitti"], |_| {});
    c.push(Cli, "cli-task-of-other-root", case, &["kitti", "--vtab-root"]);
    let dir = c.dir("cli-out-is-file");
    let root = vtab_root(&dir);
    let (mut args, output) = c.reproduce(&dir, ("--vtab-root", &root), "kitti", &npz, &[]);
    *args.last_mut().unwrap() = s(&output.join("earlier.txt"));
    c.push(Cli, "cli-out-is-file", (args, output), &["earlier.txt", "not a folder"]);
    let dir = c.dir("cli-embedded-lr-nan");
    let output = dir.join("out");
    write(&output.join("earlier.txt"), "results of an earlier run\n");
    let args =
        strings(&["reproduce", "arc", "--scale", "smoke", "--lr", "NaN", "--quiet", "--out", &s(&output.join("run"))]);
    c.push(Cli, "cli-embedded-lr-nan", (args, output), &["lr", "NaN"]);
    let dir = c.dir("cli-embedded-weights");
    let output = dir.join("out");
    write(&output.join("earlier.txt"), "results of an earlier run\n");
    let args = strings(&[
        "reproduce",
        "arc",
        "--scale",
        "smoke",
        "--weights",
        &s(&npz),
        "--quiet",
        "--out",
        &s(&output.join("run")),
    ]);
    c.push(Cli, "cli-embedded-weights", (args, output), &["--weights", "--vtab-root"]);
    let dir = c.dir("cli-unknown-paper");
    let output = dir.join("out");
    write(&output.join("earlier.txt"), "results of an earlier run\n");
    let args = strings(&["reproduce", "vl-bart", "--out", &s(&output.join("run"))]);
    c.push(Cli, "cli-unknown-paper", (args, output), &["vl-bart"]);
    let dir = c.dir("cli-images-and-input");
    let case = c.predict(
        &dir,
        "linear",
        &["--checkpoint", &s(&adapter), "--weights", &s(&npz), "--images", &s(&dir), "--input", &s(&c.input)],
    );
    c.push(Cli, "cli-images-and-input", case, &["--images", "--input"]);
    let dir = c.dir("cli-batch-zero");
    let case = c.predict(
        &dir,
        "linear",
        &["--checkpoint", &s(&adapter), "--weights", &s(&npz), "--input", &s(&c.input), "--batch", "0"],
    );
    c.push(Cli, "cli-batch-zero", case, &["--batch", "0"]);
    let dir = c.dir("cli-missing-checkpoint");
    let case = c.predict(&dir, "linear", &["--weights", &s(&npz), "--input", &s(&c.input)]);
    c.push(Cli, "cli-missing-checkpoint", case, &["--checkpoint"]);
    let dir = c.dir("cli-predict-unknown-method");
    let case = c.predict(&dir, "vpt", &["--checkpoint", &s(&adapter), "--weights", &s(&npz), "--input", &s(&c.input)]);
    c.push(Cli, "cli-predict-unknown-method", case, &["vpt"]);

    let dir = c.dir("cli-backbone-contradicts");
    let ckpt = arc_fixture("arc_official.pth");
    let case = c.predict(&dir, "arc", &["--checkpoint", &s(&ckpt), "--backbone", "vit-b16", "--input", &s(&c.input)]);
    c.push(Cli, "cli-backbone-contradicts", case, &["arc_official.pth", "vit-b16"]);

    // ---- Model JSON (`predict --config`): the official checkpoint's dimensions are read off
    // its tensors, so every given key must agree with them.
    let json = |from: &str, to: &str| {
        assert!(TINY_ARC.contains(from), "{from}");
        TINY_ARC.replace(from, to)
    };
    let case = c.official_config("cfg-heads-divide", &json(r#""num_heads":4"#, r#""num_heads":3"#));
    c.push(ConfigJson, "cfg-heads-divide", case, &["--config", "num_heads 3"]);
    let case = c.official_config("cfg-zero-width", &json(r#""hidden_size":64"#, r#""hidden_size":0"#));
    c.push(ConfigJson, "cfg-zero-width", case, &["--config", "hidden_size"]);
    let case = c.official_config("cfg-zero-patch", &json(r#""patch_size":4"#, r#""patch_size":0"#));
    c.push(ConfigJson, "cfg-zero-patch", case, &["--config", "patch_size"]);
    let case = c.official_config("cfg-image-2-20", &json(r#""image_size":16"#, r#""image_size":1048576"#));
    c.push(ConfigJson, "cfg-image-2-20", case, &["--config", "image_size"]);
    let case = c.official_config(
        "cfg-image-overflow",
        &json(r#""image_size":16,"patch_size":4"#, r#""image_size":4611686018427387904,"patch_size":1"#),
    );
    c.push(ConfigJson, "cfg-image-overflow", case, &["--config", "image_size"]);
    let case = c.official_config("cfg-unknown-key", &json(r#""mlp_dim":128"#, r#""mlp_dim":128,"hidden_dim":64"#));
    c.push(ConfigJson, "cfg-unknown-key", case, &["--config", "hidden_dim"]);
    let case = c.official_config("cfg-wrong-type", &json(r#""hidden_size":64"#, r#""hidden_size":"64""#));
    c.push(ConfigJson, "cfg-wrong-type", case, &["--config", "64"]);
    let case = c.official_config("cfg-classes-contradict", &json(r#""num_classes":5"#, r#""num_classes":7"#));
    c.push(ConfigJson, "cfg-classes-contradict", case, &["arc_official.pth", "num_classes"]);
    let case = c.official_config("cfg-layers-contradict", &json(r#""num_layers":2"#, r#""num_layers":12"#));
    c.push(ConfigJson, "cfg-layers-contradict", case, &["arc_official.pth", "num_layers"]);
    let case = c.official_config("cfg-variant-contradict", &json(r#""variant":"arc""#, r#""variant":"arc-att""#));
    c.push(ConfigJson, "cfg-variant-contradict", case, &["arc_official.pth", "variant"]);
    let dir = c.dir("cfg-file-not-json");
    write(&dir.join("model.json"), "image_size: 16\npatch_size: 4\n");
    let case = c.official_config("cfg-file-not-json", &s(&dir.join("model.json")));
    c.push(ConfigJson, "cfg-file-not-json", case, &["model.json"]);
    let dir = c.dir("cfg-file-missing");
    let case = c.official_config("cfg-file-missing", &s(&dir.join("absent.json")));
    c.push(ConfigJson, "cfg-file-missing", case, &["absent.json"]);
    let contradicting = r#"{"image_size":16,"patch_size":4,"hidden_size":64,"num_layers":2,"num_heads":4,"mlp_dim":128,"num_classes":9}"#;
    let case = c.adapter("cfg-adapter-contradict", copy_of(&adapter), &npz, &["--config", contradicting]);
    c.push(ConfigJson, "cfg-adapter-contradict", case, &["adapter.safetensors", "num_classes"]);
    let mut stored: serde_json::Value = serde_json::from_str(&c.adapter_config).unwrap();
    stored["backbone"]["vit"]["image_size"] = serde_json::json!(1u64 << 62);
    stored["backbone"]["vit"]["patch_size"] = serde_json::json!(1);
    let (t, stored) = (c.adapter_tensors.clone(), stored.to_string());
    let case = c.adapter(
        "cfg-stored-overflow",
        |p| write(p, safetensors_bytes(&t, Some(("petl_config", &stored)))),
        &npz,
        &[],
    );
    c.push(ConfigJson, "cfg-stored-overflow", case, &["adapter.safetensors", "image_size"]);
    let case = c.vtab("cfg-run-config-corrupt", None, &[], |_| {});
    write(&case.0.last().map(PathBuf::from).unwrap().join("vtab/kitti/arc/config.json"), "{\"method\": \"arc\",");
    c.push(ConfigJson, "cfg-run-config-corrupt", case, &["config.json", "not valid JSON"]);
}

// ---------------------------------------------------------------------------------------------
// Running and checking.

/// Every file and folder under `dir` with size and SHA-256 (`<absent>` when it does not exist).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                out.insert(format!("{rel}/"), "folder".into());
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(rel, format!("{} bytes sha256 {:x}", bytes.len(), Sha256::digest(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    } else {
        out.insert("<absent>".into(), String::new());
    }
    out
}

/// Runs one case: the list of what is wrong with its outcome (empty: as documented), and the
/// first line it printed on stderr.
fn check(case: &Case) -> (Vec<String>, String) {
    let before = snapshot(&case.output);
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&case.args)
        .current_dir(case.output.parent().unwrap())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut problems = vec![];
    match out.status.code() {
        Some(2) => {}
        Some(101) => problems.push("exit code 101 (a panic)".to_string()),
        Some(0) => problems.push("exit code 0 (the input was accepted)".to_string()),
        other => problems.push(format!("exit code {other:?}")),
    }
    if lines.len() != 1 {
        problems.push(format!("{} non-empty lines on stderr", lines.len()));
    }
    let first = lines.first().copied().unwrap_or("");
    if !first.starts_with("error: ") {
        problems.push("stderr does not start with `error: `".into());
    }
    for name in &case.names {
        if !stderr.contains(name.as_str()) {
            problems.push(format!("the error does not name `{name}`"));
        }
    }
    let after = snapshot(&case.output);
    if before != after {
        let changed: Vec<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        problems.push(format!("the output folder changed: {changed:?}"));
    }
    if !problems.is_empty() {
        problems.push(format!("stderr: {}", stderr.trim_end().replace('\n', "\n    | ")));
    }
    (problems, first.to_string())
}

/// The good inputs every case starts from are accepted: each refusal below is its defect's.
fn controls(c: &Corpus) {
    let run = |args: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "control {args:?} failed: {stderr}");
        assert!(stderr.trim().is_empty(), "control {args:?} wrote to stderr: {stderr}");
    };
    let dir = c.dir("control");
    let (vtab, fgvc) = (vtab_root(&dir), fgvc_root(&dir));
    let (mut args, output) =
        c.reproduce(&dir, ("--vtab-root", &vtab), "kitti,OxfordFlowers", &c.npz, &["--epochs", "2"]);
    args.extend(["--fgvc-root".into(), s(&fgvc)]);
    run(&args);
    let table = std::fs::read_to_string(output.join("run/table.md")).unwrap();
    assert!(table.contains("kitti") && table.contains("OxfordFlowers"), "{table}");
    run(&c.official_config("control-official", TINY_ARC).0);
    run(&c.adapter("control-adapter", copy_of(&c.adapter), &c.npz, &[]).0);
    let timm = c.dir("control").join("timm.pth");
    write_pth(&timm, &c.timm, &BTreeMap::new());
    run(&c.vtab("control-timm-pth", Some(&timm), &[], |_| {}).0);
}

#[test]
fn every_bad_input_is_refused_with_one_line_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let mut corpus = Corpus::new(tmp.path());
    controls(&corpus);
    build(&mut corpus);
    let cases = &corpus.cases;
    for kind in KINDS {
        let n = cases.iter().filter(|c| c.kind == kind).count();
        assert!(n >= 5, "{kind:?}: {n} cases, the issue asks for at least 5");
    }
    assert!(cases.len() >= 40, "{} cases", cases.len());

    // Two workers (the machines have 2 cores); results in table order.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(Vec<String>, String)>>> = Mutex::new(cases.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = check(case);
                    results.lock().unwrap()[i] = Some(outcome);
                }
            });
        }
    });
    let results: Vec<(Vec<String>, String)> = results.into_inner().unwrap().into_iter().map(Option::unwrap).collect();

    // What each input got, then the counts per kind.
    let mut summary = String::from("\n");
    let mut failures = vec![];
    for (case, (problems, line)) in cases.iter().zip(&results) {
        let verdict = match (case.pending, problems.is_empty()) {
            (None, true) => "ok",
            (None, false) => {
                failures.push(format!("{} ({:?}):\n  - {}", case.name, case.kind, problems.join("\n  - ")));
                "FAILED"
            }
            (Some(owner), false) => {
                summary += &format!("{:<28} pending, the fix belongs to {owner}: {}\n", case.name, problems[0]);
                "pending"
            }
            (Some(owner), true) => {
                failures.push(format!("{}: marked pending on {owner} but passes now: remove the marker", case.name));
                "FAILED"
            }
        };
        summary += &format!("{:<28} {verdict:<7} {line}\n", case.name);
    }
    summary += "\nbad-input corpus   kind         tried  passed  pending\n";
    for kind in KINDS {
        let of_kind: Vec<(&Case, &(Vec<String>, String))> =
            cases.iter().zip(&results).filter(|(c, _)| c.kind == kind).collect();
        let passed = of_kind.iter().filter(|(_, (p, _))| p.is_empty()).count();
        let pending = of_kind.iter().filter(|(c, _)| c.pending.is_some()).count();
        summary += &format!(
            "                   {:<12} {:>5}  {:>6}  {:>7}\n",
            format!("{kind:?}"),
            of_kind.len(),
            passed,
            pending
        );
    }
    let passed = results.iter().filter(|(p, _)| p.is_empty()).count();
    summary += &format!("                   {:<12} {:>5}  {:>6}\n", "all", cases.len(), passed);
    println!("{summary}");
    assert!(failures.is_empty(), "{summary}\n{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}
