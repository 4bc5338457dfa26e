//! One module per command. Each exposes clap `Args` and a `run` function.

pub mod analyze;
pub mod bench_stream;
pub mod delta;
pub mod devices;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod kv;
pub mod kv_capture;
pub mod lora;
pub mod mmap_profile;
pub mod models;
pub mod pack;
pub mod plan_check;
pub mod quantize;
pub mod serve;
