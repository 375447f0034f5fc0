//! `predict apt` on the petl adapter checkpoints that `reproduce apt` writes in its run folders:
//! the embedded run's adapters with the pretraining cache as `--weights` give the logits of the
//! model the run trained (built here as the run builds it) on preprocessed and raw inputs; a
//! real-data run's adapter with the official checkpoint as `--weights` gives the answers the run
//! wrote; and every misfit (no `--weights`, a backbone of another width, another task, a tensor
//! missing) is refused naming the file and key.

mod common;

use common::{fails_one_line as fails, ok, pretrained_only, read_npy, s, write_npy};

use std::path::{Path, PathBuf};

use apt::{Variant, VariantConfig, VlTuner};
use burn::nn::LinearConfig;
use burn::prelude::*;
use petl_core::checkpoint::{load_adapter, save_adapter};
use petl_core::data::Samples;
use petl_core::data::preprocess::{Normalization, decode_rgb, to_chw_unit};
use petl_core::data::shapes::language::{ShapesVl, VlTask, word_tokenizer};
use petl_core::data::text::HfTokenizer;
use petl_core::data::vl::VlSample;
use petl_core::meter::MeterConfig;
use petl_core::train::vl::{VlClassify, VlInput, vl_input};
use petl_core::vilt::ViltConfig;
use petl_core::vl_model::{VlBackbone, VlModel};
use petl_core::weights::{HostTensor, TensorMap, apply, collect, read_safetensors, write_safetensors};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn device() -> Device {
    petl_core::device::device_from_name("flex").unwrap()
}

/// The stored config of an adapter checkpoint.
fn meta(adapter: &Path) -> serde_json::Value {
    load_adapter(adapter).unwrap().1
}

fn field<T: serde::de::DeserializeOwned>(meta: &serde_json::Value, key: &str) -> T {
    serde_json::from_value(meta[key].clone()).unwrap_or_else(|e| panic!("`{key}`: {e}"))
}

/// The logits of the model an embedded run trained, built here as `reproduce apt` builds it:
/// the pretrained backbone and ITM head from the cache file, `VlModel::new`, then the adapter's
/// tensors.
fn reference_logits(adapter: &Path, weights: &Path, input: VlInput) -> Vec<f32> {
    let meta = meta(adapter);
    match meta["backbone_kind"].as_str() {
        Some("meter") => reference(field::<MeterConfig>(&meta, "backbone").init(&device()), adapter, weights, input),
        _ => reference(field::<ViltConfig>(&meta, "backbone").init(&device()), adapter, weights, input),
    }
}

fn reference<E: VlBackbone>(backbone: E, adapter: &Path, weights: &Path, input: VlInput) -> Vec<f32> {
    let device = device();
    let (tensors, meta) = load_adapter(adapter).unwrap();
    let variant: Variant = field(&meta, "variant");
    let variants: VariantConfig = field(&meta, "variants");
    let mut map = read_safetensors(weights).unwrap();
    let mut itm_map = TensorMap::new("itm");
    for k in ["weight", "bias"] {
        itm_map.insert(k, map.tensors.remove(&format!("itm.{k}")).unwrap());
    }
    let [d_in, d_out] = itm_map.tensors["weight"].shape[..] else { panic!("ITM weight [in, out]") };
    let (backbone, report) = apply(backbone, map);
    report.check("weights", |_| false).unwrap();
    let (itm, report) = apply(LinearConfig::new(d_in, d_out).init(&device), itm_map);
    report.check("itm", |_| false).unwrap();
    let tuner = variants.init(variant, &backbone.layout(), &device);
    let model =
        VlModel::new(backbone, tuner, field(&meta, "head"), field(&meta, "class_token_id"), Some(&itm), &device);
    let (model, report) = apply(model, tensors);
    report.check("adapter", |k| variant != Variant::Full && !VlModel::<E, VlTuner>::in_petl_set(k)).unwrap();
    HostTensor::from_tensor(&model.vl_logits(input)).data
}

/// Generated samples of `task` at `side` px, as `--input-ids` / `--pixels` files and as the model
/// input the run's evaluation builds from them (`vl_input`, texts of at most `max_len` tokens).
fn samples(
    task: VlTask,
    side: usize,
    max_len: usize,
    dir: &Path,
    name: &str,
) -> (VlInput, Vec<VlSample>, PathBuf, PathBuf) {
    let data = ShapesVl::new(task, 6, side, 7);
    let items: Vec<VlSample> = (0..data.len()).map(|i| data.get(i, None).unwrap()).collect();
    let tokenizer = HfTokenizer::from_tokenizer(word_tokenizer().unwrap(), 0, "shapes words");
    let texts: Vec<String> = items.iter().map(|s| s.text.clone()).collect();
    let batch = tokenizer.encode(&texts, max_len).unwrap();
    let ids = dir.join(format!("{name}-ids.npy"));
    write_npy(&ids, &[batch.rows, batch.len], &batch.ids);
    let slots = items[0].images.len();
    let pixels: Vec<f32> = items.iter().flat_map(|s| s.images.iter().flatten().copied()).collect();
    let shape = if slots == 2 { vec![items.len(), 2, 3, side, side] } else { vec![items.len(), 3, side, side] };
    let px = dir.join(format!("{name}-px.npy"));
    write_npy(&px, &shape, &pixels);
    let input = vl_input(&tokenizer, max_len, &items, &device()).unwrap();
    (input, items, ids, px)
}

/// The file under `dir` whose path ends with `tail`.
fn find(dir: &Path, tail: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with(tail) {
                return path;
            }
        }
    }
    panic!("no {tail} under {}", dir.display())
}

/// The backbone a run cell trained from: the cache file its settings name.
fn run_weights(adapter: &Path) -> PathBuf {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.with_file_name("config.json")).unwrap()).unwrap();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/petl-cache")
        .join(config["inputs"]["weights"]["file"].as_str().unwrap())
}

/// `reproduce apt --scale smoke --tasks vqa,nlvr2` into `runs` with `extra` arguments (the
/// smoke pretraining is cached in `target/petl-cache/`).
fn smoke_run(runs: &Path, extra: &[&str]) {
    let mut args = strings(&["reproduce", "apt", "--scale", "smoke", "--tasks", "vqa,nlvr2", "--quiet"]);
    args.extend(strings(&["--out", &s(runs)]));
    args.extend(strings(extra));
    ok(&args);
}

fn predict(adapter: &Path, extra: &[&str], out: &Path) -> Vec<String> {
    let mut args = strings(&["predict", "apt", "--checkpoint", &s(adapter), "--output", &s(out)]);
    args.extend(strings(extra));
    args
}

/// An embedded smoke run (cached pretraining) for VQA and NLVR2 with APT, LoRA and full tuning:
/// `predict apt` on its adapters equals the model built as the run builds it, on the
/// preprocessed inputs (VQA, NLVR2 pairs), on raw texts and PNG files, and for full tuning
/// without `--weights`; misfits are refused by name.
#[test]
fn predict_apt_reads_embedded_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    smoke_run(&runs, &["--methods", "apt,lora,full"]);
    let weights = run_weights(&runs.join("vqa/apt/adapter.safetensors"));
    let w = s(&weights);
    let vqa_apt = runs.join("vqa/apt/adapter.safetensors");
    let stored = meta(&vqa_apt);
    assert_eq!((stored["paper"].as_str(), stored["tokenizer"].as_str()), (Some("apt"), Some("shapes-words")));
    let cfg: ViltConfig = field(&stored, "backbone");

    // Preprocessed inputs: VQA with APT, NLVR2 pairs with LoRA, VQA with full tuning.
    let (input, items, ids, px) = samples(VlTask::Vqa, cfg.image_size, cfg.max_text_len, dir.path(), "vqa");
    let out = dir.path().join("vqa.npy");
    let printed =
        ok(&predict(&vqa_apt, &["--weights", &w, "--task", "vqa", "--input-ids", &s(&ids), "--pixels", &s(&px)], &out));
    assert!(printed.contains("APT vqa logits [6, 24]"), "{printed}");
    let (shape, got) = read_npy(&out);
    assert_eq!(shape, vec![6, 24]);
    let want = reference_logits(&vqa_apt, &weights, input.clone());
    assert!(max_abs_diff(&got, &want) <= 1e-5, "VQA APT logits differ by {}", max_abs_diff(&got, &want));

    let nlvr_lora = runs.join("nlvr2/lora/adapter.safetensors");
    let (pair_input, _, pair_ids, pair_px) =
        samples(VlTask::Nlvr, cfg.image_size, cfg.max_text_len, dir.path(), "nlvr");
    let out = dir.path().join("nlvr.npy");
    ok(&predict(&nlvr_lora, &["--weights", &w, "--input-ids", &s(&pair_ids), "--pixels", &s(&pair_px)], &out));
    let (shape, got) = read_npy(&out);
    assert_eq!(shape, vec![6, 2]);
    let want = reference_logits(&nlvr_lora, &weights, pair_input);
    assert!(max_abs_diff(&got, &want) <= 1e-5, "NLVR2 LoRA logits differ by {}", max_abs_diff(&got, &want));

    let vqa_full = runs.join("vqa/full/adapter.safetensors");
    let out = dir.path().join("full.npy");
    ok(&predict(&vqa_full, &["--task", "vqa", "--input-ids", &s(&ids), "--pixels", &s(&px)], &out));
    let want = reference_logits(&vqa_full, &weights, input);
    assert!(max_abs_diff(&read_npy(&out).1, &want) <= 1e-5, "full tuning needs no --weights");

    // Raw inputs: the texts and the images as PNG files, through the built-in word tokenizer and
    // the embedded run's view (ImageNet normalisation at the image size).
    let (mean, std) = Normalization::Imagenet.mean_std();
    let side = cfg.image_size;
    let mut lines = vec![];
    for (i, item) in items.iter().enumerate() {
        let chw = &item.images[0];
        let img = image::RgbImage::from_fn(side as u32, side as u32, |x, y| {
            let at = |c: usize| chw[(c * side + y as usize) * side + x as usize];
            image::Rgb([0, 1, 2].map(|c| ((at(c) * std[c] + mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8))
        });
        img.save(dir.path().join(format!("img{i}.png"))).unwrap();
        lines.push(format!("img{i}.png"));
    }
    let texts: Vec<String> = items.iter().map(|s| s.text.clone()).collect();
    std::fs::write(dir.path().join("texts.txt"), texts.join("\n")).unwrap();
    std::fs::write(dir.path().join("images.txt"), lines.join("\n")).unwrap();
    let out = dir.path().join("raw.npy");
    let raw = ["--text", &s(&dir.path().join("texts.txt")), "--images", &s(&dir.path().join("images.txt"))];
    ok(&predict(&vqa_apt, &[&["--weights", w.as_str()][..], &raw[..]].concat(), &out));
    let mut pixels = vec![];
    for i in 0..items.len() {
        let mut chw = to_chw_unit(&decode_rgb(&dir.path().join(format!("img{i}.png"))).unwrap());
        Normalization::Imagenet.apply(&mut chw);
        pixels.extend(chw);
    }
    let tokenizer = HfTokenizer::from_tokenizer(word_tokenizer().unwrap(), 0, "shapes words");
    let text = tokenizer.encode(&texts, cfg.max_text_len).unwrap().input(0, items.len(), &device());
    let images = vec![Tensor::from_data(TensorData::new(pixels, [items.len(), 3, side, side]), &device())];
    let want = reference_logits(&vqa_apt, &weights, VlInput { text, images });
    let got = read_npy(&out).1;
    assert!(max_abs_diff(&got, &want) <= 1e-5, "raw-input logits differ by {}", max_abs_diff(&got, &want));

    // Refusals, each naming the file and what does not fit; nothing written.
    let npy = ["--input-ids", &s(&ids), "--pixels", &s(&px)];
    let never = dir.path().join("never.npy");
    let err = fails(&predict(&vqa_apt, &npy, &never));
    assert!(err.contains("vqa/apt/adapter.safetensors") && err.contains("--weights"), "{err}");
    let err =
        fails(&predict(&vqa_apt, &[&["--weights", w.as_str(), "--task", "nlvr2"][..], &npy[..]].concat(), &never));
    assert!(err.contains("adapter.safetensors") && err.contains("`vqa`") && err.contains("nlvr2"), "{err}");
    let err =
        fails(&predict(&vqa_apt, &[&["--weights", w.as_str(), "--variant", "lora"][..], &npy[..]].concat(), &never));
    assert!(err.contains("`apt` adapter") && err.contains("`lora`"), "{err}");
    // A backbone of another width in petl's layout.
    let narrow = ViltConfig { hidden_size: 16, mlp_dim: 32, ..cfg.clone() };
    let narrow_path = dir.path().join("narrow.safetensors");
    write_safetensors(&narrow_path, &collect(&narrow.init(&device()), |_, _| true), None).unwrap();
    let err = fails(&predict(&vqa_apt, &[&["--weights", &s(&narrow_path)][..], &npy[..]].concat(), &never));
    assert!(
        err.contains("narrow.safetensors")
            && err.contains("another backbone size")
            && err.contains(&format!("`word_embeddings.weight` has shape [{}, 16]", cfg.vocab_size)),
        "{err}"
    );
    // An adapter given as the backbone.
    let lora = s(&runs.join("vqa/lora/adapter.safetensors"));
    let err = fails(&predict(&vqa_apt, &[&["--weights", lora.as_str()][..], &npy[..]].concat(), &never));
    assert!(err.contains("vqa/lora/adapter.safetensors") && err.contains("a petl adapter checkpoint"), "{err}");
    // An adapter without one of its tensors.
    let (mut tensors, config) = load_adapter(&vqa_apt).unwrap();
    tensors.tensors.remove("head.Vqa.fc2.bias").unwrap();
    let broken = dir.path().join("broken.safetensors");
    save_adapter(&broken, &tensors, &config).unwrap();
    let err = fails(&predict(&broken, &[&["--weights", w.as_str()][..], &npy[..]].concat(), &never));
    assert!(
        err.contains("broken.safetensors") && err.contains("missing keys") && err.contains("head.Vqa.fc2.bias"),
        "{err}"
    );
    assert!(!never.exists(), "nothing written on refusal");
}

/// The embedded METER stand-in (`--backbone meter`): `predict apt` on its VQA APT and NLVR2 LoRA
/// adapters with its pretraining cache equals the model built as the run builds it.
#[test]
fn predict_apt_reads_embedded_meter_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    smoke_run(&runs, &["--backbone", "meter", "--methods", "apt,lora"]);
    for (tail, task) in [("vqa/apt/adapter.safetensors", VlTask::Vqa), ("nlvr2/lora/adapter.safetensors", VlTask::Nlvr)]
    {
        let adapter = find(&runs, tail);
        let stored = meta(&adapter);
        assert_eq!(stored["backbone_kind"], "meter");
        let cfg: MeterConfig = field(&stored, "backbone");
        let (input, _, ids, px) = samples(task, cfg.vision.image_size, cfg.text.max_text_len(), dir.path(), "m");
        let weights = run_weights(&adapter);
        let out = dir.path().join("m.npy");
        let args = ["--backbone", "meter", "--weights", &s(&weights), "--input-ids", &s(&ids), "--pixels", &s(&px)];
        ok(&predict(&adapter, &args, &out));
        let want = reference_logits(&adapter, &weights, input);
        let got = read_npy(&out).1;
        assert!(max_abs_diff(&got, &want) <= 1e-5, "{tail}: logits differ by {}", max_abs_diff(&got, &want));
    }
    // An official ViLT file as the frozen backbone of a METER adapter: one line naming both.
    let vilt = dir.path().join("vilt_official.safetensors");
    pretrained_only("vilt_tiny.safetensors", &vilt);
    let adapter = find(&runs, "vqa/apt/adapter.safetensors");
    let (_, _, ids, px) = samples(VlTask::Vqa, 16, 32, dir.path(), "v");
    let args = ["--weights", &s(&vilt), "--input-ids", &s(&ids), "--pixels", &s(&px)];
    let err = fails(&predict(&adapter, &args, &dir.path().join("v.npy")));
    assert!(
        err.contains("vilt_official.safetensors")
            && err.contains("an official ViLT checkpoint")
            && err.contains("METER"),
        "{err}"
    );
}

/// A real-data run (ViLT-format Arrow files made in process, the tiny official ViLT as its
/// pretrained checkpoint) saves its adapter with the tokenizer and view it used: `predict apt`
/// with the official file as `--weights` gives the answers the run wrote for test-dev, and reads
/// raw texts and images through the run's tokenizer, prefix and view.
#[test]
fn predict_apt_reads_a_real_data_adapter_with_official_weights() {
    use petl_core::data::arrow::{VlArrowOptions, VqaArrow};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    petl_core::data::arrow_samples::write_vilt_samples(&data, 6, 40, 30).unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    word_tokenizer().unwrap().save(&tokenizer, false).unwrap();
    // A pretrained-only ViLT: the fixture without its task heads and class token.
    let ckpt = dir.path().join("vilt_pretrained.safetensors");
    pretrained_only("vilt_tiny.safetensors", &ckpt);
    let out = dir.path().join("out");
    ok(&strings(&[
        "reproduce",
        "apt",
        "--data-root",
        &s(&data),
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
        "--tasks",
        "vqa",
        "--methods",
        "apt",
        "--out",
        &s(&out),
        "--quiet",
    ]));
    let adapter = out.join("vqa/apt/adapter.safetensors");
    let stored = meta(&adapter);
    assert_eq!(stored["backbone_kind"], "vilt");
    assert_eq!(stored["tokenizer"]["file"], s(&std::fs::canonicalize(&tokenizer).unwrap()));
    let answers: Vec<String> = field(&stored, "answers");
    let cfg: ViltConfig = field(&stored, "backbone");
    let max_len = stored["tokenizer"]["max_len"].as_u64().unwrap() as usize;

    // test-dev through the run's own view and prefix, tokenised as it tokenises.
    let view = petl_core::data::vl_views::vilt_view(32, cfg.patch_size as u32);
    let set = VqaArrow::open(
        &[data.join("vqav2_test-dev.arrow")],
        answers.len(),
        VlArrowOptions::new(view).with_vilt_prefix(),
    )
    .unwrap();
    let items: Vec<VlSample> = (0..set.len()).map(|i| set.get(i, None).unwrap()).collect();
    let texts: Vec<String> = items.iter().map(|s| s.text.clone()).collect();
    let batch = HfTokenizer::from_file(&tokenizer, 0, cfg.vocab_size)
        .unwrap()
        .with_truncation()
        .encode(&texts, max_len)
        .unwrap();
    let ids = dir.path().join("ids.npy");
    write_npy(&ids, &[batch.rows, batch.len], &batch.ids);
    let side = ((items[0].images[0].len() / 3) as f64).sqrt() as usize;
    let pixels: Vec<f32> = items.iter().flat_map(|s| s.images[0].iter().copied()).collect();
    let px = dir.path().join("px.npy");
    write_npy(&px, &[items.len(), 3, side, side], &pixels);
    let logits = dir.path().join("logits.npy");
    let official_weights = ["--weights", &s(&ckpt), "--task", "vqa"];
    ok(&predict(&adapter, &[&official_weights[..], &["--input-ids", &s(&ids), "--pixels", &s(&px)]].concat(), &logits));
    let (shape, got) = read_npy(&logits);
    assert_eq!(shape, vec![items.len(), answers.len()]);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vqa/apt/vqa_test-dev.json")).unwrap()).unwrap();
    for (i, row) in got.chunks(answers.len()).enumerate() {
        let best = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
        assert_eq!(written[i]["answer"], answers[best], "question {i}");
    }

    // Raw texts and images: the run's tokenizer file, ViLT's prefix and view.
    for (i, rgb) in [[200u8, 30, 30], [30, 30, 200]].iter().enumerate() {
        image::RgbImage::from_pixel(40, 30, image::Rgb(*rgb)).save(dir.path().join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(dir.path().join("texts.txt"), "what colour is the shape ?\nis there a shape ?\n").unwrap();
    std::fs::write(dir.path().join("images.txt"), "img0.png\nimg1.png\n").unwrap();
    let raw = ["--text", &s(&dir.path().join("texts.txt")), "--images", &s(&dir.path().join("images.txt"))];
    let out_raw = dir.path().join("raw.npy");
    ok(&predict(&adapter, &[&official_weights[..], &raw[..]].concat(), &out_raw));
    let (shape, got) = read_npy(&out_raw);
    assert_eq!(shape, vec![2, answers.len()]);
    assert!(got.iter().all(|v| v.is_finite()));
    let err = fails(&predict(&adapter, &raw, &out_raw));
    assert!(err.contains("--weights"), "{err}");
}
