//! The `.dhp` weight container as jobs: pack, unpack, verify, pack-stats, delta and
//! delta apply. Each takes an options struct and returns the report that is also the
//! JSON document front ends print.
//!
//! Every writer refuses an output that is one of its inputs or not a regular file
//! before doing any work, and writes through a temp file that only a finished job
//! renames into place: a failed, cancelled or killed job leaves no output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dhurandhar_checkpoint::{TensorMeta, TensorSource};
use dhurandhar_pack::{PackError, PackReader, Weights};
use serde::Serialize;

use crate::{CancelToken, Error, Progress, Result, Unit};

/// Version of the JSON documents of this module. 1: the fields the CLI has always
/// printed, plus `schema_version` itself.
pub const SCHEMA_VERSION: u32 = 1;

/// How `pack` stores float tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackMode {
    /// Bit-exact: byte planes + Huffman.
    #[default]
    Lossless,
    /// INT4/INT8 group-quantized base + sparse f16 residual (lossy).
    QuantResidual,
}

impl PackMode {
    /// The name used in reports (`lossless`, `quant-residual`).
    pub fn name(self) -> &'static str {
        match self {
            PackMode::Lossless => "lossless",
            PackMode::QuantResidual => "quant-residual",
        }
    }
}

/// Options of [`pack`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackOptions {
    /// Checkpoint: a `.safetensors`, a sharded `model.safetensors.index.json`, a model
    /// directory, or a `.gguf` (the whole file when lossless, its F32/F16/BF16 tensors
    /// for quant-residual).
    pub input: PathBuf,
    /// The `.dhp` file to write (atomically; never one of the inputs).
    pub output: PathBuf,
    pub mode: PackMode,
    /// Quant-residual: bits of the quantized base (4 or 8).
    pub bits: u8,
    /// Quant-residual: weights per scale/minimum pair.
    pub group: usize,
    /// Quant-residual: fraction of weights whose residual is kept (e.g. 0.005 .. 0.05).
    pub residual_frac: f64,
    /// Raw KiB per chunk: the unit of parallel and random-access decoding.
    pub chunk_kib: usize,
    /// Least share of a byte plane entropy coding must save to be used (else the plane
    /// is stored raw); `None`: the library's default for the input (2% for floats, 10%
    /// for a GGUF's quant blocks).
    pub min_plane_saving: Option<f64>,
}

impl Default for PackOptions {
    fn default() -> Self {
        let q = dhurandhar_pack::QuantConfig::default();
        PackOptions {
            input: PathBuf::new(),
            output: PathBuf::new(),
            mode: PackMode::Lossless,
            bits: q.bits,
            group: q.group,
            residual_frac: q.residual_frac,
            chunk_kib: 1024,
            min_plane_saving: None,
        }
    }
}

/// Options of [`delta`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOptions {
    /// The base checkpoint (any input [`pack`] takes).
    pub base: PathBuf,
    /// The new checkpoint, stored relative to `base`.
    pub new: PathBuf,
    /// The delta `.dhp` to write.
    pub output: PathBuf,
    /// zstd level tried on delta byte planes.
    pub zstd_level: i32,
    /// Raw KiB per chunk.
    pub chunk_kib: usize,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            base: PathBuf::new(),
            new: PathBuf::new(),
            output: PathBuf::new(),
            zstd_level: 3,
            chunk_kib: 1024,
        }
    }
}

/// Options of [`unpack`]: a pack back to the GGUF or safetensors file it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnpackOptions {
    /// A `.dhp` made by [`pack`].
    pub input: PathBuf,
    /// The file to write: a `.gguf` for a pack of a GGUF, else a `.safetensors`.
    pub output: PathBuf,
}

/// Options of [`apply_delta`]: rebuild the new checkpoint from its base and a delta.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyOptions {
    /// The base checkpoint the delta was made against (checked by hash).
    pub base: PathBuf,
    /// The delta made by [`delta`].
    pub delta: PathBuf,
    /// The `.safetensors` to write.
    pub output: PathBuf,
}

/// Options of [`verify`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyOptions {
    /// A `.dhp` pack or delta.
    pub input: PathBuf,
    /// Only check chunk checksums (skip decoding lossless tensors and comparing hashes).
    pub quick: bool,
}

/// Report of [`pack`] and [`delta`] (also their JSON document).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PackReport {
    pub schema_version: u32,
    /// The packed checkpoint (the new one, for a delta).
    pub input: String,
    /// Delta only: the base checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub output: String,
    /// `lossless`, `quant-residual` or `delta`.
    pub mode: String,
    pub seconds: f64,
    /// Input bytes per second, in 10^9.
    pub gb_per_s: f64,
    #[serde(flatten)]
    pub result: dhurandhar_pack::PackReport,
}

impl PackReport {
    /// Delta: changed chunks coded as XOR and as difference, over all tensors.
    pub fn delta_chunks(&self) -> (u64, u64) {
        self.result
            .tensors
            .iter()
            .filter_map(|t| t.delta.as_ref())
            .fold((0, 0), |a, d| (a.0 + d.xor_chunks, a.1 + d.sub_chunks))
    }

    /// Tensors per storage mode, in the order lossless, quant-residual, delta,
    /// unchanged; modes no tensor uses are left out.
    pub fn mode_counts(&self) -> Vec<(&'static str, usize)> {
        ["lossless", "quant-residual", "delta", "unchanged"]
            .into_iter()
            .map(|m| {
                (
                    m,
                    self.result.tensors.iter().filter(|t| t.mode == m).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The tensors that carry a note, grouped by the note in first-seen order (a model
    /// has hundreds of bias vectors with the same one).
    pub fn notes_by_reason(&self) -> Vec<(&str, Vec<&str>)> {
        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
        for t in &self.result.tensors {
            if let Some(n) = t.note.as_deref() {
                match reasons.iter_mut().find(|(k, _)| *k == n) {
                    Some((_, v)) => v.push(&t.name),
                    None => reasons.push((n, vec![&t.name])),
                }
            }
        }
        reasons
    }
}

/// Report of [`unpack`] and [`apply_delta`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnpackReport {
    pub schema_version: u32,
    /// The pack (or delta) read.
    pub input: String,
    pub output: String,
    pub seconds: f64,
    /// Output bytes per second, in 10^9.
    pub gb_per_s: f64,
    #[serde(flatten)]
    pub result: dhurandhar_pack::UnpackReport,
}

/// Report of [`verify`]. A damaged or unreadable pack is a report with `ok: false`
/// naming what is wrong, not an error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub schema_version: u32,
    pub file: String,
    pub ok: bool,
    pub tensors: Option<usize>,
    pub chunks: Option<usize>,
    /// Tensors decoded and compared with their stored hash (0 with `quick`).
    pub tensors_hashed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_tensor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_chunk: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Report of [`stats`]: what a pack holds, per tensor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsReport {
    pub schema_version: u32,
    pub file: String,
    /// Raw bytes per chunk the pack was written with.
    pub chunk_size: u64,
    #[serde(flatten)]
    pub result: dhurandhar_pack::PackReport,
}

fn chunk_size(chunk_kib: usize) -> usize {
    chunk_kib.saturating_mul(1024)
}

fn gb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e9
}

/// Turn the facade's sink and token into the pack library's callback.
fn callback<'a>(
    progress: &'a dyn Progress,
    cancel: &'a CancelToken,
) -> impl Fn(u64) -> bool + Sync + 'a {
    move |n| {
        progress.advance(n);
        !cancel.is_cancelled()
    }
}

fn lift(e: PackError) -> Error {
    match e {
        PackError::Cancelled => Error::Cancelled,
        other => Error::Pack(other),
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Pack a checkpoint into a `.dhp` file.
pub fn pack(
    opts: &PackOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<PackReport> {
    let mode = match opts.mode {
        PackMode::Lossless => dhurandhar_pack::PackMode::Lossless,
        PackMode::QuantResidual => {
            dhurandhar_pack::PackMode::QuantResidual(dhurandhar_pack::QuantConfig {
                bits: opts.bits,
                group: opts.group,
                residual_frac: opts.residual_frac,
            })
        }
    };
    let lib_opts = dhurandhar_pack::PackOptions {
        mode,
        chunk_size: chunk_size(opts.chunk_kib),
        min_plane_saving: opts.min_plane_saving,
        ..Default::default()
    };
    let src = Weights::open(&opts.input)?;
    // A GGUF packed losslessly is held whole (quant blocks, header, tokenizer) and
    // unpacks to the same file; quant-residual takes its float tensors only.
    let whole_gguf = src.is_gguf() && opts.mode == PackMode::Lossless;
    if src.tensors().is_empty() && !whole_gguf {
        return Err(PackError::input(&opts.input, "no packable tensors").into());
    }
    cancel.check()?;
    let total = if whole_gguf {
        std::fs::metadata(&opts.input).map_or(0, |m| m.len())
    } else {
        src.total_bytes()
    };
    progress.start("pack", Some(total), Unit::Bytes);
    let t0 = Instant::now();
    let cb = callback(progress, cancel);
    let result = if whole_gguf {
        dhurandhar_pack::pack_gguf(&opts.input, &opts.output, &lib_opts, &cb)
    } else {
        dhurandhar_pack::pack(&src, &opts.output, &lib_opts, &cb)
    };
    progress.finish();
    let result = result.map_err(lift)?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PackReport {
        schema_version: SCHEMA_VERSION,
        input: shown(&opts.input),
        base: None,
        output: shown(&opts.output),
        mode: opts.mode.name().to_string(),
        seconds,
        gb_per_s: gb_per_s(result.input_bytes, seconds),
        result,
    })
}

/// Store `new` relative to `base`: unchanged tensors cost only their index entry,
/// changed ones are XOR- or difference-coded per chunk.
pub fn delta(
    opts: &DeltaOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<PackReport> {
    let base = Weights::open(&opts.base)?;
    let new = Weights::open(&opts.new)?;
    let lib_opts = dhurandhar_pack::PackOptions {
        chunk_size: chunk_size(opts.chunk_kib),
        zstd_level: opts.zstd_level,
        ..Default::default()
    };
    cancel.check()?;
    progress.start("delta", Some(new.total_bytes()), Unit::Bytes);
    let t0 = Instant::now();
    let result = dhurandhar_pack::delta(
        &base,
        &new,
        &opts.output,
        &lib_opts,
        &callback(progress, cancel),
    );
    progress.finish();
    let result = result.map_err(lift)?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PackReport {
        schema_version: SCHEMA_VERSION,
        input: shown(&opts.new),
        base: Some(shown(&opts.base)),
        output: shown(&opts.output),
        mode: "delta".into(),
        seconds,
        gb_per_s: gb_per_s(result.input_bytes, seconds),
        result,
    })
}

/// Shared tail of [`unpack`] and [`apply_delta`]: progress over the pack's raw bytes,
/// timing, report.
fn restore(
    reader: &PackReader,
    input: &Path,
    output: &Path,
    label: &str,
    progress: &dyn Progress,
    cancel: &CancelToken,
    work: impl FnOnce(
        &dhurandhar_pack::Progress<'_>,
    ) -> dhurandhar_pack::Result<dhurandhar_pack::UnpackReport>,
) -> Result<UnpackReport> {
    cancel.check()?;
    let total = reader.tensors().iter().map(|t| t.raw_bytes).sum();
    progress.start(label, Some(total), Unit::Bytes);
    let t0 = Instant::now();
    let result = work(&callback(progress, cancel));
    progress.finish();
    let result = result.map_err(lift)?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(UnpackReport {
        schema_version: SCHEMA_VERSION,
        input: shown(input),
        output: shown(output),
        seconds,
        gb_per_s: gb_per_s(result.output_bytes, seconds),
        result,
    })
}

/// Restore a pack to the file it holds: a GGUF byte for byte, or a safetensors file
/// with lossless tensors bit-exact (checked against the hash recorded at pack time) and
/// quant-residual ones dequantized.
pub fn unpack(
    opts: &UnpackOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<UnpackReport> {
    let reader = PackReader::open(&opts.input)?;
    restore(
        &reader,
        &opts.input,
        &opts.output,
        "unpack",
        progress,
        cancel,
        |cb| dhurandhar_pack::unpack(&reader, &opts.output, cb),
    )
}

/// Rebuild the new checkpoint bit-exactly from its base and a delta. Every base tensor
/// the delta refers to is checked (presence, dtype, shape, hash) before writing.
pub fn apply_delta(
    opts: &ApplyOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<UnpackReport> {
    let base = Weights::open(&opts.base)?;
    let reader = PackReader::open(&opts.delta)?;
    restore(
        &reader,
        &opts.delta,
        &opts.output,
        "apply",
        progress,
        cancel,
        |cb| dhurandhar_pack::apply_delta(&base, &reader, &opts.output, cb),
    )
}

/// Check a pack: every chunk checksum, and unless `quick` every lossless tensor's
/// restored bytes against its stored hash. A damaged pack is an `Err` naming the
/// tensor and chunk; [`VerifyReport::failed`] turns it into the `ok: false` document.
pub fn verify(
    opts: &VerifyOptions,
    progress: &dyn Progress,
    cancel: &CancelToken,
) -> Result<VerifyReport> {
    let reader = PackReader::open(&opts.input)?;
    let total = reader
        .tensors()
        .iter()
        .filter(|t| t.mode != dhurandhar_pack::Mode::Unchanged)
        .map(|t| t.raw_bytes)
        .sum();
    cancel.check()?;
    progress.start("verify", Some(total), Unit::Bytes);
    let v = reader.verify_with(!opts.quick, &callback(progress, cancel));
    progress.finish();
    let v = v.map_err(lift)?;
    Ok(VerifyReport {
        schema_version: SCHEMA_VERSION,
        file: shown(&opts.input),
        ok: true,
        tensors: Some(v.tensors),
        chunks: Some(v.chunks),
        tensors_hashed: Some(v.tensors_hashed),
        bad_tensor: None,
        bad_chunk: None,
        error: None,
    })
}

impl VerifyReport {
    /// The `ok: false` document for a failed [`verify`] of `input`: the error, and the
    /// tensor and chunk it names when there is one.
    pub fn failed(input: &Path, error: &Error) -> Self {
        let (bad_tensor, bad_chunk) = match error {
            Error::Pack(
                PackError::ChunkChecksum { tensor, chunk, .. }
                | PackError::ChunkDecode { tensor, chunk, .. },
            ) => (Some(tensor.clone()), Some(*chunk)),
            Error::Pack(PackError::TensorHash { tensor, .. }) => (Some(tensor.clone()), None),
            _ => (None, None),
        };
        VerifyReport {
            schema_version: SCHEMA_VERSION,
            file: shown(input),
            ok: false,
            tensors: None,
            chunks: None,
            tensors_hashed: None,
            bad_tensor,
            bad_chunk,
            error: Some(error.to_string()),
        }
    }
}

/// What an existing pack or delta holds, per tensor (nothing is decoded).
pub fn stats(input: &Path) -> Result<StatsReport> {
    let reader = PackReader::open(input)?;
    Ok(StatsReport {
        schema_version: SCHEMA_VERSION,
        file: shown(input),
        chunk_size: reader.index().chunk_size,
        result: dhurandhar_pack::report(&reader),
    })
}

/// Tensors from any container: a checkpoint (safetensors single or sharded, GGUF) or a
/// `.dhp` pack, behind the one [`TensorSource`] interface.
#[derive(Debug)]
pub enum Tensors {
    Checkpoint(Weights),
    Pack(PackReader),
}

/// Open `path` as a tensor source, by content: a `.dhp` pack by its magic bytes,
/// anything else as a checkpoint ([`Weights::open`]).
pub fn open_tensors(path: &Path) -> Result<Tensors> {
    let mut head = [0u8; 8];
    let is_pack = path.is_file()
        && dhurandhar_io::open_regular(path)
            .and_then(|f| {
                use std::io::Read;
                let n = f
                    .take(8)
                    .read(&mut head)
                    .map_err(|e| dhurandhar_io::IoError::os(path, e))?;
                Ok(n == 8 && head == dhurandhar_pack::format::MAGIC)
            })
            .unwrap_or(false);
    Ok(if is_pack {
        Tensors::Pack(PackReader::open(path)?)
    } else {
        Tensors::Checkpoint(Weights::open(path)?)
    })
}

impl TensorSource for Tensors {
    type Error = Error;

    fn source_path(&self) -> &Path {
        match self {
            Tensors::Checkpoint(w) => w.source_path(),
            Tensors::Pack(p) => p.source_path(),
        }
    }

    fn list_tensors(&self) -> Vec<TensorMeta> {
        match self {
            Tensors::Checkpoint(w) => w.list_tensors(),
            Tensors::Pack(p) => p.list_tensors(),
        }
    }

    fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        match self {
            Tensors::Checkpoint(w) => Ok(TensorSource::read_tensor_into(w, name, out)?),
            Tensors::Pack(p) => Ok(TensorSource::read_tensor_into(p, name, out)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;
    use std::collections::BTreeMap;

    /// A two-tensor safetensors file (F32 weights with a NaN, a BF16 copy).
    fn input(dir: &Path) -> PathBuf {
        let w: Vec<f32> = (0..64 * 48)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 997.0)
            .collect();
        let mut f32b: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf16 = dhurandhar_pack::cast_f32_bytes(&f32b, dhurandhar_pack::DType::BF16);
        f32b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        let t = [
            (
                "a.weight",
                dhurandhar_pack::DType::F32,
                vec![64u64, 48],
                f32b,
            ),
            ("b.weight", dhurandhar_pack::DType::BF16, vec![48, 64], bf16),
        ];
        let list: Vec<_> = t
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), *d, s.clone(), b.len() as u64))
            .collect();
        let p = dir.join("in.safetensors");
        dhurandhar_pack::write_safetensors(&p, &list, &BTreeMap::new(), &mut |i, sink| {
            sink(&t[i].3)
        })
        .unwrap();
        p
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pack_verify_stats_unpack_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let out = d.path().join("m.dhp");
        let opts = PackOptions {
            input: src.clone(),
            output: out.clone(),
            chunk_kib: 4,
            ..Default::default()
        };
        let r = pack(&opts, &NoProgress, &CancelToken::new()).unwrap();
        assert_eq!((r.mode.as_str(), r.result.tensors.len()), ("lossless", 2));
        let j = serde_json::to_value(&r).unwrap();
        for k in [
            "schema_version",
            "input",
            "output",
            "mode",
            "seconds",
            "gb_per_s",
        ] {
            assert!(j.get(k).is_some(), "{k} missing: {j}");
        }
        assert!(j.get("base").is_none());
        assert_eq!(j["tensors"][0]["name"], "a.weight");
        assert_eq!(r.mode_counts(), vec![("lossless", 2)]);
        assert!(r.notes_by_reason().is_empty());
        let mut noted = r.clone();
        let extra = noted.result.tensors[0].clone();
        noted.result.tensors.push(extra);
        for (t, note) in noted.result.tensors.iter_mut().zip(["tiny", "big", "tiny"]) {
            t.note = Some(note.to_string());
        }
        let grouped = noted.notes_by_reason();
        assert_eq!(
            grouped,
            vec![
                ("tiny", vec!["a.weight", "a.weight"]),
                ("big", vec!["b.weight"])
            ]
        );

        let v = verify(
            &VerifyOptions {
                input: out.clone(),
                quick: false,
            },
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!((v.ok, v.tensors_hashed), (true, Some(2)));
        let s = stats(&out).unwrap();
        assert_eq!((s.chunk_size, s.result.tensors.len()), (4096, 2));

        let back = d.path().join("back.safetensors");
        let u = unpack(
            &UnpackOptions {
                input: out,
                output: back.clone(),
            },
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(u.result.verified_bit_exact, 2);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&back).unwrap());
    }

    /// Cancels its token on the first progress report: the job stops mid-write.
    struct CancelOnFirst(CancelToken);
    impl Progress for CancelOnFirst {
        fn start(&self, _: &str, _: Option<u64>, _: Unit) {}
        fn advance(&self, _: u64) {
            self.0.cancel();
        }
    }

    #[test]
    fn cancelled_jobs_leave_no_output() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let token = CancelToken::new();
        let opts = PackOptions {
            input: src.clone(),
            output: d.path().join("m.dhp"),
            chunk_kib: 1,
            ..Default::default()
        };
        let e = pack(&opts, &CancelOnFirst(token.clone()), &token).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(names(d.path()), ["in.safetensors"]);

        let packed = d.path().join("ok.dhp");
        let opts = PackOptions {
            output: packed.clone(),
            ..opts
        };
        pack(&opts, &NoProgress, &CancelToken::new()).unwrap();
        let token = CancelToken::new();
        let e = unpack(
            &UnpackOptions {
                input: packed,
                output: d.path().join("u.safetensors"),
            },
            &CancelOnFirst(token.clone()),
            &token,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(names(d.path()), ["in.safetensors", "ok.dhp"]);
    }

    #[test]
    fn writing_onto_an_input_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let before = std::fs::read(&src).unwrap();
        let opts = PackOptions {
            input: src.clone(),
            output: src.clone(),
            ..Default::default()
        };
        let e = pack(&opts, &NoProgress, &CancelToken::new()).unwrap_err();
        assert!(e.to_string().contains("same file as the input"), "{e}");
        let e = delta(
            &DeltaOptions {
                base: src.clone(),
                new: src.clone(),
                output: src.clone(),
                ..Default::default()
            },
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("same file as the input"), "{e}");
        assert_eq!(std::fs::read(&src).unwrap(), before);
    }

    #[test]
    fn a_corrupt_pack_fails_verify_naming_tensor_and_chunk() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let out = d.path().join("m.dhp");
        let opts = PackOptions {
            input: src,
            output: out.clone(),
            chunk_kib: 4,
            ..Default::default()
        };
        pack(&opts, &NoProgress, &CancelToken::new()).unwrap();
        let mut b = std::fs::read(&out).unwrap();
        b[64 + 10] ^= 1;
        std::fs::write(&out, &b).unwrap();
        let vo = VerifyOptions {
            input: out.clone(),
            quick: true,
        };
        let e = verify(&vo, &NoProgress, &CancelToken::new()).unwrap_err();
        let r = VerifyReport::failed(&out, &e);
        assert!(!r.ok);
        assert_eq!(
            (r.bad_tensor.as_deref(), r.bad_chunk),
            (Some("a.weight"), Some(0))
        );
        assert!(r.error.unwrap().contains("checksum mismatch"));
        let missing = d.path().join("none.dhp");
        let e = stats(&missing).unwrap_err();
        let r = VerifyReport::failed(&missing, &e);
        assert_eq!((r.ok, r.bad_tensor), (false, None));
    }

    #[test]
    fn delta_then_apply_restores_the_new_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let base = input(d.path());
        let new = d.path().join("new.safetensors");
        let mut bytes = std::fs::read(&base).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x40; // last element of the last tensor
        std::fs::write(&new, &bytes).unwrap();
        let dp = d.path().join("d.dhp");
        let r = delta(
            &DeltaOptions {
                base: base.clone(),
                new: new.clone(),
                output: dp.clone(),
                ..Default::default()
            },
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!((r.mode.as_str(), r.base.is_some()), ("delta", true));
        let (x, s) = r.delta_chunks();
        assert_eq!(x + s, 1);
        let out = d.path().join("out.safetensors");
        apply_delta(
            &ApplyOptions {
                base,
                delta: dp,
                output: out.clone(),
            },
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
    }

    #[test]
    fn a_pack_and_its_checkpoint_are_the_same_tensor_source() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let out = d.path().join("m.dhp");
        let opts = PackOptions {
            input: src.clone(),
            output: out.clone(),
            ..Default::default()
        };
        pack(&opts, &NoProgress, &CancelToken::new()).unwrap();
        let a = open_tensors(&src).unwrap();
        let b = open_tensors(&out).unwrap();
        assert!(matches!(
            (&a, &b),
            (Tensors::Checkpoint(_), Tensors::Pack(_))
        ));
        assert_eq!(a.list_tensors(), b.list_tensors());
        for t in a.list_tensors() {
            let mut x = vec![0u8; t.n_bytes as usize];
            let mut y = vec![1u8; t.n_bytes as usize];
            a.read_tensor_into(&t.name, &mut x).unwrap();
            b.read_tensor_into(&t.name, &mut y).unwrap();
            assert_eq!(x, y, "{}", t.name);
        }
        let e = b.read_tensor_into("nope", &mut []).unwrap_err().to_string();
        assert!(e.contains("m.dhp") && e.contains("nope"), "{e}");
        assert!(open_tensors(&d.path().join("missing.safetensors")).is_err());
    }

    #[test]
    fn option_errors_name_the_field_not_a_flag() {
        let d = tempfile::tempdir().unwrap();
        let src = input(d.path());
        let opts = PackOptions {
            input: src,
            output: d.path().join("q.dhp"),
            mode: PackMode::QuantResidual,
            bits: 3,
            ..Default::default()
        };
        let e = pack(&opts, &NoProgress, &CancelToken::new()).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Pack(PackError::InvalidOption { option: "bits", .. })
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("bits must be 4 or 8") && !text.contains("--"),
            "{text}"
        );
        assert_eq!(names(d.path()), ["in.safetensors"]);
    }
}
