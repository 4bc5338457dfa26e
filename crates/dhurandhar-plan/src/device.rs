//! Device profiles and memory budget presets.

use serde::{Deserialize, Serialize};

use crate::error::{did_you_mean, PlanError};

/// A deployment target: how much RAM the model may use and how fast flash reads.
///
/// YAML profiles use the Python tool's field names (`name`, `ram_budget_mb`,
/// `flash_read_gbps`, `supports_npu`, `notes`), so its device files load unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Short id; YAML profiles may omit it (the file stem is used by the CLI).
    #[serde(default)]
    pub slug: String,
    /// Human-readable name.
    pub name: String,
    /// RAM the model may use, in MiB.
    pub ram_budget_mb: f64,
    /// Sequential flash read bandwidth in GB/s (10^9 bytes per second).
    pub flash_read_gbps: f64,
    #[serde(default)]
    pub supports_npu: bool,
    #[serde(default)]
    pub notes: String,
}

const MIB: f64 = 1024.0 * 1024.0;

impl DeviceProfile {
    /// RAM budget in bytes.
    pub fn ram_budget_bytes(&self) -> u64 {
        (self.ram_budget_mb * MIB).round() as u64
    }

    /// Flash bandwidth in bytes per second.
    pub fn flash_bytes_per_sec(&self) -> f64 {
        self.flash_read_gbps * 1e9
    }

    /// Reject values the math cannot use: no RAM, no flash, NaN.
    pub fn validate(&self) -> Result<(), PlanError> {
        let dev = if self.slug.is_empty() {
            &self.name
        } else {
            &self.slug
        };
        let bad = |field, reason: String| {
            Err(PlanError::InvalidDevice {
                device: dev.clone(),
                field,
                reason,
            })
        };
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        if !(self.ram_budget_mb.is_finite() && self.ram_budget_mb > 0.0) {
            return bad(
                "ram_budget_mb",
                format!(
                    "must be a positive number of MiB, got {}",
                    self.ram_budget_mb
                ),
            );
        }
        if self.ram_budget_mb > 64.0 * 1024.0 * 1024.0 {
            return bad(
                "ram_budget_mb",
                format!("({}) is implausibly large", self.ram_budget_mb),
            );
        }
        if !(self.flash_read_gbps.is_finite()
            && self.flash_read_gbps > 0.0
            && self.flash_read_gbps < 1e4)
        {
            return bad(
                "flash_read_gbps",
                format!(
                    "must be a positive number of GB/s, got {}",
                    self.flash_read_gbps
                ),
            );
        }
        Ok(())
    }

    /// Parse and validate a YAML device profile; `origin` names the file in errors and
    /// `default_slug` fills a missing `slug`.
    pub fn from_yaml_str(text: &str, origin: &str, default_slug: &str) -> Result<Self, PlanError> {
        dhurandhar_model::check_yaml_depth(text).map_err(|message| PlanError::Parse {
            origin: origin.to_string(),
            message,
        })?;
        let mut d: DeviceProfile = serde_yaml_ng::from_str(text).map_err(|e| PlanError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        if d.slug.is_empty() {
            d.slug = default_slug.to_string();
        }
        d.validate().map_err(|e| PlanError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(d)
    }

    /// An ad-hoc device from its two numbers.
    pub fn custom(ram_budget_mb: f64, flash_read_gbps: f64) -> Result<Self, PlanError> {
        let d = DeviceProfile {
            slug: "custom".into(),
            name: format!("Custom ({ram_budget_mb} MiB, {flash_read_gbps} GB/s)"),
            ram_budget_mb,
            flash_read_gbps,
            supports_npu: false,
            notes: "ad-hoc device given by its RAM budget and flash bandwidth".into(),
        };
        d.validate()?;
        Ok(d)
    }
}

fn dev(slug: &str, name: &str, ram: f64, gbps: f64, npu: bool, notes: &str) -> DeviceProfile {
    DeviceProfile {
        slug: slug.into(),
        name: name.into(),
        ram_budget_mb: ram,
        flash_read_gbps: gbps,
        supports_npu: npu,
        notes: notes.into(),
    }
}

/// The built-in devices, sorted by slug (the Python tool's five).
pub fn builtin_devices() -> Vec<DeviceProfile> {
    vec![
        dev(
            "high_end_mobile_ufs4",
            "High-end Mobile (UFS 4.0)",
            2048.0,
            4.2,
            true,
            "Flagship phone: UFS 4.0 flash, NPU",
        ),
        dev(
            "laptop_nvme",
            "Laptop (NVMe PCIe 4.0)",
            8192.0,
            7.0,
            true,
            "Ample RAM and fast flash",
        ),
        dev(
            "low_tier_mobile_emmc",
            "Low-tier Mobile (eMMC 5.1)",
            1024.0,
            0.4,
            false,
            "Entry phone: eMMC 5.1, no NPU; flash reads are slow",
        ),
        dev(
            "mid_tier_mobile_ufs3",
            "Mid-tier Mobile (UFS 3.1)",
            1536.0,
            2.1,
            true,
            "Mid-range phone: UFS 3.1 flash, NPU",
        ),
        dev(
            "tablet_ufs3",
            "Tablet (UFS 3.1)",
            3072.0,
            2.0,
            false,
            "More RAM than a phone, mid-range flash",
        ),
    ]
}

/// Built-in device by slug (case-insensitive).
pub fn builtin_device(slug: &str) -> Result<DeviceProfile, PlanError> {
    let q = slug.trim().to_ascii_lowercase();
    let all = builtin_devices();
    if let Some(d) = all.iter().find(|d| d.slug == q) {
        return Ok(d.clone());
    }
    let names: Vec<&str> = all.iter().map(|d| d.slug.as_str()).collect();
    Err(PlanError::UnknownDevice {
        name: slug.to_string(),
        hint: did_you_mean(&q, &names),
    })
}

/// A named RAM budget for a deployment tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPreset {
    pub name: &'static str,
    pub ram_budget_mb: f64,
    pub description: &'static str,
}

/// Memory budget presets (MiB), as in the Python tool.
pub fn budget_presets() -> Vec<BudgetPreset> {
    vec![
        BudgetPreset {
            name: "int2_extreme",
            ram_budget_mb: 1024.0,
            description: "2-bit weights on a 1 GiB budget",
        },
        BudgetPreset {
            name: "int4_aggressive",
            ram_budget_mb: 1536.0,
            description: "4-bit weights on a 1.5 GiB budget",
        },
        BudgetPreset {
            name: "int8_deployment",
            ram_budget_mb: 2048.0,
            description: "8-bit weights on a 2 GiB budget",
        },
        BudgetPreset {
            name: "bf16_development",
            ram_budget_mb: 4096.0,
            description: "bf16 weights on a 4 GiB budget",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_validate_and_are_sorted() {
        let d = builtin_devices();
        assert_eq!(d.len(), 5);
        for x in &d {
            x.validate().unwrap();
        }
        let mut s: Vec<_> = d.iter().map(|x| x.slug.clone()).collect();
        s.sort();
        assert_eq!(s, d.iter().map(|x| x.slug.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn yaml_profile_uses_python_field_names() {
        let y = "name: Pixel 10 Pro (Tensor G5, UFS 4.0)\nram_budget_mb: 3072\nflash_read_gbps: 4.2\nsupports_npu: true\n";
        let d = DeviceProfile::from_yaml_str(y, "pixel.yaml", "pixel").unwrap();
        assert_eq!(d.slug, "pixel");
        assert_eq!(d.ram_budget_bytes(), 3072 * 1024 * 1024);
    }

    #[test]
    fn zero_ram_is_refused() {
        let y = "name: x\nram_budget_mb: 0\nflash_read_gbps: 1\n";
        let e = DeviceProfile::from_yaml_str(y, "d.yaml", "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.yaml") && e.contains("ram_budget_mb"), "{e}");
        assert!(DeviceProfile::custom(-1.0, 2.0).is_err());
        assert!(DeviceProfile::custom(1024.0, 0.0).is_err());
    }

    #[test]
    fn typo_field_is_named() {
        let y = "name: x\nram_budget_mbb: 10\nflash_read_gbps: 1\n";
        let e = DeviceProfile::from_yaml_str(y, "d.yaml", "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ram_budget_mbb") && e.contains("line"), "{e}");
    }

    #[test]
    fn unknown_device_suggests() {
        let e = builtin_device("laptop_nvm").unwrap_err().to_string();
        assert!(e.contains("laptop_nvme"), "{e}");
    }
}
