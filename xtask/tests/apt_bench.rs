//! `bench --backbone meter-*`: the APT paper's METER variants timed beside the plain backbone,
//! with the FLOP column of `apt::accounting::extra_flops` (Table 2's two-stream form) and the
//! trainable sets the paper states.

use std::process::Command;

use apt::accounting::{Arch, extra_flops};
use apt::{Variant, VariantConfig};
use petl_core::meter::MeterConfig;
use petl_core::vl_model::{MeterModel, VlHeadKind};

#[test]
fn apt_bench_times_meter_variants_beside_the_plain_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let args = [
        "bench",
        "--backbone",
        "meter-test",
        "--method",
        "apt,deep-prompt",
        "--batch",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "xtask {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));

    let read =
        |name: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap() };
    let setup = read("bench-apt-config.json");
    let meter: MeterConfig = serde_json::from_value(setup["config"]["meter"].clone()).unwrap();
    let variants: VariantConfig = serde_json::from_value(setup["variants"].clone()).unwrap();
    assert_eq!(variants, VariantConfig::new(), "no --set: the paper's variants");
    let grid = meter.vision.image_size / meter.vision.patch_size;
    assert_eq!(setup["text_tokens"], 41, "the APT paper's METER text length");
    assert_eq!(setup["image_tokens"].as_u64().unwrap() as usize, 1 + grid * grid, "class + patches");
    let arch = Arch::TwoStream {
        layers: meter.num_layers,
        dim: meter.hidden_size,
        text_tokens: 41,
        image_tokens: 1 + grid * grid,
        backbone_params: meter.num_params(),
    };

    let rows = read("bench-apt.json");
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["variant"].as_str().unwrap()).collect();
    assert_eq!(names, ["classifier", "apt", "deep-prompt"], "classifier only is measured first as the baseline");
    let device = petl_core::device::device_from_name("flex").unwrap();
    let layout = meter.layout();
    for (row, v) in rows.iter().zip([Variant::Classifier, Variant::Apt, Variant::DeepPrompt]) {
        let u = |key: &str| row[key].as_u64().unwrap();
        assert_eq!(u("extra_flops"), extra_flops(arch, v, &variants), "{v:?}: add. FLOPs");
        assert_eq!(u("adapter_params") as usize, variants.num_params(v, &layout), "{v:?}: updated param");
        let model = MeterModel::new(
            meter.init(&device),
            variants.init(v, &layout, &device),
            VlHeadKind::Nlvr2,
            Some(2),
            None,
            &device,
        );
        let want = variants.trainable_params(v, &layout) + model.petl_set_params_besides_tuner();
        assert_eq!(u("trainable_params") as usize, want, "{v:?}: the tuner, head, class token, poolers, token types");
        let f = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap();
        assert!(f(row, "step_median_s") > 0.0 && f(row, "infer_median_s") > 0.0, "{row}");
        let plain = f(&rows[0], "infer_median_s");
        assert_eq!(f(row, "extra_infer_s"), f(row, "infer_median_s") - plain, "{v:?}: against the plain backbone");
    }
    assert!(
        extra_flops(arch, Variant::Apt, &variants) < extra_flops(arch, Variant::DeepPrompt, &variants),
        "APT's closed form is below deep prompt's"
    );

    let extra = |v: &str| rows.iter().find(|r| r["variant"] == v).unwrap()["extra_infer_s"].as_f64().unwrap();
    let flops =
        extra_flops(arch, Variant::Apt, &variants) as f64 / extra_flops(arch, Variant::DeepPrompt, &variants) as f64;
    let want = format!(
        "flex: APT's extra inference time is {:.2}× deep prompt's (FLOP ratio {flops:.2}; the paper: 0.18)",
        extra("apt") / extra("deep-prompt")
    );
    assert!(stdout.lines().any(|l| l == want), "`{want}` in\n{stdout}");
    assert!(stdout.contains("METER `meter-test`") && stdout.contains("41 text + 17 image tokens"), "{stdout}");
    let md = std::fs::read_to_string(out.join("bench-apt.md")).unwrap();
    assert_eq!(md.trim_end(), stdout.trim_end(), "bench-apt.md holds the printed table");
}
