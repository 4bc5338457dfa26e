//! Streaming read API: one tensor, one chunk range or one element range into a caller's
//! buffer, touching only the chunks needed. This is what a streaming engine builds on.

use std::ops::Range;

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::codec;
use crate::dtype::PackDType;
use crate::error::{PackError, Result};
use crate::format::{Mode, PackReader, TensorEntry};
use crate::quant::{self, QuantResidualTensor};

/// Outcome of [`PackReader::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub tensors: usize,
    pub chunks: usize,
    /// Tensors whose restored bytes were also hashed against the stored xxh3 (deep mode,
    /// lossless tensors only).
    pub tensors_hashed: usize,
}

impl PackReader {
    fn check_buffer(t: &TensorEntry, expected: usize, got: usize) -> Result<()> {
        if expected != got {
            return Err(PackError::BufferSize {
                tensor: t.name.clone(),
                expected,
                got,
            });
        }
        Ok(())
    }

    /// Decode chunk `c` of `t` into `out` (its raw bytes). Delta chunks need the matching
    /// slice of the base tensor.
    pub(crate) fn decode_chunk(
        &self,
        t: &TensorEntry,
        c: usize,
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<()> {
        let esize = t.dtype.size();
        let r = t.chunk_range(self.index().chunk_size, c);
        Self::check_buffer(t, ((r.end - r.start) as usize) * esize, out.len())?;
        let blob = self.chunk_blob(t, c)?;
        let res = match t.mode {
            Mode::Lossless => match t.ggml.as_ref().and_then(|g| g.ggml_type()) {
                Some(ty) => crate::blocks::decode(ty, blob, out),
                None => codec::decode_lossless(blob, esize, t.dtype.is_plane_float(), out),
            },
            Mode::QuantResidual => {
                let q = t.quant.as_ref().expect("validated on open");
                let cols = q.cols as usize;
                let rows = (r.end - r.start) as usize / cols.max(1);
                quant::decode_chunk(blob, rows, cols, &q.config).map(|ch| {
                    let mut vals = vec![0f32; rows * cols];
                    ch.dequantize(rows, cols, &q.config, true, &mut vals);
                    t.dtype.encode_f32(&vals, out);
                })
            }
            Mode::Delta => match base {
                Some(b) => codec::decode_delta(blob, b, esize, out),
                None => Err("a delta tensor needs its base checkpoint (use delta apply)".into()),
            },
            Mode::Unchanged => Err("an unchanged tensor has no chunks".into()),
        };
        res.map_err(|d| self.decode_err(t, c, d))
    }

    /// Bytes of chunk `c` of tensor `name` once decoded.
    pub fn chunk_bytes(&self, name: &str, c: usize) -> Result<usize> {
        let t = self.tensor(name)?;
        let r = t.chunk_range(self.index().chunk_size, c);
        Ok((r.end - r.start) as usize * t.dtype.size())
    }

    /// Element range covered by chunk `c` of tensor `name`.
    pub fn chunk_elements(&self, name: &str, c: usize) -> Result<Range<u64>> {
        Ok(self.tensor(name)?.chunk_range(self.index().chunk_size, c))
    }

    /// Decode a whole tensor into `out` (exactly `raw_bytes` long), chunks in parallel.
    /// Quant-residual tensors come back dequantized (base + residual) in their dtype.
    pub fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let t = self.tensor(name)?;
        let n = t.chunks.len();
        self.read_chunks_into(name, 0..n, out)
    }

    /// Decode the whole tensor into a new buffer.
    pub fn read_tensor(&self, name: &str) -> Result<Vec<u8>> {
        let t = self.tensor(name)?;
        let mut out = vec![0u8; t.raw_bytes as usize];
        self.read_tensor_into(name, &mut out)?;
        Ok(out)
    }

    /// Decode chunks `chunks` of `name` into `out`, which must be exactly their size.
    pub fn read_chunks_into(&self, name: &str, chunks: Range<usize>, out: &mut [u8]) -> Result<()> {
        let t = self.tensor(name)?;
        if chunks.start > chunks.end || chunks.end > t.chunks.len() {
            return Err(PackError::InvalidRequest(format!(
                "chunk range {chunks:?} out of bounds for `{name}` ({} chunks)",
                t.chunks.len()
            )));
        }
        if t.mode == Mode::Unchanged || t.mode == Mode::Delta {
            return Err(self.decode_err(
                t,
                chunks.start,
                "a delta tensor needs its base checkpoint (use delta apply)".into(),
            ));
        }
        let cs = self.index().chunk_size;
        let esize = t.dtype.size() as u64;
        let first = t.chunk_range(cs, chunks.start).start;
        let last = if chunks.is_empty() {
            first
        } else {
            t.chunk_range(cs, chunks.end - 1).end
        };
        Self::check_buffer(t, ((last - first) * esize) as usize, out.len())?;
        let per = (t.chunk_elems(cs) * esize) as usize;
        out.par_chunks_mut(per.max(1))
            .enumerate()
            .try_for_each(|(i, o)| self.decode_chunk(t, chunks.start + i, None, o))
    }

    /// Decode elements `elems` of `name` (e.g. one expert of a stacked MoE tensor) into
    /// `out`, decoding only the chunks that overlap the range.
    pub fn read_elements_into(&self, name: &str, elems: Range<u64>, out: &mut [u8]) -> Result<()> {
        let t = self.tensor(name)?;
        let cs = self.index().chunk_size;
        let esize = t.dtype.size();
        if elems.start > elems.end || elems.end > t.numel() {
            return Err(PackError::InvalidRequest(format!(
                "element range {elems:?} out of bounds for `{name}` ({} elements)",
                t.numel()
            )));
        }
        Self::check_buffer(t, (elems.end - elems.start) as usize * esize, out.len())?;
        if elems.is_empty() {
            return Ok(());
        }
        let per = t.chunk_elems(cs);
        let c0 = (elems.start / per) as usize;
        let c1 = elems.end.div_ceil(per) as usize;
        let parts: Vec<Result<(Range<u64>, Vec<u8>)>> = (c0..c1)
            .into_par_iter()
            .map(|c| {
                let r = t.chunk_range(cs, c);
                let mut buf = vec![0u8; (r.end - r.start) as usize * esize];
                if t.mode == Mode::Delta || t.mode == Mode::Unchanged {
                    return Err(self.decode_err(
                        t,
                        c,
                        "a delta tensor needs its base checkpoint".into(),
                    ));
                }
                self.decode_chunk(t, c, None, &mut buf)?;
                Ok((r, buf))
            })
            .collect();
        for p in parts {
            let (r, buf) = p?;
            let s = r.start.max(elems.start);
            let e = r.end.min(elems.end);
            let src = &buf[(s - r.start) as usize * esize..(e - r.start) as usize * esize];
            out[(s - elems.start) as usize * esize..(e - elems.start) as usize * esize]
                .copy_from_slice(src);
        }
        Ok(())
    }

    /// Load a quant-residual tensor without dequantizing it, for the fused kernel.
    pub fn load_quant(&self, name: &str) -> Result<QuantResidualTensor> {
        let t = self.tensor(name)?;
        let q = t.quant.ok_or_else(|| {
            PackError::InvalidRequest(format!("tensor `{name}` is not quant-residual"))
        })?;
        let cs = self.index().chunk_size;
        let cols = q.cols as usize;
        let chunks: Vec<Result<(usize, quant::QuantChunk)>> = (0..t.chunks.len())
            .into_par_iter()
            .map(|c| {
                let r = t.chunk_range(cs, c);
                let rows = (r.end - r.start) as usize / cols.max(1);
                let blob = self.chunk_blob(t, c)?;
                let ch = quant::decode_chunk(blob, rows, cols, &q.config)
                    .map_err(|d| self.decode_err(t, c, d))?;
                Ok((rows, ch))
            })
            .collect();
        let chunks = chunks.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(QuantResidualTensor::from_chunks(
            q.rows as usize,
            cols,
            q.config,
            chunks,
        ))
    }

    /// Restore tensor `t` chunk window by chunk window (parallel inside a window), handing
    /// the bytes to `sink` in order. `base` is the base tensor for delta entries.
    pub(crate) fn stream_tensor(
        &self,
        t: &TensorEntry,
        base: Option<&[u8]>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if t.mode == Mode::Unchanged {
            let b = base.ok_or_else(|| {
                self.decode_err(t, 0, "an unchanged tensor needs its base".into())
            })?;
            return sink(b);
        }
        let cs = self.index().chunk_size;
        let esize = t.dtype.size();
        in_order_windows(
            t.chunks.len(),
            |c| {
                let r = t.chunk_range(cs, c);
                let (s, e) = (r.start as usize * esize, r.end as usize * esize);
                let mut o = vec![0u8; e - s];
                let b = match base {
                    Some(b) => Some(
                        b.get(s..e)
                            .ok_or_else(|| self.decode_err(t, c, "base tensor too short".into()))?,
                    ),
                    None => None,
                };
                self.decode_chunk(t, c, b, &mut o)?;
                Ok(o)
            },
            |o| sink(&o),
        )
    }

    /// Decode every chunk of a quant-residual or delta tensor and throw the bytes away
    /// (delta chunks against a zero base: that checks their framing and codecs, which do
    /// not depend on the base). The first failure in chunk order is the error.
    fn check_decodes(&self, t: &TensorEntry, progress: &crate::ops::Progress<'_>) -> Result<()> {
        let cs = self.index().chunk_size;
        let esize = t.dtype.size();
        in_order_windows(
            t.chunks.len(),
            |c| {
                let r = t.chunk_range(cs, c);
                let len = (r.end - r.start) as usize * esize;
                let mut o = vec![0u8; len];
                let zero = (t.mode == Mode::Delta).then(|| vec![0u8; len]);
                self.decode_chunk(t, c, zero.as_deref(), &mut o)?;
                Ok(len)
            },
            |len| {
                if progress(len as u64) {
                    Ok(())
                } else {
                    Err(PackError::Cancelled)
                }
            },
        )
    }

    /// Check every chunk checksum (in parallel); the first failure in index order is
    /// returned as the error, naming tensor and chunk. With `deep`, also decode every
    /// lossless tensor and compare its xxh3 with the one recorded at pack time, and
    /// decode every chunk of the other modes (quant-residual, delta).
    pub fn verify(&self, deep: bool) -> Result<VerifyReport> {
        self.verify_with(deep, &|_| true)
    }

    /// [`verify`](Self::verify) reporting the bytes of lossless tensors decoded (deep
    /// mode) to `progress`, which can stop it between chunks.
    pub fn verify_with(
        &self,
        deep: bool,
        progress: &crate::ops::Progress<'_>,
    ) -> Result<VerifyReport> {
        let jobs: Vec<(usize, usize)> = self
            .tensors()
            .iter()
            .enumerate()
            .flat_map(|(ti, t)| (0..t.chunks.len()).map(move |c| (ti, c)))
            .collect();
        let bad = jobs
            .par_iter()
            .filter(|&&(ti, c)| self.chunk_blob(&self.tensors()[ti], c).is_err())
            .min_by_key(|&&j| j)
            .copied();
        if let Some((ti, c)) = bad {
            return Err(PackError::ChunkChecksum {
                path: self.path().to_path_buf(),
                tensor: self.tensors()[ti].name.clone(),
                chunk: c,
            });
        }
        let mut hashed = 0;
        if deep {
            for t in self.tensors().iter().filter(|t| t.mode == Mode::Lossless) {
                let mut h = Xxh3::new();
                self.stream_tensor(t, None, &mut |b| {
                    h.update(b);
                    if progress(b.len() as u64) {
                        Ok(())
                    } else {
                        Err(PackError::Cancelled)
                    }
                })?;
                if h.digest() != t.xxh3 {
                    return Err(PackError::TensorHash {
                        path: self.path().to_path_buf(),
                        tensor: t.name.clone(),
                    });
                }
                hashed += 1;
            }
            // Lossy and delta chunks have no stored hash of their decoded bytes, but
            // each must still decode, as unpack and delta apply will ask it to.
            for t in self
                .tensors()
                .iter()
                .filter(|t| matches!(t.mode, Mode::QuantResidual | Mode::Delta))
            {
                self.check_decodes(t, progress)?;
            }
        }
        Ok(VerifyReport {
            tensors: self.tensors().len(),
            chunks: jobs.len(),
            tensors_hashed: hashed,
        })
    }
}

/// A pack is a tensor source like a checkpoint: tensors come back decoded (quant-residual
/// ones dequantized). Delta packs list their tensors but cannot restore them alone.
impl dhurandhar_checkpoint::TensorSource for PackReader {
    type Error = PackError;

    fn source_path(&self) -> &std::path::Path {
        self.path()
    }

    fn list_tensors(&self) -> Vec<dhurandhar_checkpoint::TensorMeta> {
        self.tensors()
            .iter()
            .map(|t| dhurandhar_checkpoint::TensorMeta {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                n_bytes: t.raw_bytes,
            })
            .collect()
    }

    fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        PackReader::read_tensor_into(self, name, out)
    }
}

/// Run `work` on chunks `0..n` in parallel, a window of 2 × threads at a time (so
/// memory stays bounded by the window, not the tensor), and hand the results to `each`
/// in chunk order. The first error in chunk order stops it.
fn in_order_windows<T: Send>(
    n: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let window = rayon::current_num_threads().max(1) * 2;
    let mut w0 = 0;
    while w0 < n {
        let w1 = (w0 + window).min(n);
        let results: Vec<Result<T>> = (w0..w1).into_par_iter().map(&work).collect();
        for r in results {
            each(r?)?;
        }
        w0 = w1;
    }
    Ok(())
}
