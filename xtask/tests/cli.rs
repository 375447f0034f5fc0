//! The command line end to end: `params` against the papers' counts, a smoke `reproduce` that
//! must learn and resume, `predict` on an official-format checkpoint and on our own adapter
//! checkpoint, and clear errors for bad input.

mod common;

use common::{apt_fixture, fails, ok, pretrained_only, read_npy, write_npy};

use std::path::{Path, PathBuf};

fn params_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["params"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&ok(&all)).unwrap()
}

#[test]
fn params_match_the_spec() {
    let v = params_json(&["arc", "--backbone", "vit-b16", "--classes", "100"]);
    assert_eq!(v["adapter_params"], 96_432);
    assert_eq!(v["head_params"], 76_900);
    assert_eq!(v["trainable_params"], 173_332);
    assert_eq!(v["frozen_params"], 85_798_656);
    assert_eq!(params_json(&["arc", "--variant", "arc-att", "--backbone", "vit-b16"])["adapter_params"], 48_216);
    assert_eq!(params_json(&["arc-att", "--backbone", "vit-b16"])["adapter_params"], 48_216);
    assert_eq!(params_json(&["arc", "--backbone", "vit-l16"])["adapter_params"], 153_952);
    assert_eq!(params_json(&["arc-att", "--backbone", "vit-l16"])["adapter_params"], 76_976);
    assert_eq!(params_json(&["arc", "--backbone", "vit-h14"])["adapter_params"], 213_120);
    assert_eq!(params_json(&["arc-att", "--backbone", "vit-h14"])["adapter_params"], 106_560);
    assert_eq!(params_json(&["arc", "--backbone", "swin-b"])["adapter_params"], 218_464);
    assert_eq!(params_json(&["linear", "--backbone", "vit-b16", "--classes", "47"])["trainable_params"], 769 * 47);
    assert_eq!(params_json(&["full", "--backbone", "vit-b16", "--classes", "100"])["frozen_params"], 0);
    assert!(fails(&["params", "arc", "--backbone", "vit-x"]).contains("unknown backbone preset `vit-x`"));
}

#[test]
fn methods_come_from_one_list_and_take_settings_by_key() {
    let listing = ok(&["methods", "--backbone", "swin-tiny-test"]);
    for name in ["arc", "arc-att", "lora", "adapter", "deep-prompt", "linear", "full"] {
        assert!(listing.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing in:\n{listing}");
    }
    assert!(listing.contains(r#""mlp_site":"residual""#), "ARC's Swin default is the official residual site");
    // LoRA r = 4 on q and v of ViT-B/16: 12 blocks × 2 × (768·4 + 4·768).
    let lora = params_json(&["lora", "--set", "rank=4", "--backbone", "vit-b16", "--classes", "10"]);
    assert_eq!(lora["adapter_params"], 12 * 2 * 2 * 768 * 4);
    assert_eq!(
        params_json(&["adapter", "--bottleneck", "16", "--backbone", "vit-b16"])["adapter_params"],
        12 * 2 * (2 * 768 * 16 + 16 + 768)
    );
    let err = fails(&["params", "lora", "--set", "rnak=4"]);
    assert!(err.contains("no selected method (lora) has a `rnak` setting"), "{err}");
    let err = fails(&["params", "lora", "--set", "rank=four"]);
    assert!(err.contains("invalid configuration of method `lora`"), "{err}");
    let err = fails(&["params", "lora", "--set", "dropout=1.5"]);
    assert!(err.contains("`lora`: dropout 1.5 is not in [0, 1)"), "{err}");
    let err = fails(&["params", "arc", "--set", "adapter_dropout=-0.1"]);
    assert!(err.contains("adapter_dropout -0.1 is not in [0, 1)"), "{err}");
    let err = fails(&["params", "vpt"]);
    assert!(err.contains("unknown method `vpt`") && err.contains("deep-prompt"), "{err}");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/arc/tests/fixtures").join(name)
}

#[test]
fn predict_runs_an_official_arc_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let config = r#"{"image_size":16,"patch_size":4,"hidden_size":64,"num_layers":2,"num_heads":4,"mlp_dim":128,"num_classes":5,"adapter_dim":8,"variant":"arc"}"#;
    ok(&[
        "predict",
        "arc",
        "--checkpoint",
        fixture("arc_official.pth").to_str().unwrap(),
        "--config",
        config,
        "--input",
        fixture("arc_vit_tiny_input.npy").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let (shape, logits) = read_npy(&out);
    assert_eq!(shape, vec![2, 5]);
    let reference = petl_core::weights::read_safetensors(&fixture("arc_vit_tiny.safetensors")).unwrap();
    let want = &reference.tensors["out.logits"].data;
    let d = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-4, "predict logits differ from PyTorch by {d}");

    let err = fails(&[
        "predict",
        "arc",
        "--checkpoint",
        fixture("arc_official.pth").to_str().unwrap(),
        "--input",
        "x.npy",
        "--output",
        "y.npy",
    ]);
    assert!(err.contains("--config or --backbone"), "{err}");
    let three_heads = config.replace(r#""num_heads":4"#, r#""num_heads":3"#);
    let err = fails(&[
        "predict",
        "arc",
        "--checkpoint",
        fixture("arc_official.pth").to_str().unwrap(),
        "--config",
        &three_heads,
        "--input",
        "x.npy",
        "--output",
        "y.npy",
    ]);
    assert!(err.contains("not divisible by num_heads 3"), "{err}");
    let err = fails(&[
        "predict",
        "arc",
        "--checkpoint",
        dir.path().join("absent.pth").to_str().unwrap(),
        "--config",
        config,
        "--input",
        "x.npy",
        "--output",
        "y.npy",
    ]);
    assert!(err.contains("absent.pth"), "{err}");
}

/// Three 16 × 16 RGB inputs `[3, 3, 16, 16]` as a float32 `.npy` in `order`.
fn write_images_npy(path: &Path, order: npyz::Order) {
    use npyz::WriterBuilder;
    let mut bytes = vec![];
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .order(order)
        .shape(&[3, 3, 16, 16])
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    w.extend((0..3 * 3 * 16 * 16).map(|i| (i % 7) as f32 * 0.1)).unwrap();
    w.finish().unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn smoke_reproduce_learns_resumes_and_its_adapters_predict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let stdout = ok(&["reproduce", "arc", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(stdout.contains("| method |") && stdout.contains("| ARC |"), "{stdout}");
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let cell = |task: &str, method: &str| {
        results["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["task"] == task && c["method"] == method)
            .unwrap()
            .clone()
    };
    // `tint` has 5 classes (chance 20 %): ARC must learn it, from its own training.
    let arc_tint = cell("tint", "ARC");
    assert!(arc_tint["best_acc"].as_f64().unwrap() > 45.0, "ARC did not learn tint: {arc_tint}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tint/arc/report.json")).unwrap()).unwrap();
    let losses: Vec<f64> =
        report["epochs"].as_array().unwrap().iter().map(|e| e["train_loss"].as_f64().unwrap()).collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.9), "loss did not fall: {losses:?}");
    assert_eq!(
        report["optimizer_state_tensors"].as_u64().unwrap(),
        2 * (2 + 2 * 2 * 2 + 2),
        "AdamW state only for ARC's tensors and the head"
    );
    assert!(stdout.contains("merged model (0 extra parameters)"), "{stdout}");

    // A second invocation reuses the finished runs and prints the same table.
    let again = ok(&["reproduce", "arc", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet"]);
    let table = |s: &str| s.lines().filter(|l| l.starts_with('|')).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(table(&stdout), table(&again));
    // Other settings never reuse (or resume) those runs: a clear error, nothing rewritten.
    let config = std::fs::read(out.join("tint/arc/config.json")).unwrap();
    let err =
        fails(&["reproduce", "arc", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet", "--lr", "0.5"]);
    assert!(err.contains("holds a run with other settings") && err.contains("train"), "{err}");
    let err = fails(&[
        "reproduce",
        "arc",
        "--scale",
        "smoke",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--bottleneck",
        "4",
    ]);
    assert!(err.contains("method_config"), "{err}");
    assert_eq!(std::fs::read(out.join("tint/arc/config.json")).unwrap(), config);
    let zero = dir.path().join("zero");
    let err = fails(&["reproduce", "arc", "--scale", "smoke", "--out", zero.to_str().unwrap(), "--epochs", "0"]);
    assert!(err.contains("epochs must be at least 1"), "{err}");

    // The adapter-only checkpoint of that run predicts with the cached backbone.
    let adapter = out.join("tint/arc/adapter.safetensors");
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/petl-cache");
    let backbone = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("shapes-vit-s16-p4-d32-l2"))
        .expect("smoke backbone cached");
    let x = dir.path().join("x.npy");
    write_images_npy(&x, npyz::Order::C);
    let logits = dir.path().join("logits.npy");
    ok(&[
        "predict",
        "arc",
        "--checkpoint",
        adapter.to_str().unwrap(),
        "--weights",
        backbone.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        logits.to_str().unwrap(),
    ]);
    assert_eq!(read_npy(&logits).0, vec![3, 5]);
    let err = fails(&[
        "predict",
        "arc",
        "--checkpoint",
        adapter.to_str().unwrap(),
        "--backbone",
        "vit-b16",
        "--weights",
        backbone.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        logits.to_str().unwrap(),
    ]);
    assert!(err.contains("another backbone"), "{err}");

    // A Fortran-order input is refused, not read as C order.
    let fortran = dir.path().join("f.npy");
    write_images_npy(&fortran, npyz::Order::Fortran);
    let args = |input: &Path, checkpoint: &Path, method: &'static str| {
        vec![
            "predict".to_string(),
            method.to_string(),
            "--checkpoint".into(),
            checkpoint.to_str().unwrap().into(),
            "--weights".into(),
            backbone.to_str().unwrap().into(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            logits.to_str().unwrap().into(),
        ]
    };
    let run = |a: Vec<String>| fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run(args(&fortran, &adapter, "arc")).contains("Fortran-order"));

    // A full fine-tuning checkpoint without its backbone does not run a random backbone.
    let (tensors, meta) = petl_core::checkpoint::load_adapter(&out.join("tint/full/adapter.safetensors")).unwrap();
    let mut head_only = petl_core::weights::TensorMap::new("head only");
    for (k, t) in tensors.tensors.into_iter().filter(|(k, _)| !k.starts_with("backbone.")) {
        head_only.insert(k, t);
    }
    let head_path = dir.path().join("head-only.safetensors");
    petl_core::checkpoint::save_adapter(&head_path, &head_only, &meta).unwrap();
    let err = run(args(&x, &head_path, "full"));
    assert!(err.contains("head-only.safetensors") && err.contains("backbone."), "{err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&[
        "reproduce",
        "arc",
        "--vtab-root",
        dir.path().join("nope").to_str().unwrap(),
        "--weights",
        fixture("arc_official.pth").to_str().unwrap(),
        "--backbone",
        "vit-b16",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(err.starts_with("error:"), "{err}");
    let err = fails(&["reproduce", "arc", "--backend", "tch", "--out", dir.path().join("o").to_str().unwrap()]);
    assert!(err.contains("--features tch"), "{err}");
    let err = fails(&["reproduce", "vl-bart"]);
    assert!(err.contains("unknown paper"), "{err}");
}

fn write_png(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(20, 20, |x, y| {
        let v = ((x * 7 + y * 3 + seed * 31) % 255) as u8;
        image::Rgb([v, v.wrapping_mul(3), 255 - v])
    });
    img.save(path).unwrap();
}

/// A VTAB-1k folder with the `kitti` task (4 classes): 8 training and 4 test images.
fn vtab_kitti(dir: &Path) -> std::path::PathBuf {
    let vtab = dir.join("vtab");
    for (split, n) in [("train800val200", 8), ("test", 4)] {
        let mut lines = String::new();
        for i in 0..n {
            let rel = format!("images/{split}/{i:06}.png");
            write_png(&vtab.join("kitti").join(&rel), i + if split == "test" { 100 } else { 0 });
            lines += &format!("{rel} {}\n", i % 4);
        }
        std::fs::write(vtab.join("kitti").join(format!("{split}.txt")), lines).unwrap();
    }
    vtab
}

/// The Swin path end to end: ARC with the official residual-stream MLP adapter trains, is
/// reported as not mergeable in the table (not an error), and its adapter checkpoint, which
/// holds ARC's config only, predicts.
#[test]
fn swin_adapters_written_by_reproduce_load_in_predict() {
    let dir = tempfile::tempdir().unwrap();
    let vtab = vtab_kitti(dir.path());
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/petl-core/tests/fixtures/swin_tiny_timm.safetensors");
    let out = dir.path().join("out");
    let stdout = ok(&[
        "reproduce",
        "arc",
        "--vtab-root",
        vtab.to_str().unwrap(),
        "--tasks",
        "kitti",
        "--methods",
        "arc,lora",
        "--weights",
        weights.to_str().unwrap(),
        "--backbone",
        "swin-tiny-test",
        "--epochs",
        "1",
        "--bottleneck",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(stdout.contains("ARC does not merge: the MLP adapter sits on the residual stream"), "{stdout}");
    let adapter = out.join("vtab/kitti/arc/adapter.safetensors");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.with_extension("json")).unwrap()).unwrap();
    assert_eq!(config["format"], "petl-adapter/1");
    assert_eq!(config["method"], "arc");
    assert_eq!(config["method_config"]["bottleneck"], 4);
    assert!(config["method_config"].get("rank").is_none(), "only the trained method's config: {config}");
    assert!(config["backbone"].get("swin").is_some(), "{config}");
    for method in ["arc", "lora"] {
        let logits = dir.path().join(format!("{method}.npy"));
        ok(&[
            "predict",
            method,
            "--checkpoint",
            out.join(format!("vtab/kitti/{method}/adapter.safetensors")).to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--images",
            vtab.join("kitti/images/test").to_str().unwrap(),
            "--output",
            logits.to_str().unwrap(),
        ]);
        assert_eq!(read_npy(&logits).0, vec![4, 4], "{method}");
    }
    let err = fails(&[
        "predict",
        "lora",
        "--checkpoint",
        adapter.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--images",
        vtab.join("kitti/images/test").to_str().unwrap(),
        "--output",
        dir.path().join("x.npy").to_str().unwrap(),
    ]);
    assert!(err.contains("holds an adapter of method `arc`, not `lora`"), "{err}");
}

#[test]
fn real_data_protocol_runs_on_small_vtab_and_fgvc_folders() {
    let dir = tempfile::tempdir().unwrap();
    let vtab = vtab_kitti(dir.path());
    // FGVC layout with OxfordFlowers (images under the task folder), ids 1 and 7.
    let fgvc = dir.path().join("fgvc");
    for split in ["train", "val", "test"] {
        let entries: Vec<String> = (0..4)
            .map(|i| {
                let rel = format!("jpg/{split}_{i}.png");
                write_png(&fgvc.join("OxfordFlowers").join(&rel), i);
                format!("\"{rel}\": {}", if i % 2 == 0 { 1 } else { 7 })
            })
            .collect();
        std::fs::write(fgvc.join("OxfordFlowers").join(format!("{split}.json")), format!("{{{}}}", entries.join(", ")))
            .unwrap();
    }
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/petl-core/tests/fixtures/vit_tiny_google.npz");
    let out = dir.path().join("out");
    let stdout = ok(&[
        "reproduce",
        "arc",
        "--vtab-root",
        vtab.to_str().unwrap(),
        "--fgvc-root",
        fgvc.to_str().unwrap(),
        "--tasks",
        "kitti,OxfordFlowers",
        "--weights",
        weights.to_str().unwrap(),
        "--backbone",
        "vit-tiny-test",
        "--epochs",
        "2",
        "--bottleneck",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(stdout.contains("kitti") && stdout.contains("OxfordFlowers"), "{stdout}");
    assert!(out.join("vtab/kitti/arc/adapter.safetensors").exists());
    assert!(out.join("fgvc/OxfordFlowers/arc-att/report.json").exists());

    // A list line pointing at a missing image is one clear error naming file and line.
    std::fs::write(vtab.join("kitti/test.txt"), "images/test/000000.png 0\nimages/test/missing.png 1\n").unwrap();
    let err = fails(&[
        "reproduce",
        "arc",
        "--vtab-root",
        vtab.to_str().unwrap(),
        "--tasks",
        "kitti",
        "--weights",
        weights.to_str().unwrap(),
        "--backbone",
        "vit-tiny-test",
        "--out",
        dir.path().join("out2").to_str().unwrap(),
    ]);
    assert!(err.contains("test.txt") && err.contains("line 2") && err.contains("missing.png"), "{err}");
}

#[test]
fn bench_measures_each_method_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let stdout = ok(&[
        "bench",
        "--backbone",
        "vit-tiny-test",
        "--method",
        "arc,lora,linear,full",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--bottleneck",
        "8",
        "--classes",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["method"], "ARC");
    assert_eq!(rows[0]["trainable_params"], 1_637, "ARC on the tiny ViT, 5 classes");
    assert!(rows[0]["infer_merged_median_s"].as_f64().unwrap() > 0.0, "ARC merges");
    assert!(rows[2]["infer_merged_median_s"].is_null() || rows[2]["method"] == "Linear");
    for r in rows {
        assert!(r["step_median_s"].as_f64().unwrap() > 0.0);
        assert!(r["optimizer_state_bytes"].as_u64().unwrap() > 0);
    }
    // What each method keeps for training, as laws that hold on any machine: one f32 gradient
    // per trainable parameter and none for frozen ones, and AdamW state growing with the
    // trainable set. (Peak heap is reported by `bench` but not asserted: on a toy model at
    // batch 2 it is dominated by gemm packing buffers sized from the CPU's caches.)
    let u = |i: usize, k: &str| rows[i][k].as_u64().unwrap();
    for i in 0..rows.len() {
        assert_eq!(u(i, "gradient_bytes"), 4 * u(i, "trainable_params"), "{}", rows[i]["method"]);
        assert_eq!(u(i, "frozen_with_gradient"), 0, "{}: frozen weights got gradients", rows[i]["method"]);
    }
    assert_eq!(u(2, "gradient_tensors"), 2, "linear probing: the head's weight and bias only");
    assert_eq!(
        u(0, "gradient_tensors"),
        2 + 2 * 2 * 2 + 2,
        "ARC, 2 layers: U_att, U_mlp, (λ, b) per layer and site, head"
    );
    let order = |k: &str| assert!(u(2, k) < u(0, k) && u(0, k) < u(3, k), "{k}: linear < ARC < full");
    order("gradient_bytes");
    order("optimizer_state_bytes");
    assert!(u(0, "peak_heap_bytes") > 0, "peak heap is reported");
    assert!(std::fs::read_to_string(out.join("bench.svg")).unwrap().contains("<svg"));
    assert!(std::fs::read_to_string(out.join("bench.md")).unwrap().contains("| flex | ARC |"));
    assert!(std::fs::read_to_string(out.join("bench.md")).unwrap().contains("step ÷ full"));

    let err = fails(&["bench", "--backend", "vulkan-x", "--out", out.to_str().unwrap()]);
    assert!(err.contains("unknown backend `vulkan-x`"), "{err}");
    let err = fails(&["bench", "--backend", "flex,wgpu", "--out", out.to_str().unwrap()]);
    assert!(err.contains("--features wgpu"), "{err}");
}

#[test]
fn apt_params_match_both_tables() {
    let cell = |backbone: &str, variant: &str| {
        let v = params_json(&["apt", "--backbone", backbone, "--variant", variant]);
        (v["adapter_params"].as_u64().unwrap(), v["extra_flops"].as_u64().unwrap())
    };
    let giga = |f: u64| format!("{:.2}", f as f64 / 1e9);
    for (backbone, variant, params, flops) in [
        ("vilt-b32", "apt", 1_916_940, "0.91"),
        ("vilt-b32", "deep-prompt", 1_843_200, "5.14"),
        ("vilt-b32", "lora", 147_456, "0.00"),
        ("vilt-b32", "scaled-pa", 1_798_272, "0.44"),
        ("vilt-b32", "adapter", 3_559_680, "0.86"),
        ("vilt-b32", "classifier", 0, "0.00"),
        ("vilt-b32", "full", 111_595_008, "0.00"),
        ("meter", "apt", 3_833_880, "2.31"),
        ("meter", "deep-prompt", 3_686_400, "13.05"),
        ("meter", "lora", 294_912, "0.00"),
        ("meter", "adapter", 5_339_520, "1.64"),
        ("meter", "scaled-pa", 3_596_544, "1.12"),
    ] {
        let (p, f) = cell(backbone, variant);
        assert_eq!((p, giga(f).as_str()), (params, flops), "{backbone} {variant}");
    }
    let v = params_json(&["apt", "--backbone", "vilt-b32", "--variant", "apt", "--set", "num_prompts=50"]);
    assert_eq!(v["adapter_params"], 12 * (50 * 768 + 8 * 768 + 1));
    assert!(fails(&["params", "apt", "--backbone", "vilt-x"]).contains("unknown APT backbone"));
    assert!(fails(&["params", "apt", "--variant", "prefix"]).contains("unknown APT variant `prefix`"));
    assert!(fails(&["params", "apt", "--set", "lora_rnak=4"]).contains("lora_rnak"));
}

#[test]
fn apt_smoke_reproduce_prints_the_table_and_reuses_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("apt");
    let stdout = ok(&["reproduce", "apt", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet"]);
    for row in ["Full Tuning", "Classifier Only", "Deep Prompt", "LoRA", "Scaled PA", "Adapter", "APT"] {
        assert!(stdout.contains(&format!("| {row} |")), "{row} missing:\n{stdout}");
    }
    assert!(stdout.contains("merged model (0 extra parameters)"), "LoRA is merged and checked: {stdout}");
    assert!(stdout.contains("| APT | 1.92M | 0.91G | 3.83M | 2.31G |"), "{stdout}");
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["cells"].as_array().unwrap().len(), 21, "7 methods × 3 tasks");
    for cell in results["cells"].as_array().unwrap() {
        for (k, v) in cell["metrics"].as_object().unwrap() {
            assert!(k == "rsum" || (0.0..=100.0).contains(&v.as_f64().unwrap()), "{cell}");
        }
    }
    assert!(out.join("retrieval/apt/adapter.safetensors").exists());
    let again = ok(&["reproduce", "apt", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(again.matches("finished run reused").count(), 21, "{again}");
    let err =
        fails(&["reproduce", "apt", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet", "--lr", "0.1"]);
    assert!(err.contains("other settings") && err.contains("train"), "{err}");
    let err = fails(&["reproduce", "apt", "--data-root", dir.path().to_str().unwrap()]);
    assert!(err.contains("needs --checkpoint FILE"), "{err}");
    let err = fails(&["reproduce", "apt", "--scale", "smoke", "--methods", "prefix", "--out", out.to_str().unwrap()]);
    assert!(err.contains("unknown APT variant"), "{err}");
}

#[test]
fn apt_smoke_reproduce_on_the_embedded_meter() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("apt");
    let args =
        ["reproduce", "apt", "--backbone", "meter", "--scale", "smoke", "--out", out.to_str().unwrap(), "--quiet"];
    let stdout = ok(&args);
    assert!(stdout.contains("Embedded METER"), "{stdout}");
    for row in ["Full Tuning", "Classifier Only", "Deep Prompt", "LoRA", "Scaled PA", "Adapter", "APT"] {
        assert!(stdout.contains(&format!("| {row} |")), "{row} missing:\n{stdout}");
    }
    // LoRA merges into the fusion layers' self- and cross-attention q, v.
    assert_eq!(stdout.matches("merged model (0 extra parameters)").count(), 3, "{stdout}");
    let meter = out.join("meter");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meter.join("results.json")).unwrap()).unwrap();
    let cells = results["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 21, "7 methods × 3 tasks");
    // APT sits in every fusion layer of both streams (self- and cross-attention).
    let apt = cells.iter().find(|c| c["task"] == "vqa" && c["variant"] == "apt").unwrap();
    assert!(apt["adapter_params"].as_u64().unwrap() > 0, "{apt}");
    let (_, meta) = petl_core::checkpoint::load_adapter(&meter.join("nlvr2/apt/adapter.safetensors")).unwrap();
    assert_eq!(meta["backbone_kind"], "meter", "{meta}");
    assert_eq!(meta["head"], "nlvr2", "{meta}");
    assert_eq!(ok(&args).matches("finished run reused").count(), 21);
    let err = fails(&["reproduce", "apt", "--backbone", "swin-b", "--scale", "smoke", "--out", out.to_str().unwrap()]);
    assert!(err.contains("vilt-b32 (default) or meter"), "{err}");
}
#[test]
fn apt_bench_sets_each_variant_beside_the_plain_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let stdout = ok(&[
        "bench",
        "--backbone",
        "vilt-test",
        "--method",
        "apt,deep-prompt,lora",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--batch",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("APT's extra inference time is"), "{stdout}");
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("bench-apt.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "classifier only is measured as the baseline");
    let trainable = |v: &str| rows.iter().find(|r| r["variant"] == v).unwrap()["trainable_params"].as_u64().unwrap();
    assert!(trainable("apt") > trainable("classifier") && trainable("lora") > trainable("classifier"));
}

/// Every tensor of a safetensors fixture: (shape, f64 values).
fn read_st(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data: Vec<f64> = match view.dtype() {
                safetensors::Dtype::I64 => {
                    view.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::F32 => {
                    view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                other => panic!("{name}: {other:?}"),
            };
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

/// `[N, 3, H, W']` zero-padded on the right to width `w` (ViLT's batch padding).
fn pad_width(shape: &[usize], data: &[f64], w: usize) -> Vec<f32> {
    let (n, c, h, w0) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![0.0f32; n * c * h * w];
    for i in 0..n * c * h {
        for j in 0..w0 {
            out[i * w + j] = data[i * w0 + j] as f32;
        }
    }
    out
}

fn assert_close(path: &Path, want: &(Vec<usize>, Vec<f64>)) {
    let (shape, got) = read_npy(path);
    assert_eq!(shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), want.0);
    let d = got.iter().zip(&want.1).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(d <= 1e-4, "{} differs from the reference by {d}", path.display());
}

/// `predict apt` on official-format files: the ViLT APT Lightning checkpoint (VQA, and NLVR2 with
/// ViLT's zero-padded image pairs) and a METER APT state dict (VQA, NLVR2), against the PyTorch
/// reference logits; contradicting `--config` values, another variant and missing heads are
/// clear errors.
#[test]
fn predict_apt_reproduces_official_vilt_and_meter_logits() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let s = |path: &Path| path.to_str().unwrap().to_string();

    let io = read_st(&apt_fixture("vilt_tiny_io.safetensors"));
    let (ids_shape, ids) = &io["input_ids"];
    write_npy(&p("ids.npy"), ids_shape, &ids.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let (px_shape, px) = &io["pixels"];
    write_npy(&p("px.npy"), px_shape, &px.iter().map(|&v| v as f32).collect::<Vec<_>>());
    let ckpt = s(&apt_fixture("vilt_tiny_apt_lightning.ckpt"));
    let base = |task: &str, pixels: &Path, out: &Path| -> Vec<String> {
        [
            "predict",
            "apt",
            "--checkpoint",
            &ckpt,
            "--config",
            r#"{"num_heads": 4, "vqav2_label_size": 7}"#,
            "--task",
            task,
        ]
        .iter()
        .map(|x| x.to_string())
        .chain(["--input-ids".into(), s(&p("ids.npy")), "--pixels".into(), s(pixels), "--output".into(), s(out)])
        .collect()
    };
    let run = |args: Vec<String>| ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(base("vqa", &p("px.npy"), &p("vqa.npy")));
    assert_close(&p("vqa.npy"), &io["vqa_logits.apt"]);
    // NLVR2 pairs [N, 2, 3, H, W]: the second image (40 px wide) zero-padded to 48, as ViLT batches.
    let w = px_shape[3];
    let first = pad_width(px_shape, px, w);
    let (pair_shape, pair) = &io["pixels_pair"];
    let second = pad_width(pair_shape, pair, w);
    let per = 3 * px_shape[2] * w;
    let pairs: Vec<f32> = (0..px_shape[0])
        .flat_map(|i| first[i * per..(i + 1) * per].iter().chain(&second[i * per..(i + 1) * per]))
        .copied()
        .collect();
    write_npy(&p("pairs.npy"), &[px_shape[0], 2, 3, px_shape[2], w], &pairs);
    run(base("nlvr2", &p("pairs.npy"), &p("nlvr2.npy")));
    assert_close(&p("nlvr2.npy"), &io["nlvr2_logits.apt"]);

    // METER: the backbone and APT files merged into one official state dict.
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for file in ["meter_tiny.safetensors", "meter_tiny_apt.safetensors"] {
        let bytes = std::fs::read(apt_fixture(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            tensors.push((name, view.shape().to_vec(), view.data().to_vec()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap())
        })
        .collect();
    std::fs::write(p("meter_apt.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let mio = read_st(&apt_fixture("meter_tiny_ref.safetensors"));
    let (ids_shape, ids) = &mio["input_ids"];
    write_npy(&p("mids.npy"), ids_shape, &ids.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let f32s = |v: &Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let (px_shape, px) = &mio["pixels"];
    write_npy(&p("mpx.npy"), px_shape, &f32s(px));
    let per = px.len() / px_shape[0];
    let px2 = &mio["pixels2"].1;
    let pairs: Vec<f32> = (0..px_shape[0])
        .flat_map(|i| {
            f32s(&px[i * per..(i + 1) * per].to_vec()).into_iter().chain(f32s(&px2[i * per..(i + 1) * per].to_vec()))
        })
        .collect();
    write_npy(&p("mpairs.npy"), &[px_shape[0], 2, 3, px_shape[2], px_shape[3]], &pairs);
    let meter = |task: &str, pixels: &str, out: &str, config: &str| -> Vec<String> {
        let ckpt = s(&p("meter_apt.safetensors"));
        [
            "predict",
            "apt",
            "--backbone",
            "meter",
            "--checkpoint",
            &ckpt,
            "--config",
            config,
            "--task",
            task,
            "--input-ids",
        ]
        .iter()
        .map(|x| x.to_string())
        .chain([s(&p("mids.npy")), "--pixels".into(), s(&p(pixels)), "--output".into(), s(&p(out))])
        .collect()
    };
    let heads = r#"{"num_heads": 4, "text_num_heads": 4, "vision_num_heads": 4}"#;
    run(meter("vqa", "mpx.npy", "mvqa.npy", heads));
    assert_close(&p("mvqa.npy"), &mio["apt.vqa_logits"]);
    run(meter("nlvr2", "mpairs.npy", "mnlvr2.npy", heads));
    assert_close(&p("mnlvr2.npy"), &mio["apt.nlvr2_logits"]);

    let fail = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = fail(meter(
        "vqa",
        "mpx.npy",
        "x.npy",
        r#"{"num_heads": 4, "text_num_heads": 4, "vision_num_heads": 4, "num_prompts": 200}"#,
    ));
    assert!(err.contains("`num_prompts` = 200") && err.contains("holds 6"), "{err}");
    let err = fail(meter("vqa", "mpx.npy", "x.npy", "{}"));
    assert!(err.contains("heads"), "{err}");
    let mut wrong = base("vqa", &p("px.npy"), &p("x.npy"));
    wrong.extend(["--variant".to_string(), "lora".to_string()]);
    let err = fail(wrong);
    assert!(err.contains("holds a `apt` model, not `lora`"), "{err}");
    let err = fail(meter("vqa", "px.npy", "x.npy", heads));
    assert!(err.contains("px.npy"), "{err}");
    assert!(!p("x.npy").exists(), "nothing written on error");

    // Raw inputs: texts, image files and the tokenizer, through ViLT's view and prefix.
    let tokenizer = p("tokenizer.json");
    petl_core::data::shapes::language::word_tokenizer().unwrap().save(&tokenizer, false).unwrap();
    for (i, rgb) in [[200u8, 30, 30], [30, 30, 200], [30, 200, 30]].iter().enumerate() {
        image::RgbImage::from_pixel(40 + 8 * i as u32, 30, image::Rgb(*rgb)).save(p(&format!("img{i}.png"))).unwrap();
    }
    std::fs::write(p("texts.txt"), "what colour is the shape ?\nis there a shape ?\nhow many shapes are there ?\n")
        .unwrap();
    std::fs::write(p("images.txt"), "img0.png\nimg1.png\nimg2.png\n").unwrap();
    let raw = |texts: &str, out: &str| -> Vec<String> {
        [
            "predict",
            "apt",
            "--checkpoint",
            &ckpt,
            "--config",
            r#"{"num_heads": 4}"#,
            "--task",
            "vqa",
            "--text",
            texts,
            "--images",
            &s(&p("images.txt")),
            "--tokenizer",
            &s(&tokenizer),
            "--resolution",
            "32",
            "--output",
            out,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    run(raw(&s(&p("texts.txt")), &s(&p("raw.npy"))));
    let (shape, logits) = read_npy(&p("raw.npy"));
    assert_eq!(shape, vec![3, 7]);
    assert!(logits.iter().all(|v| v.is_finite()));
    std::fs::write(p("two.txt"), "one text\nanother\n").unwrap();
    let err = fail(raw(&s(&p("two.txt")), &s(&p("y.npy"))));
    assert!(err.contains("two.txt") && err.contains("images.txt"), "{err}");
}

/// The real-data path of `reproduce apt` end to end on ViLT-format Arrow files made in process
/// (`petl_core::data::arrow_samples`) and the tiny official-format ViLT (its task heads and
/// class token dropped: a pretrained file): every task, two methods, the table, the EvalAI
/// answer file, truncation counted, runs reused, missing files named before anything trains.
#[test]
fn apt_real_data_run_on_vilt_format_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    petl_core::data::arrow_samples::write_vilt_samples(&data, 6, 40, 30).unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    petl_core::data::shapes::language::word_tokenizer().unwrap().save(&tokenizer, false).unwrap();
    // A pretrained-only ViLT: the fixture without its task heads and class token.
    let ckpt = dir.path().join("vilt_pretrained.safetensors");
    pretrained_only("vilt_tiny.safetensors", &ckpt);
    let out = dir.path().join("out");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |data: &Path| -> Vec<String> {
        [
            "reproduce",
            "apt",
            "--data-root",
            &s(data),
            "--checkpoint",
            &s(&ckpt),
            "--tokenizer",
            &s(&tokenizer),
            "--heads",
            "4",
            "--resolution",
            "32",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--methods",
            "apt,classifier",
            "--out",
            &s(&out),
            "--quiet",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let run = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let printed = run(args(&data));
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| APT |") && table.contains("| Classifier Only |"), "{table}");
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let cells = results["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for c in cells {
        assert!(!c["metrics"].as_object().unwrap().is_empty(), "{c}");
    }
    assert!(cells.iter().any(|c| c["truncated_texts"].as_u64().unwrap() > 0), "the 12-position model truncates");
    let answers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vqa/apt/vqa_test-dev.json")).unwrap()).unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 12);
    assert!(answers.iter().all(|a| a["question_id"].is_i64() && a["answer"].is_string()));
    assert!(!printed.contains("reused"));
    assert!(run(args(&data)).contains("finished run reused"));
    std::fs::remove_file(data.join("nlvr2_test1.arrow")).unwrap();
    let mut a = args(&data);
    a.extend(["--tasks".into(), "nlvr2".into()]);
    let err = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("nlvr2_test1.arrow") && err.contains("missing"), "{err}");
}

/// `--skip-bad-samples`: an unreadable image (truncated PNG) in a VTAB split is refused by
/// default, naming it; with the flag the run trains without it (at most 1 % of a split, at least
/// one sample) and lists it with its reason in `skipped.json`; too many unreadable images are
/// still an error.
#[test]
fn skip_bad_samples_is_opt_in_capped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let vtab = vtab_kitti(dir.path());
    let bad = vtab.join("kitti/images/test/000002.png");
    std::fs::write(&bad, &std::fs::read(&bad).unwrap()[..20]).unwrap();
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/petl-core/tests/fixtures/vit_tiny_google.npz");
    let out = dir.path().join("out");
    let args = |skip: bool| {
        let mut a = vec![
            "reproduce",
            "arc",
            "--vtab-root",
            vtab.to_str().unwrap(),
            "--tasks",
            "kitti",
            "--weights",
            weights.to_str().unwrap(),
            "--backbone",
            "vit-tiny-test",
            "--epochs",
            "1",
            "--methods",
            "arc",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        if skip {
            a.push("--skip-bad-samples");
        }
        a
    };
    let err = fails(&args(false));
    assert!(err.contains("000002.png"), "{err}");
    assert!(!out.exists(), "nothing written on refusal");
    let stdout = ok(&args(true));
    assert!(stdout.contains("skipped") && stdout.contains("000002.png"), "{stdout}");
    let skipped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vtab/kitti/skipped.json")).unwrap()).unwrap();
    let list = skipped.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0]["file"].as_str().unwrap().ends_with("000002.png") && list[0]["reason"].is_string());
    // Two unreadable test images of four: more than skipping allows.
    let other = vtab.join("kitti/images/test/000003.png");
    std::fs::write(&other, b"not an image").unwrap();
    let err = fails(&args(true));
    assert!(err.contains("2 of 4 images cannot be read"), "{err}");
}
