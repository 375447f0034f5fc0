//! The METER side of `reproduce apt`'s real-data run end to end: ViLT-format Arrow files made in
//! process (`petl_core::data::arrow_samples`), the tiny official-format METER
//! (`crates/apt/tests/fixtures/meter_tiny.safetensors`, `tools/fixtures/apt_meter.py`) with its
//! task heads and `token4classifier` dropped (a pretrained file, as METER's
//! `meter_clip16_288_roberta_pretrain.ckpt`), and a RoBERTa-style word tokenizer (`<s>` 0,
//! `<pad>` 1, `</s>` 2, as roberta-base) whose vocabulary fits the fixture's 64 tokens.

mod common;

use common::{fails, ok, pretrained_only, read_npy, s, write_npy};

use std::path::Path;

use petl_core::data::Samples;

/// A Hugging Face `tokenizer.json` laid out as roberta-base's (`<s>` 0, `<pad>` 1, `</s>` 2,
/// `<unk>` 3; `<s> text </s>` by `RobertaProcessing`), over a word-level vocabulary: every word
/// of `arrow_samples`' questions, statements and captions, so that it fits the fixture's 64
/// token embeddings. Returns the vocabulary size.
fn write_roberta_word_tokenizer(path: &Path) -> usize {
    let specials = ["<s>", "<pad>", "</s>", "<unk>"];
    let words = "what colour is the shape ? there left image has a both images have single red green blue yellow";
    let vocab: Vec<&str> = specials.iter().copied().chain(words.split(' ')).collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(id, t)| {
            serde_json::json!({ "id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                                "normalized": false, "special": true })
        })
        .collect();
    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": { "type": "Lowercase" },
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": { "type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                            "trim_offsets": true, "add_prefix_space": false },
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": ids, "unk_token": "<unk>" },
    });
    std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    vocab.len()
}

/// Every parameter path of `module` with whether it is trainable.
fn param_paths<M: burn::module::Module>(module: &M) -> Vec<(String, bool)> {
    use burn::module::{ModuleVisitor, Param};
    struct Paths {
        at: Vec<String>,
        out: Vec<(String, bool)>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.at.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.at.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<burn::Tensor<D>>) {
            self.out.push((self.at.join("."), p.val().is_require_grad()));
        }
    }
    let mut v = Paths { at: vec![], out: vec![] };
    module.visit(&mut v);
    v.out
}

/// The parameter groups a cell's `config.json` records give every trainable parameter of the
/// tiny METER the learning-rate multiplier and weight decay of METER's `set_schedule`
/// (`meter_utils.py`): `lr_mult_head` (`head_scale`) for the task head, `lr_mult_cross_modal`
/// (5) for every parameter whose official name holds `cross_modal` — everything but the
/// RoBERTa and CLIP towers (`text_transformer`, `vit_model`), `token_type_embeddings`,
/// `token4classifier`, the heads and the deep prompts (`prompts.{0,1}` on the model root) —
/// and no weight decay on biases and LayerNorm parameters. Checked under full tuning and every
/// method, on the pretrained `checkpoint`.
fn check_meter_lr_groups(config: &Path, head_scale: f64, checkpoint: &Path) {
    use apt::Backbone;
    use apt::official::{Heads, build, inspect};
    use apt::{Variant, VariantConfig};
    use petl_core::encoder::Encoder;
    use petl_core::vl_model::VlHeadKind;

    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let train = &config["train"];
    let groups = train["param_groups"].as_array().unwrap();
    // The last group whose fragments match wins; `a&b` asks for both.
    let setting = |path: &str| -> (f64, f64) {
        let mut out = (1.0, train["weight_decay"].as_f64().unwrap());
        for g in groups {
            let hit = g["contains"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().split('&').all(|p| path.contains(p)));
            if hit {
                out = (g["lr_scale"].as_f64().unwrap_or(1.0), g["weight_decay"].as_f64().unwrap_or(out.1));
            }
        }
        out
    };
    let map = petl_core::weights::read_checkpoint(checkpoint).unwrap();
    let found = inspect(&map, Heads { model: Some(4), text: Some(4), vision: Some(4) }).unwrap();
    let Backbone::Meter(cfg) = found.backbone else { panic!("a METER fixture") };
    let device = petl_core::device::device_from_name("flex").unwrap().autodiff();
    for variant in
        [Variant::Full, Variant::Apt, Variant::DeepPrompt, Variant::Lora, Variant::Adapter, Variant::ScaledPa]
    {
        let backbone = cfg.init(&device);
        let tuner = VariantConfig::new().init(variant, &backbone.layout(), &device);
        let class_token = (variant != Variant::Full).then_some(0);
        let head = VlHeadKind::Vqa { answers: 5 };
        let model = build(backbone, tuner, head, class_token, map.clone(), |_| true, &device).unwrap();
        let model = if variant == Variant::Full { model.fully_trainable() } else { model.petl_trainable() };
        let trainable: Vec<String> = param_paths(&model).into_iter().filter(|p| p.1).map(|p| p.0).collect();
        assert!(trainable.iter().any(|p| p.starts_with("tuner.")) || variant == Variant::Full, "{variant:?}");
        for path in &trainable {
            let not_cross_modal =
                ["backbone.text.", "backbone.vision.", "backbone.token_type_embeddings.", "class_token"];
            let want = if path.starts_with("head.") {
                head_scale
            } else if path.starts_with("tuner.DeepPrompt.") || not_cross_modal.iter().any(|p| path.starts_with(p)) {
                1.0
            } else {
                5.0
            };
            let no_decay = ["bias", "gamma", "beta"].iter().any(|leaf| path.ends_with(leaf));
            let (scale, decay) = setting(path);
            assert_eq!(scale, want, "{variant:?}: lr multiplier of {path}");
            assert_eq!(decay == 0.0, no_decay, "{variant:?}: weight decay {decay} of {path}");
        }
    }
}

/// `reproduce apt --backbone meter` on real-format files: every task with APT, LoRA and the
/// classifier at METER's view (48 px, the fixture's run resolution: the 32 px position table
/// resized on load) and RoBERTa's padding id; the table and results with every cell and metrics
/// in range; METER's learning-rate multipliers as the recorded parameter groups; the EvalAI
/// answer file; each cell's adapter predicts through `predict apt` (preprocessed and raw inputs;
/// the VQA adapter gives test-dev the answers the run wrote); a rerun reuses every cell; a
/// checkpoint of the other backbone is refused with one line before anything is written.
#[test]
fn apt_real_data_run_on_meter() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let data = p("data");
    petl_core::data::arrow_samples::write_vilt_samples(&data, 6, 40, 30).unwrap();
    let tokenizer = p("tokenizer.json");
    let vocab = write_roberta_word_tokenizer(&tokenizer);
    assert!(vocab <= 64, "the fixture's RoBERTa has 64 token embeddings");
    let ckpt = p("meter_pretrained.safetensors");
    pretrained_only("meter_tiny.safetensors", &ckpt);
    let out = p("out");
    let args = |ckpt: &Path, backbone: &str, out: &Path| -> Vec<String> {
        [
            "reproduce",
            "apt",
            "--backbone",
            backbone,
            "--data-root",
            &s(&data),
            "--checkpoint",
            &s(ckpt),
            "--tokenizer",
            &s(&tokenizer),
            "--heads",
            "4",
            "--resolution",
            "48",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--limit",
            "8",
            "--methods",
            "apt,lora,classifier",
            "--out",
            &s(out),
            "--quiet",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let run = |a: Vec<String>| ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let printed = run(args(&ckpt, "meter", &out));
    assert!(!printed.contains("reused"), "{printed}");

    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in ["| APT |", "| LoRA |", "| Classifier Only |"] {
        let line = table.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("{row} in\n{table}"));
        // Method | Updated Param | VQA | NLVR2 | IR R@1 | TR R@1 | Avg: every score filled in.
        let scores: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).skip(2).collect();
        assert_eq!(scores.len(), 5, "{table}");
        assert!(scores.iter().all(|c| c.parse::<f64>().is_ok()), "every score of {row}:\n{table}");
    }
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let cells = results["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9, "{results}");
    for task in ["vqa", "nlvr2", "retrieval"] {
        for method in ["apt", "lora", "classifier"] {
            let cell = cells
                .iter()
                .find(|c| c["task"] == task && c["variant"] == method)
                .unwrap_or_else(|| panic!("{task}/{method} in {results}"));
            let metrics = cell["metrics"].as_object().unwrap();
            let want: &[&str] = match task {
                "vqa" => &["vqa_score"],
                "nlvr2" => &["nlvr2_dev", "nlvr2_test1"],
                _ => &["i2t_r@1", "t2i_r@1", "i2t_r@10", "t2i_r@10"],
            };
            for key in want {
                assert!(metrics.keys().any(|k| k.contains(key)), "{task}/{method}: no {key} in {cell}");
            }
            for (k, v) in metrics {
                let v = v.as_f64().unwrap();
                // Percentages; `rsum` adds six recalls.
                let top = if k.ends_with("rsum") { 600.0 } else { 100.0 };
                assert!((0.0..=top).contains(&v), "{task}/{method}: {k} = {v}");
            }
            let cell_dir = out.join(task).join(method);
            assert!(cell_dir.join("adapter.safetensors").exists() && cell_dir.join("result.json").exists());
        }
    }
    // METER's learning-rate multipliers: heads ×50 (VQA), ×10 (NLVR2), the ranking head ×1.
    for (task, head_scale) in [("vqa", 50.0), ("nlvr2", 10.0), ("retrieval", 1.0)] {
        check_meter_lr_groups(&out.join(task).join("apt/config.json"), head_scale, &ckpt);
    }
    // test-dev: 6 images × 2 questions, `--limit 8` of them.
    let answers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("vqa/apt/vqa_test-dev.json")).unwrap()).unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 8);
    assert!(answers.iter().all(|a| a["question_id"].is_i64() && a["answer"].is_string()));

    // The adapters record METER, RoBERTa's padding id and the run's resolution.
    let stored = petl_core::checkpoint::stored_config(&out.join("vqa/apt/adapter.safetensors")).unwrap().unwrap();
    assert_eq!(stored["backbone_kind"], "meter", "{stored}");
    assert_eq!(stored["tokenizer"]["padding_id"], 1, "{stored}");
    assert_eq!(stored["tokenizer"]["vilt_prefix"], false, "{stored}");
    assert_eq!(stored["resolution"], 48, "{stored}");
    assert_eq!(stored["class_token_id"], 0, "<s> starts the class token: {stored}");
    let answer_count = stored["answers"].as_array().unwrap().len();

    // `predict apt` on the adapters: preprocessed ids (`<s> ... </s>` padded with 1) and pixels
    // (`[N, 3, 48, 48]`, NLVR2 `[N, 2, 3, 48, 48]`), then raw texts and images through the stored
    // tokenizer and METER's view.
    let ids: Vec<i64> = vec![0, 4, 5, 6, 7, 8, 2, 0, 10, 9, 8, 2, 1, 1];
    write_npy(&p("ids.npy"), &[2, 7], &ids);
    let px: Vec<f32> = (0..2 * 3 * 48 * 48).map(|i| ((i % 97) as f32 / 48.0) - 1.0).collect();
    write_npy(&p("px.npy"), &[2, 3, 48, 48], &px);
    let pairs: Vec<f32> = px.iter().chain(&px).copied().collect();
    write_npy(&p("pairs.npy"), &[2, 2, 3, 48, 48], &pairs);
    let predict = |cell: &str, inputs: &[&str], output: &str| -> (Vec<usize>, Vec<f32>) {
        let adapter = s(&out.join(cell).join("adapter.safetensors"));
        let mut a: Vec<String> =
            ["predict", "apt", "--checkpoint", &adapter, "--weights", &s(&ckpt)].map(String::from).to_vec();
        a.extend(inputs.iter().map(|x| x.to_string()));
        a.extend(["--output".to_string(), s(&p(output))]);
        run(a);
        let (shape, logits) = read_npy(&p(output));
        assert!(logits.iter().all(|v| v.is_finite()), "{cell}: {logits:?}");
        (shape, logits)
    };
    let npy = |pixels: &str| [s(&p("ids.npy")), s(&p(pixels))];
    let [ids_npy, px_npy] = npy("px.npy");
    let pre = ["--input-ids", &ids_npy, "--pixels", &px_npy];
    assert_eq!(predict("vqa/apt", &pre, "vqa.npy").0, vec![2, answer_count]);
    // The adapter rebuilt by `predict` answers test-dev as the run's own model did: its first 8
    // questions through METER's view and the tokenizer, argmax → the answers file.
    let options = petl_core::data::arrow::VlArrowOptions::new(petl_core::data::vl_views::meter_view(48));
    let test_dev =
        petl_core::data::arrow::VqaArrow::open(&[data.join("vqav2_test-dev.arrow")], answer_count, options).unwrap();
    let samples: Vec<_> = (0..8).map(|i| test_dev.get(i, None).unwrap()).collect();
    let texts: Vec<String> = samples.iter().map(|x| x.text.clone()).collect();
    let tok = petl_core::data::text::HfTokenizer::from_file(&tokenizer, 1, 64).unwrap();
    let batch = tok.encode(&texts, 14).unwrap();
    assert!(!batch.ids.contains(&3), "every word of the questions is in the vocabulary (no <unk>)");
    write_npy(&p("dev_ids.npy"), &[batch.rows, batch.len], &batch.ids);
    let pixels: Vec<f32> = samples.iter().flat_map(|x| x.images[0].iter().copied()).collect();
    write_npy(&p("dev_px.npy"), &[8, 3, 48, 48], &pixels);
    let (dev_ids, dev_px) = (s(&p("dev_ids.npy")), s(&p("dev_px.npy")));
    let (shape, logits) = predict("vqa/apt", &["--input-ids", &dev_ids, "--pixels", &dev_px], "dev.npy");
    assert_eq!(shape, vec![8, answer_count]);
    let answer_vocab = stored["answers"].as_array().unwrap();
    for (i, row) in logits.chunks(answer_count).enumerate() {
        let best = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
        assert_eq!(answer_vocab[best], answers[i]["answer"], "test-dev question {i}: {row:?}");
    }
    assert_eq!(predict("retrieval/lora", &pre, "irtr.npy").0, vec![2, 1]);
    let [ids_npy, pairs_npy] = npy("pairs.npy");
    let pre_pairs = ["--input-ids", &ids_npy, "--pixels", &pairs_npy];
    assert_eq!(predict("nlvr2/classifier", &pre_pairs, "nlvr2.npy").0, vec![2, 2]);

    for (i, rgb) in [[200u8, 30, 30], [30, 30, 200], [30, 200, 30]].iter().enumerate() {
        image::RgbImage::from_pixel(40 + 8 * i as u32, 30, image::Rgb(*rgb)).save(p(&format!("img{i}.png"))).unwrap();
    }
    std::fs::write(p("texts.txt"), "what colour is the shape ?\nis there a shape ?\na blue shape\n").unwrap();
    std::fs::write(p("images.txt"), "img0.png\nimg1.png\nimg2.png\n").unwrap();
    std::fs::write(p("pairs.txt"), "img0.png\timg1.png\nimg1.png\timg2.png\nimg2.png\timg0.png\n").unwrap();
    let (texts, images, pair_list) = (s(&p("texts.txt")), s(&p("images.txt")), s(&p("pairs.txt")));
    let raw = ["--text", &texts, "--images", &images];
    assert_eq!(predict("vqa/lora", &raw, "raw_vqa.npy").0, vec![3, answer_count]);
    assert_eq!(predict("retrieval/apt", &raw, "raw_irtr.npy").0, vec![3, 1]);
    let raw_pairs = ["--text", &texts, "--images", &pair_list];
    assert_eq!(predict("nlvr2/apt", &raw_pairs, "raw_nlvr2.npy").0, vec![3, 2]);

    // Rerun: every cell reused, the table rewritten.
    let again = run(args(&ckpt, "meter", &out));
    assert_eq!(again.matches("finished run reused").count(), 9, "{again}");
    assert!(out.join("table.md").exists());

    // The other backbone's checkpoint, or this one under the other --backbone: one line, nothing written.
    let vilt = p("vilt_pretrained.safetensors");
    pretrained_only("vilt_tiny.safetensors", &vilt);
    for (file, backbone, says) in [
        (&vilt, "meter", "a ViLT checkpoint, not --backbone meter"),
        (&ckpt, "vilt-b32", "a METER checkpoint, not --backbone vilt-b32"),
    ] {
        let other = p(&format!("refused-{backbone}"));
        let a = args(file, backbone, &other);
        let err = fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains(says), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!other.exists(), "nothing written on refusal");
    }
}
