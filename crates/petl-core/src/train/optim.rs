//! The optimisation step every run takes, shared by the loop and `bench`: global-norm clipping
//! over the trainable set, then AdamW with per-group learning rates and weight decay (Burn's
//! `ModuleOptimizer` parameter groups and `ModuleLrScheduler`), on the warm-up cosine schedule.

use std::collections::HashSet;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::module::{Module, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use serde::{Deserialize, Serialize};

use super::schedule::WarmupCosine;
use super::{TrainConfig, clip_global_norm, trainable_ids};

/// A parameter group: the trainable parameters whose path (`tuner.blocks.0.lora_a`, `head.weight`)
/// contains any of `contains`, with their own learning-rate scale and weight decay. A fragment
/// `a&b` asks for both `a` and `b` (`head.&bias`: the head's biases). A parameter in several
/// groups belongs to the last; parameters in none follow the run's recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroupConfig {
    /// Name, for logs.
    pub name: String,
    /// Path fragments selecting the group's parameters (any of them).
    pub contains: Vec<String>,
    /// Multiplier of the run's learning rate (schedule included).
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// Decoupled weight decay of the group (default: the run's).
    #[serde(default)]
    pub weight_decay: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl ParamGroupConfig {
    /// A group of the parameters whose path contains any of `contains`.
    pub fn new(name: &str, contains: &[&str]) -> Self {
        Self {
            name: name.into(),
            contains: contains.iter().map(|s| s.to_string()).collect(),
            lr_scale: 1.0,
            weight_decay: None,
        }
    }

    /// With a learning-rate multiplier.
    pub fn with_lr_scale(mut self, scale: f64) -> Self {
        self.lr_scale = scale;
        self
    }

    /// With its own weight decay.
    pub fn with_weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = Some(wd);
        self
    }

    fn group(&self) -> ParamGroup {
        let mut groups = self.contains.iter().map(|c| ParamGroup::from_predicates(c.split('&').collect::<Vec<_>>()));
        match groups.next() {
            Some(first) => groups.fold(first, |acc, g| acc.fuse(&g)),
            None => ParamGroup::from_any_predicates(Vec::<String>::new()),
        }
    }
}

/// `lr · f(k)` of the warm-up cosine schedule, as a Burn scheduler positioned at update `k`.
#[derive(Clone, Debug)]
struct Scheduled {
    lr: f64,
    schedule: WarmupCosine,
    step: usize,
}

impl LrScheduler for Scheduled {
    fn step(&mut self) -> f64 {
        let lr = self.lr * self.schedule.factor(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

/// Optimizer, schedule and clipping of one run. Frozen parameters never reach AdamW: their
/// gradients do not exist, so they get no state.
pub struct Optimization {
    /// The AdamW state of every group.
    pub optimizer: ModuleOptimizer,
    schedule: ModuleLrScheduler,
    trainable: HashSet<ParamId>,
    clip: Option<f64>,
}

impl Optimization {
    /// The optimisation of `config` for `model`, its schedule positioned at update `step`
    /// (non-zero when resuming).
    pub fn new<M: Module>(config: &TrainConfig, model: &M, schedule: WarmupCosine, step: usize) -> Self {
        let adamw = |wd: f64| {
            AdamWConfig::new().with_weight_decay(wd as f32).with_epsilon(1e-8).with_beta_2(config.adam_beta2 as f32)
        };
        let mut optimizer = adamw(config.weight_decay).init();
        let mut lr = ModuleLrScheduler::new(Scheduled { lr: config.lr, schedule, step });
        for g in &config.param_groups {
            optimizer =
                optimizer.with_group(g.group(), adamw(g.weight_decay.unwrap_or(config.weight_decay)).build(), None);
            lr = lr.with_group(g.group(), Scheduled { lr: config.lr * g.lr_scale, schedule, step });
        }
        Self { optimizer, schedule: lr, trainable: trainable_ids(model), clip: config.grad_clip_norm }
    }

    /// One update of `model` from `grads`; returns the model and the base learning rate used.
    pub fn update<M: Module>(&mut self, model: M, mut grads: GradientsParams) -> (M, f64) {
        if let Some(max_norm) = self.clip {
            clip_global_norm(&model, &mut grads, max_norm, &self.trainable);
        }
        let lr = self.schedule.step();
        let base = lr.base();
        (self.optimizer.step(lr, model, grads), base)
    }

    /// The trainable parameters' ids.
    pub fn trainable(&self) -> &HashSet<ParamId> {
        &self.trainable
    }
}
