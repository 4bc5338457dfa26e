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
//! | profile flash / mmap | [`profile`] |
//! | pack, unpack, verify, delta | [`pack`] |
//!
//! Reports are `Serialize` and carry a `schema_version`; they are the `--json`
//! documents. Long jobs take a [`Progress`] sink and a [`CancelToken`].
//!
//! The layers below (re-exported for advanced use) are I/O-free cores
//! ([`dhurandhar_model`], [`dhurandhar_plan`], [`dhurandhar_kv`]), readers
//! ([`dhurandhar_checkpoint`], [`dhurandhar_pack`]) and engine/measurement
//! ([`dhurandhar_engine`], [`dhurandhar_profile`]).

pub mod error;
pub mod progress;
pub mod units;

pub mod catalog;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod kv;
pub mod model;
pub mod pack;
pub mod plan;
pub mod profile;

pub use error::{Error, Result};
pub use progress::{CancelToken, NoProgress, Progress, Unit};

pub use dhurandhar_checkpoint;
pub use dhurandhar_engine;
pub use dhurandhar_io;
pub use dhurandhar_kv;
pub use dhurandhar_model;
pub use dhurandhar_pack;
pub use dhurandhar_plan;
pub use dhurandhar_profile;
