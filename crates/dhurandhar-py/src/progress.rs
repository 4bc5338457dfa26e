//! The facade's `Progress` sink for Python: it calls the user's callback (if any) and
//! checks for Ctrl-C, turning a pending `KeyboardInterrupt` (or an exception raised
//! by the callback) into the job's `CancelToken`, so the job stops at its next check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use dhurandhar::{CancelToken, Progress, Unit};
use pyo3::prelude::*;

pub(crate) struct PyProgress {
    callback: Option<Py<PyAny>>,
    cancel: CancelToken,
    label: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    /// The first exception seen (the interrupt or the callback's error).
    error: Mutex<Option<PyErr>>,
}

impl PyProgress {
    pub fn new(callback: Option<Py<PyAny>>, cancel: CancelToken) -> Self {
        PyProgress {
            callback,
            cancel,
            label: Mutex::new(String::new()),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    /// The token the job checks (cancelled by Ctrl-C or a failing callback).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Call the callback and look for signals; any exception cancels the job.
    fn poll(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        Python::with_gil(|py| {
            let mut r = py.check_signals();
            if r.is_ok() {
                if let Some(cb) = &self.callback {
                    let label = self.label.lock().map(|l| l.clone()).unwrap_or_default();
                    let total = self.total.load(Ordering::Relaxed);
                    let done = self.done.load(Ordering::Relaxed);
                    r = cb
                        .call1(py, (done, (total > 0).then_some(total), label))
                        .map(|_| ());
                }
            }
            if let Err(e) = r {
                if let Ok(mut slot) = self.error.lock() {
                    slot.get_or_insert(e);
                }
                self.cancel.cancel();
            }
        });
    }

    /// The job's result with a Python exception raised during it taking precedence
    /// (so Ctrl-C surfaces as `KeyboardInterrupt`, not as a generic cancellation).
    pub fn finish<T>(&self, r: dhurandhar::Result<T>) -> PyResult<T> {
        if let Some(e) = self.error.lock().ok().and_then(|mut s| s.take()) {
            return Err(e);
        }
        r.map_err(crate::to_py_err)
    }
}

impl Progress for PyProgress {
    fn start(&self, label: &str, total: Option<u64>, _unit: Unit) {
        if let Ok(mut l) = self.label.lock() {
            *l = label.to_string();
        }
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.poll();
    }
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.poll();
    }
    fn finish(&self) {
        self.poll();
    }
    fn message(&self, text: &str) {
        if let Ok(mut l) = self.label.lock() {
            *l = text.to_string();
        }
        self.poll();
    }
}
