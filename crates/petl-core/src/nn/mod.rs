//! Layers shared by every backbone.

pub mod attention;

pub use attention::{AttentionMask, multi_head_attention, prepend_prompts};

/// Checks a dropout rate read from a config: finite and in `[0, 1)` (`burn::nn::DropoutConfig`
/// panics otherwise).
///
/// # Errors
/// [`crate::Error::Config`] naming the field and its value.
pub fn check_dropout(name: &str, rate: Option<f64>) -> crate::Result<()> {
    dropout_problem(name, rate).map_or(Ok(()), |p| Err(crate::Error::Config(p)))
}

/// The dropout layer of an optional rate from a config (`None`, as in configs written before the
/// rate existed: no dropout).
///
/// # Panics
/// If the rate is not in `[0, 1)` (configs check it first with [`check_dropout`]).
pub fn dropout(rate: Option<f64>) -> burn::nn::Dropout {
    burn::nn::DropoutConfig::new(rate.unwrap_or(0.0)).init()
}

/// What is wrong with a dropout rate, if anything (see [`check_dropout`]).
pub fn dropout_problem(name: &str, rate: Option<f64>) -> Option<String> {
    rate.filter(|r| !(r.is_finite() && (0.0..1.0).contains(r))).map(|r| format!("{name} {r} is not in [0, 1)"))
}
