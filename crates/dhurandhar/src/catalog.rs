//! What is built in: the model registry, the device profiles, the memory budget presets
//! and the weight formats the planner prices.

use dhurandhar_model::{registry, ModelArchitecture};
use dhurandhar_plan::{budget_presets, builtin_devices, BudgetPreset, DeviceProfile, Grouping};
use serde::Serialize;

use crate::plan::select_devices;
use crate::{Error, Result};

/// Version of the [`ModelsReport`] and [`DevicesReport`] documents.
pub const SCHEMA_VERSION: u32 = 1;

/// Row width at which per-channel formats are priced in the listing (`analyze` uses the
/// model's hidden size).
pub const LISTING_ROW: u64 = 2048;

/// Every built-in model with every field: the `models --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsReport {
    pub schema_version: u32,
    pub models: Vec<ModelArchitecture>,
}

/// The built-in models.
pub fn models() -> ModelsReport {
    ModelsReport {
        schema_version: SCHEMA_VERSION,
        models: registry::all(),
    }
}

/// The YAML profile of one built-in model (a starting point for one's own).
pub fn model_yaml(name: &str) -> Result<String> {
    if let Some(y) = registry::yaml(name) {
        return Ok(y.to_string());
    }
    let s = registry::suggest(name);
    let hint = if s.is_empty() {
        format!(" (built-in: {})", registry::names().join(", "))
    } else {
        format!(", did you mean: {}?", s.join(", "))
    };
    Err(Error::invalid(
        "model",
        format!("unknown model `{name}`{hint}"),
    ))
}

/// One weight format with its bits per weight at [`LISTING_ROW`].
#[derive(Debug, Clone, Serialize)]
pub struct FormatRow {
    pub name: String,
    /// Bits per weight including scales; per-channel formats priced at a 2048-wide row.
    pub bits_per_weight: f64,
    pub grouping: Grouping,
    pub description: String,
}

/// Devices, budget presets and weight formats: the `devices --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct DevicesReport {
    pub schema_version: u32,
    pub devices: Vec<DeviceProfile>,
    pub budget_presets: Vec<BudgetPreset>,
    pub weight_formats: Vec<FormatRow>,
}

/// The built-in devices followed by `extra` (slugs or YAML device profiles, validated;
/// duplicates of a listed device are shown once).
pub fn devices(extra: &[String]) -> Result<DevicesReport> {
    let mut devices = builtin_devices();
    if !extra.is_empty() {
        for d in select_devices(extra, None)? {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
    }
    let weight_formats = dhurandhar_plan::WeightFormat::catalog()
        .into_iter()
        .map(|f| FormatRow {
            bits_per_weight: f.bits_per_weight(LISTING_ROW),
            name: f.name,
            grouping: f.grouping,
            description: f.description,
        })
        .collect();
    Ok(DevicesReport {
        schema_version: SCHEMA_VERSION,
        devices,
        budget_presets: budget_presets(),
        weight_formats,
    })
}
