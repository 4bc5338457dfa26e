//! Model resolution moved to [`dhurandhar::model`]; re-exported for the commands that
//! still import it from here.

pub use dhurandhar::model::{is_yaml_path, resolve_model, ResolvedModel};
