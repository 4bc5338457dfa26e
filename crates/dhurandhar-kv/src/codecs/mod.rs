//! The per-record kernels of every codec except SpectralQuant (see `spectral.rs`).
//!
//! Record layouts are fixed-size, little-endian, with side values as f16. The layouts
//! are documented on each type; every byte is counted in `bits_per_value`.

mod baselines;
mod oscar;
mod sign_residual;
mod turbo_mse;

pub(crate) use baselines::{BlockQ, Kivi};
pub(crate) use oscar::Oscar;
pub(crate) use sign_residual::{Rotors, SignResidual};
pub(crate) use turbo_mse::TurboMse;
