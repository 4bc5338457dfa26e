//! The model contract.
//!
//! [`ModelArchitecture`] is the single description of a model that the planner, the KV
//! codecs, the profiler and the engine consume. It is plain data, validated once on
//! construction ([`ModelArchitecture::validate`]), and carries nothing that needs I/O:
//! callers read YAML/JSON/checkpoints and hand the text or numbers in.
//!
//! Field names follow the Python tool's YAML profiles so existing profiles load as-is.

mod arch;
mod error;
mod layers;
pub mod registry;
mod weights;
mod yaml_depth;

pub use arch::{LayerTypeName, ModelArchitecture};
pub use error::ModelError;
pub use layers::{AttentionKind, KvSource, LayerSpec};
pub use weights::{ComponentBytes, Matrices};
pub use yaml_depth::{check_yaml_depth, MAX_YAML_DEPTH};
