//! **dhurandhar** — put large language models on devices where they have no right to fit.
//!
//! This crate is the one library under every front end: the `dhurandhar` CLI, the
//! Python package and the web dashboard are adapters that translate their arguments
//! into the options structs here and render the reports they get back. Each job is
//! plain data in, plain data out:
//!
//! | job | options → report |
//! |---|---|
//! | plan a model on devices | [`plan`] |
//! | list built-in models and devices | [`catalog`] |
//! | read a real checkpoint | [`inspect`] |
//! | KV-cache codecs | [`kv`] |
//! | perplexity with compressed KV | [`eval`] |
//! | generate text | [`generate`] |
//! | decode speed under a memory cap, vs llama.cpp | [`capped`] |
//! | profile flash / mmap | [`profile`] |
//! | pack, unpack, verify, delta | [`pack`] |
//! | quantize a GGUF (llama.cpp presets) | [`quantize`] |
//! | LoRA jobs: the job file, the dry run | [`lora`] |
//!
//! Reports are `Serialize` and carry a `schema_version`; they are the `--json`
//! documents. Long jobs take a [`Progress`] sink and a [`CancelToken`].
//!
//! Plan Qwen2.5-0.5B at 32k tokens on a 1 GiB phone, with the KV cache charged at what
//! the turbo-mse codec really stores:
//!
//! ```
//! use dhurandhar::plan::{analyze, AnalyzeOptions};
//!
//! let report = analyze(&AnalyzeOptions {
//!     model: "qwen2.5-0.5b".into(),
//!     context_tokens: 32_768,
//!     devices: vec!["low_tier_mobile_emmc".into()],
//!     ..AnalyzeOptions::default()
//! })?;
//! let kv = report.components.iter().find(|c| c.name == "kv_cache").unwrap();
//! assert_eq!(report.kv.bits_per_value, 4.25); // 4 bits + a 16-bit norm per 64 values
//! assert_eq!(kv.bytes, 106_954_752);
//! println!("{}: {:?}", report.devices[0].slug, report.devices[0].mode);
//! # Ok::<(), dhurandhar::Error>(())
//! ```
//!
//! The same cache measured by encoding synthetic KV with the codec itself:
//!
//! ```
//! use dhurandhar::kv::{bench, BenchOptions};
//! use dhurandhar::{CancelToken, NoProgress};
//!
//! let opts = BenchOptions { model: "qwen2.5-0.5b".into(), samples: 64, ..BenchOptions::default() };
//! let report = bench(&opts, &NoProgress, &CancelToken::new())?;
//! assert_eq!(report.footprint.compressed_bytes, 106_954_752);
//! # Ok::<(), dhurandhar::Error>(())
//! ```
//!
//! The layers below (re-exported for advanced use) are I/O-free cores
//! ([`dhurandhar_model`], [`dhurandhar_plan`], [`dhurandhar_kv`]), readers
//! ([`dhurandhar_checkpoint`], [`dhurandhar_pack`]) and engine/measurement
//! ([`dhurandhar_engine`], [`dhurandhar_profile`]).

pub mod error;
pub mod progress;
pub mod units;

pub mod capped;
pub mod catalog;
pub mod eval;
pub mod generate;
mod gguf_out;
pub mod inspect;
pub mod kv;
pub mod lora;
pub mod model;
pub mod pack;
pub mod plan;
pub mod probe;
pub mod profile;
pub mod quantize;

pub use error::{Error, Result};
pub use progress::{CancelToken, NoProgress, Progress, Unit};

pub use dhurandhar_checkpoint;
pub use dhurandhar_engine;
pub use dhurandhar_io;
pub use dhurandhar_kv;
pub use dhurandhar_lora;
pub use dhurandhar_model;
pub use dhurandhar_pack;
pub use dhurandhar_plan;
pub use dhurandhar_profile;
pub use dhurandhar_quantize;
