//! The codec interface and the factory.

use thiserror::Error;

use crate::framed::Framed;

/// Codec names accepted on the command line.
pub const CODEC_NAMES: &[&str] = &[
    "turbo",
    "turbo-mse",
    "turbo-prod",
    "rotor",
    "spectral",
    "oscar",
    "q8_0",
    "q4_0",
    "q4_0-rot",
    "kivi2",
];

/// Keys and values are quantized differently by some codecs (per-channel keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvRole {
    Key,
    Value,
}

impl KvRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KvRole::Key => "key",
            KvRole::Value => "value",
        }
    }
}

/// What to build: codec name, bit budget, geometry and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecSpec {
    pub name: String,
    pub bits: u32,
    pub head_dim: usize,
    pub seed: u64,
}

impl CodecSpec {
    pub fn new(name: &str, bits: u32, head_dim: usize) -> Self {
        CodecSpec {
            name: name.to_string(),
            bits,
            head_dim,
            seed: DEFAULT_SEED,
        }
    }
}

/// Default rotation seed (the Python tool's, so configs read the same).
pub const DEFAULT_SEED: u64 = 20260421;

/// Largest head_dim accepted: keeps scratch buffers and codebooks bounded.
pub const MAX_HEAD_DIM: usize = 8192;

#[derive(Debug, Error)]
pub enum KvError {
    #[error("unknown codec `{name}` (known: {known})")]
    UnknownCodec { name: String, known: String },
    #[error("codec `{codec}` does not support {bits} bits (supported: {supported})")]
    BitsOutOfRange {
        codec: String,
        bits: u32,
        supported: String,
    },
    #[error("head_dim {0} is out of range (1..={MAX_HEAD_DIM})")]
    HeadDim(usize),
    #[error("input length {len} is not a multiple of head_dim {head_dim}")]
    ShapeMismatch { len: usize, head_dim: usize },
    #[error("empty batch: nothing to encode")]
    EmptyBatch,
    #[error("{tokens} tokens is not a multiple of the {role} token group {group} of `{codec}` (keep the partial group unencoded)")]
    PartialGroup {
        codec: String,
        role: &'static str,
        tokens: usize,
        group: usize,
    },
    #[error("non-finite input value {value} at token {token}, channel {channel}: NaN/Inf are rejected, not encoded")]
    NonFinite {
        token: usize,
        channel: usize,
        value: f32,
    },
    #[error("value too large for the codec's f16 side information at token {token} (|x| ~ {magnitude:e} > 65504)")]
    Overflow { token: usize, magnitude: f32 },
    #[error(
        "encoded buffer is {got} bytes but {tokens} tokens of `{codec}` {role}s need {expected}"
    )]
    EncodedLength {
        codec: String,
        role: &'static str,
        tokens: usize,
        expected: usize,
        got: usize,
    },
    #[error("corrupted encoded buffer: {0}")]
    Corrupted(String),
    #[error("codec `{0}` needs calibration samples (at least 2 vectors of head_dim values)")]
    NeedsCalibration(String),
    #[error("bad calibration: {0}")]
    Calibration(String),
    #[error("bad tensor file: {0}")]
    TensorFile(String),
    #[error("{0}")]
    Invalid(String),
}

/// One KV codec for one head geometry.
///
/// The byte stream holds only per-token (or per-token-group) records: no header, so
/// that `encoded.len() * 8 / values` is exactly the storage cost. Side information that
/// is stored once per head (SpectralQuant's calibration) is reported by [`side_bytes`]
/// and amortised by the caller over a stated number of tokens.
///
/// NaN/Inf inputs are rejected with [`KvError::NonFinite`] (encoding them "safely" would
/// hide an upstream bug and poison every scale in the group); values whose f16 side
/// information would overflow are rejected with [`KvError::Overflow`].
///
/// [`side_bytes`]: KvCodec::side_bytes
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

    /// The requested bit budget.
    fn bits(&self) -> u32 {
        0
    }
    /// Exact encoded size of `n_tokens` tokens (a multiple of `token_group`).
    fn encoded_len(&self, role: KvRole, n_tokens: usize) -> usize {
        let d = self.head_dim();
        self.encode(role, &vec![0.0; n_tokens * d])
            .map(|b| b.len())
            .unwrap_or(0)
    }
    /// Bytes stored once per head and role (calibration), not per token.
    fn side_bytes(&self, _role: KvRole) -> usize {
        0
    }
}

/// Bit widths a codec accepts.
pub fn supported_bits(name: &str) -> Option<&'static [u32]> {
    Some(match name {
        "turbo" | "rotor" => &[2, 3, 4, 5, 6, 7, 8],
        "turbo-mse" | "turbo-prod" | "spectral" => &[1, 2, 3, 4, 5, 6, 7, 8],
        "oscar" | "kivi2" => &[2, 3, 4, 5, 6, 7, 8],
        "q8_0" => &[8],
        "q4_0" | "q4_0-rot" => &[4],
        _ => return None,
    })
}

fn check_spec(spec: &CodecSpec) -> Result<(), KvError> {
    let Some(bits) = supported_bits(&spec.name) else {
        return Err(KvError::UnknownCodec {
            name: spec.name.clone(),
            known: CODEC_NAMES.join(", "),
        });
    };
    if !bits.contains(&spec.bits) {
        let s: Vec<String> = bits.iter().map(|b| b.to_string()).collect();
        return Err(KvError::BitsOutOfRange {
            codec: spec.name.clone(),
            bits: spec.bits,
            supported: s.join(","),
        });
    }
    if spec.head_dim == 0 || spec.head_dim > MAX_HEAD_DIM {
        return Err(KvError::HeadDim(spec.head_dim));
    }
    Ok(())
}

/// Build a codec. `calibration` holds sample vectors (`k × head_dim`) for codecs that
/// calibrate (SpectralQuant, used for both keys and values); others ignore it.
pub fn build_codec(
    spec: &CodecSpec,
    calibration: Option<&[f32]>,
) -> Result<Box<dyn KvCodec>, KvError> {
    build_codec_roles(spec, calibration, calibration)
}

/// Like [`build_codec`], with separate calibration samples for keys and values.
pub fn build_codec_roles(
    spec: &CodecSpec,
    key_calibration: Option<&[f32]>,
    value_calibration: Option<&[f32]>,
) -> Result<Box<dyn KvCodec>, KvError> {
    use crate::codecs::*;
    check_spec(spec)?;
    let (d, b, s) = (spec.head_dim, spec.bits, spec.seed);
    Ok(match spec.name.as_str() {
        "turbo" => Box::new(Framed::new(SignResidual::turbo(d, b, s))),
        "rotor" => Box::new(Framed::new(SignResidual::rotor(d, b, s))),
        "turbo-mse" => Box::new(Framed::new(TurboMse::new(d, b, s, false))),
        "turbo-prod" => Box::new(Framed::new(TurboMse::new(d, b, s, true))),
        "spectral" => {
            let (Some(kc), Some(vc)) = (key_calibration, value_calibration) else {
                return Err(KvError::NeedsCalibration(spec.name.clone()));
            };
            let k = crate::spectral::Calibration::fit(kc, d, b)?;
            let v = crate::spectral::Calibration::fit(vc, d, b)?;
            Box::new(Framed::new(crate::spectral::Spectral::new(k, v)))
        }
        "oscar" => Box::new(Framed::new(Oscar::new(d, b, s))),
        "q8_0" => Box::new(Framed::new(BlockQ::q8_0(d, s, false))),
        "q4_0" => Box::new(Framed::new(BlockQ::q4_0(d, s, false))),
        "q4_0-rot" => Box::new(Framed::new(BlockQ::q4_0(d, s, true))),
        "kivi2" => Box::new(Framed::new(Kivi::new(d, b))),
        other => {
            return Err(KvError::UnknownCodec {
                name: other.to_string(),
                known: CODEC_NAMES.join(", "),
            })
        }
    })
}
