//! `cargo xtask bench --backbone vilt-b32|vilt-tiny|vilt-test|meter|meter-tiny|meter-test
//! --method apt,deep-prompt,adapter,scaled-pa,lora`: the inference and training-step time of the
//! APT paper's variants (Table 1, ViLT-B/32; Table 2, METER) on one random input, each against
//! the plain backbone (classifier only) measured in the same rounds, so that each method's extra
//! time can be set beside its extra FLOPs (`apt::accounting::extra_flops`). The paper's claim
//! checked here: APT adds 82 % fewer FLOPs than deep prompts (0.91G vs 5.14G on ViLT-B/32,
//! 2.31G vs 13.05G on METER), i.e. about 0.18× deep prompt's extra cost.

use anyhow::{Context, Result, bail};
use apt::accounting::{Arch, extra_flops};
use apt::{Backbone, Variant, VariantConfig, VlTuner};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use petl_core::bert::{BertConfig, TextInput};
use petl_core::meter::MeterConfig;
use petl_core::train::vl::{VlClassify, VlInput};
use petl_core::vilt::ViltConfig;
use petl_core::vit::{VitConfig, VitPooling};
use petl_core::vl_model::{VlBackbone, VlHead, VlHeadKind, VlModel};
use petl_core::weights::HostTensor;

use crate::apt::{CLS_ID, giga, variant_config};
use crate::bench::{BenchArgs, median};
use crate::save_json;

/// Text tokens of a METER input: the APT paper's `N_t = 41`, the count behind its METER FLOPs
/// (`apt::accounting`).
const METER_TEXT_LEN: usize = 41;

/// METER's default resolution here: 288 px, METER's NLVR2 fine-tuning resolution
/// (`zdou0830/METER` README: `task_finetune_nlvr2_clip_bert ... clip16 text_roberta
/// image_size=288`), whose pair head the bench uses; `--resolution 384` gives the token counts
/// of the APT paper's METER FLOPs (577 image tokens).
const METER_RESOLUTION: usize = 288;

/// The backbone presets of the APT bench (random weights): `vilt-b32`, `vilt-tiny` (ViLT-B/32
/// at ViT-Ti widths), `vilt-test` (milliseconds); `meter` (`meter_clip16_roberta`), `meter-tiny`
/// (METER at ViT-Ti widths: every tower and the fusion layers D 192, 3 heads, FFN 768, the same
/// depths and token counts), `meter-test` (milliseconds). `resolution`: the square image side
/// (default: the preset's).
pub(crate) fn preset(name: &str, resolution: Option<usize>) -> Result<Backbone> {
    let vilt = |c: ViltConfig| {
        Backbone::Vilt(ViltConfig { image_size: resolution.unwrap_or(c.image_size), ..c }.with_modality_types(3))
    };
    let res = resolution.unwrap_or(METER_RESOLUTION);
    let backbone = match name {
        "vilt-b32" => vilt(ViltConfig::vilt_b32()),
        "vilt-tiny" => vilt(ViltConfig::new(30522, 192, 12, 3, 768, 40, 32, 384)),
        "vilt-test" => vilt(ViltConfig::new(2000, 32, 2, 2, 64, 40, 8, 32)),
        "meter" => Backbone::Meter(MeterConfig::meter_clip16_roberta(res)),
        "meter-tiny" => {
            let paper = MeterConfig::meter_clip16_roberta(res);
            let (d, heads, ffn) = (192, 3, 768);
            Backbone::Meter(MeterConfig {
                text: BertConfig {
                    hidden_size: d,
                    num_attention_heads: heads,
                    intermediate_size: ffn,
                    ..paper.text.clone()
                },
                vision: VitConfig { hidden_size: d, num_heads: heads, mlp_dim: ffn, ..paper.vision.clone() },
                hidden_size: d,
                num_heads: heads,
                intermediate_size: ffn,
                ..paper
            })
        }
        "meter-test" => {
            let text = BertConfig::new(2000, 32, 1, 2, 64, 64).with_pad_token_id(1).with_roberta_positions(true);
            let vision =
                VitConfig::new(resolution.unwrap_or(32), 8, 32, 1, 2, 64).clip().with_pooling(VitPooling::NormedClass);
            Backbone::Meter(
                MeterConfig::new(text, vision)
                    .with_hidden_size(32)
                    .with_num_layers(2)
                    .with_num_heads(2)
                    .with_intermediate_size(64),
            )
        }
        other => bail!(
            "unknown APT bench backbone `{other}` (known: vilt-b32, vilt-tiny, vilt-test, meter, meter-tiny, meter-test)"
        ),
    };
    let resolution = resolution.map(|r| format!(" --resolution {r}")).unwrap_or_default();
    backbone.validate().with_context(|| format!("--backbone {name}{resolution}"))?;
    Ok(backbone)
}

/// Text tokens of the timed input: ViLT 40 (its `max_text_len`), METER the paper's 41.
fn text_len(bb: &Backbone) -> usize {
    match bb {
        Backbone::Vilt(c) => 40.min(c.max_text_len),
        Backbone::Meter(_) => METER_TEXT_LEN,
    }
}

/// The shape `extra_flops` takes for the timed input.
fn arch(bb: &Backbone) -> Arch {
    bb.arch(text_len(bb))
}

/// The table's first line after the CPU.
fn describe(bb: &Backbone, name: &str) -> String {
    let (text, image) = (text_len(bb), bb.image_tokens());
    match bb {
        Backbone::Vilt(c) => format!(
            "ViLT `{name}` (D {}, {} layers), {} px, {} tokens per sample ({text} text + class + {} patches)",
            c.hidden_size,
            c.num_layers,
            c.image_size,
            text + image,
            image - 1
        ),
        Backbone::Meter(c) => format!(
            "METER `{name}` (fusion D {}, {} layers per stream; text tower {} × {}, image tower {} × {}), {} px, \
             {text} text + {image} image tokens per stream pass (NLVR2 pair: two passes per sample)",
            c.hidden_size,
            c.num_layers,
            c.text.num_hidden_layers,
            c.text.hidden_size,
            c.vision.num_layers,
            c.vision.hidden_size,
            c.vision.image_size
        ),
    }
}

/// One row of the APT bench.
#[derive(Clone, Debug, serde::Serialize)]
struct BenchRow {
    backend: String,
    variant: Variant,
    /// Median seconds of one inference batch.
    infer_median_s: f64,
    /// Median seconds above the plain backbone's (classifier only) in the same run.
    extra_infer_s: f64,
    /// Median seconds of one training step (forward, backward, AdamW).
    step_median_s: f64,
    trainable_params: usize,
    adapter_params: usize,
    /// Closed-form additional FLOPs per sample at this input's token count.
    extra_flops: u64,
}

/// Medians of one variant on one backend.
struct Timed {
    infer_median_s: f64,
    step_median_s: f64,
    trainable_params: usize,
}

/// A weight of the head (reading it waits for the optimizer step on asynchronous backends).
fn head_weight<E: VlBackbone>(model: &VlModel<E, VlTuner>) -> Tensor<2> {
    match &model.head {
        VlHead::Vqa(h) | VlHead::Nlvr2(h) => h.fc2.weight.val(),
        VlHead::Rank(l) => l.weight.val(),
    }
}

/// `batch` random samples: `text_len` token ids in 1000..2000 (inside every preset's vocabulary,
/// clear of the special tokens), no padding, and an NLVR2 pair of twice the same random
/// `[3, S, S]` image (NLVR2's head reads two image slots).
fn random_pair(batch: usize, text_len: usize, image_size: usize, device: &Device) -> VlInput {
    let ids: Vec<i64> = (0..batch * text_len).map(|i| (i % 1000 + 1000) as i64).collect();
    let image = Tensor::random([batch, 3, image_size, image_size], Distribution::Normal(0.0, 1.0), device);
    VlInput {
        text: TextInput {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, text_len]), device),
            attention_mask: Tensor::ones([batch, text_len], device),
            token_type_ids: None,
        },
        images: vec![image.clone(), image],
    }
}

/// Times every variant around `backbone` (allocated once on `ad`, the autodiff device, and
/// shared by the variants' models: the PETL variants never write it, and an optimizer step of
/// full tuning replaces its tensors rather than writing them in place). Rounds: every variant
/// once per round, so slow drift of a noisy machine spreads over all.
fn time_variants<E: VlBackbone>(
    backbone: E,
    bb: &Backbone,
    variants: &[Variant],
    cfg: &VariantConfig,
    args: &BenchArgs,
    device: &Device,
    ad: &Device,
) -> Vec<Timed> {
    let layout = bb.layout();
    let input = |device: &Device| random_pair(args.batch, text_len(bb), bb.image_size(), device);
    let mut models: Vec<Option<VlModel<E, VlTuner>>> = variants
        .iter()
        .map(|&v| {
            // As in `reproduce apt`: full tuning pools the text's own first token, as ViLT's and
            // METER's fine-tuning do; the PETL variants learn APT's `token4classifier`.
            let class_token = (v != Variant::Full).then_some(CLS_ID);
            let m = VlModel::new(backbone.clone(), cfg.init(v, &layout, ad), VlHeadKind::Nlvr2, class_token, None, ad);
            Some(if v == Variant::Full { m.fully_trainable() } else { m.petl_trainable() })
        })
        .collect();
    drop(backbone);
    let mut optims: Vec<_> =
        variants.iter().map(|_| burn::optim::AdamWConfig::new().with_weight_decay(0.01).init()).collect();
    let (mut infer, mut step) = (vec![vec![]; variants.len()], vec![vec![]; variants.len()]);
    for round in 0..args.warmup + args.steps {
        for (i, slot) in models.iter_mut().enumerate() {
            let model = slot.take().expect("model");
            let valid = model.valid();
            let x = input(device);
            let t0 = std::time::Instant::now();
            let _ = HostTensor::from_tensor(&valid.vl_logits(x));
            let t_infer = t0.elapsed().as_secs_f64();
            drop(valid);
            let x = input(ad);
            let t0 = std::time::Instant::now();
            let loss = model.vl_logits(x).powf_scalar(2.0).mean();
            let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
            let model = optims[i].step(1e-4, model, grads);
            let _ = HostTensor::from_tensor(&head_weight(&model));
            let t_step = t0.elapsed().as_secs_f64();
            if round >= args.warmup {
                infer[i].push(t_infer);
                step[i].push(t_step);
            }
            *slot = Some(model);
        }
    }
    models
        .iter()
        .zip(infer.iter_mut().zip(&mut step))
        .map(|(m, (infer, step))| Timed {
            infer_median_s: median(infer),
            step_median_s: median(step),
            trainable_params: petl_core::accounting::measure_trainable(m.as_ref().expect("model")).0,
        })
        .collect()
}

/// `cargo xtask bench --backbone vilt-*|meter-*`: times the variants (classifier only added
/// as the baseline) on each backend; writes `bench-apt.md`, `bench-apt.json` (the rows) and
/// `bench-apt-config.json` (backbone config, variants' config, token counts, rounds, CPU).
pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    let bb = preset(&args.backbone, args.resolution)?;
    let cfg = variant_config(&args.set)?;
    let mut variants: Vec<Variant> =
        args.method.iter().map(|m| Variant::parse(m).map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    // The plain backbone first: every row's extra time is against it.
    variants.retain(|&v| v != Variant::Classifier);
    variants.insert(0, Variant::Classifier);
    let (arch, layout) = (arch(&bb), bb.layout());
    let mut rows = vec![];
    for backend in &args.backend {
        let device = petl_core::device::device_from_name(backend)?;
        let ad = device.clone().autodiff();
        ad.seed(0);
        let timed = match &bb {
            Backbone::Vilt(c) => time_variants(c.init(&ad), &bb, &variants, &cfg, args, &device, &ad),
            Backbone::Meter(c) => time_variants(c.init(&ad), &bb, &variants, &cfg, args, &device, &ad),
        };
        let plain = timed[0].infer_median_s;
        for (&v, t) in variants.iter().zip(timed) {
            let row = BenchRow {
                backend: backend.clone(),
                variant: v,
                infer_median_s: t.infer_median_s,
                extra_infer_s: t.infer_median_s - plain,
                step_median_s: t.step_median_s,
                trainable_params: t.trainable_params,
                adapter_params: cfg.num_params(v, &layout),
                extra_flops: extra_flops(arch, v, &cfg),
            };
            eprintln!(
                "{:>6} {:>15}: inference {:.3}s ({:+.3}s), step {:.3}s",
                row.backend,
                v.label(),
                row.infer_median_s,
                row.extra_infer_s,
                row.step_median_s
            );
            rows.push(row);
        }
    }
    let md = markdown(&bb, &rows, &cfg, args);
    let setup = serde_json::json!({
        "backbone": args.backbone, "config": bb, "variants": cfg,
        "text_tokens": text_len(&bb), "image_tokens": bb.image_tokens(),
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "cpu": petl_core::device::host_cpu(),
    });
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    petl_core::io::write_atomic(&args.out.join("bench-apt.md"), md.as_bytes())?;
    save_json(&args.out.join("bench-apt.json"), &serde_json::to_value(&rows)?)?;
    save_json(&args.out.join("bench-apt-config.json"), &setup)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{md}");
    }
    Ok(())
}

/// The table, and per backend APT's extra inference time as a ratio of deep prompt's.
fn markdown(bb: &Backbone, rows: &[BenchRow], cfg: &VariantConfig, args: &BenchArgs) -> String {
    use std::fmt::Write;
    let mut md = format!(
        "CPU: {}\n\n{}, batch {}, median of {} rounds after {} warm-up\n\n",
        petl_core::device::host_cpu(),
        describe(bb, &args.backbone),
        args.batch,
        args.steps,
        args.warmup
    );
    let _ = writeln!(
        md,
        "| backend | method | updated param | add. FLOPs/sample | inference (s) | extra inference (s) | train step (s) | trainable |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} | {:+.3} | {:.3} | {} |",
            r.backend,
            r.variant.label(),
            r.adapter_params,
            giga(r.extra_flops),
            r.infer_median_s,
            r.extra_infer_s,
            r.step_median_s,
            r.trainable_params
        );
    }
    let arch = arch(bb);
    for backend in &args.backend {
        let extra = |v: Variant| rows.iter().find(|r| &r.backend == backend && r.variant == v).map(|r| r.extra_infer_s);
        if let (Some(apt), Some(dp)) = (extra(Variant::Apt), extra(Variant::DeepPrompt)) {
            let _ = writeln!(
                md,
                "\n{backend}: APT's extra inference time is {:.2}× deep prompt's (FLOP ratio {:.2}; the paper: 0.18)",
                apt / dp,
                extra_flops(arch, Variant::Apt, cfg) as f64 / extra_flops(arch, Variant::DeepPrompt, cfg) as f64
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_at_384_px_has_the_token_counts_of_the_papers_flops() {
        let bench = arch(&preset("meter", Some(384)).unwrap());
        let cfg = VariantConfig::new();
        for v in [Variant::Apt, Variant::DeepPrompt, Variant::Adapter, Variant::ScaledPa, Variant::Lora] {
            assert_eq!(extra_flops(bench, v, &cfg), extra_flops(Arch::meter(), v, &cfg), "{v:?}");
        }
        assert!(matches!(bench, Arch::TwoStream { text_tokens: 41, image_tokens: 577, .. }));
    }

    #[test]
    fn a_resolution_off_the_patch_grid_is_refused() {
        let err = format!("{:#}", preset("meter-tiny", Some(300)).unwrap_err());
        assert!(err.contains("--resolution 300") && err.contains("16"), "{err}");
    }
}
