//! Whole-checkpoint operations: pack, delta, unpack, delta apply, and their reports.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::codec::{self, PlaneCfg};
use crate::dtype::{DType, PackDType};
use crate::error::{PackError, Result};
use crate::format::{
    DeltaInfo, Index, Mode, PackKind, PackReader, PackWriter, QuantInfo, TensorEntry,
    MAX_CHUNK_SIZE,
};
use crate::quant::{self, QuantConfig, QuantStats};
use crate::write::{write_safetensors, TensorSink};
use dhurandhar_checkpoint::Weights;

/// Receives the bytes done as chunks complete and answers whether to go on: `false`
/// stops the operation between chunks with [`PackError::Cancelled`], leaving no output.
pub type Progress<'a> = dyn Fn(u64) -> bool + Sync + 'a;

/// What `pack` does to float tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PackMode {
    Lossless,
    QuantResidual(QuantConfig),
}

/// Options of [`pack`] and [`delta`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackOptions {
    pub mode: PackMode,
    /// Raw bytes per chunk.
    pub chunk_size: usize,
    /// zstd level tried on delta planes (and on non-float tensors).
    pub zstd_level: i32,
    /// Least share of a byte plane that entropy coding must save for a plane to be
    /// coded; otherwise it is stored raw (decodes at copy speed). `None`: 2% for float
    /// checkpoints, [`crate::gguf::GGUF_MIN_PLANE_SAVING`] for a GGUF's quant blocks.
    pub min_plane_saving: Option<f64>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            mode: PackMode::Lossless,
            chunk_size: crate::format::DEFAULT_CHUNK_SIZE,
            zstd_level: 3,
            min_plane_saving: None,
        }
    }
}

impl PackOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.chunk_size < 256 || self.chunk_size as u64 > MAX_CHUNK_SIZE {
            return Err(PackError::invalid(
                "chunk_size",
                format!(
                    "must be between 256 and {MAX_CHUNK_SIZE} bytes, got {}",
                    self.chunk_size
                ),
            ));
        }
        if let PackMode::QuantResidual(q) = self.mode {
            q.validate()?;
        }
        if let Some(m) = self.min_plane_saving {
            if !(0.0..=1.0).contains(&m) {
                return Err(PackError::invalid(
                    "min_plane_saving",
                    format!("must be a share between 0 and 1, got {m}"),
                ));
            }
        }
        Ok(())
    }
}

/// One row of a pack / delta / pack-stats report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TensorReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub mode: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Stored bits per element, counted from the bytes of its chunks.
    pub bits_per_weight: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error_base: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error_with_residual: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_base: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_with_residual: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residual_count: Option<u64>,
    /// Why a tensor was stored whole in a delta ("added", "reshaped", "dtype-changed") or
    /// kept lossless in a quant pack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Delta: chunks coded as XOR / difference, and the bytes each alternative would take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaInfo>,
}

impl TensorReport {
    pub fn from_entry(t: &TensorEntry, note: Option<String>) -> Self {
        let q = t.quant.map(|q| q.stats);
        TensorReport {
            name: t.name.clone(),
            dtype: match &t.ggml {
                Some(g) => g.type_name.clone(),
                None => t.dtype.name().to_string(),
            },
            shape: t
                .ggml
                .as_ref()
                .map_or_else(|| t.shape.clone(), |g| g.dims.clone()),
            mode: t.mode.name().to_string(),
            input_bytes: t.raw_bytes,
            output_bytes: t.stored_bytes(),
            bits_per_weight: t.bits_per_weight(),
            rel_error_base: q.map(|s| s.rel_error_base()),
            rel_error_with_residual: q.map(|s| s.rel_error_with_residual()),
            max_error_base: q.map(|s| s.max_err_base),
            max_error_with_residual: q.map(|s| s.max_err_residual),
            residual_count: q.map(|s| s.residual_count),
            note: note.or_else(|| t.delta.as_ref().and_then(|d| d.stored_whole.clone())),
            delta: t.delta.clone(),
        }
    }
}

/// Summary of a pack (also rebuilt from an existing pack by [`report`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PackReport {
    pub kind: PackKind,
    /// Sum of the input tensors' bytes.
    pub input_bytes: u64,
    /// Size of the pack file (chunks + index + header/footer).
    pub output_bytes: u64,
    /// output_bytes / input_bytes.
    pub ratio: f64,
    /// Stored bits per element over the whole file.
    pub bits_per_weight: f64,
    /// Over all quant-residual tensors: ‖W − base‖_F / ‖W‖_F and the same with the residual.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error_base: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error_with_residual: Option<f64>,
    pub tensors: Vec<TensorReport>,
    /// Delta: tensors the base had and the new checkpoint does not.
    pub removed: Vec<String>,
    /// Input tensors that could not be packed (e.g. quantized GGUF blocks), with why.
    pub skipped: Vec<(String, String)>,
}

fn summarize(
    kind: PackKind,
    entries: &[TensorEntry],
    rows: Vec<TensorReport>,
    file_len: u64,
    removed: Vec<String>,
    skipped: Vec<(String, String)>,
) -> PackReport {
    let mut all = QuantStats::default();
    let mut any = false;
    for q in entries.iter().filter_map(|e| e.quant.as_ref()) {
        all.merge(&q.stats);
        any = true;
    }
    let input: u64 = rows.iter().map(|r| r.input_bytes).sum();
    let elems: u64 = rows.iter().map(|r| r.shape.iter().product::<u64>()).sum();
    PackReport {
        kind,
        input_bytes: input,
        output_bytes: file_len,
        ratio: if input > 0 {
            file_len as f64 / input as f64
        } else {
            0.0
        },
        bits_per_weight: if elems > 0 {
            file_len as f64 * 8.0 / elems as f64
        } else {
            0.0
        },
        rel_error_base: any.then(|| all.rel_error_base()),
        rel_error_with_residual: any.then(|| all.rel_error_with_residual()),
        tensors: rows,
        removed,
        skipped,
    }
}

/// Report of an existing pack (what `pack-stats` prints).
pub fn report(reader: &PackReader) -> PackReport {
    index_report(reader.index(), reader.file_len(), Vec::new(), Vec::new())
}

/// The report of `index` in a pack of `file_len` bytes, with a note per tensor (`notes`
/// may be shorter: the rest have none) and the input's skipped tensors.
pub(crate) fn index_report(
    index: &Index,
    file_len: u64,
    notes: Vec<Option<String>>,
    skipped: Vec<(String, String)>,
) -> PackReport {
    let notes = notes.into_iter().chain(std::iter::repeat(None));
    let rows = index
        .tensors
        .iter()
        .zip(notes)
        .map(|(t, n)| TensorReport::from_entry(t, n))
        .collect();
    summarize(
        index.kind,
        &index.tensors,
        rows,
        file_len,
        index.removed.clone(),
        skipped,
    )
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The container stores whole-byte elements only (its chunks split on element
/// boundaries) and at most `MAX_TENSORS` tensors; refuse other inputs before any work.
fn check_dtypes(src: &Weights) -> Result<()> {
    // A pack lists every tensor in its index, and readers refuse an index over the
    // limit: refuse to write one (a GGUF may claim a million tensors in 70 MB).
    let max = dhurandhar_checkpoint::safetensors::MAX_TENSORS;
    if src.tensors().len() > max {
        return Err(PackError::input(
            src.path(),
            format!(
                "{} tensors; a pack holds at most {max}",
                src.tensors().len()
            ),
        ));
    }
    match src.tensors().iter().find(|t| !t.dtype.is_whole_bytes()) {
        Some(t) => Err(PackError::input(
            src.file_of(t),
            format!(
                "tensor `{}`: dtype {} packs several elements per byte; the container stores whole-byte elements only",
                t.name, t.dtype
            ),
        )),
        None => Ok(()),
    }
}

/// How one chunk is produced.
#[derive(Clone, Copy)]
pub(crate) enum Job {
    Lossless,
    Quant(QuantConfig, usize),
    Delta,
}

pub(crate) struct Encoded {
    pub blob: Vec<u8>,
    pub hash: u64,
    pub quant: Option<QuantStats>,
    /// (xor bytes, sub bytes, picked xor)
    pub delta: Option<(u64, u64, bool)>,
    pub raw: u64,
}

/// Encode every chunk of `plan` in parallel windows and write them in order.
pub(crate) fn write_chunks(
    writer: &mut PackWriter,
    entries: &mut [TensorEntry],
    plan: &[(usize, Job)],
    chunk_size: u64,
    encode: &(dyn Fn(usize, usize, Job, std::ops::Range<u64>) -> Encoded + Sync),
    progress: &Progress<'_>,
) -> Result<()> {
    let jobs: Vec<(usize, usize, Job)> = plan
        .iter()
        .flat_map(|&(ti, job)| {
            (0..entries[ti].expected_chunks(chunk_size) as usize).map(move |c| (ti, c, job))
        })
        .collect();
    let window = rayon::current_num_threads().max(1) * 4;
    for win in jobs.chunks(window) {
        let ranges: Vec<_> = win
            .iter()
            .map(|&(ti, c, _)| entries[ti].chunk_range(chunk_size, c))
            .collect();
        let done: Vec<Encoded> = win
            .par_iter()
            .zip(ranges)
            .map(|(&(ti, c, job), r)| encode(ti, c, job, r))
            .collect();
        for (&(ti, _, _), e) in win.iter().zip(done) {
            let r = writer.write_chunk(&e.blob, e.hash)?;
            let t = &mut entries[ti];
            t.chunks.push(r);
            if let (Some(s), Some(q)) = (e.quant, t.quant.as_mut()) {
                q.stats.merge(&s);
            }
            if let (Some((x, s, picked_xor)), Some(d)) = (e.delta, t.delta.as_mut()) {
                d.xor_bytes += x;
                d.sub_bytes += s;
                if picked_xor {
                    d.xor_chunks += 1;
                } else {
                    d.sub_chunks += 1;
                }
            }
            if !progress(e.raw) {
                return Err(PackError::Cancelled);
            }
        }
    }
    Ok(())
}

fn lossless_entry(name: &str, dtype: DType, shape: &[u64], bytes: &[u8]) -> TensorEntry {
    TensorEntry {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        mode: Mode::Lossless,
        raw_bytes: bytes.len() as u64,
        xxh3: xxh3_64(bytes),
        base_xxh3: None,
        quant: None,
        delta: None,
        ggml: None,
        chunks: Vec::new(),
    }
}

fn lossless_cfg(dtype: DType, level: i32, min_saving: Option<f64>) -> PlaneCfg {
    // Float planes: Huffman or raw only (zstd buys ~nothing there and decodes slower);
    // other dtypes (ids, masks) are better served by zstd.
    let mut cfg = PlaneCfg::new(if dtype.is_plane_float() {
        None
    } else {
        Some(level)
    });
    if let Some(m) = min_saving {
        cfg.min_saving = m;
    }
    cfg
}

/// Pack a checkpoint into `out`. `progress` receives input bytes as chunks complete.
pub fn pack(
    src: &Weights,
    out: &Path,
    opts: &PackOptions,
    progress: &Progress<'_>,
) -> Result<PackReport> {
    dhurandhar_io::check_output(out, &src.input_files())?;
    opts.validate()?;
    check_dtypes(src)?;
    let cs = opts.chunk_size as u64;
    let mut notes: Vec<Option<String>> = Vec::new();
    let prepared: Vec<(TensorEntry, Job, Option<String>)> = src
        .tensors()
        .par_iter()
        .map(|t| {
            let data = src.data(t);
            let mut e = lossless_entry(&t.name, t.dtype, &t.shape, data);
            let mut job = Job::Lossless;
            let mut note = None;
            if let PackMode::QuantResidual(cfg) = opts.mode {
                let cols = t.shape.last().copied().unwrap_or(1) as usize;
                let chunk_elems = opts.chunk_size / t.dtype.size();
                if !t.dtype.is_quantizable() {
                    note = Some("not a float tensor: stored lossless".into());
                } else if t.shape.len() < 2 || e.numel() < 1024 {
                    note = Some("vector or tiny tensor: stored lossless".into());
                } else if cols > chunk_elems {
                    note = Some("rows longer than a chunk: stored lossless".into());
                } else {
                    // Scan in 64 Ki-element pieces: never a whole-tensor f32 copy.
                    let es = t.dtype.size();
                    let ok = data.chunks(es << 16).all(|piece| {
                        let mut vals = Vec::new();
                        t.dtype.to_f32(piece, &mut vals);
                        quant::quantizable(&vals)
                    });
                    if ok {
                        let rpc = (chunk_elems / cols).max(1);
                        e.mode = Mode::QuantResidual;
                        e.quant = Some(QuantInfo {
                            config: cfg,
                            rows: e.numel() / cols as u64,
                            cols: cols as u64,
                            rows_per_chunk: rpc as u64,
                            stats: QuantStats::default(),
                        });
                        job = Job::Quant(cfg, cols);
                    } else {
                        note =
                            Some("non-finite or out-of-f16-range values: stored lossless".into());
                    }
                }
            }
            (e, job, note)
        })
        .collect();
    let mut entries = Vec::with_capacity(prepared.len());
    let mut plan = Vec::with_capacity(prepared.len());
    for (i, (e, job, note)) in prepared.into_iter().enumerate() {
        entries.push(e);
        plan.push((i, job));
        notes.push(note);
    }
    let tensors = src.tensors();
    let (level, min_saving) = (opts.zstd_level, opts.min_plane_saving);
    let encode = |ti: usize, _c: usize, job: Job, r: std::ops::Range<u64>| {
        let t = &tensors[ti];
        let es = t.dtype.size();
        let bytes = &src.data(t)[r.start as usize * es..r.end as usize * es];
        let (blob, quant) = match job {
            Job::Quant(cfg, cols) => {
                let mut vals = Vec::new();
                t.dtype.to_f32(bytes, &mut vals);
                let (b, s) = quant::encode_chunk(&vals, vals.len() / cols, cols, &cfg);
                (b, Some(s))
            }
            _ => (
                codec::encode_lossless(
                    bytes,
                    es,
                    t.dtype.is_plane_float(),
                    lossless_cfg(t.dtype, level, min_saving),
                ),
                None,
            ),
        };
        Encoded {
            hash: xxh3_64(&blob),
            blob,
            quant,
            delta: None,
            raw: bytes.len() as u64,
        }
    };
    let mut writer = PackWriter::create(out)?;
    write_chunks(&mut writer, &mut entries, &plan, cs, &encode, progress)?;
    let index = Index {
        kind: PackKind::Pack,
        chunk_size: cs,
        source: file_name(src.path()),
        base_source: None,
        metadata: src.metadata.clone(),
        tensors: entries,
        removed: Vec::new(),
        gguf: None,
    };
    let len = writer.finish(&index)?;
    Ok(index_report(&index, len, notes, src.skipped.clone()))
}

/// Store `new` relative to `base` in `out`: unchanged tensors cost only their index
/// entry, changed ones are XOR- or difference-coded per chunk (whichever is smaller),
/// added / reshaped / retyped ones are stored whole and reported.
pub fn delta(
    base: &Weights,
    new: &Weights,
    out: &Path,
    opts: &PackOptions,
    progress: &Progress<'_>,
) -> Result<PackReport> {
    let mut inputs = base.input_files();
    inputs.extend(new.input_files());
    dhurandhar_io::check_output(out, &inputs)?;
    opts.validate()?;
    check_dtypes(new)?;
    let cs = opts.chunk_size as u64;
    let entries: Vec<TensorEntry> = new
        .tensors()
        .par_iter()
        .map(|t| {
            let data = new.data(t);
            let mut e = lossless_entry(&t.name, t.dtype, &t.shape, data);
            let whole = |why: &str| DeltaInfo {
                stored_whole: Some(why.to_string()),
                xor_chunks: 0,
                sub_chunks: 0,
                xor_bytes: 0,
                sub_bytes: 0,
            };
            e.delta = Some(match base.get(&t.name) {
                None => whole("added"),
                Some(b) if b.dtype != t.dtype => whole("dtype-changed"),
                Some(b) if b.shape != t.shape => whole("reshaped"),
                Some(b) => {
                    let bd = base.data(b);
                    let bh = xxh3_64(bd);
                    e.base_xxh3 = Some(bh);
                    e.mode = if bh == e.xxh3 && bd == data {
                        Mode::Unchanged
                    } else {
                        Mode::Delta
                    };
                    DeltaInfo {
                        stored_whole: None,
                        xor_chunks: 0,
                        sub_chunks: 0,
                        xor_bytes: 0,
                        sub_bytes: 0,
                    }
                }
            });
            e
        })
        .collect();
    let mut entries = entries;
    let plan: Vec<(usize, Job)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i,
                if e.mode == Mode::Delta {
                    Job::Delta
                } else {
                    Job::Lossless
                },
            )
        })
        .collect();
    for e in &entries {
        if e.mode == Mode::Unchanged && !progress(e.raw_bytes) {
            return Err(PackError::Cancelled);
        }
    }
    let tensors = new.tensors();
    let (level, min_saving) = (opts.zstd_level, opts.min_plane_saving);
    let encode = |ti: usize, _c: usize, job: Job, r: std::ops::Range<u64>| {
        let t = &tensors[ti];
        let es = t.dtype.size();
        let span = r.start as usize * es..r.end as usize * es;
        let bytes = &new.data(t)[span.clone()];
        match job {
            Job::Delta => {
                let b = base
                    .get(&t.name)
                    .expect("planned as delta only when present");
                let bb = &base.data(b)[span];
                let x = codec::encode_delta(bb, bytes, es, true, level);
                let s = codec::encode_delta(bb, bytes, es, false, level);
                let (xl, sl) = (x.len() as u64, s.len() as u64);
                let (blob, picked_xor) = if xl <= sl { (x, true) } else { (s, false) };
                Encoded {
                    hash: xxh3_64(&blob),
                    blob,
                    quant: None,
                    delta: Some((xl, sl, picked_xor)),
                    raw: bytes.len() as u64,
                }
            }
            _ => {
                let blob = codec::encode_lossless(
                    bytes,
                    es,
                    t.dtype.is_plane_float(),
                    lossless_cfg(t.dtype, level, min_saving),
                );
                Encoded {
                    hash: xxh3_64(&blob),
                    blob,
                    quant: None,
                    delta: None,
                    raw: bytes.len() as u64,
                }
            }
        }
    };
    let removed: Vec<String> = base
        .tensors()
        .iter()
        .filter(|b| new.get(&b.name).is_none())
        .map(|b| b.name.clone())
        .collect();
    let mut writer = PackWriter::create(out)?;
    write_chunks(&mut writer, &mut entries, &plan, cs, &encode, progress)?;
    let index = Index {
        kind: PackKind::Delta,
        chunk_size: cs,
        source: file_name(new.path()),
        base_source: Some(file_name(base.path())),
        metadata: new.metadata.clone(),
        tensors: entries,
        removed: removed.clone(),
        gguf: None,
    };
    let len = writer.finish(&index)?;
    Ok(index_report(&index, len, Vec::new(), new.skipped.clone()))
}

/// Result of [`unpack`] / [`apply_delta`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnpackReport {
    pub tensors: usize,
    pub output_bytes: u64,
    /// Tensors whose restored bytes matched the xxh3 recorded at pack time.
    pub verified_bit_exact: usize,
    /// Tensors restored from a lossy mode (dequantized).
    pub lossy: usize,
}

fn restore(
    reader: &PackReader,
    base: Option<&Weights>,
    out: &Path,
    progress: &Progress<'_>,
) -> Result<UnpackReport> {
    let list: Vec<(String, DType, Vec<u64>, u64)> = reader
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.raw_bytes))
        .collect();
    let mut verified = 0;
    let mut lossy = 0;
    let mut fill = |i: usize, sink: &mut TensorSink<'_>| -> Result<()> {
        let t = &reader.tensors()[i];
        let base_data = match (t.mode, base) {
            (Mode::Delta | Mode::Unchanged, Some(b)) => b.get(&t.name).map(|s| b.data(s)),
            _ => None,
        };
        let mut h = Xxh3::new();
        reader.stream_tensor(t, base_data, &mut |bytes| {
            h.update(bytes);
            if !progress(bytes.len() as u64) {
                return Err(PackError::Cancelled);
            }
            sink(bytes)
        })?;
        if t.mode == Mode::QuantResidual {
            lossy += 1;
        } else if h.digest() == t.xxh3 {
            verified += 1;
        } else {
            return Err(PackError::TensorHash {
                path: reader.path().to_path_buf(),
                tensor: t.name.clone(),
            });
        }
        Ok(())
    };
    write_safetensors(out, &list, &reader.index().metadata, &mut fill)?;
    Ok(UnpackReport {
        tensors: list.len(),
        output_bytes: list.iter().map(|t| t.3).sum(),
        verified_bit_exact: verified,
        lossy,
    })
}

/// Restore a pack to the checkpoint it holds: a GGUF byte for byte, or a safetensors
/// file. Lossless tensors are checked bit-exact against
/// the hash recorded at pack time; quant-residual tensors come back dequantized.
pub fn unpack(reader: &PackReader, out: &Path, progress: &Progress<'_>) -> Result<UnpackReport> {
    dhurandhar_io::check_output(out, &[reader.path()])?;
    if reader.index().kind != PackKind::Pack {
        return Err(PackError::input(
            reader.path(),
            "this is a delta pack: restore it with delta apply and its base checkpoint",
        ));
    }
    match &reader.index().gguf {
        Some(g) => crate::gguf::restore_gguf(reader, g, out, progress),
        None => restore(reader, None, out, progress),
    }
}

/// Rebuild the new checkpoint from `base` and a delta pack, bit-exactly. Every base
/// tensor the delta refers to is checked (presence, dtype, shape, hash) before writing.
pub fn apply_delta(
    base: &Weights,
    reader: &PackReader,
    out: &Path,
    progress: &Progress<'_>,
) -> Result<UnpackReport> {
    let mut inputs = base.input_files();
    inputs.push(reader.path());
    dhurandhar_io::check_output(out, &inputs)?;
    if reader.index().kind != PackKind::Delta {
        return Err(PackError::input(
            reader.path(),
            "not a delta pack (made by `pack`, not `delta`)",
        ));
    }
    let checks: Vec<Result<()>> = reader
        .tensors()
        .par_iter()
        .filter(|t| matches!(t.mode, Mode::Delta | Mode::Unchanged))
        .map(|t| {
            let mis = |d: String| PackError::DeltaMismatch {
                tensor: t.name.clone(),
                detail: d,
            };
            let b = base
                .get(&t.name)
                .ok_or_else(|| mis(format!("missing from base {}", base.path().display())))?;
            if b.dtype != t.dtype {
                return Err(mis(format!(
                    "base has dtype {}, the delta expects {}",
                    b.dtype, t.dtype
                )));
            }
            if b.shape != t.shape {
                return Err(mis(format!(
                    "base has shape {:?}, the delta expects {:?}",
                    b.shape, t.shape
                )));
            }
            if Some(xxh3_64(base.data(b))) != t.base_xxh3 {
                return Err(mis(
                    "base tensor differs from the one this delta was made against".into(),
                ));
            }
            Ok(())
        })
        .collect();
    for c in checks {
        c?;
    }
    restore(reader, Some(base), out, progress)
}
