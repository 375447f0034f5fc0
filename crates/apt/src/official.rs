//! The official code's key names (`DoubtedSteam/APT`: the ViLT code base, `vilt_module_*.py`,
//! `vision_transformer_*.py`; the METER code base, see [`Official`] for [`Meter`]) → a
//! [`VlModel`] of this crate's [`VlTuner`]: the backbone through petl-core's renaming
//! ([`vilt_official`], [`meter_official`], in `weights::families`), then the heads,
//! `token4classifier` and the method's tensors. ViLT:
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

use petl_core::meter::Meter;
use petl_core::vilt::Vilt;
use petl_core::vl_model::{VlBackbone, VlHead, VlHeadKind, VlModel};
use petl_core::weights::families::{count_blocks, meter_official, vilt_official};
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

/// A backbone whose official APT checkpoints [`load`] reads: how its backbone keys are renamed
/// and where its method tensors sit.
pub trait Official: VlBackbone {
    /// Splits an official state dict into the backbone's tensors (our paths) and the rest.
    ///
    /// # Errors
    /// A backbone key missing from the file (named).
    fn backbone_map(&self, src: TensorMap) -> Result<(TensorMap, TensorMap)>;
    /// Moves the method tensors among `rest` to our tuner paths in `dst`.
    fn tuner_map(&self, rest: &mut BTreeMap<String, HostTensor>, dst: &mut TensorMap);
}

impl Official for Vilt {
    fn backbone_map(&self, src: TensorMap) -> Result<(TensorMap, TensorMap)> {
        vilt_official(src, self.token_type_embeddings.weight.dims()[0])
    }

    fn tuner_map(&self, rest: &mut BTreeMap<String, HostTensor>, tuner_map: &mut TensorMap) {
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
        let layers = self.transformer.blocks.len();
        for i in 0..layers {
            let b = format!("transformer.blocks.{i}");
            for (theirs, ours) in [("adapter0", "attn"), ("adapter1", "mlp")] {
                take_linear(rest, &format!("{b}.{theirs}.down_sampler"), &format!("{ours}.{i}.down"), tuner_map);
                take_linear(rest, &format!("{b}.{theirs}.up_sampler"), &format!("{ours}.{i}.up"), tuner_map);
            }
            take_norm(
                rest,
                &format!("{b}.attn.PA.adapter_layer_norm_before"),
                &format!("branches.{i}.norm"),
                tuner_map,
            );
            take_linear(rest, &format!("{b}.attn.PA.down_proj"), &format!("branches.{i}.down"), tuner_map);
            take_linear(rest, &format!("{b}.attn.PA.up_proj"), &format!("branches.{i}.up"), tuner_map);
        }
    }
}

/// METER (`DoubtedSteam/APT`, `METER/meter/modules/bert_model_*.py`, `meter_module_*.py`):
/// with `L.` = `cross_modal_{text,image}_layers.{i}.` (our fusion block `g` = `i` for the text
/// stream, `layers + i` for the image stream) and `S` = `attention` (ours: the block's
/// self-attention modules) or `crossattention` (ours: `cross.*`, `cross_query`, `cross_value`):
///
/// | official key | ours |
/// |---|---|
/// | `L.S.output.APT.{mm_tokens, mm.0.weight, mm.1.weight, scale}` | `{modules,cross}.{g}.{prompts, a (ᵀ), b (ᵀ), scale}` |
/// | `L.S.self.{q,v}_lora.lora_{A,B}` (raw, not transposed) | `{query,value}.{g}` / `cross_{query,value}.{g}` `.{a,b}` |
/// | `L.{attention.output, crossattention.output, output}.adapter.{down,up}_sampler` | `{attn, cross, mlp}.{g}.{down,up}` |
/// | `L.S.output.PA.{adapter_layer_norm_before, down_proj, up_proj}` | `{branches,cross}.{g}.{norm, down, up}` |
/// | `prompts.0` `[layers, 1, M, D]`, prepended to the text stream where the image layers read it | `cross.{layers + i}` |
/// | `prompts.1`, prepended to the image stream where the text layers read it | `cross.{i}` |
impl Official for Meter {
    fn backbone_map(&self, src: TensorMap) -> Result<(TensorMap, TensorMap)> {
        let grid = self.resolution() / self.vision.patch_embed.kernel_size[0];
        meter_official(src, grid, self.token_type_embeddings.weight.dims()[0])
    }

    fn tuner_map(&self, rest: &mut BTreeMap<String, HostTensor>, tuner_map: &mut TensorMap) {
        let layers = self.text_layers.len();
        for (stream, offset) in [("text", 0), ("image", layers)] {
            for i in 0..layers {
                let (l, g) = (format!("cross_modal_{stream}_layers.{i}"), offset + i);
                for (s, ours_apt, q, v) in [
                    ("attention", "modules", "query", "value"),
                    ("crossattention", "cross", "cross_query", "cross_value"),
                ] {
                    let apt = format!("{l}.{s}.output.APT");
                    for (theirs, ours, transpose) in [
                        ("mm_tokens", "prompts", false),
                        ("mm.0.weight", "a", true),
                        ("mm.1.weight", "b", true),
                        ("scale", "scale", false),
                    ] {
                        if let Some(t) = rest.remove(&format!("{apt}.{theirs}")) {
                            tuner_map.insert(format!("{ours_apt}.{g}.{ours}"), if transpose { t.t() } else { t });
                        }
                    }
                    for (lora, ours) in [("q_lora", q), ("v_lora", v)] {
                        for (theirs, leaf) in [("lora_A", "a"), ("lora_B", "b")] {
                            if let Some(t) = rest.remove(&format!("{l}.{s}.self.{lora}.{theirs}")) {
                                tuner_map.insert(format!("{ours}.{g}.{leaf}"), t);
                            }
                        }
                    }
                    let pa = format!("{l}.{s}.output.PA");
                    let branch = if s == "attention" { format!("branches.{g}") } else { format!("cross.{g}") };
                    take_norm(rest, &format!("{pa}.adapter_layer_norm_before"), &format!("{branch}.norm"), tuner_map);
                    take_linear(rest, &format!("{pa}.down_proj"), &format!("{branch}.down"), tuner_map);
                    take_linear(rest, &format!("{pa}.up_proj"), &format!("{branch}.up"), tuner_map);
                }
                for (site, ours) in
                    [("attention.output", "attn"), ("crossattention.output", "cross"), ("output", "mlp")]
                {
                    for (theirs, leaf) in [("down_sampler", "down"), ("up_sampler", "up")] {
                        take_linear(
                            rest,
                            &format!("{l}.{site}.adapter.{theirs}"),
                            &format!("{ours}.{g}.{leaf}"),
                            tuner_map,
                        );
                    }
                }
            }
        }
        for (name, offset) in [("prompts.0", layers), ("prompts.1", 0)] {
            if let Some(t) = rest.remove(name) {
                let (m, d) = (t.shape[t.shape.len() - 2], t.shape[t.shape.len() - 1]);
                for i in 0..t.shape[0] {
                    tuner_map.insert(
                        format!("cross.{}", offset + i),
                        HostTensor::new(vec![m, d], t.data[i * m * d..(i + 1) * m * d].to_vec()),
                    );
                }
            }
        }
    }
}

/// Loads an official ViLT or METER state dict (pretrained backbone only, or a fine-tuned
/// APT/baseline model) into `model`, applying what is present: backbone, heads, class token,
/// the tuner's tensors. The report lists, by our path, what was applied, what the model has
/// that the file lacks (`missing`: heads and method tensors of a pretrained-only file), and what
/// the file has that the model cannot take (`unexpected`, also keys of another method).
///
/// # Errors
/// A backbone key missing from the file (named).
pub fn load<E: Official>(model: VlModel<E, VlTuner>, src: TensorMap) -> Result<(VlModel<E, VlTuner>, LoadReport)> {
    let source = src.source.clone();
    let (backbone_map, rest) = model.backbone.backbone_map(src)?;
    let mut report = LoadReport::default();
    let mut tuner_map = TensorMap::new(&source);
    let mut rest = rest.tensors;
    model.backbone.tuner_map(&mut rest, &mut tuner_map);
    let backbone = load_part(model.backbone, backbone_map, "backbone", &mut report);

    for k in ["itm_score.fc.weight", "itm_score.fc.bias", "text_embeddings.position_ids"] {
        rest.remove(k);
    }
    // Pretraining heads, and the heads of tasks the port does not fine-tune (METER's SNLI-VE).
    rest.retain(|k, _| !k.starts_with("mlm_score.") && !k.starts_with("snli_classifier."));

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
    Ok((VlModel { backbone, tuner, class_token, head }, report))
}

/// A model with `tuner` and `head` on `backbone`, its retrieval head started from the file's ITM
/// head, loaded from the official state dict `map` ([`load`]). `class_token`: the token whose
/// embedding initialises `token4classifier` (a file that holds one overwrites it); `None` for
/// full tuning. A model key the file lacks is an error unless `may_be_missing` accepts it (a
/// pretrained file has no heads, method or class token); a mis-shaped key always is; keys the
/// model does not take (other tasks' heads) are allowed.
///
/// # Errors
/// A backbone key missing from the file, or the file not fitting the model (the keys named).
pub fn build<E: Official>(
    backbone: E,
    tuner: VlTuner,
    head: VlHeadKind,
    class_token: Option<usize>,
    map: TensorMap,
    may_be_missing: impl Fn(&str) -> bool,
    device: &Device,
) -> Result<VlModel<E, VlTuner>> {
    let itm = itm_head(&map, device);
    let model = VlModel::new(backbone, tuner, head, class_token, itm.as_ref(), device);
    let source = map.source.clone();
    let (model, report) = load(model, map)?;
    report.check_with(&source, may_be_missing, |_| true)?;
    Ok(model)
}

/// Attention heads, which a state dict does not record (the official code derives them from
/// the width: `width / 64`, which every released model follows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heads {
    /// ViLT's blocks, METER's fusion layers.
    pub model: Option<usize>,
    /// METER's RoBERTa.
    pub text: Option<usize>,
    /// METER's CLIP image tower.
    pub vision: Option<usize>,
}

/// What [`inspect`] reads off an official state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspected {
    /// Backbone and sizes (METER's image tower at the checkpoint's own resolution).
    pub backbone: crate::Backbone,
    /// The method whose tensors the file holds (classifier only when it has a
    /// `token4classifier` and no method tensor; full tuning when it has neither).
    pub variant: crate::Variant,
    /// The method's sizes (prompts, rank, bottlenecks) as stored.
    pub variants: crate::VariantConfig,
    /// Answers of its VQA head, when it has one.
    pub vqa_answers: Option<usize>,
}

fn dims(map: &TensorMap, key: &str) -> Result<Vec<usize>> {
    map.tensors.get(key).map(|t| t.shape.clone()).ok_or_else(|| Error::Weights {
        source_name: map.source.clone(),
        msg: format!("missing `{key}` (not an official ViLT/METER state dict?)"),
    })
}

fn heads_of(given: Option<usize>, width: usize, what: &str, source: &str) -> Result<usize> {
    let h = given.unwrap_or(width / 64);
    if h == 0 || width % h != 0 {
        return Err(Error::Weights {
            source_name: source.to_string(),
            msg: format!("{what} of width {width}: {h} heads do not divide it (give the number of heads)"),
        });
    }
    Ok(h)
}

/// Which official model `map` is, by a tensor only it has: `ViLT` (`text_embeddings.*`) or
/// `METER` (`cross_modal_text_transform`), as [`crate::Backbone::name`] names them; `None` for
/// anything else (a petl state dict, another model).
pub fn family(map: &TensorMap) -> Option<&'static str> {
    if map.tensors.contains_key("text_embeddings.word_embeddings.weight") {
        Some("ViLT")
    } else if map.tensors.contains_key("cross_modal_text_transform.weight") {
        Some("METER")
    } else {
        None
    }
}

/// Reads the backbone, method and sizes of an official ViLT or METER state dict (pretrained or
/// fine-tuned) off its tensors; only the heads come from `heads` (default `width / 64`).
///
/// # Errors
/// A file that is neither (named by a key it lacks), or heads that do not divide a width.
pub fn inspect(map: &TensorMap, heads: Heads) -> Result<Inspected> {
    use crate::{AptConfig, Variant, VariantConfig};
    let src = &map.source;
    let keys = || map.tensors.keys();
    let find = |pat: &str| keys().find(|k| k.contains(pat)).cloned();
    let mut variants = VariantConfig::new();
    let variant = if let Some(k) = find(".APT.mm_tokens") {
        let m = dims(map, &k)?[0];
        let r = dims(map, &k.replace("mm_tokens", "mm.0.weight"))?[0];
        variants.apt = AptConfig::new().with_num_prompts(m).with_rank(r);
        Variant::Apt
    } else if let Some(k) = find("lora_A") {
        variants.lora_rank = dims(map, &k)?[1];
        Variant::Lora
    } else if let Some(k) = find("adapter.down_sampler.weight").or_else(|| find("adapter0.down_sampler.weight")) {
        variants.adapter_bottleneck = dims(map, &k)?[0];
        Variant::Adapter
    } else if let Some(k) = find(".PA.down_proj.weight") {
        variants.pa_bottleneck = dims(map, &k)?[0];
        Variant::ScaledPa
    } else if let Some(k) = keys().find(|k| *k == "prompt" || k.starts_with("prompts.")).cloned() {
        let d = dims(map, &k)?;
        variants.deep_prompts = d[d.len() - 2];
        // The released METER code places its prompts in the cross-attention only.
        variants.meter_deep_prompt_cross_only = k.starts_with("prompts.");
        Variant::DeepPrompt
    } else if map.tensors.contains_key("token4classifier") {
        Variant::Classifier
    } else {
        Variant::Full
    };
    let vqa_answers = map.tensors.get("vqa_classifier.3.weight").map(|t| t.shape[0]);
    let family = family(map);
    // Dropout is not in a state dict: the official configs' `drop_rate` (0.1; ViLT: the blocks'
    // and the text embeddings'; METER: RoBERTa's and the fusion layers', attention probabilities
    // included; none in CLIP's tower) — active only while training.
    let drop = Some(0.1);
    let backbone = if family == Some("ViLT") {
        let [vocab, hidden] = dims(map, "text_embeddings.word_embeddings.weight")?[..] else { unreachable!() };
        let max_text_len = dims(map, "text_embeddings.position_embeddings.weight")?[0];
        let layers = count_blocks(map, "transformer.blocks.");
        let mlp = dims(map, "transformer.blocks.0.mlp.fc1.weight")?[0];
        let patch = dims(map, "transformer.patch_embed.proj.weight")?[2];
        let positions = dims(map, "transformer.pos_embed")?[1];
        let grid = ((positions - 1) as f64).sqrt().round() as usize;
        let heads = heads_of(heads.model, hidden, "ViLT", src)?;
        let types = dims(map, "token_type_embeddings.weight")?[0];
        let text_types = dims(map, "text_embeddings.token_type_embeddings.weight")?[0];
        crate::Backbone::Vilt(
            petl_core::vilt::ViltConfig::new(vocab, hidden, layers, heads, mlp, max_text_len, patch, grid * patch)
                .with_modality_types(types)
                .with_text_type_vocab(text_types)
                .with_dropout(drop),
        )
    } else if family == Some("METER") {
        use petl_core::bert::BertConfig;
        use petl_core::vit::{VitConfig, VitPooling};
        let t = "text_transformer.";
        let [vocab, t_hidden] = dims(map, &format!("{t}embeddings.word_embeddings.weight"))?[..] else {
            unreachable!()
        };
        let positions = dims(map, &format!("{t}embeddings.position_embeddings.weight"))?[0];
        let t_types = dims(map, &format!("{t}embeddings.token_type_embeddings.weight"))?[0];
        let t_layers = count_blocks(map, &format!("{t}encoder.layer."));
        let t_inter = dims(map, &format!("{t}encoder.layer.0.intermediate.dense.weight"))?[0];
        let text = BertConfig::new(
            vocab,
            t_hidden,
            t_layers,
            heads_of(heads.text, t_hidden, "RoBERTa", src)?,
            t_inter,
            positions,
        )
        .with_type_vocab_size(t_types)
        .with_layer_norm_eps(1e-5)
        .with_pad_token_id(1)
        .with_roberta_positions(true)
        .with_hidden_dropout_prob(drop)
        .with_attention_probs_dropout_prob(drop);
        let v = "vit_model.visual.";
        let conv = dims(map, &format!("{v}conv1.weight"))?;
        let (width, patch) = (conv[0], conv[2]);
        let grid = ((dims(map, &format!("{v}positional_embedding"))?[0] - 1) as f64).sqrt().round() as usize;
        let v_layers = count_blocks(map, &format!("{v}transformer.resblocks."));
        let v_mlp = dims(map, &format!("{v}transformer.resblocks.0.mlp.c_fc.weight"))?[0];
        let vision = VitConfig::new(
            grid * patch,
            patch,
            width,
            v_layers,
            heads_of(heads.vision, width, "the CLIP tower", src)?,
            v_mlp,
        )
        .clip()
        .with_pooling(VitPooling::NormedClass);
        let hidden = dims(map, "cross_modal_text_transform.weight")?[0];
        let layers = count_blocks(map, "cross_modal_text_layers.");
        let inter = dims(map, "cross_modal_text_layers.0.intermediate.dense.weight")?[0];
        let types = dims(map, "token_type_embeddings.weight")?[0];
        crate::Backbone::Meter(
            petl_core::meter::MeterConfig::new(text, vision)
                .with_hidden_size(hidden)
                .with_num_layers(layers)
                .with_num_heads(heads_of(heads.model, hidden, "METER's fusion layers", src)?)
                .with_intermediate_size(inter)
                .with_modality_types(types)
                .with_hidden_dropout(drop)
                .with_attention_dropout(drop),
        )
    } else {
        return Err(Error::Weights {
            source_name: src.clone(),
            msg: "neither an official ViLT state dict (`text_embeddings.*`, `transformer.*`) nor a METER one \
                  (`text_transformer.*`, `vit_model.*`, `cross_modal_*`)"
                .into(),
        });
    };
    Ok(Inspected { backbone, variant, variants, vqa_answers })
}
