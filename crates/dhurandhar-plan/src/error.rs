use thiserror::Error;

/// Why a plan or a device could not be built.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PlanError {
    /// A planner option is out of range (context, KV bits, page size, ...).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// The weight format names no known format.
    #[error("unknown weight format `{name}`{hint}")]
    UnknownFormat { name: String, hint: String },
    /// A device profile has a value the math cannot use.
    #[error("device `{device}`: field `{field}` {reason}")]
    InvalidDevice {
        device: String,
        field: &'static str,
        reason: String,
    },
    /// A device name is no built-in device.
    #[error("unknown device `{name}`{hint}")]
    UnknownDevice { name: String, hint: String },
    /// A YAML device profile could not be parsed (location in `message`).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
}

impl PlanError {
    pub(crate) fn option(option: &'static str, reason: impl Into<String>) -> Self {
        PlanError::InvalidOption {
            option,
            reason: reason.into(),
        }
    }
}

/// ", did you mean: a, b?" or "" — shared by unknown-name errors.
pub(crate) fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    let q = name.to_ascii_lowercase();
    let mut scored: Vec<(f64, &str)> = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&q, c), *c))
        .filter(|(s, _)| *s >= 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    if scored.is_empty() {
        format!(" (known: {})", candidates.join(", "))
    } else {
        let names: Vec<&str> = scored.iter().take(3).map(|(_, c)| *c).collect();
        format!(", did you mean: {}?", names.join(", "))
    }
}
