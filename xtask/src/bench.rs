//! `cargo xtask bench`: the same methods, backbone and batch on each backend (and PyTorch), in
//! one run: training-step time (the training loop's own step: forward + backward + AdamW with
//! clipping), inference time
//! (merged and unmerged where the method merges), samples/s, peak memory, trainable parameters
//! and optimizer-state bytes. Writes a markdown table, JSON and an SVG plot.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use clap::Args;
use petl_core::accounting::GradientCounts;
use petl_core::method::AnyModel;
use petl_core::model::BackboneConfig;
use petl_core::train::{TrainConfig, WarmupCosine};
use serde::{Deserialize, Serialize};

use crate::methods::{self, MethodSpec};
use crate::save_json;
use peakmem_alloc::PeakMemAllocTrait;

/// Options of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Methods (rows), comma-separated names (`cargo xtask methods`): arc, arc-att, lora,
    /// adapter, deep-prompt, linear, full.
    #[arg(long, value_delimiter = ',', default_value = "arc,lora,adapter,linear,full")]
    pub method: Vec<String>,
    /// Backbone preset (`vit-ti16` is the ViT-Tiny-like model of BACKENDS.md); `vilt-b32`,
    /// `vilt-tiny`, `meter` or `meter-tiny` bench the APT paper's variants (apt, deep-prompt,
    /// lora, adapter, scaled-pa, classifier, full) on ViLT or METER.
    #[arg(long, default_value = "vit-ti16")]
    pub backbone: String,
    /// Square image side of the `vilt-*` and `meter-*` backbones (default: the preset's; METER
    /// 288 px).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Backends, comma-separated (flex, ndarray, wgpu, tch, cuda: those compiled in).
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    pub backend: Vec<String>,
    /// Timed steps after warm-up.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Classes of the head.
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// Bottleneck D' of the methods that have one (ARC, the bottleneck adapter); default:
    /// each method's (ARC: 50). Shorthand for `--set bottleneck=N`.
    #[arg(long)]
    pub bottleneck: Option<usize>,
    /// Settings of the methods' configurations, `KEY=VALUE` (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Also run the same model in PyTorch (`tools/bench/bench_torch.py` with `python3`).
    #[arg(long)]
    pub against: Option<String>,
    /// Print the JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Output folder (bench.md, bench.json, bench.svg).
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
}

/// One measured (backend, method) row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Backend name (or `pytorch`).
    pub backend: String,
    /// Method label.
    pub method: String,
    /// Median training-step seconds.
    pub step_median_s: f64,
    /// Fastest step.
    pub step_min_s: f64,
    /// Slowest step.
    pub step_max_s: f64,
    /// Training samples per second at the median step.
    pub samples_per_s: f64,
    /// Median inference seconds per batch (unmerged).
    pub infer_median_s: f64,
    /// Median inference seconds per batch of the merged model, where the method merges.
    pub infer_merged_median_s: Option<f64>,
    /// Peak RSS while this row ran (bytes), where the OS reports it. Process-wide: memory the
    /// allocator kept from earlier rows counts too, so compare rows by `peak_heap_bytes`.
    pub peak_rss_bytes: Option<u64>,
    /// Peak of live heap bytes during this row above what was live when it started, counted
    /// by xtask's global allocator: weights, activations, gradients, optimizer state (host
    /// memory; device memory of GPU backends is not in it).
    pub peak_heap_bytes: Option<u64>,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Bytes of the gradients one backward pass produced (elements × 4 for f32): a law, equal
    /// to 4 × trainable parameters when frozen means frozen.
    pub gradient_bytes: usize,
    /// Gradient tensors one backward pass produced (one per trainable tensor).
    pub gradient_tensors: usize,
    /// Gradients found for parameters that do not require one (must be 0).
    pub frozen_with_gradient: usize,
    /// Serialized AdamW state after the steps (bytes).
    pub optimizer_state_bytes: usize,
    /// This row's step time ÷ PyTorch's for the same method (same run).
    pub ratio_vs_pytorch: Option<f64>,
}

/// The methods `tools/bench/bench_torch.py` implements (its `--method` choices).
const TORCH_TWINS: [&str; 6] = ["arc", "arc-att", "lora", "adapter", "linear", "full"];

/// The median (upper middle) of `v`, sorted in place.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Timing {
    steps: Vec<f64>,
    trainable: usize,
    gradients: GradientCounts,
    optimizer_state_bytes: usize,
}

/// Times `warmup + steps` training steps of `model` on a fixed random batch: the training loop's
/// own step ([`AnyModel::train_step`]: the classification task's forward and backward, global-norm
/// clipping, AdamW), without data loading.
fn time_training(
    model: Box<dyn AnyModel>,
    args: &BenchArgs,
    size: usize,
    device: &Device,
) -> Result<(Box<dyn AnyModel>, Timing)> {
    let x = Tensor::<4>::random([args.batch, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<i64> = (0..args.batch).map(|i| (i % args.classes) as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [args.batch]), device);
    let total = args.warmup + args.steps;
    let recipe = TrainConfig::new().with_lr(1e-3).with_warmup_epochs(0);
    let mut opt = model.optimization(&recipe, WarmupCosine::new(0, total));
    let (trainable, _) = model.measure_trainable();
    let mut model = model;
    let mut steps = vec![];
    let mut gradients = GradientCounts::default();
    for i in 0..total {
        let t0 = Instant::now();
        // Gradients are counted on the first (untimed unless warm-up is 0) step only.
        let (m, counts) = model.train_step((x.clone(), y.clone()), &mut opt, i == 0);
        model = m;
        if i >= args.warmup {
            steps.push(t0.elapsed().as_secs_f64());
        }
        if let Some(counts) = counts {
            gradients = counts;
        }
    }
    let optimizer_state_bytes = opt.optimizer.to_record().into_bytes().map(|b| b.len()).unwrap_or(0);
    Ok((model, Timing { steps, trainable, gradients, optimizer_state_bytes }))
}

/// Median inference seconds of `logits` on a fixed batch.
fn time_inference(logits: &dyn Fn(Tensor<4>) -> Tensor<2>, args: &BenchArgs, size: usize, device: &Device) -> f64 {
    let x = Tensor::<4>::random([args.batch, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let mut times = vec![];
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        logits(x.clone()).sum().into_scalar::<f32>();
        if i >= args.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    median(&mut times)
}

fn bench_row(spec: &MethodSpec, backbone: &BackboneConfig, backend: &str, args: &BenchArgs) -> Result<Row> {
    let device = petl_core::device::device_from_name(backend)?;
    let size = backbone.image_size();
    petl_core::accounting::reset_peak_rss();
    crate::GLOBAL.reset_peak_memory();
    device.seed(42);
    let model = spec.build(backbone, args.classes, &device.clone().autodiff())?;
    let train_device = device.clone().autodiff();
    let (model, timing) = time_training(model, args, size, &train_device)?;
    let eval = model.valid();
    let infer = time_inference(&|x| eval.logits(x), args, size, &device);
    let merged = if spec.entry.merges() {
        let merged = model.merged()?;
        Some(time_inference(&|x| merged.forward(x), args, size, &device))
    } else {
        None
    };
    let peak = petl_core::accounting::peak_rss_bytes();
    // Only the Rust CPU backends allocate tensors through the global allocator; libtorch and the
    // GPU backends have their own.
    let heap = matches!(backend, "flex" | "ndarray").then(|| crate::GLOBAL.get_peak_memory() as u64);
    let mut steps = timing.steps.clone();
    let step = median(&mut steps);
    Ok(Row {
        backend: backend.to_string(),
        method: spec.label().to_string(),
        step_median_s: step,
        step_min_s: steps[0],
        step_max_s: steps[steps.len() - 1],
        samples_per_s: args.batch as f64 / step,
        infer_median_s: infer,
        infer_merged_median_s: merged,
        peak_rss_bytes: peak,
        peak_heap_bytes: heap,
        trainable_params: timing.trainable,
        gradient_bytes: timing.gradients.bytes,
        gradient_tensors: timing.gradients.tensors,
        frozen_with_gradient: timing.gradients.frozen_with_gradient,
        optimizer_state_bytes: timing.optimizer_state_bytes,
        ratio_vs_pytorch: None,
    })
}

/// Runs `tools/bench/bench_torch.py` for one method; `None` when the script has no twin of it.
fn pytorch_row(spec: &MethodSpec, backbone: &BackboneConfig, args: &BenchArgs) -> Result<Option<Row>> {
    let name = spec.name();
    if !TORCH_TWINS.contains(&name) {
        return Ok(None);
    }
    let BackboneConfig::Vit(v) = backbone else { bail!("--against pytorch supports ViT backbones") };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/bench/bench_torch.py");
    let bottleneck = spec.config.get("bottleneck").and_then(|b| b.as_u64()).unwrap_or(50) as usize;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = |x: usize| x.to_string();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--method", name, "--image", &n(v.image_size), "--patch", &n(v.patch_size), "--dim", &n(v.hidden_size)])
        .args(["--layers", &n(v.num_layers), "--heads", &n(v.num_heads), "--mlp", &n(v.mlp_dim)])
        .args(["--classes", &n(args.classes), "--batch", &n(args.batch), "--steps", &n(args.steps)])
        .args(["--warmup", &n(args.warmup), "--threads", &n(threads), "--bottleneck", &n(bottleneck)])
        .output()
        .context("running python3 (needed for --against pytorch)")?;
    if !out.status.success() {
        bail!(
            "{} failed (does `python3 -c 'import torch'` work?): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing bench_torch.py output")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Some(Row {
        backend: format!("pytorch {} ({} threads)", v["torch"].as_str().unwrap_or("?"), threads),
        method: spec.label().to_string(),
        step_median_s: f("step_median_s"),
        step_min_s: f("step_min_s"),
        step_max_s: f("step_max_s"),
        samples_per_s: args.batch as f64 / f("step_median_s"),
        infer_median_s: f("infer_median_s"),
        infer_merged_median_s: None,
        peak_rss_bytes: None,
        peak_heap_bytes: None,
        trainable_params: v["trainable_params"].as_u64().unwrap_or(0) as usize,
        gradient_bytes: 0,
        gradient_tensors: 0,
        frozen_with_gradient: 0,
        optimizer_state_bytes: 0,
        ratio_vs_pytorch: Some(1.0),
    }))
}

fn markdown(rows: &[Row], args: &BenchArgs) -> String {
    let mut s = format!(
        "CPU: {}\n\nbackbone `{}`, batch {}, {} timed steps after {} warm-up (median [min–max]); \
         ÷ full: this row over full fine-tuning on the same backend; grads and optim state are \
         what the trainable set keeps (frozen weights keep none)\n\n",
        petl_core::device::host_cpu(),
        args.backbone,
        args.batch,
        args.steps,
        args.warmup
    );
    s += "| backend | method | train step (s) | samples/s | infer (s) | infer merged (s) | peak heap (MiB) | trainable | grads (KiB) | optim state (KiB) | step ÷ full | heap ÷ full | ÷ PyTorch |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let full_label = methods::find("full").map(|m| m.label()).unwrap_or("Full FT");
    let full = |backend: &str| rows.iter().find(|r| r.backend == backend && r.method == full_label);
    for r in rows {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
        let full = full(&r.backend).filter(|f| f.method != r.method);
        let heap_ratio = full.and_then(|f| Some(r.peak_heap_bytes? as f64 / f.peak_heap_bytes? as f64));
        s += &format!(
            "| {} | {} | {:.3} [{:.3}–{:.3}] | {:.1} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.backend,
            r.method,
            r.step_median_s,
            r.step_min_s,
            r.step_max_s,
            r.samples_per_s,
            r.infer_median_s,
            opt(r.infer_merged_median_s, &|v| format!("{v:.3}")),
            opt(r.peak_heap_bytes.map(|b| b as f64 / 1048576.0), &|v| format!("{v:.0}")),
            r.trainable_params,
            if r.gradient_bytes > 0 { format!("{:.1}", r.gradient_bytes as f64 / 1024.0) } else { "–".into() },
            if r.optimizer_state_bytes > 0 {
                format!("{:.1}", r.optimizer_state_bytes as f64 / 1024.0)
            } else {
                "–".into()
            },
            opt(full.map(|f| r.step_median_s / f.step_median_s), &|v| format!("{v:.2}")),
            opt(heap_ratio, &|v| format!("{v:.2}")),
            opt(r.ratio_vs_pytorch, &|v| format!("{v:.2}×")),
        );
    }
    s
}

/// A bar chart of median step time per (backend, method).
fn plot(rows: &[Row], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let labels: Vec<String> = rows.iter().map(|r| format!("{} / {}", r.backend, r.method)).collect();
    let max = rows.iter().map(|r| r.step_median_s).fold(0.0, f64::max).max(1e-6) * 1.1;
    let height = 80 + 28 * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("training step time (s, median)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(300)
        .build_cartesian_2d(0.0..max, (0..rows.len()).into_segmented())?;
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        Rectangle::new(
            [(0.0, SegmentValue::Exact(i)), (r.step_median_s, SegmentValue::Exact(i + 1))],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Entry point of `bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.backbone.starts_with("vilt") || args.backbone.starts_with("meter") {
        return crate::apt_bench::bench(&args);
    }
    if args.resolution.is_some() {
        bail!("--resolution applies to the vilt-* and meter-* backbones");
    }
    let backbone = BackboneConfig::preset(&args.backbone)?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if let Some(other) = args.against.as_deref().filter(|a| *a != "pytorch") {
        bail!("--against {other}: only `pytorch` is supported");
    }
    for b in &args.backend {
        petl_core::device::device_from_name(b)?;
    }
    let mut specs = args.method.iter().map(|m| MethodSpec::new(m, &backbone, false)).collect::<Result<Vec<_>>>()?;
    let sets = crate::settings(&args.set, &[("bottleneck", args.bottleneck.map(|b| b.to_string()))])?;
    methods::apply_sets(&mut specs, &sets)?;
    let mut rows = vec![];
    for spec in &specs {
        let torch = if args.against.is_some() { pytorch_row(spec, &backbone, &args)? } else { None };
        for backend in &args.backend {
            let mut row = bench_row(spec, &backbone, backend, &args)?;
            row.ratio_vs_pytorch = torch.as_ref().map(|t| row.step_median_s / t.step_median_s);
            if !args.json {
                eprintln!(
                    "{:>8} {:>8}: step {:.3}s, {:.1} samples/s",
                    row.backend, row.method, row.step_median_s, row.samples_per_s
                );
            }
            rows.push(row);
        }
        rows.extend(torch);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let md = markdown(&rows, &args);
    petl_core::io::write_atomic(&args.out.join("bench.md"), md.as_bytes())?;
    let json = serde_json::json!({"cpu": petl_core::device::host_cpu(), "backbone": args.backbone, "batch": args.batch, "steps": args.steps, "rows": rows});
    save_json(&args.out.join("bench.json"), &json)?;
    plot(&rows, &args.out.join("bench.svg"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{md}\nwrote {}/bench.md, bench.json, bench.svg", args.out.display());
    }
    Ok(())
}
