//! The two backbones of the paper's tables as one value: which one, and its sizes.

use petl_core::hooks::Layout;
use petl_core::meter::MeterConfig;
use petl_core::vilt::ViltConfig;

use crate::accounting::Arch;

/// ViLT or METER with its sizes: what an official state dict holds ([`crate::official::inspect`]),
/// what a petl adapter checkpoint records (`backbone_kind` + `backbone`), and what the embedded
/// run and the bench build.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// ViLT (single stream; `transformer.blocks.*` in the official files).
    Vilt(ViltConfig),
    /// METER (RoBERTa and CLIP towers, co-attention fusion layers; `cross_modal_*`), its image
    /// tower at its own resolution.
    Meter(MeterConfig),
}

impl Backbone {
    /// The same backbone with every dropout rate unset (no dropout anywhere).
    pub fn without_dropout(&self) -> Self {
        match self {
            Backbone::Vilt(c) => Backbone::Vilt(c.clone().with_dropout(None)),
            Backbone::Meter(c) => {
                let mut c = c.clone().with_hidden_dropout(None).with_attention_dropout(None);
                c.text = c.text.with_hidden_dropout_prob(None).with_attention_probs_dropout_prob(None);
                c.vision = c.vision.with_dropout(None);
                Backbone::Meter(c)
            }
        }
    }

    /// `vilt` or `meter`: the `backbone_kind` of petl adapter checkpoints.
    pub fn kind(&self) -> &'static str {
        match self {
            Backbone::Vilt(_) => "vilt",
            Backbone::Meter(_) => "meter",
        }
    }

    /// `ViLT` or `METER`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backbone::Vilt(_) => "ViLT",
            Backbone::Meter(_) => "METER",
        }
    }

    /// The backbone of `kind` (`vilt`, `meter`) whose config is `config` (the JSON its config
    /// serialises to).
    ///
    /// # Errors
    /// An unknown kind, or a config that is not one of that kind (the message says which).
    pub fn from_kind(kind: &str, config: serde_json::Value) -> Result<Self, String> {
        let backbone = match kind {
            "vilt" => Backbone::Vilt(serde_json::from_value(config).map_err(|e| format!("a ViLT config: {e}"))?),
            "meter" => Backbone::Meter(serde_json::from_value(config).map_err(|e| format!("a METER config: {e}"))?),
            other => return Err(format!("unknown backbone kind `{other}` (known: vilt, meter)")),
        };
        backbone.validate().map_err(|e| e.to_string())?;
        Ok(backbone)
    }

    /// The config as JSON (what [`Backbone::from_kind`] reads back).
    pub fn config_json(&self) -> serde_json::Value {
        match self {
            Backbone::Vilt(c) => serde_json::to_value(c),
            Backbone::Meter(c) => serde_json::to_value(c),
        }
        .expect("configs serialise")
    }

    /// Checks the sizes fit together.
    ///
    /// # Errors
    /// The config's own message.
    pub fn validate(&self) -> petl_core::Result<()> {
        match self {
            Backbone::Vilt(c) => c.validate(),
            Backbone::Meter(c) => c.validate(),
        }
    }

    /// The blocks the methods are built for (ViLT's blocks, METER's fusion layers).
    pub fn layout(&self) -> Layout {
        match self {
            Backbone::Vilt(c) => c.layout(),
            Backbone::Meter(c) => c.layout(),
        }
    }

    /// Parameters of the whole backbone (full tuning's count).
    pub fn num_params(&self) -> usize {
        match self {
            Backbone::Vilt(c) => c.num_params(),
            Backbone::Meter(c) => c.num_params(),
        }
    }

    /// Side of the square images it is built for.
    pub fn image_size(&self) -> usize {
        match self {
            Backbone::Vilt(c) => c.image_size,
            Backbone::Meter(c) => c.vision.image_size,
        }
    }

    /// Patch side of its image embedding.
    pub fn patch_size(&self) -> usize {
        match self {
            Backbone::Vilt(c) => c.patch_size,
            Backbone::Meter(c) => c.vision.patch_size,
        }
    }

    /// Image tokens of one image: its class token and `(S / P)²` patches.
    pub fn image_tokens(&self) -> usize {
        let g = self.image_size() / self.patch_size();
        1 + g * g
    }

    /// Text vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            Backbone::Vilt(c) => c.vocab_size,
            Backbone::Meter(c) => c.text.vocab_size,
        }
    }

    /// Text positions.
    pub fn max_text_len(&self) -> usize {
        match self {
            Backbone::Vilt(c) => c.max_text_len,
            Backbone::Meter(c) => c.text.max_text_len(),
        }
    }

    /// The padding id of its text model (BERT's 0, RoBERTa's 1).
    pub fn pad_token_id(&self) -> usize {
        match self {
            Backbone::Vilt(_) => 0,
            Backbone::Meter(c) => c.text.pad_token_id,
        }
    }

    /// The shape the FLOP formulas take for inputs of `text_tokens` text tokens and one image:
    /// ViLT one stream over both (and its class token), METER two streams of fusion layers.
    pub fn arch(&self, text_tokens: usize) -> Arch {
        match self {
            Backbone::Vilt(c) => Arch::SingleStream {
                layers: c.num_layers,
                dim: c.hidden_size,
                tokens: text_tokens + self.image_tokens(),
                backbone_params: c.num_params(),
            },
            Backbone::Meter(c) => Arch::TwoStream {
                layers: c.num_layers,
                dim: c.hidden_size,
                text_tokens,
                image_tokens: self.image_tokens(),
                backbone_params: c.num_params(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_backbones_give_the_tables_token_counts_and_round_trip_through_their_kind() {
        let vilt = Backbone::Vilt(ViltConfig::vilt_b32());
        // A square 384 px image: class token + 12² patches, after 40 text tokens.
        assert!(matches!(vilt.arch(40), Arch::SingleStream { layers: 12, dim: 768, tokens: 185, .. }));
        let meter = Backbone::Meter(MeterConfig::meter_clip16_roberta(384));
        assert_eq!(meter.image_tokens(), 577);
        assert_eq!(meter.pad_token_id(), 1);
        assert_eq!(vilt.pad_token_id(), 0);
        for b in [vilt, meter] {
            assert_eq!(Backbone::from_kind(b.kind(), b.config_json()).unwrap(), b);
        }
        let err = Backbone::from_kind("meter", Backbone::Vilt(ViltConfig::vilt_b32()).config_json()).unwrap_err();
        assert!(err.starts_with("a METER config"), "{err}");
        assert!(Backbone::from_kind("clip", serde_json::json!({})).unwrap_err().contains("unknown backbone kind"));
    }
}
