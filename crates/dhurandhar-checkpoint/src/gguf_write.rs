//! Streaming GGUF (v3) writer: the header (metadata and tensor infos) first, then each
//! tensor's data in file order, padded to the alignment. Only one tensor's bytes need
//! to exist at a time, and they may arrive in pieces, so a quantizer can write a model
//! far larger than memory. The sink is any `Write` (the facade passes an atomic file).
//!
//! Offsets follow the GGUF spec: the data section starts at the first multiple of
//! `general.alignment` (32 when absent) after the header, and each tensor's offset
//! (relative to that section) is a multiple of it too.

use std::io::{self, Write};

use crate::gguf::{GgmlType, GgufValue, DEFAULT_ALIGNMENT};

/// One tensor of the file to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorOut {
    pub name: String,
    /// ggml order: `shape[0]` is the row length.
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl GgufTensorOut {
    /// Stored bytes, or `None` if the shape does not fit the type's blocks.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ggml_type.tensor_bytes(&self.shape)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A GGUF string: u64 length, then the bytes.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One metadata value's payload (its type id is written by the caller); arrays whose
/// elements differ in type are refused, naming `key`.
pub(crate) fn put_value(out: &mut Vec<u8>, key: &str, v: &GgufValue) -> io::Result<()> {
    use GgufValue::*;
    match v {
        U8(x) => out.push(*x),
        I8(x) => out.push(*x as u8),
        U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Bool(b) => out.push(*b as u8),
        String(s) => put_str(out, s),
        Array(items) => {
            // An empty array's element type is not kept by the reader; u8 is as good
            // as any for zero elements.
            let et = items.first().map_or(0, GgufValue::type_id);
            if items.iter().any(|i| i.type_id() != et) {
                return Err(invalid(format!(
                    "metadata `{key}`: array elements must share one type"
                )));
            }
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, key, i)?;
            }
        }
    }
    Ok(())
}

/// The alignment `metadata` asks for (`general.alignment`), or the default.
pub fn alignment_of(metadata: &[(String, GgufValue)]) -> u64 {
    metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .filter(|a| *a > 0 && a.is_power_of_two())
        .unwrap_or(DEFAULT_ALIGNMENT)
}

/// Writes one GGUF file: [`new`](Self::new) writes the header, then the data of each
/// tensor in order through [`write_data`](Self::write_data) (any number of pieces) and
/// [`end_tensor`](Self::end_tensor), then [`finish`](Self::finish).
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    w: W,
    alignment: u64,
    names: Vec<String>,
    sizes: Vec<u64>,
    /// Tensor being written and the bytes it has so far.
    current: usize,
    written: u64,
    /// Bytes written since the start of the data section.
    pos: u64,
    header_bytes: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Write the header of a file with `metadata` (in order; `general.alignment`, when
    /// present, sets the alignment) and `tensors` (in the order their data will come).
    pub fn new(
        mut w: W,
        metadata: &[(String, GgufValue)],
        tensors: &[GgufTensorOut],
    ) -> io::Result<Self> {
        let alignment = alignment_of(metadata);
        let mut h = Vec::with_capacity(1 << 16);
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut h, k);
            h.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut h, k, v)?;
        }
        let mut rel = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let n = t.n_bytes().ok_or_else(|| {
                invalid(format!(
                    "tensor `{}`: shape {:?} is not a whole number of {} blocks",
                    t.name, t.shape, t.ggml_type
                ))
            })?;
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&rel.to_le_bytes());
            sizes.push(n);
            rel = (rel + n).div_ceil(alignment) * alignment;
        }
        let padded = (h.len() as u64).div_ceil(alignment) * alignment;
        h.resize(padded as usize, 0);
        w.write_all(&h)?;
        Ok(GgufWriter {
            w,
            alignment,
            names: tensors.iter().map(|t| t.name.clone()).collect(),
            sizes,
            current: 0,
            written: 0,
            pos: 0,
            header_bytes: padded,
        })
    }

    /// Bytes of the header including its padding (the data section's offset).
    pub fn header_bytes(&self) -> u64 {
        self.header_bytes
    }

    /// The next piece of the current tensor's data.
    pub fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(&size) = self.sizes.get(self.current) else {
            return Err(invalid("data written after the last tensor".into()));
        };
        if self.written + bytes.len() as u64 > size {
            return Err(invalid(format!(
                "tensor `{}`: more than its {size} bytes written",
                self.names[self.current]
            )));
        }
        self.w.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The current tensor is complete: check its size and pad to the alignment.
    pub fn end_tensor(&mut self) -> io::Result<()> {
        let Some(&size) = self.sizes.get(self.current) else {
            return Err(invalid("no tensor left to end".into()));
        };
        if self.written != size {
            return Err(invalid(format!(
                "tensor `{}`: {} of its {size} bytes written",
                self.names[self.current], self.written
            )));
        }
        self.current += 1;
        self.written = 0;
        if self.current < self.sizes.len() {
            let pad = self.pos.div_ceil(self.alignment) * self.alignment - self.pos;
            self.w.write_all(&vec![0u8; pad as usize])?;
            self.pos += pad;
        }
        Ok(())
    }

    /// Check every tensor was written and hand back the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if self.current != self.sizes.len() {
            return Err(invalid(format!(
                "{} of {} tensors written",
                self.current,
                self.sizes.len()
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufBuilder, GgufFile};

    fn meta(alignment: Option<u32>) -> Vec<(String, GgufValue)> {
        let mut m = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("bc".into()),
                ]),
            ),
            ("x.f".to_string(), GgufValue::F64(0.5)),
            ("x.b".to_string(), GgufValue::Bool(true)),
            ("x.i".to_string(), GgufValue::I64(-3)),
        ];
        if let Some(a) = alignment {
            m.push(("general.alignment".into(), GgufValue::U32(a)));
        }
        m
    }

    fn tensors() -> Vec<(GgufTensorOut, Vec<u8>)> {
        [
            ("a", vec![32u64, 3], GgmlType::Q8_0),
            ("norm", vec![7], GgmlType::F32),
            ("k", vec![256, 2], GgmlType::Q4K),
        ]
        .into_iter()
        .map(|(n, s, t)| {
            let o = GgufTensorOut {
                name: n.into(),
                shape: s,
                ggml_type: t,
            };
            let len = o.n_bytes().unwrap() as usize;
            let data = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            (o, data)
        })
        .collect()
    }

    fn write(alignment: Option<u32>, pieces: usize) -> Vec<u8> {
        let ts = tensors();
        let infos: Vec<GgufTensorOut> = ts.iter().map(|(t, _)| t.clone()).collect();
        let mut w = GgufWriter::new(Vec::new(), &meta(alignment), &infos).unwrap();
        for (_, data) in &ts {
            for part in data.chunks(data.len().div_ceil(pieces)) {
                w.write_data(part).unwrap();
            }
            w.end_tensor().unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn equals_the_in_memory_builder_and_reads_back() {
        for (align, pieces) in [(None, 1), (Some(64), 3), (Some(128), 5)] {
            let bytes = write(align, pieces);
            let mut b = GgufBuilder::new().alignment(align.unwrap_or(32) as u64);
            for (k, v) in meta(align) {
                b = b.kv(&k, v);
            }
            for (t, data) in tensors() {
                b = b.tensor(&t.name, &t.shape, t.ggml_type, data);
            }
            assert_eq!(bytes, b.to_bytes().unwrap(), "alignment {align:?}");
            let f = GgufFile::parse(&bytes, "mem").unwrap();
            assert_eq!(f.alignment, align.unwrap_or(32) as u64);
            assert_eq!(f.metadata, meta(align));
            for ((t, data), info) in tensors().iter().zip(&f.tensors) {
                assert_eq!(info.offset % f.alignment, 0);
                assert_eq!(f.tensor_data(info, &bytes).unwrap(), &data[..]);
                assert_eq!(
                    (info.name.as_str(), info.ggml_type),
                    (t.name.as_str(), t.ggml_type)
                );
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let ts = tensors();
        let infos: Vec<GgufTensorOut> = ts.iter().map(|(t, _)| t.clone()).collect();
        let mut w = GgufWriter::new(Vec::new(), &meta(None), &infos).unwrap();
        w.write_data(&ts[0].1[..10]).unwrap();
        assert!(w
            .end_tensor()
            .unwrap_err()
            .to_string()
            .contains("10 of its 102 bytes"));
        assert!(w.write_data(&[0u8; 200]).is_err());
        let w = GgufWriter::new(Vec::new(), &meta(None), &infos).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("0 of 3 tensors"));
        let bad = GgufTensorOut {
            name: "x".into(),
            shape: vec![100],
            ggml_type: GgmlType::Q4K,
        };
        assert!(GgufWriter::new(Vec::new(), &[], &[bad]).is_err());
    }
}
