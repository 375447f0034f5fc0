//! Deep prompt tuning (VPT-deep, Jia et al. 2022, in its key/value form as the APT paper and
//! prefix tuning use it): every block owns `M` learnable tokens `P_l ∈ R^{M×D}` that join that
//! block's keys and values after the frozen LN1 and key/value projections,
//! `K = [P_l W_k ; X W_k]`, `V = [P_l W_v ; X W_v]`; the block still returns `N` rows (the
//! prompts' own outputs are discarded). Deep prompts do not merge: they add keys.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::hooks::{BlockHooks, BlockId, Layout, SubLayer};

/// Deep-prompt hyper-parameters.
#[derive(Config, Debug, PartialEq)]
pub struct DeepPromptConfig {
    /// Prompt tokens per block `M`.
    #[config(default = 10)]
    pub num_prompts: usize,
    /// The patch size in VPT's initialisation bound `v = √(6 / (3·p² + D))` (prompts are
    /// uniform in `[-v, v]`); VPT and APT use 16.
    #[config(default = 16)]
    pub init_patch_size: usize,
    /// In layouts with cross-attention: prompts only there, none in the self-attention
    /// sub-layers (the released METER code of the APT paper).
    #[config(default = false)]
    pub cross_attention_only: bool,
}

/// Deep prompts of every attention: each block's self-attention and, in layouts with
/// cross-attention, its cross-attention (there the prompts join the other stream's keys and
/// values).
#[derive(Module, Debug)]
pub struct DeepPrompt {
    /// `P_l: [M, D_l]`, one per block (empty with `cross_attention_only`).
    pub prompts: Vec<Param<Tensor<2>>>,
    /// Cross-attention prompts, one per block (empty without cross-attention).
    pub cross: Vec<Param<Tensor<2>>>,
}

impl DeepPromptConfig {
    /// Parameters the prompts add to a backbone of this layout: `Σ_l M·D_l`.
    pub fn num_params(&self, layout: &Layout) -> usize {
        let sets = self.sets(layout);
        layout.blocks.iter().map(|b| sets * self.num_prompts * b.dim).sum()
    }

    /// Prompt sets per block.
    fn sets(&self, layout: &Layout) -> usize {
        if self.cross_attention_only { 1 } else { layout.attentions_per_block() }
    }

    /// Allocates the prompts with VPT's uniform initialisation.
    pub fn init(&self, layout: &Layout, device: &Device) -> DeepPrompt {
        let make = || -> Vec<Param<Tensor<2>>> {
            layout
                .blocks
                .iter()
                .map(|b| {
                    let bound = (6.0 / (3 * self.init_patch_size * self.init_patch_size + b.dim) as f64).sqrt();
                    Param::from_tensor(Tensor::random(
                        [self.num_prompts, b.dim],
                        Distribution::Uniform(-bound, bound),
                        device,
                    ))
                })
                .collect()
        };
        let cross = layout.cross_attention();
        let prompts = if cross && self.cross_attention_only { Vec::new() } else { make() };
        DeepPrompt { prompts, cross: if cross { make() } else { Vec::new() } }
    }
}

impl BlockHooks for DeepPrompt {
    fn kv_prompts(&self, at: BlockId) -> Option<Tensor<2>> {
        let set = if at.sublayer == SubLayer::CrossAttention { &self.cross } else { &self.prompts };
        set.get(at.index).map(|p| p.val())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NoHooks;
    use crate::nn::{AttentionMask, multi_head_attention};
    use crate::vit::VitConfig;

    fn max_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// A ViT block with prompts equals the formula written out: keys and values over
    /// `[LN1(P); LN1(X)]`, queries over `LN1(X)` only, N output rows.
    #[test]
    fn prompts_join_keys_and_values_only() {
        let device = crate::device::device_from_name("flex").expect("flex");
        let cfg = VitConfig::tiny_test();
        let vit = cfg.init(&device);
        let tuner = DeepPromptConfig::new().with_num_prompts(3).init(&cfg.layout(), &device);
        let x = Tensor::<3>::random([2, cfg.num_tokens(), cfg.hidden_size], Distribution::Normal(0.0, 1.0), &device);
        let block = &vit.blocks[0];
        let at = BlockId::vision(0, 0);
        let ours = block.forward(x.clone(), &tuner, at);
        let plain = block.forward(x.clone(), &NoHooks, at);

        let p = tuner.prompts[0].val().unsqueeze::<3>().expand([2, 3, cfg.hidden_size]);
        let y = block.norm1.forward(x.clone());
        let kv = Tensor::cat(vec![block.norm1.forward(p), y.clone()], 1);
        let ctx = multi_head_attention(
            block.query.forward(y),
            block.key.forward(kv.clone()),
            block.value.forward(kv),
            cfg.num_heads,
            &AttentionMask::none(),
        );
        let x = x + block.proj.forward(ctx);
        let h = crate::ops::gelu(block.fc1.forward(block.norm2.forward(x.clone())));
        let expected = x + block.fc2.forward(h);
        assert_eq!(ours.dims(), expected.dims());
        assert!(max_diff(ours.clone(), expected) < 1e-5);
        assert!(max_diff(ours, plain) > 1e-4, "prompts change the output");
    }

    #[test]
    fn counts_and_bound_follow_vpt() {
        let layout = VitConfig::vit_b16().layout();
        assert_eq!(DeepPromptConfig::new().with_num_prompts(200).num_params(&layout), 1_843_200);
        let device = crate::device::device_from_name("flex").expect("flex");
        let p = DeepPromptConfig::new().with_num_prompts(50).init(&VitConfig::tiny_test().layout(), &device);
        let max = p.prompts[0].val().abs().max().into_scalar::<f32>();
        let bound = (6.0f32 / (3.0 * 256.0 + 64.0)).sqrt();
        assert!(max <= bound && max > 0.8 * bound, "{max} vs {bound}");
    }
}
