//! Which samples form each batch of an epoch, over one or several training datasets
//! (multi-task training: every batch comes from one dataset, as VL-Adapter's multi-task loader
//! does).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// How the batches of several datasets are interleaved within an epoch (one dataset: the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Every batch of every dataset once, in a random order: each dataset is drawn in proportion
    /// to its number of batches.
    #[default]
    Proportional,
    /// One batch of each dataset in turn; a dataset that runs out is skipped.
    RoundRobin,
}

/// One planned batch: the dataset it comes from and the sample indices in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedBatch {
    /// Index of the training dataset.
    pub source: usize,
    /// Sample indices in that dataset.
    pub indices: Vec<usize>,
}

/// The batches of epoch `epoch` over datasets of `sizes`: each dataset shuffled on its own
/// (seeded by `seed`, `epoch` and its position), cut into batches of `batch_size` (the last
/// one partial), interleaved by `sampling`. Deterministic, so a resumed run replays it.
pub fn epoch_plan(
    sizes: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
    sampling: Sampling,
) -> Vec<PlannedBatch> {
    let base = seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
    let per_source: Vec<Vec<PlannedBatch>> = sizes
        .iter()
        .enumerate()
        .map(|(source, &n)| {
            let mut rng = StdRng::seed_from_u64(base ^ ((source as u64) << 40));
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            order.chunks(batch_size.max(1)).map(|c| PlannedBatch { source, indices: c.to_vec() }).collect()
        })
        .collect();
    if per_source.len() == 1 {
        return per_source.into_iter().next().unwrap_or_default();
    }
    match sampling {
        Sampling::Proportional => {
            let mut all: Vec<PlannedBatch> = per_source.into_iter().flatten().collect();
            all.shuffle(&mut StdRng::seed_from_u64(base ^ 0x5A3D_1E55));
            all
        }
        Sampling::RoundRobin => {
            let longest = per_source.iter().map(Vec::len).max().unwrap_or(0);
            let mut iters: Vec<_> = per_source.into_iter().map(Vec::into_iter).collect();
            let mut out = vec![];
            for _ in 0..longest {
                out.extend(iters.iter_mut().filter_map(Iterator::next));
            }
            out
        }
    }
}

/// The device-RNG seed of epoch `epoch` (dropout and drop-path masks): `seed` for epoch 0, a
/// SplitMix64 step of `seed ⊕ epoch` after.
pub fn epoch_rng_seed(seed: u64, epoch: usize) -> u64 {
    if epoch == 0 {
        return seed;
    }
    crate::data::splitmix64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The augmentation seed of sample `index` of dataset `source` in `epoch`.
pub fn sample_seed(seed: u64, epoch: usize, source: usize, index: usize) -> u64 {
    seed ^ ((epoch as u64) << 32) ^ ((source as u64) << 52) ^ index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dataset_is_one_shuffled_pass() {
        let plan = epoch_plan(&[10], 4, 1, 0, Sampling::RoundRobin);
        assert_eq!(plan.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), [4, 4, 2]);
        let mut seen: Vec<usize> = plan.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(plan, epoch_plan(&[10], 4, 1, 0, Sampling::Proportional), "sampling only interleaves");
        assert_ne!(plan, epoch_plan(&[10], 4, 1, 1, Sampling::RoundRobin), "a new order every epoch");
    }

    #[test]
    fn round_robin_alternates_and_skips_exhausted_sources() {
        let plan = epoch_plan(&[8, 2, 4], 2, 3, 0, Sampling::RoundRobin);
        let sources: Vec<usize> = plan.iter().map(|b| b.source).collect();
        assert_eq!(sources, [0, 1, 2, 0, 2, 0, 0]);
    }

    #[test]
    fn proportional_covers_every_batch_once_in_a_mixed_order() {
        let plan = epoch_plan(&[40, 8], 4, 5, 2, Sampling::Proportional);
        assert_eq!(plan.len(), 12);
        assert_eq!(plan.iter().filter(|b| b.source == 1).count(), 2);
        for (source, n) in [(0, 40), (1, 8)] {
            let mut seen: Vec<usize> =
                plan.iter().filter(|b| b.source == source).flat_map(|b| b.indices.clone()).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(plan[..2].iter().map(|b| b.source).collect::<Vec<_>>(), [1, 1], "not all of one task first");
        assert_eq!(plan, epoch_plan(&[40, 8], 4, 5, 2, Sampling::Proportional), "deterministic");
    }
}
