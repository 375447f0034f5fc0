//! The paper's "Updated Param" and "Additional FLOPs" columns, in closed form.
//!
//! FLOPs follow the authors' measurement (fvcore, batch 1, one multiply-add = one FLOP,
//! element-wise operations, softmax and biases ignored; additional = with method − backbone).
//! The formulas and token counts below reproduce all eight printed values:
//!
//! | method | per site | ViLT-B/32 (N = 242) | METER (N_t = 41, N_v = 577) |
//! |---|---|---|---|
//! | APT | `2·N·M·d + 2·M·d·r` per attention | 12 sites: 0.91G | 12 text + 12 image: 2.31G |
//! | deep prompt | `3·M·d² + 2·N·M·d` per prompt set | 12 sets: 5.14G | 24 sets, each with N = N_t + N_v (an empirical fit): 13.05G |
//! | adapter | `2·d·b` per token | 24 adapters × N: 0.86G | 18 per stream × N_stream: 1.64G |
//! | scaled PA | `2·d·b + 5·d` per token (LN = 5 FLOPs/element) | 12 × N: 0.44G | 12 per stream: 1.12G |
//! | LoRA, classifier, full | merged or none | 0 | 0 |
//!
//! ViLT's N = 41 + 201 counts 40 text tokens plus one and 200 image patches plus the class
//! token. Deep prompt's `3·M·d²` projects the prompts through the fused qkv (queries included)
//! and is counted although the projections could be cached at inference; LoRA is counted after
//! merging.

use petl_core::hooks::{BlockId, BlockInfo, Layout, SubLayer, Tower};

use crate::{Variant, VariantConfig};

/// The shape of a backbone as the counts need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// One stream of `layers` blocks over `tokens` joint tokens (ViLT).
    SingleStream {
        /// Blocks.
        layers: usize,
        /// Width.
        dim: usize,
        /// Tokens per sample.
        tokens: usize,
        /// Parameters of the backbone (for full tuning).
        backbone_params: usize,
    },
    /// Two co-attention streams of `layers` cross layers each (self-attention,
    /// cross-attention, FFN per layer), METER.
    TwoStream {
        /// Cross layers per stream.
        layers: usize,
        /// Width.
        dim: usize,
        /// Text tokens.
        text_tokens: usize,
        /// Image tokens.
        image_tokens: usize,
        /// Parameters of the backbone (for full tuning).
        backbone_params: usize,
    },
}

impl Arch {
    /// ViLT-B/32 at the tables' token count (242).
    pub fn vilt_b32() -> Self {
        let cfg = petl_core::vilt::ViltConfig::vilt_b32();
        Arch::SingleStream { layers: 12, dim: 768, tokens: 242, backbone_params: cfg.num_params() }
    }

    /// METER (CLIP-ViT-B/16 at 384 px + RoBERTa-base, 6 cross layers per stream) at the
    /// tables' token counts (41 text, 577 image); backbone 319,474,688 parameters.
    pub fn meter() -> Self {
        // The paper counts the checkpoint's unused CLIP text-side tensors too (positional_embedding
        // 77 × 512 and ln_final: 40,448), which the port does not load.
        let backbone_params = petl_core::meter::MeterConfig::meter_clip16_roberta(384).num_params() + 40_448;
        Arch::TwoStream { layers: 6, dim: 768, text_tokens: 41, image_tokens: 577, backbone_params }
    }

    /// A named backbone of the tables: `vilt-b32` or `meter`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "vilt-b32" | "vilt" => Some(Self::vilt_b32()),
            "meter" => Some(Self::meter()),
            _ => None,
        }
    }

    /// The blocks the methods are built for: ViLT's 12 blocks; METER's 12 fusion layers (text
    /// stream, then image stream), each with self- and cross-attention (as
    /// [`petl_core::meter::MeterConfig::layout`]).
    pub fn layout(&self) -> Layout {
        match *self {
            Arch::SingleStream { layers, dim, .. } => Layout {
                blocks: (0..layers).map(|i| BlockInfo::new(BlockId::vision(0, i), dim, 4 * dim)).collect(),
                feature_dim: dim,
            },
            Arch::TwoStream { layers, dim, .. } => Layout {
                blocks: (0..2 * layers)
                    .map(|i| {
                        let id = BlockId {
                            tower: Tower::Fusion,
                            stage: i / layers,
                            index: i,
                            sublayer: SubLayer::SelfAttention,
                        };
                        BlockInfo { cross_attention: true, ..BlockInfo::new(id, dim, 4 * dim) }
                    })
                    .collect(),
                feature_dim: 2 * dim,
            },
        }
    }
}

/// The "Updated Param" column: parameters of the PETL module only (no heads, poolers, token
/// types); full tuning: the backbone's parameters (true count; the paper's cells add
/// 3,833,880 APT parameters the authors' model still contained).
pub fn updated_params(arch: Arch, variant: Variant, cfg: &VariantConfig) -> usize {
    match (arch, variant) {
        (Arch::SingleStream { backbone_params, .. } | Arch::TwoStream { backbone_params, .. }, Variant::Full) => {
            backbone_params
        }
        (_, v) => cfg.num_params(v, &arch.layout()),
    }
}

/// The "Additional FLOPs" column (module docs), in FLOPs.
pub fn extra_flops(arch: Arch, variant: Variant, cfg: &VariantConfig) -> u64 {
    let m = cfg.apt.num_prompts as u64;
    let r = cfg.apt.rank as u64;
    let p = cfg.deep_prompts as u64;
    let apt = |n: u64, d: u64| 2 * n * m * d + 2 * m * d * r;
    let prompt = |n: u64, d: u64| 3 * p * d * d + 2 * n * p * d;
    let adapter = |n: u64, d: u64| 2 * d * cfg.adapter_bottleneck as u64 * n;
    let pa = |n: u64, d: u64| (2 * d * cfg.pa_bottleneck as u64 + 5 * d) * n;
    match arch {
        Arch::SingleStream { layers, dim, tokens, .. } => {
            let (l, d, n) = (layers as u64, dim as u64, tokens as u64);
            match variant {
                Variant::Apt => l * apt(n, d),
                Variant::DeepPrompt => l * prompt(n, d),
                Variant::Adapter => 2 * l * adapter(n, d),
                Variant::ScaledPa => l * pa(n, d),
                Variant::Lora | Variant::Classifier | Variant::Full => 0,
            }
        }
        Arch::TwoStream { layers, dim, text_tokens, image_tokens, .. } => {
            let (l, d, nt, nv) = (layers as u64, dim as u64, text_tokens as u64, image_tokens as u64);
            match variant {
                Variant::Apt => 2 * l * (apt(nt, d) + apt(nv, d)),
                Variant::DeepPrompt => {
                    let sets = if cfg.meter_deep_prompt_cross_only { 2 * l } else { 4 * l };
                    sets * prompt(nt + nv, d)
                }
                Variant::Adapter => 3 * l * (adapter(nt, d) + adapter(nv, d)),
                Variant::ScaledPa => 2 * l * (pa(nt, d) + pa(nv, d)),
                Variant::Lora | Variant::Classifier | Variant::Full => 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(flops: u64) -> String {
        format!("{:.2}", flops as f64 / 1e9)
    }

    #[test]
    fn updated_params_match_the_papers_tables() {
        let cfg = VariantConfig::new();
        let vilt = Arch::vilt_b32();
        for (v, want) in [
            (Variant::Apt, 1_916_940),
            (Variant::DeepPrompt, 1_843_200),
            (Variant::Lora, 147_456),
            (Variant::ScaledPa, 1_798_272),
            (Variant::Adapter, 3_559_680),
            (Variant::Classifier, 0),
            (Variant::Full, 111_595_008),
        ] {
            assert_eq!(updated_params(vilt, v, &cfg), want, "ViLT {v:?}");
        }
        let meter = Arch::meter();
        let built = petl_core::meter::MeterConfig::meter_clip16_roberta(384);
        assert_eq!(meter.layout(), built.layout());
        assert_eq!(built.num_params() + 40_448, 319_474_688);
        for (v, want) in [
            (Variant::Apt, 3_833_880),
            (Variant::DeepPrompt, 3_686_400),
            (Variant::Lora, 294_912),
            (Variant::ScaledPa, 3_596_544),
            (Variant::Adapter, 5_339_520),
            (Variant::Full, 319_474_688),
        ] {
            assert_eq!(updated_params(meter, v, &cfg), want, "METER {v:?}");
        }
        let code = VariantConfig::new().with_meter_deep_prompt_cross_only(true);
        assert_eq!(updated_params(meter, Variant::DeepPrompt, &code), 1_843_200);
    }

    #[test]
    fn extra_flops_match_the_papers_tables() {
        let cfg = VariantConfig::new();
        let (vilt, meter) = (Arch::vilt_b32(), Arch::meter());
        assert_eq!(extra_flops(vilt, Variant::Apt, &cfg), 906_854_400);
        for (v, a, b) in [
            (Variant::Apt, "0.91", "2.31"),
            (Variant::DeepPrompt, "5.14", "13.05"),
            (Variant::Adapter, "0.86", "1.64"),
            (Variant::ScaledPa, "0.44", "1.12"),
            (Variant::Lora, "0.00", "0.00"),
            (Variant::Classifier, "0.00", "0.00"),
            (Variant::Full, "0.00", "0.00"),
        ] {
            assert_eq!(g(extra_flops(vilt, v, &cfg)), a, "ViLT {v:?}");
            assert_eq!(g(extra_flops(meter, v, &cfg)), b, "METER {v:?}");
        }
        // The abstract's −82.30 %.
        let cut: f64 = 1.0 - 0.91 / 5.14;
        assert!((cut - 0.8230).abs() < 1e-4);
    }
}
