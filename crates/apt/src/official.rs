//! The official code's key names (`DoubtedSteam/APT`, ViLT code base: `vilt_module_*.py`,
//! `vision_transformer_*.py`) → a [`ViltModel`] of this crate's [`VlTuner`]: the backbone through
//! petl-core's renaming ([`vilt_official`], in `weights::families`), then the heads, `token4classifier` and the method's
//! tensors:
//!
//! | official key | ours |
//! |---|---|
//! | `token4classifier` `[1, 1, D]` | `class_token` `[D]` |
//! | `vqa_classifier.{0,1,3}`, `nlvr2_classifier.{0,1,3}` | `head.{fc1,norm,fc2}` |
//! | `rank_output` | `head` (retrieval) |
//! | `transformer.blocks.{i}.attn.APT.{mm_tokens, mm.0.weight, mm.1.weight, scale}` | `modules.{i}.{prompts, a (ᵀ), b (ᵀ), scale}` |
//! | `prompt` `[L, 1, M, D]` (deep prompt, one tensor on the model root, appended to the sequence) | `prompts.{i}` `[M, D]` |
//! | `transformer.blocks.{i}.attn.{q,v}_lora.lora_{A,B}` (raw `[D, r]`, `[r, D]` parameters, not transposed) | `{query,value}.{i}.{a,b}` |
//! | `transformer.blocks.{i}.adapter{0,1}.{down,up}_sampler` | `{attn,mlp}.{i}.{down,up}` |
//! | `transformer.blocks.{i}.attn.PA.{adapter_layer_norm_before, down_proj, up_proj}` | `branches.{i}.{norm, down, up}` |
//!
//! `itm_score.*` (kept for the retrieval head's initialisation, see [`itm_head`]), `mlm_score.*`
//! and the `position_ids` buffer are not model parameters here.

use std::collections::BTreeMap;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use petl_core::vl_model::{ViltModel, VlHead};
use petl_core::weights::families::vilt_official;
use petl_core::weights::{HostTensor, LoadReport, TensorMap, apply};
use petl_core::{Error, Result};

use crate::VlTuner;

/// `prefix.leaf`, or `leaf` at the root.
fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() { leaf.to_string() } else { format!("{prefix}.{leaf}") }
}

/// Moves a torch Linear `theirs` (if present) to our `ours` (weight transposed).
fn take_linear(src: &mut BTreeMap<String, HostTensor>, theirs: &str, ours: &str, dst: &mut TensorMap) {
    if let Some(w) = src.remove(&format!("{theirs}.weight")) {
        dst.insert(join(ours, "weight"), w.t());
    }
    if let Some(b) = src.remove(&format!("{theirs}.bias")) {
        dst.insert(join(ours, "bias"), b);
    }
}

/// Moves a torch LayerNorm `theirs` (if present) to our `ours`.
fn take_norm(src: &mut BTreeMap<String, HostTensor>, theirs: &str, ours: &str, dst: &mut TensorMap) {
    for (t, o) in [("weight", "gamma"), ("bias", "beta")] {
        if let Some(v) = src.remove(&format!("{theirs}.{t}")) {
            dst.insert(join(ours, o), v);
        }
    }
}

/// Applies `map` to the part `module` of the model at `prefix`, adding what happened to `report`.
fn load_part<M: Module>(module: M, map: TensorMap, prefix: &str, report: &mut LoadReport) -> M {
    let (module, r) = apply(module, map);
    let p = |s: String| join(prefix, &s);
    report.applied.extend(r.applied.into_iter().map(p));
    report.missing.extend(r.missing.into_iter().map(p));
    report.unexpected.extend(r.unexpected.into_iter().map(p));
    report.mismatched.extend(r.mismatched.into_iter().map(|(a, b, c)| (p(a), b, c)));
    module
}

/// The pretrained ITM head `itm_score.fc` of an official state dict as a Linear `[D, 2]`
/// (the retrieval head starts from its "match" column), if present.
pub fn itm_head(src: &TensorMap, device: &Device) -> Option<Linear> {
    let w = src.tensors.get("itm_score.fc.weight")?;
    let b = src.tensors.get("itm_score.fc.bias")?;
    let mut l = LinearConfig::new(w.shape[1], w.shape[0]).init(device);
    l.weight = burn::module::Param::from_tensor(w.t().to_tensor(device));
    l.bias = Some(burn::module::Param::from_tensor(b.to_tensor(device)));
    Some(l)
}

/// Loads an official ViLT state dict (pretrained backbone only, or a fine-tuned APT/baseline
/// model) into `model`, applying what is present: backbone, heads, class token, the tuner's
/// tensors. The report lists, by our path, what was applied, what the model has that the file
/// lacks (`missing`: heads and method tensors of a pretrained-only file), and what the file has
/// that the model cannot take (`unexpected`, also keys of another method).
///
/// # Errors
/// A backbone key missing from the file (named).
pub fn load(model: ViltModel<VlTuner>, src: TensorMap) -> Result<(ViltModel<VlTuner>, LoadReport)> {
    let types = model.backbone.token_type_embeddings.weight.dims()[0];
    let source = src.source.clone();
    let (backbone_map, rest) = vilt_official(src, types)?;
    let mut report = LoadReport::default();
    let backbone = load_part(model.backbone, backbone_map, "backbone", &mut report);

    let mut rest = rest.tensors;
    for k in ["itm_score.fc.weight", "itm_score.fc.bias", "text_embeddings.position_ids"] {
        rest.remove(k);
    }
    rest.retain(|k, _| !k.starts_with("mlm_score."));

    // Heads: `{vqa,nlvr2}_classifier.{0,1,3}` (Linear, LayerNorm, Linear), `rank_output`.
    let mut head_map = TensorMap::new(&source);
    let mut mlp_head = |prefix: &str, map: &mut TensorMap| {
        take_linear(&mut rest, &format!("{prefix}.0"), "fc1", map);
        take_norm(&mut rest, &format!("{prefix}.1"), "norm", map);
        take_linear(&mut rest, &format!("{prefix}.3"), "fc2", map);
    };
    let head = match model.head {
        VlHead::Vqa(h) => {
            mlp_head("vqa_classifier", &mut head_map);
            VlHead::Vqa(load_part(h, head_map, "head", &mut report))
        }
        VlHead::Nlvr2(h) => {
            mlp_head("nlvr2_classifier", &mut head_map);
            VlHead::Nlvr2(load_part(h, head_map, "head", &mut report))
        }
        VlHead::Rank(h) => {
            take_linear(&mut rest, "rank_output", "", &mut head_map);
            VlHead::Rank(load_part(h, head_map, "head", &mut report))
        }
    };
    // Heads of other tasks in the same file are not this model's.
    rest.retain(|k, _| {
        !(k.starts_with("vqa_classifier.") || k.starts_with("nlvr2_classifier.") || k.starts_with("rank_output."))
    });

    let class_token = match (model.class_token, rest.remove("token4classifier")) {
        (Some(p), Some(t)) => {
            let d = t.data.len();
            let mut m = TensorMap::new(&source);
            m.insert("class_token", t.reshape(vec![d]));
            #[derive(Module, Debug)]
            struct Holder {
                class_token: burn::module::Param<Tensor<1>>,
            }
            Some(load_part(Holder { class_token: p }, m, "", &mut report).class_token)
        }
        (Some(p), None) => {
            report.missing.push("class_token".into());
            Some(p)
        }
        (None, Some(_)) => {
            report.unexpected.push("token4classifier".into());
            None
        }
        (None, None) => None,
    };

    let mut tuner_map = TensorMap::new(&source);
    let block = |k: &str| -> Option<(usize, String)> {
        let inner = k.strip_prefix("transformer.blocks.")?;
        let (i, tail) = inner.split_once('.')?;
        Some((i.parse().ok()?, tail.to_string()))
    };
    let keys: Vec<String> = rest.keys().cloned().collect();
    for k in keys {
        if k == "prompt" {
            let t = rest.remove(&k).expect("listed");
            let (l, m, d) = (t.shape[0], t.shape[t.shape.len() - 2], t.shape[t.shape.len() - 1]);
            for i in 0..l {
                tuner_map.insert(
                    format!("prompts.{i}"),
                    HostTensor::new(vec![m, d], t.data[i * m * d..(i + 1) * m * d].to_vec()),
                );
            }
            continue;
        }
        let Some((i, tail)) = block(&k) else { continue };
        let ours = match tail.as_str() {
            "attn.APT.mm_tokens" => Some((format!("modules.{i}.prompts"), false)),
            "attn.APT.mm.0.weight" => Some((format!("modules.{i}.a"), true)),
            "attn.APT.mm.1.weight" => Some((format!("modules.{i}.b"), true)),
            "attn.APT.scale" => Some((format!("modules.{i}.scale"), false)),
            "attn.q_lora.lora_A" => Some((format!("query.{i}.a"), false)),
            "attn.q_lora.lora_B" => Some((format!("query.{i}.b"), false)),
            "attn.v_lora.lora_A" => Some((format!("value.{i}.a"), false)),
            "attn.v_lora.lora_B" => Some((format!("value.{i}.b"), false)),
            _ => None,
        };
        if let Some((path, transpose)) = ours {
            let t = rest.remove(&k).expect("listed");
            tuner_map.insert(path, if transpose { t.t() } else { t });
        }
    }
    let layers = backbone.transformer.blocks.len();
    for i in 0..layers {
        let b = format!("transformer.blocks.{i}");
        for (theirs, ours) in [("adapter0", "attn"), ("adapter1", "mlp")] {
            take_linear(&mut rest, &format!("{b}.{theirs}.down_sampler"), &format!("{ours}.{i}.down"), &mut tuner_map);
            take_linear(&mut rest, &format!("{b}.{theirs}.up_sampler"), &format!("{ours}.{i}.up"), &mut tuner_map);
        }
        take_norm(
            &mut rest,
            &format!("{b}.attn.PA.adapter_layer_norm_before"),
            &format!("branches.{i}.norm"),
            &mut tuner_map,
        );
        take_linear(&mut rest, &format!("{b}.attn.PA.down_proj"), &format!("branches.{i}.down"), &mut tuner_map);
        take_linear(&mut rest, &format!("{b}.attn.PA.up_proj"), &format!("branches.{i}.up"), &mut tuner_map);
    }
    let r = &mut report;
    let tuner = match model.tuner {
        VlTuner::Apt(t) => VlTuner::Apt(load_part(t, tuner_map, "tuner", r)),
        VlTuner::DeepPrompt(t) => VlTuner::DeepPrompt(load_part(t, tuner_map, "tuner", r)),
        VlTuner::Lora(t) => VlTuner::Lora(load_part(t, tuner_map, "tuner", r)),
        VlTuner::Adapter(t) => VlTuner::Adapter(load_part(t, tuner_map, "tuner", r)),
        VlTuner::ScaledPa(t) => VlTuner::ScaledPa(load_part(t, tuner_map, "tuner", r)),
        VlTuner::Plain(t) => {
            r.unexpected.extend(tuner_map.tensors.into_keys().map(|k| format!("tuner.{k}")));
            VlTuner::Plain(t)
        }
    };
    report.unexpected.extend(rest.into_keys());
    if report.applied.is_empty() {
        return Err(Error::Weights { source_name: source, msg: "no tensor of the file fits the model".into() });
    }
    Ok((ViltModel { backbone, tuner, class_token, head }, report))
}
