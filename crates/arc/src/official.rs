//! State dicts of the official PyTorch code (`Model/ARC_ViT.py`, its key names) →
//! paths of [`crate::ArcClassifier`]. Torch `[out, in]` Linear weights are transposed.

use petl_core::Error;
use petl_core::vit::VitConfig;
use petl_core::weights::{HostTensor, TensorMap};

use crate::{ArcConfig, ArcVariant};

/// What an official ViT state dict reveals about its model (heads cannot be inferred).
#[derive(Clone, Debug, PartialEq)]
pub struct OfficialShapes {
    /// Token width `D`.
    pub hidden_size: usize,
    /// Blocks.
    pub num_layers: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Image size (from the position embedding).
    pub image_size: usize,
    /// FFN width.
    pub mlp_dim: usize,
    /// Bottleneck `D'`.
    pub adapter_dim: usize,
    /// ARC or ARC_att (from the presence of `mlp_down_projection`).
    pub variant: ArcVariant,
    /// Classes.
    pub num_classes: usize,
}

/// The shape of `key`, which must have `rank` dimensions, none of them zero.
fn shape(src: &TensorMap, key: &str, rank: usize) -> petl_core::Result<Vec<usize>> {
    let shape = src.tensors.get(key).map(|t| t.shape.clone()).ok_or_else(|| Error::Weights {
        source_name: src.source.clone(),
        msg: format!("missing key `{key}`: not an official ARC ViT state dict"),
    })?;
    if shape.len() != rank || shape.contains(&0) {
        return Err(Error::Weights {
            source_name: src.source.clone(),
            msg: format!("`{key}` has shape {shape:?}; the official layout has {rank} non-zero dimensions"),
        });
    }
    Ok(shape)
}

/// Reads the model's dimensions off the tensor shapes.
///
/// # Errors
/// A key the official layout always has is missing.
pub fn inspect(src: &TensorMap) -> petl_core::Result<OfficialShapes> {
    let patch = shape(src, "embedding.projective.weight", 4)?;
    let pos = shape(src, "embedding.position_embedding", 3)?;
    let down = shape(src, "transformer.att_down_projection", 2)?;
    let fc1 = shape(src, "transformer.layer.0.mlp.fc1.weight", 2)?;
    let head = shape(src, "head_mlp.head.weight", 2)?;
    let num_layers = (0..)
        .take_while(|i| src.tensors.contains_key(&format!("transformer.layer.{i}.attention.query.weight")))
        .count();
    let grid = ((pos[1].saturating_sub(1)) as f64).sqrt().round() as usize;
    Ok(OfficialShapes {
        hidden_size: patch[0],
        num_layers,
        patch_size: patch[2],
        image_size: grid * patch[2],
        mlp_dim: fc1[0],
        adapter_dim: down[1],
        variant: if src.tensors.contains_key("transformer.mlp_down_projection") {
            ArcVariant::Arc
        } else {
            ArcVariant::ArcAtt
        },
        num_classes: head[0],
    })
}

impl OfficialShapes {
    /// Backbone and ARC configs, with the head count supplied by the caller.
    pub fn configs(&self, num_heads: usize) -> (VitConfig, ArcConfig) {
        let vit = VitConfig::new(
            self.image_size,
            self.patch_size,
            self.hidden_size,
            self.num_layers,
            num_heads,
            self.mlp_dim,
        );
        let arc = ArcConfig::new().with_bottleneck(self.adapter_dim).with_variant(self.variant);
        (vit, arc)
    }
}

/// Renames an official state dict to [`crate::ArcClassifier`] paths.
///
/// # Errors
/// A key of the official layout is missing.
pub fn rename(mut src: TensorMap) -> petl_core::Result<TensorMap> {
    let info = inspect(&src)?;
    let mut dst = TensorMap::new(src.source.clone());
    let source = src.source.clone();
    // A torch Linear weight, transposed (2-D only: anything else is named, not a panic).
    let t = |h: HostTensor, key: &str| -> petl_core::Result<HostTensor> {
        if h.shape.len() != 2 {
            return Err(Error::Weights {
                source_name: source.clone(),
                msg: format!("`{key}` has shape {:?}; a Linear weight has 2 dimensions", h.shape),
            });
        }
        Ok(h.t())
    };
    let same = |h: HostTensor, _: &str| -> petl_core::Result<HostTensor> { Ok(h) };
    let mut mv = |src: &mut TensorMap,
                  from: &str,
                  to: &str,
                  f: &dyn Fn(HostTensor, &str) -> petl_core::Result<HostTensor>|
     -> petl_core::Result<()> {
        let v = src.take(from)?;
        dst.insert(to, f(v, from)?);
        Ok(())
    };
    let vit = "backbone.Vit";
    mv(&mut src, "embedding.cls", &format!("{vit}.cls_token"), &same)?;
    mv(&mut src, "embedding.position_embedding", &format!("{vit}.pos_embed"), &same)?;
    mv(&mut src, "embedding.projective.weight", &format!("{vit}.patch_embed.weight"), &same)?;
    mv(&mut src, "embedding.projective.bias", &format!("{vit}.patch_embed.bias"), &same)?;
    mv(&mut src, "transformer.layer_norm.weight", &format!("{vit}.norm.gamma"), &same)?;
    mv(&mut src, "transformer.layer_norm.bias", &format!("{vit}.norm.beta"), &same)?;
    mv(&mut src, "transformer.att_down_projection", "tuner.att_down.0", &same)?;
    mv(&mut src, "head_mlp.head.weight", "head.weight", &t)?;
    mv(&mut src, "head_mlp.head.bias", "head.bias", &same)?;
    if info.variant == ArcVariant::Arc {
        mv(&mut src, "transformer.mlp_down_projection", "tuner.mlp_down.0", &same)?;
    }
    for i in 0..info.num_layers {
        let (l, b) = (format!("transformer.layer.{i}"), format!("{vit}.blocks.{i}"));
        for (theirs, ours) in [
            ("attention.query", "query"),
            ("attention.key", "key"),
            ("attention.value", "value"),
            ("attention.projective", "proj"),
            ("mlp.fc1", "fc1"),
            ("mlp.fc2", "fc2"),
        ] {
            mv(&mut src, &format!("{l}.{theirs}.weight"), &format!("{b}.{ours}.weight"), &t)?;
            mv(&mut src, &format!("{l}.{theirs}.bias"), &format!("{b}.{ours}.bias"), &same)?;
        }
        for (theirs, ours) in [("att_layer_norm", "norm1"), ("fnn_layer_norm", "norm2")] {
            mv(&mut src, &format!("{l}.{theirs}.weight"), &format!("{b}.{ours}.gamma"), &same)?;
            mv(&mut src, &format!("{l}.{theirs}.bias"), &format!("{b}.{ours}.beta"), &same)?;
        }
        let mut sites = vec![("att_adapter", "att")];
        if info.variant == ArcVariant::Arc {
            sites.push(("mlp_adapter", "mlp"));
        }
        for (theirs, ours) in sites {
            mv(&mut src, &format!("{l}.{theirs}.adapter_rescale"), &format!("tuner.{ours}.{i}.rescale"), &same)?;
            mv(&mut src, &format!("{l}.{theirs}.adapter_bias"), &format!("tuner.{ours}.{i}.bias"), &same)?;
        }
    }
    for (k, v) in src.tensors {
        dst.insert(format!("<unmapped>{k}"), v);
    }
    Ok(dst)
}
