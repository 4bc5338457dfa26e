use thiserror::Error;

/// Codec names accepted on the command line.
pub const CODEC_NAMES: &[&str] = &[
    "turbo", "turbo-mse", "turbo-prod", "rotor", "spectral", "oscar", "q8_0", "q4_0", "q4_0-rot",
    "kivi2",
];

/// Keys and values are quantized differently by some codecs (per-channel keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvRole {
    Key,
    Value,
}

/// What to build: codec name, bit budget, geometry and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecSpec {
    pub name: String,
    pub bits: u32,
    pub head_dim: usize,
    pub seed: u64,
}

#[derive(Debug, Error)]
pub enum KvError {
    #[error("unknown codec `{0}`")]
    UnknownCodec(String),
    #[error("{0}")]
    Invalid(String),
}

/// One KV codec for one head geometry.
pub trait KvCodec: Send + Sync {
    fn name(&self) -> &str;
    fn head_dim(&self) -> usize;
    /// Tokens that must be encoded together for `role` (1 for per-token codecs; e.g. 32
    /// for per-channel key quantization). Callers keep a partial group unencoded.
    fn token_group(&self, role: KvRole) -> usize;
    /// Encode `x` (`x.len() / head_dim` tokens, a multiple of `token_group`).
    fn encode(&self, role: KvRole, x: &[f32]) -> Result<Vec<u8>, KvError>;
    /// Decode into `out` (same length as the encoded input).
    fn decode(&self, role: KvRole, bytes: &[u8], out: &mut [f32]) -> Result<(), KvError>;
}

/// Build a codec. `calibration` holds sample vectors (`k × head_dim`) for codecs that
/// calibrate (SpectralQuant); others ignore it.
pub fn build_codec(
    spec: &CodecSpec,
    _calibration: Option<&[f32]>,
) -> Result<Box<dyn KvCodec>, KvError> {
    Err(KvError::UnknownCodec(spec.name.clone()))
}
