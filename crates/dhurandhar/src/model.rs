//! Which model a job is about: a registry slug, a YAML profile, or a real checkpoint.
//!
//! Every job that takes a model goes through [`resolve_model`], so a slug, a profile
//! and a checkpoint behave the same in every front end.

use std::path::Path;

use dhurandhar_model::{registry, ComponentBytes, ModelArchitecture};
use serde::Serialize;

use crate::{Error, Result};

/// Largest YAML profile read (profiles are a few KiB; this bounds hostile input).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// A model as a job sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedModel {
    pub arch: ModelArchitecture,
    /// Exact weight bytes by component when the model came from a real checkpoint.
    pub weights: Option<ComponentBytes>,
    /// Where it came from ("built-in", a file path).
    pub origin: String,
    /// A checkpoint with no weight tensors (a `config.json` alone): `weights` is `None`
    /// so the planner estimates them from the shapes, and reports must say so.
    #[serde(skip)]
    pub weights_estimated: bool,
}

/// Resolve `spec`, in this order:
/// 1. a built-in slug (`gemma4-e2b`, case-insensitive);
/// 2. a path ending in `.yaml`/`.yml`: a profile with the Python tool's field names
///    (errors name the file, the line and the field);
/// 3. any other existing file or directory (`.gguf`, `.safetensors`, `config.json`, a
///    model directory): read by [`dhurandhar_checkpoint::load_model`], which also gives
///    the exact weight bytes per component;
/// 4. otherwise an error that lists the nearest built-in names.
pub fn resolve_model(spec: &str) -> Result<ResolvedModel> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(Error::invalid(
            "model",
            "empty; give a built-in name or a path",
        ));
    }
    if let Some(arch) = registry::get(spec) {
        return Ok(ResolvedModel {
            arch,
            weights: None,
            origin: "built-in".to_string(),
            weights_estimated: false,
        });
    }
    let path = Path::new(spec);
    if is_yaml_path(path) {
        let text =
            dhurandhar_io::read_to_string_bounded(path, MAX_PROFILE_BYTES, "a model profile")
                .map_err(|e| Error::from(e).context("cannot read model profile"))?;
        let arch = ModelArchitecture::from_yaml_str(&text, &path.display().to_string())?;
        return Ok(ResolvedModel {
            arch,
            weights: None,
            origin: path.display().to_string(),
            weights_estimated: false,
        });
    }
    if path.exists() {
        let (arch, weights) = dhurandhar_checkpoint::load_model(path)
            .map_err(|e| Error::from(e).context("cannot read the model"))?;
        // No tensors (config.json alone): zero bytes would plan a 1B model into any
        // phone. Leave the weights to the planner's estimate at the chosen format.
        let estimated = weights.total() == 0;
        return Ok(ResolvedModel {
            arch,
            weights: (!estimated).then_some(weights),
            origin: path.display().to_string(),
            weights_estimated: estimated,
        });
    }
    let suggestions = registry::suggest(spec);
    let hint = if suggestions.is_empty() {
        format!("built-in models: {}", registry::names().join(", "))
    } else {
        format!("did you mean: {}?", suggestions.join(", "))
    };
    Err(Error::invalid(
        "model",
        format!(
            "unknown model `{spec}`: not a built-in name and no such file ({hint}); \
             list the built-ins, or pass a .yaml profile or a checkpoint path"
        ),
    ))
}

/// A `.yaml` / `.yml` path (any case): a profile rather than a checkpoint.
pub fn is_yaml_path(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("yaml" | "yml")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_resolves_to_builtin() {
        let m = resolve_model("gemma4-e2b").unwrap();
        assert_eq!(m.arch.name, "gemma4-e2b");
        assert_eq!(m.origin, "built-in");
        assert!(m.weights.is_none());
    }

    #[test]
    fn unknown_slug_suggests() {
        let e = resolve_model("gemma4-e3b").unwrap_err().to_string();
        assert!(
            e.contains("did you mean") && e.contains("gemma4-e2b"),
            "{e}"
        );
    }

    #[test]
    fn missing_yaml_names_the_file() {
        let e = resolve_model("/nonexistent/m.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/m.yaml"), "{e}");
    }
}
