//! The codec interface and the factory.

use thiserror::Error;

use crate::framed::Framed;

/// A KV codec, by identity. The one list of names, aliases and bit widths: every
/// front end parses and prints codecs through this type, so a name is checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// The Python tool's TurboQuant: sign bit + norm, residual at `bits`.
    Turbo,
    /// TurboQuant as published: Lloyd–Max codebook after a random rotation.
    TurboMse,
    /// `turbo-mse` at b−1 bits + 1-bit QJL on the residual.
    TurboProd,
    /// RotorQuant: Cl(3,0) rotor per 3-channel block, then the `turbo` stage 2.
    Rotor,
    /// SpectralQuant: PCA basis with a calibrated bit allocation.
    Spectral,
    /// OScaR: per-channel keys over 32-token groups, per-token values.
    Oscar,
    /// llama.cpp `block_q8_0`.
    Q8_0,
    /// llama.cpp `block_q4_0`.
    Q4_0,
    /// `q4_0` after the randomized Hadamard rotation.
    Q4_0Rot,
    /// KIVI 2-group asymmetric quantization.
    Kivi2,
}

/// `(codec, canonical name, aliases)`: the only place names are spelled.
const NAMES: &[(Codec, &str, &[&str])] = &[
    (Codec::Turbo, "turbo", &["turboquant"]),
    (Codec::TurboMse, "turbo-mse", &["turbo_mse"]),
    (Codec::TurboProd, "turbo-prod", &["turbo_prod"]),
    (Codec::Rotor, "rotor", &["rotorquant"]),
    (Codec::Spectral, "spectral", &["spectralquant"]),
    (Codec::Oscar, "oscar", &[]),
    (Codec::Q8_0, "q8_0", &["q8"]),
    (Codec::Q4_0, "q4_0", &["q4"]),
    (Codec::Q4_0Rot, "q4_0-rot", &["q4_0_rot"]),
    (Codec::Kivi2, "kivi2", &["kivi"]),
];

impl Codec {
    /// Every codec, in the order sweeps and listings use.
    pub const ALL: [Codec; 10] = [
        Codec::Turbo,
        Codec::TurboMse,
        Codec::TurboProd,
        Codec::Rotor,
        Codec::Spectral,
        Codec::Oscar,
        Codec::Q8_0,
        Codec::Q4_0,
        Codec::Q4_0Rot,
        Codec::Kivi2,
    ];

    /// The canonical name (what JSON reports and tables print).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("?", |(_, n, _)| n)
    }

    /// Other spellings accepted by [`FromStr`](std::str::FromStr).
    pub fn aliases(self) -> &'static [&'static str] {
        NAMES
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or(&[], |(_, _, a)| a)
    }

    /// Bit widths this codec accepts (for `turbo`/`rotor`: the residual bits).
    pub fn supported_bits(self) -> &'static [u32] {
        match self {
            Codec::Turbo | Codec::Rotor => &[2, 3, 4, 5, 6, 7, 8],
            Codec::TurboMse | Codec::TurboProd | Codec::Spectral => &[1, 2, 3, 4, 5, 6, 7, 8],
            Codec::Oscar | Codec::Kivi2 => &[2, 3, 4, 5, 6, 7, 8],
            Codec::Q8_0 => &[8],
            Codec::Q4_0 | Codec::Q4_0Rot => &[4],
        }
    }

    /// Whether [`build_codec`] needs calibration samples for this codec.
    pub fn needs_calibration(self) -> bool {
        self == Codec::Spectral
    }

    /// The supported width nearest to `want` (ties go to the smaller width).
    pub fn nearest_bits(self, want: u32) -> u32 {
        *self
            .supported_bits()
            .iter()
            .min_by_key(|&&b| (b.abs_diff(want), b))
            .unwrap_or(&want)
    }

    /// The canonical names, comma-separated (for error messages and help).
    pub fn known_names() -> String {
        let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
        names.join(", ")
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Codec {
    type Err = KvError;
    /// A canonical name or an alias, exactly (names are lower case).
    fn from_str(s: &str) -> Result<Self, KvError> {
        NAMES
            .iter()
            .find(|(_, n, a)| *n == s || a.contains(&s))
            .map(|(c, _, _)| *c)
            .ok_or_else(|| KvError::UnknownCodec {
                name: s.to_string(),
                known: Codec::known_names(),
            })
    }
}

impl serde::Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

impl std::str::FromStr for KvRole {
    type Err = KvError;
    /// `key`/`k` or `value`/`v`.
    fn from_str(s: &str) -> Result<Self, KvError> {
        match s {
            "key" | "k" => Ok(KvRole::Key),
            "value" | "v" => Ok(KvRole::Value),
            _ => Err(KvError::Invalid(format!(
                "role must be key or value, not `{s}`"
            ))),
        }
    }
}

/// What to build: codec, bit budget, geometry and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecSpec {
    pub codec: Codec,
    pub bits: u32,
    pub head_dim: usize,
    pub seed: u64,
}

impl CodecSpec {
    /// A spec with the [`DEFAULT_SEED`].
    pub fn new(codec: Codec, bits: u32, head_dim: usize) -> Self {
        CodecSpec {
            codec,
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

fn check_spec(spec: &CodecSpec) -> Result<(), KvError> {
    let bits = spec.codec.supported_bits();
    if !bits.contains(&spec.bits) {
        let s: Vec<String> = bits.iter().map(|b| b.to_string()).collect();
        return Err(KvError::BitsOutOfRange {
            codec: spec.codec.name().to_string(),
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
    Ok(match spec.codec {
        Codec::Turbo => Box::new(Framed::new(SignResidual::turbo(d, b, s))),
        Codec::Rotor => Box::new(Framed::new(SignResidual::rotor(d, b, s))),
        Codec::TurboMse => Box::new(Framed::new(TurboMse::new(d, b, s, false))),
        Codec::TurboProd => Box::new(Framed::new(TurboMse::new(d, b, s, true))),
        Codec::Spectral => {
            let (Some(kc), Some(vc)) = (key_calibration, value_calibration) else {
                return Err(KvError::NeedsCalibration(spec.codec.name().to_string()));
            };
            let k = crate::spectral::Calibration::fit(kc, d, b)?;
            let v = crate::spectral::Calibration::fit(vc, d, b)?;
            Box::new(Framed::new(crate::spectral::Spectral::new(k, v)))
        }
        Codec::Oscar => Box::new(Framed::new(Oscar::new(d, b, s))),
        Codec::Q8_0 => Box::new(Framed::new(BlockQ::q8_0(d, s, false))),
        Codec::Q4_0 => Box::new(Framed::new(BlockQ::q4_0(d, s, false))),
        Codec::Q4_0Rot => Box::new(Framed::new(BlockQ::q4_0(d, s, true))),
        Codec::Kivi2 => Box::new(Framed::new(Kivi::new(d, b))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_round_trip() {
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>().unwrap(), c);
            assert_eq!(c.to_string(), c.name());
            for a in c.aliases() {
                assert_eq!(a.parse::<Codec>().unwrap(), c);
            }
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Codec>(&json).unwrap(), c);
        }
        assert_eq!("q4_0_rot".parse::<Codec>().unwrap(), Codec::Q4_0Rot);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = "turbo-xl".parse::<Codec>().unwrap_err().to_string();
        assert!(e.contains("unknown codec `turbo-xl`"), "{e}");
        assert!(e.contains("turbo-mse") && e.contains("kivi2"), "{e}");
        assert!(serde_json::from_str::<Codec>("\"nope\"").is_err());
    }

    #[test]
    fn nearest_bits_prefers_the_smaller_on_ties() {
        assert_eq!(Codec::Q4_0.nearest_bits(2), 4);
        assert_eq!(Codec::Q8_0.nearest_bits(4), 8);
        assert_eq!(Codec::Turbo.nearest_bits(1), 2);
        assert_eq!(Codec::TurboMse.nearest_bits(3), 3);
    }
}
