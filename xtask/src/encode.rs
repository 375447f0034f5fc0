//! `cargo xtask encode`: every layer's hidden states of a Hugging Face encoder folder, as
//! `output_hidden_states=True` gives them, written as safetensors.
//!
//! `--model DIR` holds `config.json` (its `model_type` picks the encoder: `bert`, `roberta`,
//! `clip_vision_model`, or `clip` for the image tower of a full CLIP folder), `model.safetensors`
//! (or `pytorch_model.bin`), and `tokenizer.json` (text) or `preprocessor_config.json` (images).
//! The output holds `hidden_states.{i}` `[N, T, D]` for i = 0 (embeddings) … L,
//! `attention_mask` `[N, T]` for text, and `pooled` `[N, D]`, all float32.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::TensorData;
use clap::Args;
use petl_core::bert::BertConfig;
use petl_core::data::hf_image::HfImageProcessor;
use petl_core::data::text::HfTokenizer;
use petl_core::encoder::{EncodeOptions, Encoder, EncoderOutput};
use petl_core::hooks::NoHooks;
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, TensorMap, apply, families, read_checkpoint};

/// Options of `encode`.
#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// A Hugging Face model folder (`config.json`, `model.safetensors`, tokenizer or image
    /// processor config).
    #[arg(long)]
    pub model: PathBuf,
    /// A text file, one text per line (text encoders).
    #[arg(long, conflicts_with = "images")]
    pub text: Option<PathBuf>,
    /// A text file, one image path per line, relative to the file's folder or absolute (image
    /// encoders).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output `.safetensors`.
    #[arg(long)]
    pub output: PathBuf,
    /// Backend.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

/// Stacks per-batch outputs along the first axis, on the host.
#[derive(Default)]
struct Stack {
    tensors: Vec<(String, HostTensor)>,
}

impl Stack {
    fn push(&mut self, key: String, t: HostTensor) {
        match self.tensors.iter_mut().find(|(k, _)| *k == key) {
            Some((_, acc)) => {
                acc.shape[0] += t.shape[0];
                acc.data.extend(t.data);
            }
            None => self.tensors.push((key, t)),
        }
    }

    fn push_output(&mut self, out: &EncoderOutput) {
        for (i, h) in out.hidden_states.iter().enumerate() {
            self.push(format!("hidden_states.{i}"), HostTensor::from_tensor(h));
        }
        self.push("pooled".into(), HostTensor::from_tensor(&out.pooled));
    }

    fn into_map(self, source: &Path) -> TensorMap {
        let mut map = TensorMap::new(source.display().to_string());
        for (k, v) in self.tensors {
            map.insert(k, v);
        }
        map
    }
}

fn weights(dir: &Path) -> Result<TensorMap> {
    let path = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .with_context(|| format!("{}: no model.safetensors or pytorch_model.bin", dir.display()))?;
    Ok(read_checkpoint(&path)?)
}

fn lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(str::to_owned).filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        bail!("{}: no lines", path.display());
    }
    Ok(lines)
}

fn model_type(config: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config.display()))?;
    Ok(v["model_type"].as_str().unwrap_or("").to_string())
}

/// Entry point of `encode`.
pub fn run(args: EncodeArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device = petl_core::device::device_from_name(&args.backend)?;
    let config = args.model.join("config.json");
    let options = EncodeOptions::with_hidden_states();
    let mut stack = Stack::default();
    let (n, kind) = match model_type(&config)?.as_str() {
        "bert" | "roberta" => {
            let Some(text) = &args.text else { bail!("{}: a text encoder: give --text FILE", args.model.display()) };
            let cfg = BertConfig::from_hf_config(&config)?;
            let tokenizer =
                HfTokenizer::from_file(&args.model.join("tokenizer.json"), cfg.pad_token_id as u32, cfg.vocab_size)?;
            let (model, report) = apply(cfg.init(&device), families::bert_hf(weights(&args.model)?)?);
            report.check(&args.model.display().to_string(), |_| false)?;
            let texts = lines(text)?;
            let tokens = tokenizer.encode(&texts, cfg.max_text_len()).with_context(|| text.display().to_string())?;
            for start in (0..tokens.rows).step_by(args.batch) {
                let input = tokens.input(start, (start + args.batch).min(tokens.rows), &device);
                model.check_input(&input)?;
                stack.push("attention_mask".into(), HostTensor::from_tensor(&input.attention_mask.clone().float()));
                stack.push_output(&model.encode(input, &NoHooks, options));
            }
            (tokens.rows, "texts")
        }
        "clip_vision_model" | "clip" => {
            let Some(list) = &args.images else {
                bail!("{}: an image encoder: give --images FILE", args.model.display())
            };
            let cfg = VitConfig::from_hf_clip_config(&config)?;
            let processor = HfImageProcessor::from_file(&args.model.join("preprocessor_config.json"))?;
            let side = cfg.image_size as u32;
            if processor.output_size(side, side) != (side, side) {
                bail!(
                    "{}: the image processor's output is not {side}×{side}, the model's input",
                    args.model.join("preprocessor_config.json").display()
                );
            }
            let (model, report) = apply(cfg.init(&device), families::clip_vision_hf(weights(&args.model)?)?);
            report.check(&args.model.display().to_string(), |_| false)?;
            let base = list.parent().unwrap_or(Path::new("."));
            let paths: Vec<PathBuf> = lines(list)?.iter().map(|l| base.join(l.trim())).collect();
            for chunk in paths.chunks(args.batch) {
                let mut data = vec![];
                for p in chunk {
                    data.extend(processor.load(p)?);
                }
                let x = Tensor::<4>::from_data(
                    TensorData::new(data, [chunk.len(), 3, side as usize, side as usize]),
                    &device,
                );
                stack.push_output(&model.encode(x, &NoHooks, options));
            }
            (paths.len(), "images")
        }
        other => {
            bail!("{}: model_type `{other}`; encode reads bert, roberta, clip_vision_model and clip", config.display())
        }
    };
    petl_core::weights::write_safetensors(&args.output, &stack.into_map(&args.output), None)?;
    println!("encoded {n} {kind} with {} to {}", args.model.display(), args.output.display());
    Ok(())
}
