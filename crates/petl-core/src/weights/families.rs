//! One pure renaming function per checkpoint family: foreign keys → our parameter paths
//! (relative to the backbone), with the transposes and reshapes that family needs.
//! Keys a family knows to be irrelevant (classification heads, recomputed buffers) are
//! dropped; everything else that is not mapped stays in the output and is reported as
//! unexpected by [`super::apply`].

use super::{HostTensor, TensorMap};
use crate::Result;

/// A tensor transform of a renaming step; `Err` says why the tensor's shape does not allow it.
type Transformed = std::result::Result<HostTensor, String>;

/// An error naming the source file and the checkpoint's key `key`.
fn misshaped(source: &str, key: &str, why: String) -> crate::Error {
    crate::Error::Weights { source_name: source.to_string(), msg: format!("`{key}`: {why}") }
}

fn rename(
    src: &mut TensorMap,
    dst: &mut TensorMap,
    from: &str,
    to: &str,
    f: impl FnOnce(HostTensor) -> Transformed,
) -> Result<()> {
    let t = src.take(from)?;
    dst.insert(to, f(t).map_err(|why| misshaped(&src.source, from, why))?);
    Ok(())
}

fn keep(t: HostTensor) -> Transformed {
    Ok(t)
}

/// A torch `[out, in]` matrix → ours (`[in, out]`).
fn transposed(t: HostTensor) -> Transformed {
    match t.shape[..] {
        [_, _] => Ok(t.t()),
        _ => Err(format!("shape {:?}, expected a matrix", t.shape)),
    }
}

/// A `[rows, cols]` table as `[1, rows, cols]` (a position table given its batch axis).
fn batched_table(t: HostTensor) -> Transformed {
    match t.shape[..] {
        [rows, cols] => Ok(t.reshape(vec![1, rows, cols])),
        _ => Err(format!("shape {:?}, expected [tokens, width]", t.shape)),
    }
}

/// A torch `Linear` (`[out, in]` weight, bias) → ours (`[in, out]`).
fn linear(src: &mut TensorMap, dst: &mut TensorMap, theirs: &str, ours: &str) -> Result<()> {
    rename(src, dst, &format!("{theirs}.weight"), &format!("{ours}.weight"), transposed)?;
    rename(src, dst, &format!("{theirs}.bias"), &format!("{ours}.bias"), keep)
}

/// A torch `LayerNorm` (`weight`/`bias`, or the older `gamma`/`beta`) → ours (`gamma`/`beta`).
fn norm(src: &mut TensorMap, dst: &mut TensorMap, theirs: &str, ours: &str) -> Result<()> {
    for (new, old) in [("weight", "gamma"), ("bias", "beta")] {
        let key = if src.tensors.contains_key(&format!("{theirs}.{new}")) { new } else { old };
        rename(src, dst, &format!("{theirs}.{key}"), &format!("{ours}.{old}"), keep)?;
    }
    Ok(())
}

/// A fused torch q|k|v projection (`[3D, D]` weight, `[3D]` bias) → our `{block}.{query,key,value}`
/// Linears (`[D, D]`, transposed).
fn split_qkv(src: &mut TensorMap, dst: &mut TensorMap, weight: &str, bias: &str, block: &str) -> Result<()> {
    let w = src.take(weight)?;
    let c = src.take(bias)?;
    let d = match w.shape[..] {
        [rows, d] if rows == 3 * d => d,
        _ => return Err(misshaped(&src.source, weight, format!("shape {:?}, expected [3 D, D]", w.shape))),
    };
    if c.shape != [3 * d] {
        return Err(misshaped(&src.source, bias, format!("shape {:?}, expected [{}]", c.shape, 3 * d)));
    }
    for (j, name) in ["query", "key", "value"].iter().enumerate() {
        dst.insert(format!("{block}.{name}.weight"), w.rows(j * d, (j + 1) * d).t());
        dst.insert(format!("{block}.{name}.bias"), c.rows(j * d, (j + 1) * d));
    }
    Ok(())
}

/// Moves every key not consumed by a family into `dst` so the strict check reports it.
fn leftovers(src: TensorMap, dst: &mut TensorMap, ignore: impl Fn(&str) -> bool) {
    for (k, v) in src.tensors {
        if !ignore(&k) {
            dst.insert(format!("<unmapped>{k}"), v);
        }
    }
}

/// Number of blocks in a checkpoint, from the largest index after `prefix`.
pub fn count_blocks(map: &TensorMap, prefix: &str) -> usize {
    map.tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split(['/', '.']).next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// A Flax conv kernel `[kh, kw, in, out]` → torch/Burn `[out, in, kh, kw]`.
fn flax_conv(t: HostTensor) -> Transformed {
    match t.shape.len() {
        4 => Ok(t.permute(&[3, 2, 0, 1])),
        _ => Err(format!("shape {:?}, expected [patch, patch, channels, D]", t.shape)),
    }
}

/// A Flax query/key/value kernel `[D, heads, D / heads]` → `[D, D]` (`[in, out]`).
fn flax_qkv(t: HostTensor) -> Transformed {
    match t.shape[..] {
        [d, heads, head_dim] if heads * head_dim == d => Ok(t.reshape(vec![d, d])),
        _ => Err(format!("shape {:?}, expected [D, heads, D / heads]", t.shape)),
    }
}

/// A Flax attention output kernel `[heads, D / heads, D]` → `[D, D]` (`[in, out]`).
fn flax_out(t: HostTensor) -> Transformed {
    match t.shape[..] {
        [heads, head_dim, d] if heads * head_dim == d => Ok(t.reshape(vec![d, d])),
        _ => Err(format!("shape {:?}, expected [heads, D / heads, D]", t.shape)),
    }
}

/// Google ViT `.npz` (IN-21k release; AugReg files share the layout) → [`crate::vit::Vit`]
/// paths. The names follow `big_vision`/`vit_jax` checkpoints as timm's `_load_weights` reads them;
/// `head/*` and `pre_logits/*` are dropped.
pub fn vit_google_npz(mut src: TensorMap) -> Result<TensorMap> {
    let mut dst = TensorMap::new(src.source.clone());
    let layers = count_blocks(&src, "Transformer/encoderblock_");
    rename(&mut src, &mut dst, "embedding/kernel", "patch_embed.weight", flax_conv)?;
    rename(&mut src, &mut dst, "embedding/bias", "patch_embed.bias", keep)?;
    rename(&mut src, &mut dst, "cls", "cls_token", keep)?;
    rename(&mut src, &mut dst, "Transformer/posembed_input/pos_embedding", "pos_embed", keep)?;
    rename(&mut src, &mut dst, "Transformer/encoder_norm/scale", "norm.gamma", keep)?;
    rename(&mut src, &mut dst, "Transformer/encoder_norm/bias", "norm.beta", keep)?;
    for i in 0..layers {
        let e = format!("Transformer/encoderblock_{i}");
        let b = format!("blocks.{i}");
        let attn = format!("{e}/MultiHeadDotProductAttention_1");
        for (ln, ours) in [("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")] {
            rename(&mut src, &mut dst, &format!("{e}/{ln}/scale"), &format!("{b}.{ours}.gamma"), keep)?;
            rename(&mut src, &mut dst, &format!("{e}/{ln}/bias"), &format!("{b}.{ours}.beta"), keep)?;
        }
        for (theirs, ours) in [("query", "query"), ("key", "key"), ("value", "value")] {
            rename(&mut src, &mut dst, &format!("{attn}/{theirs}/kernel"), &format!("{b}.{ours}.weight"), flax_qkv)?;
            rename(&mut src, &mut dst, &format!("{attn}/{theirs}/bias"), &format!("{b}.{ours}.bias"), |t| {
                let n = t.data.len();
                Ok(t.reshape(vec![n]))
            })?;
        }
        rename(&mut src, &mut dst, &format!("{attn}/out/kernel"), &format!("{b}.proj.weight"), flax_out)?;
        rename(&mut src, &mut dst, &format!("{attn}/out/bias"), &format!("{b}.proj.bias"), keep)?;
        for (dense, ours) in [("Dense_0", "fc1"), ("Dense_1", "fc2")] {
            rename(&mut src, &mut dst, &format!("{e}/MlpBlock_3/{dense}/kernel"), &format!("{b}.{ours}.weight"), keep)?;
            rename(&mut src, &mut dst, &format!("{e}/MlpBlock_3/{dense}/bias"), &format!("{b}.{ours}.bias"), keep)?;
        }
    }
    leftovers(src, &mut dst, |k| k.starts_with("head/") || k.starts_with("pre_logits/"));
    Ok(dst)
}

/// timm `vit_*` state dict (safetensors or `.pth`) → [`crate::vit::Vit`] paths: the fused
/// `qkv` is split into q, k, v and torch `[out, in]` weights are transposed. `head.*` is dropped.
pub fn vit_timm(mut src: TensorMap) -> Result<TensorMap> {
    let mut dst = TensorMap::new(src.source.clone());
    let layers = count_blocks(&src, "blocks.");
    rename(&mut src, &mut dst, "patch_embed.proj.weight", "patch_embed.weight", keep)?;
    rename(&mut src, &mut dst, "patch_embed.proj.bias", "patch_embed.bias", keep)?;
    rename(&mut src, &mut dst, "cls_token", "cls_token", keep)?;
    rename(&mut src, &mut dst, "pos_embed", "pos_embed", keep)?;
    rename(&mut src, &mut dst, "norm.weight", "norm.gamma", keep)?;
    rename(&mut src, &mut dst, "norm.bias", "norm.beta", keep)?;
    for i in 0..layers {
        let b = format!("blocks.{i}");
        for ln in ["norm1", "norm2"] {
            rename(&mut src, &mut dst, &format!("{b}.{ln}.weight"), &format!("{b}.{ln}.gamma"), keep)?;
            rename(&mut src, &mut dst, &format!("{b}.{ln}.bias"), &format!("{b}.{ln}.beta"), keep)?;
        }
        split_qkv(&mut src, &mut dst, &format!("{b}.attn.qkv.weight"), &format!("{b}.attn.qkv.bias"), &b)?;
        for (theirs, ours) in [("attn.proj", "proj"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2")] {
            rename(&mut src, &mut dst, &format!("{b}.{theirs}.weight"), &format!("{b}.{ours}.weight"), transposed)?;
            rename(&mut src, &mut dst, &format!("{b}.{theirs}.bias"), &format!("{b}.{ours}.bias"), keep)?;
        }
    }
    leftovers(src, &mut dst, |k| k.starts_with("head.") || k.starts_with("fc_norm."));
    Ok(dst)
}

/// timm / Microsoft Swin state dict (safetensors or `.pth`) → [`crate::swin::Swin`] paths
/// (timm's `checkpoint_filter_fn` layouts). Torch `[out, in]` Linear weights are transposed; the patch-embed
/// conv keeps its OIHW layout; `head.*` and the recomputed buffers
/// `*.attn.relative_position_index` and `*.attn_mask` are dropped.
///
/// Two layouts of PatchMerging are accepted, detected by key presence:
/// - timm 0.6.13 and the Microsoft release put it at the END of stages 0..S−2:
///   `layers.{s}.downsample.*`, `s` = 0..S−2 (recognised by `layers.0.downsample.*`);
/// - timm ≥ 0.9 (1.0.x) puts the same module at the START of stages 1..S−1:
///   `layers.{s+1}.downsample.*`.
///
/// Either way it becomes `stages.{s}.downsample.*` (after the blocks of our stage `s`).
pub fn swin_timm(mut src: TensorMap) -> Result<TensorMap> {
    let mut dst = TensorMap::new(src.source.clone());
    let stages = count_blocks(&src, "layers.");
    let merge_offset = if src.tensors.keys().any(|k| k.starts_with("layers.0.downsample.")) { 0 } else { 1 };
    rename(&mut src, &mut dst, "patch_embed.proj.weight", "patch_embed.weight", keep)?;
    rename(&mut src, &mut dst, "patch_embed.proj.bias", "patch_embed.bias", keep)?;
    rename(&mut src, &mut dst, "patch_embed.norm.weight", "patch_norm.gamma", keep)?;
    rename(&mut src, &mut dst, "patch_embed.norm.bias", "patch_norm.beta", keep)?;
    rename(&mut src, &mut dst, "norm.weight", "norm.gamma", keep)?;
    rename(&mut src, &mut dst, "norm.bias", "norm.beta", keep)?;
    for s in 0..stages {
        let blocks = count_blocks(&src, &format!("layers.{s}.blocks."));
        for i in 0..blocks {
            let e = format!("layers.{s}.blocks.{i}");
            let b = format!("stages.{s}.blocks.{i}");
            for ln in ["norm1", "norm2"] {
                rename(&mut src, &mut dst, &format!("{e}.{ln}.weight"), &format!("{b}.{ln}.gamma"), keep)?;
                rename(&mut src, &mut dst, &format!("{e}.{ln}.bias"), &format!("{b}.{ln}.beta"), keep)?;
            }
            for (theirs, ours) in [("attn.qkv", "qkv"), ("attn.proj", "proj"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2")] {
                rename(&mut src, &mut dst, &format!("{e}.{theirs}.weight"), &format!("{b}.{ours}.weight"), transposed)?;
                rename(&mut src, &mut dst, &format!("{e}.{theirs}.bias"), &format!("{b}.{ours}.bias"), keep)?;
            }
            rename(
                &mut src,
                &mut dst,
                &format!("{e}.attn.relative_position_bias_table"),
                &format!("{b}.relative_position_bias_table"),
                keep,
            )?;
        }
        if s + 1 < stages {
            let e = format!("layers.{}.downsample", s + merge_offset);
            let b = format!("stages.{s}.downsample");
            rename(&mut src, &mut dst, &format!("{e}.norm.weight"), &format!("{b}.norm.gamma"), keep)?;
            rename(&mut src, &mut dst, &format!("{e}.norm.bias"), &format!("{b}.norm.beta"), keep)?;
            rename(&mut src, &mut dst, &format!("{e}.reduction.weight"), &format!("{b}.reduction.weight"), transposed)?;
        }
    }
    leftovers(src, &mut dst, |k| {
        k.starts_with("head.") || k.ends_with(".relative_position_index") || k.ends_with(".attn_mask")
    });
    Ok(dst)
}

/// Hugging Face BERT / RoBERTa state dict (`model.safetensors`, `pytorch_model.bin`) →
/// [`crate::bert::Bert`] paths. The model prefix (`bert.`, `roberta.`) of task checkpoints is
/// stripped; LayerNorm parameters are read as `weight`/`bias` or the older `gamma`/`beta`; torch
/// `[out, in]` Linear weights are transposed. Task heads (`cls.*`, `lm_head.*`, `classifier.*`,
/// `qa_outputs.*`) and the `position_ids`/`token_type_ids` buffers are dropped.
pub fn bert_hf(src: TensorMap) -> Result<TensorMap> {
    let prefix = ["bert.", "roberta."]
        .into_iter()
        .find(|p| src.tensors.keys().any(|k| k.starts_with(&format!("{p}embeddings."))))
        .unwrap_or("");
    let mut src = TensorMap {
        source: src.source,
        tensors: src.tensors.into_iter().map(|(k, v)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), v)).collect(),
    };
    let mut dst = TensorMap::new(src.source.clone());
    for table in ["word_embeddings", "position_embeddings", "token_type_embeddings"] {
        rename(&mut src, &mut dst, &format!("embeddings.{table}.weight"), &format!("{table}.weight"), keep)?;
    }
    norm(&mut src, &mut dst, "embeddings.LayerNorm", "embed_norm")?;
    for i in 0..count_blocks(&src, "encoder.layer.") {
        let e = format!("encoder.layer.{i}");
        let b = format!("layers.{i}");
        for (theirs, ours) in [
            ("attention.self.query", "query"),
            ("attention.self.key", "key"),
            ("attention.self.value", "value"),
            ("attention.output.dense", "attn_out"),
            ("intermediate.dense", "fc1"),
            ("output.dense", "fc2"),
        ] {
            linear(&mut src, &mut dst, &format!("{e}.{theirs}"), &format!("{b}.{ours}"))?;
        }
        norm(&mut src, &mut dst, &format!("{e}.attention.output.LayerNorm"), &format!("{b}.attn_norm"))?;
        norm(&mut src, &mut dst, &format!("{e}.output.LayerNorm"), &format!("{b}.ffn_norm"))?;
    }
    linear(&mut src, &mut dst, "pooler.dense", "pooler")?;
    leftovers(src, &mut dst, |k| {
        ["cls.", "lm_head.", "classifier.", "qa_outputs."].iter().any(|p| k.starts_with(p))
            || k.ends_with("position_ids")
            || k.ends_with("token_type_ids")
    });
    Ok(dst)
}

/// Hugging Face CLIP image tower (`CLIPVisionModel`, or the `vision_model.*` part of a full
/// `CLIPModel`, whose other keys are dropped) → [`crate::vit::Vit`] paths of a
/// [`crate::vit::VitConfig::clip`] model. Torch Linear weights are transposed; the class embedding
/// `[D]` and position table `[N, D]` get their batch axis. The `position_ids` buffer is dropped.
pub fn clip_vision_hf(src: TensorMap) -> Result<TensorMap> {
    // `CLIPModel` and older `CLIPVisionModel` files prefix the tower with `vision_model.`;
    // transformers 5 saves `CLIPVisionModel` without it.
    let nested = src.tensors.keys().any(|k| k.starts_with("vision_model."));
    let mut src = TensorMap {
        source: src.source,
        tensors: src
            .tensors
            .into_iter()
            .filter_map(|(k, v)| match k.strip_prefix("vision_model.") {
                Some(inner) => Some((inner.to_string(), v)),
                None if nested => None,
                None => Some((k, v)),
            })
            .collect(),
    };
    let mut dst = TensorMap::new(src.source.clone());
    rename(&mut src, &mut dst, "embeddings.patch_embedding.weight", "patch_embed.weight", keep)?;
    rename(&mut src, &mut dst, "embeddings.class_embedding", "cls_token", |t| {
        let d = t.data.len();
        Ok(t.reshape(vec![1, 1, d]))
    })?;
    rename(&mut src, &mut dst, "embeddings.position_embedding.weight", "pos_embed", batched_table)?;
    norm(&mut src, &mut dst, "pre_layrnorm", "pre_norm")?;
    norm(&mut src, &mut dst, "post_layernorm", "norm")?;
    for i in 0..count_blocks(&src, "encoder.layers.") {
        let e = format!("encoder.layers.{i}");
        let b = format!("blocks.{i}");
        for (theirs, ours) in [
            ("self_attn.q_proj", "query"),
            ("self_attn.k_proj", "key"),
            ("self_attn.v_proj", "value"),
            ("self_attn.out_proj", "proj"),
            ("mlp.fc1", "fc1"),
            ("mlp.fc2", "fc2"),
        ] {
            linear(&mut src, &mut dst, &format!("{e}.{theirs}"), &format!("{b}.{ours}"))?;
        }
        norm(&mut src, &mut dst, &format!("{e}.layer_norm1"), &format!("{b}.norm1"))?;
        norm(&mut src, &mut dst, &format!("{e}.layer_norm2"), &format!("{b}.norm2"))?;
    }
    leftovers(src, &mut dst, |k| k.ends_with("position_ids"));
    Ok(dst)
}

/// The official ViLT checkpoint's backbone keys (`vilt_200k_mlm_itm.ckpt`; `text_embeddings.*`,
/// `token_type_embeddings`, `transformer.*` as timm's ViT via [`vit_timm`], `pooler.dense`) →
/// [`crate::vilt::Vilt`] paths. Keys of heads (`itm_score.*`, `mlm_score.*`, task classifiers,
/// `rank_output`, `token4classifier`) and of PETL modules are returned apart (`rest`) for the
/// caller. When the model has more modality types than the checkpoint (NLVR2: 3 rows), the
/// missing rows copy the last one, as the official NLVR2 fine-tuning does.
///
/// # Errors
/// A missing backbone key (named).
pub fn vilt_official(src: TensorMap, modality_types: usize) -> Result<(TensorMap, TensorMap)> {
    let source = src.source.clone();
    let (mut text, mut vit, mut rest) = (TensorMap::new(&source), TensorMap::new(&source), TensorMap::new(&source));
    for (k, v) in src.tensors {
        if let Some(inner) = k.strip_prefix("transformer.") {
            // PETL modules inside the blocks stay with the caller.
            if is_petl_key(inner) {
                rest.insert(k, v);
            } else {
                vit.insert(inner, v);
            }
        } else if k.starts_with("text_embeddings.")
            || k == "token_type_embeddings.weight"
            || k.starts_with("pooler.dense.")
        {
            text.insert(k, v);
        } else {
            rest.insert(k, v);
        }
    }
    let mut dst = TensorMap::new(&source);
    for (k, v) in vit_timm(vit)?.tensors {
        dst.insert(format!("transformer.{k}"), v);
    }
    let e = "text_embeddings";
    for table in ["word_embeddings", "position_embeddings"] {
        rename(&mut text, &mut dst, &format!("{e}.{table}.weight"), &format!("{table}.weight"), keep)?;
    }
    rename(
        &mut text,
        &mut dst,
        &format!("{e}.token_type_embeddings.weight"),
        "text_token_type_embeddings.weight",
        keep,
    )?;
    norm(&mut text, &mut dst, &format!("{e}.LayerNorm"), "text_norm")?;
    linear(&mut text, &mut dst, "pooler.dense", "pooler")?;
    rename(&mut text, &mut dst, "token_type_embeddings.weight", "token_type_embeddings.weight", |t| {
        grow_rows(t, modality_types)
    })?;
    leftovers(text, &mut dst, |k| k.ends_with("position_ids"));
    Ok((dst, rest))
}

/// OpenAI CLIP's image tower (`visual.*` of the original CLIP release and of METER's
/// `vit_model.visual.*`, prefix stripped) → [`crate::vit::Vit`] paths of a CLIP-form model:
/// `conv1` → patch embedding, `class_embedding` `[D]` and `positional_embedding` `[N, D]` get
/// their batch axis, each block's fused `attn.in_proj_{weight,bias}` is split into q, k, v, torch
/// Linear weights are transposed. The output projection `proj` is dropped (METER does not use
/// it). When `grid` is given and differs from the table's, the position table is resized to it
/// ([`crate::meter::resize_position_table`]).
///
/// # Errors
/// A missing key (named) or a position table that is not a class row plus a square grid.
pub fn clip_visual_openai(mut src: TensorMap, grid: Option<usize>) -> Result<TensorMap> {
    let mut dst = TensorMap::new(src.source.clone());
    rename(&mut src, &mut dst, "conv1.weight", "patch_embed.weight", keep)?;
    rename(&mut src, &mut dst, "class_embedding", "cls_token", |t| {
        let d = t.data.len();
        Ok(t.reshape(vec![1, 1, d]))
    })?;
    let table = src.take("positional_embedding")?;
    if table.shape.len() != 2 {
        return Err(misshaped(
            &src.source,
            "positional_embedding",
            format!("shape {:?}, expected [tokens, D]", table.shape),
        ));
    }
    let table = match grid {
        Some(g) if (g * g + 1) != table.shape[0] => crate::meter::resize_position_table(&table, g)
            .map_err(|e| crate::Error::format(&src.source, format!("`positional_embedding`: {e}")))?,
        _ => table,
    };
    dst.insert("pos_embed", batched_table(table).map_err(|why| misshaped(&src.source, "positional_embedding", why))?);
    norm(&mut src, &mut dst, "ln_pre", "pre_norm")?;
    norm(&mut src, &mut dst, "ln_post", "norm")?;
    for i in 0..count_blocks(&src, "transformer.resblocks.") {
        let e = format!("transformer.resblocks.{i}");
        let b = format!("blocks.{i}");
        split_qkv(&mut src, &mut dst, &format!("{e}.attn.in_proj_weight"), &format!("{e}.attn.in_proj_bias"), &b)?;
        for (theirs, ours) in [("attn.out_proj", "proj"), ("mlp.c_fc", "fc1"), ("mlp.c_proj", "fc2")] {
            linear(&mut src, &mut dst, &format!("{e}.{theirs}"), &format!("{b}.{ours}"))?;
        }
        norm(&mut src, &mut dst, &format!("{e}.ln_1"), &format!("{b}.norm1"))?;
        norm(&mut src, &mut dst, &format!("{e}.ln_2"), &format!("{b}.norm2"))?;
    }
    leftovers(src, &mut dst, |k| k == "proj");
    Ok(dst)
}

/// Whether a key of an official APT checkpoint belongs to a PETL module (APT, LoRA, adapters,
/// scaled parallel adapters, prompts), which the backbone renamers hand back to the caller.
fn is_petl_key(k: &str) -> bool {
    k.contains(".APT.") || k.contains("lora") || k.contains("adapter") || k.contains(".PA.") || k.contains("prompt")
}

/// The official METER checkpoint's backbone keys (`meter_clip16_288_roberta_pretrain.ckpt` and
/// the APT fine-tuned files) → [`crate::meter::Meter`] paths: `text_transformer.*` as Hugging
/// Face RoBERTa ([`bert_hf`]), `vit_model.visual.*` as OpenAI CLIP ([`clip_visual_openai`],
/// position table resized to `grid × grid` as METER's `adapt_position_encoding`), the
/// transforms, token types (grown to `modality_types` rows by copying the last, as for NLVR2),
/// the fusion layers and poolers. `vit_model.*` outside the image tower (CLIP's unused text
/// side: `positional_embedding`, `ln_final`, ...) is dropped. Heads (`itm_score`, `mlm_score`,
/// task classifiers, `rank_output`), `token4classifier` and PETL modules are returned apart
/// (`rest`).
///
/// # Errors
/// A missing backbone key (named).
pub fn meter_official(src: TensorMap, grid: usize, modality_types: usize) -> Result<(TensorMap, TensorMap)> {
    let source = src.source.clone();
    let (mut text, mut visual, mut own, mut rest) =
        (TensorMap::new(&source), TensorMap::new(&source), TensorMap::new(&source), TensorMap::new(&source));
    let layer_prefixes = ["cross_modal_text_layers.", "cross_modal_image_layers."];
    for (k, v) in src.tensors {
        if is_petl_key(&k) && layer_prefixes.iter().any(|p| k.starts_with(p)) {
            rest.insert(k, v);
        } else if let Some(inner) = k.strip_prefix("text_transformer.") {
            text.insert(inner, v);
        } else if let Some(inner) = k.strip_prefix("vit_model.visual.") {
            visual.insert(inner, v);
        } else if k.starts_with("vit_model.") {
            // CLIP's text side, unused by METER.
        } else if k.starts_with("cross_modal_") || k == "token_type_embeddings.weight" {
            own.insert(k, v);
        } else {
            rest.insert(k, v);
        }
    }
    let mut dst = TensorMap::new(&source);
    for (k, v) in bert_hf(text)?.tensors {
        dst.insert(format!("text.{k}"), v);
    }
    for (k, v) in clip_visual_openai(visual, Some(grid))?.tensors {
        dst.insert(format!("vision.{k}"), v);
    }
    linear(&mut own, &mut dst, "cross_modal_text_transform", "text_transform")?;
    linear(&mut own, &mut dst, "cross_modal_image_transform", "image_transform")?;
    linear(&mut own, &mut dst, "cross_modal_text_pooler.dense", "text_pooler")?;
    linear(&mut own, &mut dst, "cross_modal_image_pooler.dense", "image_pooler")?;
    rename(&mut own, &mut dst, "token_type_embeddings.weight", "token_type_embeddings.weight", |t| {
        grow_rows(t, modality_types)
    })?;
    for (stream, ours) in [("text", "text_layers"), ("image", "image_layers")] {
        let prefix = format!("cross_modal_{stream}_layers.");
        for i in 0..count_blocks(&own, &prefix) {
            let e = format!("{prefix}{i}");
            let b = format!("{ours}.{i}");
            for (theirs, ours) in [
                ("attention.self.query", "query"),
                ("attention.self.key", "key"),
                ("attention.self.value", "value"),
                ("attention.output.dense", "attn_out"),
                ("crossattention.self.query", "cross_query"),
                ("crossattention.self.key", "cross_key"),
                ("crossattention.self.value", "cross_value"),
                ("crossattention.output.dense", "cross_out"),
                ("intermediate.dense", "fc1"),
                ("output.dense", "fc2"),
            ] {
                linear(&mut own, &mut dst, &format!("{e}.{theirs}"), &format!("{b}.{ours}"))?;
            }
            for (theirs, ours) in [
                ("attention.output.LayerNorm", "attn_norm"),
                ("crossattention.output.LayerNorm", "cross_norm"),
                ("output.LayerNorm", "ffn_norm"),
            ] {
                norm(&mut own, &mut dst, &format!("{e}.{theirs}"), &format!("{b}.{ours}"))?;
            }
        }
    }
    leftovers(own, &mut dst, |_| false);
    Ok((dst, rest))
}

/// A `[rows, D]` table grown to `rows_wanted` rows by repeating its last row (no change when it
/// already has as many).
fn grow_rows(t: HostTensor, rows_wanted: usize) -> Transformed {
    let [rows, d] = t.shape[..] else { return Err(format!("shape {:?}, expected [rows, D]", t.shape)) };
    if rows_wanted <= rows || rows == 0 {
        return Ok(t);
    }
    let mut data = t.data.clone();
    for _ in rows..rows_wanted {
        data.extend_from_slice(&t.data[(rows - 1) * d..rows * d]);
    }
    Ok(HostTensor::new(vec![rows_wanted, d], data))
}
