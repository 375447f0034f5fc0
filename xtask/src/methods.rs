//! The methods of the command line: one list of registry entries, one per method crate, and a
//! method-with-configuration type the commands pass around. Nothing else in xtask names a
//! method.

use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use petl_core::accounting::ParamCounts;
use petl_core::checkpoint::AdapterConfig;
use petl_core::method::{AnyModel, MethodEntry};
use petl_core::model::BackboneConfig;

/// Every method the command line knows, in table order. A new method crate adds its entries
/// here (one line), and nothing else in xtask changes.
fn registry() -> &'static [Box<dyn MethodEntry>] {
    static METHODS: OnceLock<Vec<Box<dyn MethodEntry>>> = OnceLock::new();
    METHODS.get_or_init(|| [arc::methods(), petl_core::method::builtin()].into_iter().flatten().collect())
}

/// The method named `name` (`arc`, `arc-att`, `lora`, ...).
///
/// # Errors
/// An unknown name (the message lists the known ones).
pub fn find(name: &str) -> Result<&'static dyn MethodEntry> {
    Ok(petl_core::method::find(registry(), name)?)
}

/// Names of every method, in table order.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|m| m.name()).collect()
}

/// A method with its configuration (JSON, as adapter checkpoints store it).
#[derive(Clone)]
pub struct MethodSpec {
    /// The method.
    pub entry: &'static dyn MethodEntry,
    /// Its configuration.
    pub config: serde_json::Value,
}

impl std::fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.entry.name(), self.config)
    }
}

impl MethodSpec {
    /// Method `name` with its default configuration on `backbone` (`embedded`: the embedded
    /// runs' configuration).
    pub fn new(name: &str, backbone: &BackboneConfig, embedded: bool) -> Result<Self> {
        let entry = find(name)?;
        let config = if embedded { entry.embedded_config(backbone) } else { entry.default_config(backbone) };
        Ok(Self { entry, config })
    }

    /// Method `name` with a stored configuration (checked when the model is built).
    pub fn stored(name: &str, config: serde_json::Value) -> Result<Self> {
        Ok(Self { entry: find(name)?, config })
    }

    /// Command-line name.
    pub fn name(&self) -> &'static str {
        self.entry.name()
    }

    /// Row label.
    pub fn label(&self) -> &'static str {
        self.entry.label()
    }

    /// The adapter-checkpoint config of this method trained on `backbone` with `classes`.
    pub fn adapter_config(&self, backbone: &BackboneConfig, classes: usize) -> AdapterConfig {
        AdapterConfig::new(self.name(), self.config.clone(), backbone.clone(), classes)
    }

    /// Parameter counts from the configuration alone (nothing allocated).
    pub fn counts(&self, backbone: &BackboneConfig, classes: usize) -> Result<ParamCounts> {
        Ok(self.entry.counts(&self.config, backbone, classes)?)
    }

    /// Allocates backbone + method + head on `device` with this method's trainable set.
    pub fn build(&self, backbone: &BackboneConfig, classes: usize, device: &Device) -> Result<Box<dyn AnyModel>> {
        Ok(self.entry.build(&self.config, backbone, classes, device)?)
    }
}

/// `KEY=VALUE` settings of method configurations (`--set bottleneck=8`); VALUE is JSON when
/// it parses as JSON, a string otherwise.
pub fn parse_sets(sets: &[String]) -> Result<Vec<(String, serde_json::Value)>> {
    sets.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
            Ok((k.trim().to_string(), value))
        })
        .collect()
}

/// Applies `sets` to every spec whose configuration has the key; a key that no spec has is an
/// error (a typo must not be ignored silently).
pub fn apply_sets(specs: &mut [MethodSpec], sets: &[(String, serde_json::Value)]) -> Result<()> {
    for (key, value) in sets {
        let mut used = false;
        for spec in specs.iter_mut() {
            if let Some(slot) = spec.config.as_object_mut().and_then(|o| o.get_mut(key)) {
                *slot = value.clone();
                used = true;
            }
        }
        if !used {
            let names: Vec<&str> = specs.iter().map(|s| s.name()).collect();
            bail!("no selected method ({}) has a `{key}` setting", names.join(", "));
        }
    }
    for spec in specs.iter() {
        spec.entry.trains_backbone(&spec.config).with_context(|| format!("after --set on `{}`", spec.name()))?;
    }
    Ok(())
}
