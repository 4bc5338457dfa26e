//! `dhurandhar._native`: the Python package's extension module.
//!
//! A thin adapter over the `dhurandhar` facade, like the CLI: Python arguments become
//! the facade's options structs, its reports come back through serde (`pythonize`), so
//! a Python result is the very document the CLI prints with `--json`. Arrays cross as
//! numpy buffers, read in place when they are C-contiguous float32. Long work runs with
//! the GIL released; progress callbacks and Ctrl-C reach it through `progress::PyProgress`.
//!
//! The friendly surface (codec classes, result objects, the compat shim) is the pure
//! Python package around this module (`python/dhurandhar`).

use pyo3::prelude::*;

mod arrays;
mod codecs;
mod jobs;
mod progress;

/// Map a facade error onto the Python exception a caller expects: bad arguments and
/// bad input data are `ValueError`, file trouble `OSError`, a cancelled job
/// `KeyboardInterrupt`.
pub(crate) fn to_py_err(e: dhurandhar::Error) -> PyErr {
    use dhurandhar::Error as E;
    let msg = e.to_string();
    match e.root() {
        E::Cancelled => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        E::Io(_) => pyo3::exceptions::PyOSError::new_err(msg),
        _ => pyo3::exceptions::PyValueError::new_err(msg),
    }
}

/// A facade report as Python objects: the same tree as its JSON document.
pub(crate) fn to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(pythonize::pythonize(py, value)?)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    codecs::register(m)?;
    jobs::register(m)?;
    Ok(())
}
