//! GGUF packs: a GGUF file held losslessly in a `.dhp` — its header blob plus every
//! tensor's quant blocks coded by field (the `blocks` module) — restored byte for byte by
//! `unpack`, and read back range by range with positioned reads by [`GgufPackReader`]
//! (what a streaming engine reads weights through: nothing is mapped or kept).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dhurandhar_checkpoint::gguf::{GgmlType, GgufFile};
use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::codec::{self, PlaneCfg};
use crate::error::{PackError, Result};
use crate::format::{
    self, ChunkRef, GgmlTensor, GgufLayout, Index, Mode, PackKind, PackReader, PackWriter,
    TensorEntry, FOOTER_LEN, HEADER_LEN,
};
use crate::ops::{
    file_name, index_report, write_chunks, Encoded, Job, PackMode, PackOptions, PackReport,
    Progress, UnpackReport,
};
use crate::DType;

/// Alignment of direct reads: offset, length and buffer (4 KiB covers the logical block
/// size of common devices).
const DIRECT_ALIGN: u64 = 4096;

/// Tensor name that errors about the header blob use.
const HEADER: &str = "(GGUF header)";

/// Default least saving for a plane of quant blocks to be entropy-coded. A streamed
/// pack decodes every chunk on every token, so coding pays only where it saves much:
/// the f16 scales' planes (20–80% smaller) qualify, the packed quants (3–7%) do not and
/// stay raw, decoding at copy speed. Measured in docs/run.md.
pub const GGUF_MIN_PLANE_SAVING: f64 = 0.10;

/// Pack the GGUF file `src` into `out`, losslessly. Bytes between tensors must be zero
/// (GGUF alignment padding), since the pack restores them as zeros.
pub fn pack_gguf(
    src: &Path,
    out: &Path,
    opts: &PackOptions,
    progress: &Progress<'_>,
) -> Result<PackReport> {
    dhurandhar_io::check_output(out, &[src])?;
    opts.validate()?;
    if opts.mode != PackMode::Lossless {
        return Err(PackError::invalid(
            "mode",
            "must be lossless for a GGUF (its tensors are already quantized)",
        ));
    }
    let map = dhurandhar_checkpoint::map_file(src)?;
    let origin = src.display().to_string();
    let g = GgufFile::parse(&map, &origin)?;
    g.check_ranges(map.len() as u64, &origin)?;
    let max = dhurandhar_checkpoint::safetensors::MAX_TENSORS;
    if g.tensors.len() > max {
        return Err(PackError::input(
            src,
            format!("{} tensors; a pack holds at most {max}", g.tensors.len()),
        ));
    }
    check_padding(&g, &map, src)?;
    let mut entries: Vec<TensorEntry> = g
        .tensors
        .par_iter()
        .map(|t| {
            let data = &map[t.offset as usize..(t.offset + t.n_bytes) as usize];
            TensorEntry {
                name: t.name.clone(),
                dtype: DType::U8,
                shape: vec![t.n_bytes],
                mode: Mode::Lossless,
                raw_bytes: t.n_bytes,
                xxh3: xxh3_64(data),
                base_xxh3: None,
                quant: None,
                delta: None,
                ggml: Some(GgmlTensor {
                    type_name: t.ggml_type.name().to_string(),
                    dims: t.shape.clone(),
                    offset: t.offset,
                }),
                chunks: Vec::new(),
            }
        })
        .collect();
    let mut writer = PackWriter::create_version(out, format::VERSION)?;
    let head = &map[..g.data_offset as usize];
    let blob = codec::encode_blob(
        codec::tag::BYTES,
        &[head],
        PlaneCfg::new(Some(opts.zstd_level)),
    );
    let header = writer.write_chunk(&blob, xxh3_64(&blob))?;
    let cs = opts.chunk_size as u64;
    let plan: Vec<(usize, Job)> = (0..entries.len()).map(|i| (i, Job::Lossless)).collect();
    // Huffman or raw per plane: zstd buys little on quant planes and decodes slower,
    // and these chunks are decoded on every streamed token.
    let mut planes = PlaneCfg::new(None);
    planes.min_saving = opts.min_plane_saving.unwrap_or(GGUF_MIN_PLANE_SAVING);
    let encode = |ti: usize, _c: usize, _job: Job, r: std::ops::Range<u64>| {
        let t = &g.tensors[ti];
        let bytes = &map[(t.offset + r.start) as usize..(t.offset + r.end) as usize];
        let blob = crate::blocks::encode(t.ggml_type, bytes, planes);
        Encoded {
            hash: xxh3_64(&blob),
            blob,
            quant: None,
            delta: None,
            raw: bytes.len() as u64,
        }
    };
    write_chunks(&mut writer, &mut entries, &plan, cs, &encode, progress)?;
    let index = Index {
        kind: PackKind::Pack,
        chunk_size: cs,
        source: file_name(src),
        base_source: None,
        metadata: Default::default(),
        tensors: entries,
        removed: Vec::new(),
        gguf: Some(GgufLayout {
            header,
            data_offset: g.data_offset,
            file_bytes: map.len() as u64,
            file_xxh3: xxh3_64(&map),
        }),
    };
    let len = writer.finish(&index)?;
    let mut report = index_report(&index, len, Vec::new(), Vec::new());
    // The pack holds the whole file (its header and tokenizer too): compare with that.
    report.input_bytes = map.len() as u64;
    report.ratio = len as f64 / map.len().max(1) as f64;
    Ok(report)
}

/// Refuse a GGUF whose tensors overlap, or whose bytes outside the header and the
/// tensors are not all zero or run longer than [`format::MAX_GGUF_GAP`] in one place:
/// a pack could not give those back, or a reader would refuse it.
fn check_padding(g: &GgufFile, map: &[u8], src: &Path) -> Result<()> {
    let mut spans: Vec<(u64, u64)> = g
        .tensors
        .iter()
        .map(|t| (t.offset, t.offset + t.n_bytes))
        .collect();
    spans.sort_unstable();
    let mut at = g.data_offset;
    for (s, e) in spans
        .into_iter()
        .chain([(map.len() as u64, map.len() as u64)])
    {
        if s < at {
            return Err(PackError::input(src, "two tensors overlap"));
        }
        if s - at > format::MAX_GGUF_GAP {
            return Err(PackError::input(
                src,
                format!(
                    "{} bytes between tensors at offset {at}; a pack holds at most {} of padding there",
                    s - at,
                    format::MAX_GGUF_GAP
                ),
            ));
        }
        if let Some(p) = map[at as usize..s as usize].iter().position(|&b| b != 0) {
            return Err(PackError::input(
                src,
                format!(
                    "non-zero byte at offset {} outside every tensor; a pack restores only zero padding",
                    at + p as u64
                ),
            ));
        }
        at = e;
    }
    Ok(())
}

impl PackReader {
    /// A GGUF pack's header blob, checked and decoded.
    fn gguf_header(&self, g: &GgufLayout) -> Result<Vec<u8>> {
        let blob = self
            .blob(&g.header)
            .ok_or_else(|| PackError::ChunkChecksum {
                path: self.path().to_path_buf(),
                tensor: HEADER.into(),
                chunk: 0,
            })?;
        decode_header(blob, g.data_offset, self.path())
    }
}

fn decode_header(blob: &[u8], len: u64, path: &Path) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    codec::decode_lossless(blob, 1, false, &mut out).map_err(|detail| PackError::ChunkDecode {
        path: path.to_path_buf(),
        tensor: HEADER.into(),
        chunk: 0,
        detail,
    })?;
    Ok(out)
}

/// Restore a GGUF pack to `out`, byte for byte: every tensor is checked against its
/// recorded hash, and the whole file against the GGUF's.
pub(crate) fn restore_gguf(
    reader: &PackReader,
    g: &GgufLayout,
    out: &Path,
    progress: &Progress<'_>,
) -> Result<UnpackReport> {
    let head = reader.gguf_header(g)?;
    let tmp = dhurandhar_io::AtomicFile::create(out)?;
    let mut w = HashedWriter {
        out: std::io::BufWriter::with_capacity(1 << 20, tmp),
        hash: Xxh3::new(),
        at: 0,
        path: out,
    };
    w.put(&head)?;
    let mut order: Vec<&TensorEntry> = reader.tensors().iter().collect();
    order.sort_by_key(|t| t.ggml.as_ref().map_or(0, |x| x.offset));
    for t in &order {
        w.zeros_to(t.ggml.as_ref().map_or(0, |x| x.offset))?;
        let mut h = Xxh3::new();
        reader.stream_tensor(t, None, &mut |bytes| {
            h.update(bytes);
            if !progress(bytes.len() as u64) {
                return Err(PackError::Cancelled);
            }
            w.put(bytes)
        })?;
        if h.digest() != t.xxh3 {
            return Err(PackError::TensorHash {
                path: reader.path().to_path_buf(),
                tensor: t.name.clone(),
            });
        }
    }
    w.zeros_to(g.file_bytes)?;
    if w.hash.digest() != g.file_xxh3 {
        return Err(PackError::input(
            reader.path(),
            "the restored GGUF does not match the hash recorded at pack time",
        ));
    }
    let tmp = w
        .out
        .into_inner()
        .map_err(|e| PackError::io(out, e.into_error()))?;
    tmp.commit()?;
    Ok(UnpackReport {
        tensors: order.len(),
        output_bytes: g.file_bytes,
        verified_bit_exact: order.len(),
        lossy: 0,
    })
}

/// The restored GGUF being written: hashed as it goes, with its position.
struct HashedWriter<'a> {
    out: std::io::BufWriter<dhurandhar_io::AtomicFile>,
    hash: Xxh3,
    at: u64,
    path: &'a Path,
}

impl HashedWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.at += b.len() as u64;
        self.out
            .write_all(b)
            .map_err(|e| PackError::io(self.path, e))
    }

    /// Zero padding up to offset `to`.
    fn zeros_to(&mut self, to: u64) -> Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while self.at < to {
            let n = (to - self.at).min(Z.len() as u64) as usize;
            self.put(&Z[..n])?;
        }
        Ok(())
    }
}

/// What one [`GgufPackReader::read`] cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadCost {
    /// Pack bytes read from the file (compressed chunk blobs).
    pub bytes_read: u64,
    pub read_ns: u64,
    pub decode_ns: u64,
    /// The pack's file byte range the reads fell in (`start..end`; empty when nothing
    /// was read), for callers that drop it from the page cache afterwards.
    pub span: (u64, u64),
}

/// A GGUF pack opened for positioned reads: the index is read once, then any byte range
/// of the original GGUF is given back by reading and decoding just the chunks under it.
/// Nothing is memory-mapped; every chunk's checksum is checked when it is read. Safe to
/// share between threads (reads use `pread`).
pub struct GgufPackReader {
    path: PathBuf,
    file: File,
    /// The pack opened with `O_DIRECT` as well, once [`GgufPackReader::use_direct_io`]
    /// found that it works: chunk reads then bypass the page cache.
    direct: Option<File>,
    index: Index,
    layout: GgufLayout,
    /// `(GGUF offset, tensor index)`, by offset.
    by_offset: Vec<(u64, usize)>,
}

impl std::fmt::Debug for GgufPackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufPackReader")
            .field("path", &self.path)
            .finish()
    }
}

/// Whether the open `file` starts with the `.dhp` magic bytes (a pack, not a GGUF).
pub fn is_pack(file: &File) -> bool {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0).is_ok() && head == format::MAGIC
}

impl GgufPackReader {
    /// Open `path`: header, footer and index are read and validated; the pack must hold a
    /// GGUF (made by `pack` from a `.gguf`).
    pub fn open(path: &Path) -> Result<Self> {
        let file = dhurandhar_io::open_regular(path)?;
        let len = file.metadata().map_err(|e| PackError::io(path, e))?.len();
        let read = |at: u64, n: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, at)
                .map_err(|e| PackError::io(path, e))?;
            Ok(b)
        };
        let head = read(0, len.min(HEADER_LEN as u64) as usize)?;
        let version = format::check_header(&head, len, path)?;
        let foot = read(len - FOOTER_LEN as u64, FOOTER_LEN)?;
        let (off, n, hash) = format::parse_footer(&foot, len, path)?;
        let json = read(off, n as usize)?;
        let index = format::parse_json(&json, hash, off, version, path)?;
        let layout = index.gguf.clone().ok_or_else(|| {
            PackError::input(
                path,
                "this pack holds a safetensors checkpoint, not a GGUF (pack the .gguf file)",
            )
        })?;
        let mut by_offset: Vec<(u64, usize)> = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.ggml.as_ref().map_or(0, |g| g.offset), i))
            .collect();
        by_offset.sort_unstable();
        Ok(GgufPackReader {
            path: path.to_path_buf(),
            file,
            direct: None,
            index,
            layout,
            by_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open pack file (callers drop its pages from the page cache).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Read chunks with `O_DIRECT` from now on, bypassing the page cache (so a memory
    /// cgroup charges nothing for them), if the file system takes it and an aligned read
    /// works (tmpfs and some others refuse). Returns whether reads are direct.
    pub fn use_direct_io(&mut self) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(f) = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)
        else {
            return false;
        };
        let mut buf = vec![0u8; 2 * DIRECT_ALIGN as usize];
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN as usize);
        if f.read_at(&mut buf[at..at + DIRECT_ALIGN as usize], 0)
            .is_err()
        {
            return false;
        }
        self.direct = Some(f);
        true
    }

    /// Whether chunk reads bypass the page cache.
    pub fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Length of the GGUF file the pack holds.
    pub fn gguf_len(&self) -> u64 {
        self.layout.file_bytes
    }

    /// Raw bytes per chunk of the tensor whose data starts at GGUF offset `offset` (whole
    /// rows where a row fits): readers of row ranges cut them on these boundaries.
    pub fn chunk_bytes_at(&self, offset: u64) -> Option<u64> {
        let i = self
            .by_offset
            .binary_search_by_key(&offset, |&(o, _)| o)
            .ok()?;
        Some(self.index.tensors[self.by_offset[i].1].chunk_elems(self.index.chunk_size))
    }

    /// The largest chunk's raw bytes: a reading thread's [`ReadScratch`] grows to about
    /// three of these (the blob, a partly used chunk, a decoded plane).
    pub fn max_chunk_bytes(&self) -> u64 {
        let cs = self.index.chunk_size;
        self.index
            .tensors
            .iter()
            .map(|t| t.chunk_elems(cs).min(t.raw_bytes))
            .max()
            .unwrap_or(0)
    }

    /// The GGUF's bytes before its tensor data (header, metadata, tensor infos).
    pub fn gguf_header(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let blob = self.read_blob(&self.layout.header, HEADER, 0, &mut buf)?;
        decode_header(blob, self.layout.data_offset, &self.path)
    }

    /// Read the chunk blob at `r` into `buf` (grown, never cleared: every byte used is
    /// read over) and check it against its checksum. With direct I/O, the aligned blocks
    /// around the blob are read into an aligned part of `buf`.
    fn read_blob<'b>(
        &self,
        r: &ChunkRef,
        tensor: &str,
        chunk: usize,
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        let n = r.len() as usize;
        let io = |e| PackError::io(&self.path, e);
        let blob: &'b [u8] = match &self.direct {
            None => {
                if buf.len() < n {
                    buf.resize(n, 0);
                }
                self.file
                    .read_exact_at(&mut buf[..n], r.offset())
                    .map_err(io)?;
                &buf[..n]
            }
            Some(f) => {
                const A: u64 = DIRECT_ALIGN;
                let start = r.offset() / A * A;
                let end = (r.offset() + r.len()).div_ceil(A) * A;
                let span = (end - start) as usize;
                if buf.len() < span + A as usize {
                    buf.resize(span + A as usize, 0);
                }
                let at = buf.as_ptr().align_offset(A as usize);
                let region = &mut buf[at..at + span];
                let need = (r.offset() + r.len() - start) as usize;
                let mut got = 0;
                // The file may end inside the last block: a short read there is fine.
                while got < need {
                    match f.read_at(&mut region[got..], start + got as u64) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                if got < need {
                    return Err(PackError::Truncated {
                        path: self.path.clone(),
                        detail: format!(
                            "the file ends inside the blob of `{tensor}` chunk {chunk}"
                        ),
                    });
                }
                let lo = at + (r.offset() - start) as usize;
                &buf[lo..lo + n]
            }
        };
        if xxh3_64(blob) != r.hash() {
            return Err(PackError::ChunkChecksum {
                path: self.path.clone(),
                tensor: tensor.to_string(),
                chunk,
            });
        }
        Ok(blob)
    }

    /// Fill `dst` with the GGUF's bytes at `offset..offset + dst.len()` inside the tensor
    /// data section: tensors' bytes decoded from their chunks, padding as zeros (the pack
    /// checked it was zero). `scratch`
    /// holds blobs and partly used chunks between calls (no allocation once grown).
    pub fn read(&self, offset: u64, dst: &mut [u8], scratch: &mut ReadScratch) -> Result<ReadCost> {
        let end = offset + dst.len() as u64;
        if offset < self.layout.data_offset || end > self.layout.file_bytes {
            return Err(PackError::InvalidRequest(format!(
                "{}: bytes {offset}..{end} are outside the GGUF's tensor data",
                self.path.display()
            )));
        }
        let mut covered = offset;
        let mut cost = ReadCost {
            span: (u64::MAX, 0),
            ..ReadCost::default()
        };
        let cs = self.index.chunk_size;
        // The first tensor that may overlap: the last one starting at or before `offset`.
        let first = self
            .by_offset
            .partition_point(|&(o, _)| o <= offset)
            .saturating_sub(1);
        for &(toff, ti) in &self.by_offset[first..] {
            if toff >= end {
                break;
            }
            let t = &self.index.tensors[ti];
            let (s, e) = (offset.max(toff), end.min(toff + t.raw_bytes));
            if s >= e {
                continue;
            }
            // Padding between tensors reads as zeros.
            if s > covered {
                dst[(covered - offset) as usize..(s - offset) as usize].fill(0);
            }
            covered = e;
            let per = t.chunk_elems(cs);
            let ty = t
                .ggml
                .as_ref()
                .and_then(|g| g.ggml_type())
                .unwrap_or(GgmlType::I8);
            for c in ((s - toff) / per) as usize..((e - toff).div_ceil(per)) as usize {
                let r = t.chunk_range(cs, c);
                let (cs_abs, ce_abs) = (toff + r.start, toff + r.end);
                let blob_ref = t.chunks[c];
                let t0 = Instant::now();
                let blob = self.read_blob(&blob_ref, &t.name, c, &mut scratch.blob)?;
                let t1 = Instant::now();
                cost.read_ns += (t1 - t0).as_nanos() as u64;
                cost.bytes_read += blob_ref.len();
                cost.span.0 = cost.span.0.min(blob_ref.offset());
                cost.span.1 = cost.span.1.max(blob_ref.offset() + blob_ref.len());
                let err = |detail| PackError::ChunkDecode {
                    path: self.path.clone(),
                    tensor: t.name.clone(),
                    chunk: c,
                    detail,
                };
                if cs_abs >= offset && ce_abs <= end {
                    let o = &mut dst[(cs_abs - offset) as usize..(ce_abs - offset) as usize];
                    crate::blocks::decode(ty, blob, o).map_err(err)?;
                } else {
                    scratch.chunk.resize((ce_abs - cs_abs) as usize, 0);
                    crate::blocks::decode(ty, blob, &mut scratch.chunk).map_err(err)?;
                    let (a, b) = (cs_abs.max(offset), ce_abs.min(end));
                    dst[(a - offset) as usize..(b - offset) as usize].copy_from_slice(
                        &scratch.chunk[(a - cs_abs) as usize..(b - cs_abs) as usize],
                    );
                }
                cost.decode_ns += t1.elapsed().as_nanos() as u64;
            }
        }
        dst[(covered - offset) as usize..].fill(0);
        if cost.span.0 > cost.span.1 {
            cost.span = (0, 0);
        }
        Ok(cost)
    }
}

/// Buffers a [`GgufPackReader::read`] reuses.
#[derive(Debug, Default)]
pub struct ReadScratch {
    blob: Vec<u8>,
    chunk: Vec<u8>,
}
