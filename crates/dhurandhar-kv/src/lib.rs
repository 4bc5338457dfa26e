//! KV-cache codecs.
//!
//! Every codec turns a block of f32 vectors of one KV head (`n_tokens × head_dim`,
//! row-major) into real packed bytes and back. Bits per value are always
//! `encoded.len() * 8 / values` (plus amortised per-head side information such as a
//! SpectralQuant calibration): nothing is a formula.

// Numeric kernels index several parallel arrays by dimension; iterator chains over
// four zipped slices would obscure them.
#![allow(clippy::needless_range_loop)]

pub mod bits;
mod codec;
mod codecs;
mod framed;
pub mod hadamard;
pub mod lloyd;
mod quant;
pub mod simd;
pub mod spectral;

pub use codec::{
    build_codec, build_codec_roles, Codec, CodecSpec, KvCodec, KvError, KvRole, DEFAULT_SEED,
    MAX_HEAD_DIM,
};
pub mod compare;
pub mod metrics;
pub mod model;
pub mod speed;
pub mod synth;
pub mod tensorfile;

pub use compare::{compare, round_trip, CompareOptions, Row, Skipped};
pub use metrics::{HeadData, HeadMetrics};
pub use model::{footprint, Footprint, KvCacheCompressor};
pub use speed::{measure, stage1_cost, SpeedOptions, SpeedReport, Stage1Cost};
pub use synth::{Distribution, DISTRIBUTION_NAMES};
