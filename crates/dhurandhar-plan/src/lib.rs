//! The memory planner: peak footprint of a model at a context length, broken down by
//! component, and per-device verdicts (resident, PLE mmap'd from flash, weights streamed
//! from flash, or infeasible) with a decode tokens/s ceiling.
//!
//! I/O-free: callers parse files and hand in [`dhurandhar_model::ModelArchitecture`],
//! optional exact [`dhurandhar_model::ComponentBytes`] and [`DeviceProfile`]s.
//!
//! ```
//! use dhurandhar_plan::{plan, assess, builtin_device, PlanOptions};
//! let arch = dhurandhar_model::registry::get("gemma4-e2b").unwrap();
//! let p = plan(&arch, None, &PlanOptions::default()).unwrap();
//! assert!(p.component("ple") > p.component("decoder_weights"));
//! let a = assess(&p, &builtin_device("laptop_nvme").unwrap(), 15.0);
//! assert_eq!(a.mode.as_str(), "resident");
//! ```

mod assess;
mod device;
mod error;
mod format;
mod kvcost;
mod params;
mod plan;

pub use assess::{
    analyze, assess, ceilings, describe_changes, mitigations, summary_line, Analysis, Bound,
    BoundKind, Ceilings, Change, Cost, DeviceAssessment, Mitigation, Mode, ModeEval, Summary,
};
pub use device::{
    budget_presets, builtin_device, builtin_device_yaml, builtin_devices, split_efficiency,
    BudgetPreset, DeviceProfile, MatvecCost, MatvecRates, VectorCost, INTERLEAVED,
};
pub use error::PlanError;
pub use format::{Grouping, WeightFormat};
pub use kvcost::{KvCodecCost, KvCodecWidth, KvHeadCost, KvRoleCost};
pub use params::{count_params, ParamCounts};
pub use plan::{
    activation_elements_per_token, format_params, plan, Component, MemoryPlan, PerToken,
    PlanOptions, PleLayout, PublishedCheck, Totals,
};
