//! KV-cache codecs.
//!
//! Every codec turns a block of f32 vectors of one KV head (`n_tokens × head_dim`,
//! row-major) into real packed bytes and back. Bits per value are always
//! `encoded.len() * 8 / values`: nothing is a formula.

mod codec;

pub use codec::{build_codec, CodecSpec, KvCodec, KvError, KvRole, CODEC_NAMES};
