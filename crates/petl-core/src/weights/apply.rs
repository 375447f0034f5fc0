//! Applying a [`TensorMap`] keyed by our parameter paths to a module, and the reverse.

use std::collections::BTreeMap;
use std::fmt;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use super::{HostTensor, TensorMap};

/// What a load did, by parameter path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters that received a tensor.
    pub applied: Vec<String>,
    /// Parameters of the module with no tensor in the source.
    pub missing: Vec<String>,
    /// Source tensors no parameter asked for.
    pub unexpected: Vec<String>,
    /// `(path, module shape, source shape)` for shape mismatches (left untouched).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Strict check: an error naming every missing, unexpected or mis-shaped key, except
    /// missing paths for which `may_be_missing` returns true.
    pub fn check(self, source: &str, may_be_missing: impl Fn(&str) -> bool) -> crate::Result<Self> {
        self.check_with(source, may_be_missing, |_| false)
    }

    /// [`LoadReport::check`], also allowing the unexpected source keys for which
    /// `may_be_unexpected` returns true (a file that carries more than the model: other tasks'
    /// heads, pretraining heads).
    pub fn check_with(
        self,
        source: &str,
        may_be_missing: impl Fn(&str) -> bool,
        may_be_unexpected: impl Fn(&str) -> bool,
    ) -> crate::Result<Self> {
        let missing: Vec<&String> = self.missing.iter().filter(|p| !may_be_missing(p)).collect();
        let unexpected: Vec<&String> = self.unexpected.iter().filter(|p| !may_be_unexpected(p)).collect();
        if missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            return Ok(self);
        }
        // Long lists (a file of another model family) are cut to their first keys and a count,
        // so that the message stays one readable line.
        const SHOWN: usize = 8;
        let listed = |keys: &[&String]| {
            let head: Vec<&&String> = keys.iter().take(SHOWN).collect();
            match keys.len() {
                n if n > SHOWN => format!("{head:?} and {} more ({n} in all)", n - SHOWN),
                _ => format!("{head:?}"),
            }
        };
        let mut msg = String::from("checkpoint does not fit the model:");
        if self.applied.is_empty() && !unexpected.is_empty() {
            msg += " none of its tensors is one of the model's (another model family?);";
        }
        if !missing.is_empty() {
            msg += &format!(" missing keys {};", listed(&missing));
        }
        if !unexpected.is_empty() {
            msg += &format!(" unexpected keys {};", listed(&unexpected));
        }
        for (p, want, got) in self.mismatched.iter().take(SHOWN) {
            msg += &format!(
                " `{p}` has shape {got:?} in the checkpoint but {want:?} in the model (another backbone size?);"
            );
        }
        if self.mismatched.len() > SHOWN {
            msg += &format!(" and {} more mis-shaped tensors;", self.mismatched.len() - SHOWN);
        }
        Err(crate::Error::Weights { source_name: source.to_string(), msg: msg.trim_end_matches(';').to_string() })
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "applied {}, missing {}, unexpected {}, mis-shaped {}",
            self.applied.len(),
            self.missing.len(),
            self.unexpected.len(),
            self.mismatched.len()
        )?;
        for p in &self.missing {
            write!(f, "\n  missing: {p}")?;
        }
        for p in &self.unexpected {
            write!(f, "\n  unexpected: {p}")?;
        }
        for (p, w, g) in &self.mismatched {
            write!(f, "\n  mis-shaped: {p} (model {w:?}, checkpoint {g:?})")?;
        }
        Ok(())
    }
}

struct Applier {
    path: Vec<String>,
    map: TensorMap,
    ids: BTreeMap<String, u64>,
    report: LoadReport,
}

impl ModuleMapper for Applier {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(host) = self.map.tensors.remove(&path) else {
            self.report.missing.push(path);
            return param;
        };
        let want = param.lazy_shape().to_vec();
        if want != host.shape {
            self.report.mismatched.push((path, want, host.shape));
            return param;
        }
        let id = self.ids.get(&path).map(|&v| ParamId::from(v));
        self.report.applied.push(path);
        let (old_id, old, mapper) = param.consume();
        let value = host.to_tensor::<D>(&old.device()).set_require_grad(old.is_require_grad());
        Param::from_mapped_value(id.unwrap_or(old_id), value, mapper)
    }
}

/// Loads `map` (keys = our parameter paths relative to `module`) into `module`.
/// Nothing is left half-applied on mis-shaped keys: they are reported and skipped.
pub fn apply<M: Module>(module: M, map: TensorMap) -> (M, LoadReport) {
    apply_with_ids(module, map, BTreeMap::new())
}

/// [`apply`], also giving the loaded parameters the ids in `ids` (by path), so optimizer
/// state saved under those ids matches them again when a run resumes.
pub fn apply_with_ids<M: Module>(module: M, map: TensorMap, ids: BTreeMap<String, u64>) -> (M, LoadReport) {
    let mut applier = Applier { path: vec![], map, ids, report: LoadReport::default() };
    let module = module.map(&mut applier);
    let mut report = applier.report;
    report.unexpected = applier.map.keys();
    (module, report)
}

struct Collector<F: Fn(&str, ParamId) -> bool> {
    path: Vec<String>,
    keep: F,
    out: TensorMap,
    ids: BTreeMap<String, u64>,
}

impl<F: Fn(&str, ParamId) -> bool> ModuleVisitor for Collector<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        if (self.keep)(&path, param.id) {
            self.ids.insert(path.clone(), param.id.val());
            self.out.insert(path, HostTensor::from_tensor(&param.val()));
        }
    }
}

/// Downloads the parameters of `module` for which `keep(path, id)` holds.
pub fn collect<M: Module>(module: &M, keep: impl Fn(&str, ParamId) -> bool) -> TensorMap {
    collect_with_ids(module, keep).0
}

/// [`collect`], also returning each collected parameter's id by path.
pub fn collect_with_ids<M: Module>(
    module: &M,
    keep: impl Fn(&str, ParamId) -> bool,
) -> (TensorMap, BTreeMap<String, u64>) {
    let mut c = Collector { path: vec![], keep, out: TensorMap::new("model"), ids: BTreeMap::new() };
    module.visit(&mut c);
    (c.out, c.ids)
}

struct StableIds {
    path: Vec<String>,
}

impl ModuleMapper for StableIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // FNV-1a of the path: the same id for the same parameter in every run.
        let id = self
            .path
            .join(".")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(id), value, mapper)
    }
}

/// Gives every parameter of `module` an id derived from its path, so that the optimizer states
/// (and checkpoints) of two runs of the same model are byte-identical: Burn draws parameter ids
/// at random. Ids stay unique as long as paths are (they are within a module).
pub fn stable_param_ids<M: Module>(module: M) -> M {
    module.map(&mut StableIds { path: vec![] })
}

#[cfg(test)]
mod tests {
    use super::LoadReport;

    #[test]
    fn long_key_lists_are_cut_and_counted_in_one_line() {
        let keys = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}.{i}")).collect::<Vec<_>>();
        let report =
            LoadReport { missing: keys("text_layers", 20), unexpected: keys("transformer", 30), ..Default::default() };
        let msg = report.check("vilt.safetensors", |_| false).unwrap_err().to_string();
        assert!(msg.contains("vilt.safetensors") && !msg.contains('\n'), "{msg}");
        assert!(msg.contains("another model family"), "{msg}");
        assert!(msg.contains("\"text_layers.0\"") && msg.contains("and 12 more (20 in all)"), "{msg}");
        assert!(msg.contains("\"transformer.7\"") && !msg.contains("\"transformer.8\""), "{msg}");
        assert!(msg.contains("and 22 more (30 in all)"), "{msg}");
        // A few keys are named in full; a file that fits partly is not called another family.
        let report = LoadReport {
            applied: keys("blocks", 3),
            missing: keys("head", 2),
            mismatched: vec![("pos_embed".into(), vec![1, 5, 8], vec![1, 17, 8])],
            ..Default::default()
        };
        let msg = report.check("vit.npz", |_| false).unwrap_err().to_string();
        assert!(msg.contains("[\"head.0\", \"head.1\"]") && !msg.contains("more"), "{msg}");
        assert!(!msg.contains("another model family") && msg.contains("`pos_embed` has shape [1, 17, 8]"), "{msg}");
    }
}
