//! What is built in: the model registry, the device profiles, the memory budget presets
//! and the weight formats the planner prices.

use dhurandhar_model::{registry, ModelArchitecture};
use dhurandhar_plan::{budget_presets, builtin_devices, BudgetPreset, DeviceProfile, Grouping};
use serde::Serialize;

use crate::plan::select_devices;
use crate::{Error, Result};

/// Version of the [`ModelsReport`] and [`DevicesReport`] documents.
/// 2: devices gain `memory_bandwidth_gbps`, `compute_f32_gflops`, `compute_int8_gops`,
/// `cpu_cores`, `flash_random_read_iops` (absent when unknown), `source` and, for a probed
/// host, `measured_at`.
pub const SCHEMA_VERSION: u32 = 2;

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

/// The YAML of one built-in device, with the source of every number.
pub fn device_yaml(slug: &str) -> Result<String> {
    let d = dhurandhar_plan::builtin_device(slug)?;
    Ok(dhurandhar_plan::builtin_device_yaml(&d.slug)
        .unwrap_or_default()
        .to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_complete() {
        assert_eq!(models().models.len(), registry::names().len());
        let d = devices(&[]).unwrap();
        assert_eq!(d.devices.len(), 5);
        assert_eq!(d.budget_presets.len(), 4);
        let int4 = d.weight_formats.iter().find(|f| f.name == "int4").unwrap();
        assert_eq!(int4.bits_per_weight, 4.0 + 16.0 / LISTING_ROW as f64);
    }

    #[test]
    fn extra_devices_are_validated_and_not_repeated() {
        let d = devices(&["laptop_nvme".into(), "all".into()]).unwrap();
        assert_eq!(d.devices.len(), 5);
        let e = devices(&["tablet".into()]).unwrap_err().to_string();
        assert!(e.contains("tablet_ufs3"), "{e}");
    }

    #[test]
    fn model_yaml_round_trips_and_unknown_suggests() {
        let y = model_yaml("llama-3.2-1b").unwrap();
        let m = ModelArchitecture::from_yaml_str(&y, "llama.yaml").unwrap();
        assert_eq!(m.name, "llama-3.2-1b");
        let e = model_yaml("llama-3.2-1").unwrap_err().to_string();
        assert!(e.starts_with("model:") && e.contains("llama-3.2-1b"), "{e}");
    }
}
