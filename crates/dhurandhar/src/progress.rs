//! Progress reporting and cancellation for long jobs, free of any UI.
//!
//! Front ends plug their own sink in: the CLI an `indicatif` bar, the web server a
//! server-sent-events stream, Python a callback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// Countable things, named in the plural ("tensors", "tokens", "reads").
    Items(&'static str),
}

/// Receives progress of a long job. Called from the job's thread(s); implementations
/// must be cheap (the job does not throttle its calls).
pub trait Progress: Send + Sync {
    /// A new phase begins: `label` says what, `total` how many `unit`s when known.
    fn start(&self, label: &str, total: Option<u64>, unit: Unit);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// The current phase is over.
    fn finish(&self) {}
    /// A line of information for the user (not an error).
    fn message(&self, _text: &str) {}
}

/// A sink that ignores everything (JSON output, tests, library use).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: Option<u64>, _unit: Unit) {}
    fn advance(&self, _n: u64) {}
}

/// Cooperative cancellation: clone it into the job, call [`cancel`](Self::cancel)
/// from anywhere (a Ctrl-C handler, a web request, Python's `KeyboardInterrupt`); the
/// job checks it between units of work and returns [`Error::Cancelled`](crate::Error::Cancelled),
/// leaving no partial output.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// `Err(Cancelled)` once cancelled: `token.check()?` between units of work.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_cancelled() {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_seen_by_clones() {
        let t = CancelToken::new();
        let job = t.clone();
        assert!(job.check().is_ok());
        t.cancel();
        assert!(matches!(job.check(), Err(crate::Error::Cancelled)));
    }
}
