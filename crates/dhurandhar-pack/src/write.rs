//! Writing a safetensors file from streamed tensors: the output of `unpack` and
//! `delta apply`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{PackError, Result};

/// Receives a tensor's bytes in order, piece by piece.
pub type TensorSink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;
/// Produces tensor `i` by feeding its bytes to the sink.
pub type FillTensor<'a> = dyn FnMut(usize, &mut TensorSink<'_>) -> Result<()> + 'a;

/// Write tensors as a safetensors file atomically ([`dhurandhar_io::AtomicFile`]), streaming each
/// tensor's bytes from `fill` so nothing but one window of chunks is in memory.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, DType, Vec<u64>, u64)],
    metadata: &BTreeMap<String, String>,
    fill: &mut FillTensor<'_>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut at = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [at, at + bytes]}),
        );
        at += bytes;
    }
    let mut json = serde_json::to_vec(&header).expect("JSON of strings and numbers");
    while json.len() & 7 != 0 {
        json.push(b' ');
    }
    let tmp = dhurandhar_io::AtomicFile::create(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let io = |e| PackError::io(path, e);
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        let mut written = 0u64;
        fill(i, &mut |b: &[u8]| {
            written += b.len() as u64;
            w.write_all(b).map_err(|e| PackError::io(path, e))
        })?;
        if written != t.3 {
            return Err(PackError::input(
                path,
                format!(
                    "tensor `{}`: {written} bytes restored, {} expected",
                    t.0, t.3
                ),
            ));
        }
    }
    let tmp = w
        .into_inner()
        .map_err(|e| PackError::io(path, e.into_error()))?;
    tmp.commit()?;
    Ok(())
}
