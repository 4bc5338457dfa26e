//! Resolving `--model`: a registry slug, a YAML profile, or a real checkpoint (not built yet).

use dhurandhar_model::{ComponentBytes, ModelArchitecture};

/// A model as a command sees it.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub arch: ModelArchitecture,
    /// Exact weight bytes by component when the model came from a real checkpoint.
    pub weights: Option<ComponentBytes>,
    /// Where it came from ("built-in", a file path).
    pub origin: String,
}

pub fn resolve_model(spec: &str) -> anyhow::Result<ResolvedModel> {
    anyhow::bail!("cannot resolve model `{spec}` yet")
}
