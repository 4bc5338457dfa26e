//! numpy in and out.
//!
//! Input: float32 or float16 arrays of any shape `[..., head_dim]`. A C-contiguous
//! float32 array is read in place (no copy); float16 is widened and other layouts
//! (Fortran order, strided views) are gathered in logical order, one copy each.
//! Output: a `Vec<f32>` handed to numpy without a copy, reshaped to the caller's shape.

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// The values of an input array, borrowed when possible.
pub(crate) enum Values<'py> {
    /// A C-contiguous float32 array, read in place; holds numpy's read borrow.
    Borrowed(PyReadonlyArrayDyn<'py, f32>),
    /// A converted copy (float16, or a non-C-contiguous layout).
    Owned(Vec<f32>),
}

/// Vectors read from one numpy array: the values and the array's shape.
pub(crate) struct Vectors<'py> {
    pub values: Values<'py>,
    pub shape: Vec<usize>,
}

impl Vectors<'_> {
    /// The values, row-major, `vectors × head_dim`.
    pub fn slice(&self) -> &[f32] {
        match &self.values {
            Values::Borrowed(a) => a.as_slice().expect("checked C-contiguous on read"),
            Values::Owned(v) => v,
        }
    }

    /// Whether the input was read without a copy.
    pub fn zero_copy(&self) -> bool {
        matches!(self.values, Values::Borrowed(_))
    }
}

/// Read `obj` as vectors of `head_dim` values (`head_dim` = 0: any last axis). `what`
/// names the argument in errors.
pub(crate) fn read_vectors<'py>(
    obj: &Bound<'py, PyAny>,
    head_dim: usize,
    what: &str,
) -> PyResult<Vectors<'py>> {
    let Ok(untyped) = obj.downcast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a numpy array of float32 or float16, not {}",
            obj.get_type().name()?
        )));
    };
    let shape = untyped.shape().to_vec();
    if shape.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{what} must have shape [..., head_dim], got a 0-d array"
        )));
    }
    let last = shape[shape.len() - 1];
    if head_dim != 0 && last != head_dim {
        return Err(PyValueError::new_err(format!(
            "{what} has shape {shape:?}: its last axis must be head_dim = {head_dim}"
        )));
    }
    if shape.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{what} has shape {shape:?}: it holds no vectors"
        )));
    }
    let values = if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        if a.is_c_contiguous() {
            Values::Borrowed(a)
        } else {
            Values::Owned(a.as_array().iter().copied().collect())
        }
    } else if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, half::f16>>() {
        Values::Owned(a.as_array().iter().map(|v| v.to_f32()).collect())
    } else {
        let dtype = untyped.dtype();
        return Err(PyTypeError::new_err(format!(
            "{what} has dtype {}: give float32 or float16 (e.g. {what}.astype(numpy.float32))",
            dtype.str()?
        )));
    };
    Ok(Vectors { values, shape })
}

/// `values` as a numpy float32 array of `shape` (no copy of the data).
pub(crate) fn to_numpy<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, values)
        .reshape(shape.to_vec())?
        .into_any())
}
