use thiserror::Error;

/// Why a model description was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// A field has a value the math cannot work with.
    #[error("model `{model}`: field `{field}` {reason}")]
    Invalid {
        model: String,
        field: &'static str,
        reason: String,
    },
    /// A YAML/JSON profile could not be parsed (location included in `message`).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
}

impl ModelError {
    pub(crate) fn invalid(model: &str, field: &'static str, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            model: model.to_string(),
            field,
            reason: reason.into(),
        }
    }
}
