//! KV tensors from safetensors or `.npy` bytes (the caller reads the file), so real
//! captured KV can be compared. f32, f16 and bf16 are accepted; the last axis is
//! head_dim.

use std::collections::BTreeMap;

use half::{bf16, f16};

use crate::codec::KvError;

/// One tensor converted to f32.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A parsed file: names and shapes of everything, data of the selected tensors only.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    pub tensors: Vec<Tensor>,
    pub metadata: BTreeMap<String, String>,
    /// Names of all float tensors in the file (selected or not), sorted.
    pub names: Vec<String>,
}

fn err(m: impl Into<String>) -> KvError {
    KvError::TensorFile(m.into())
}

fn convert(raw: &[u8], dtype: &str) -> Result<Vec<f32>, KvError> {
    Ok(match dtype {
        "f32" => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "f16" => raw
            .chunks_exact(2)
            .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        "bf16" => raw
            .chunks_exact(2)
            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => return Err(err(format!("unsupported dtype {other}"))),
    })
}

/// The first tensor whose dtype and shape disagree with its `data_offsets`, said with
/// its name and both sizes; `None` when the header cannot be read that far.
fn bad_tensor_size(bytes: &[u8]) -> Option<String> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    let root: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    root.iter().filter(|(n, _)| *n != "__metadata__").find_map(|(name, v)| {
        let dtype = v.get("dtype")?.as_str()?;
        let elem: u64 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "U16" | "I16" | "F16" | "BF16" => 2,
            "U32" | "I32" | "F32" => 4,
            "U64" | "I64" | "F64" => 8,
            _ => return None,
        };
        let shape: Vec<u64> = v
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()?;
        let offs = v.get("data_offsets")?.as_array()?;
        let (b, e) = (offs.first()?.as_u64()?, offs.get(1)?.as_u64()?);
        let want = shape
            .iter()
            .try_fold(elem, |a, &d| a.checked_mul(d))
            .map_or("an impossible number of".to_string(), |n| n.to_string());
        let span = e.checked_sub(b);
        (span.map(|s| s.to_string()).as_deref() != Some(want.as_str())).then(|| {
            format!(
                "tensor `{name}` ({dtype} {shape:?}) should take {want} bytes but its data_offsets [{b}, {e}] span {}",
                span.map_or("a negative number of".to_string(), |s| s.to_string())
            )
        })
    })
}

/// Parse a safetensors buffer, converting the tensors whose name `select` accepts.
pub fn parse_safetensors(
    bytes: &[u8],
    select: impl Fn(&str) -> bool,
) -> Result<TensorFile, KvError> {
    use safetensors::{Dtype, SafeTensors};
    if bytes.starts_with(b"GGUF") {
        // Its first 8 bytes read as an absurd safetensors header length otherwise.
        return Err(err(
            "this is a GGUF model, not a KV tensor file (safetensors or .npy); capture \
             real KV from the model first (kv capture)",
        ));
    }
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        // The reference parser's "invalid shape, data type, or offset" names no tensor.
        err(bad_tensor_size(bytes).unwrap_or_else(|| e.to_string()))
    })?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let mut out = TensorFile::default();
    if let Some(m) = meta.metadata() {
        out.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    let mut entries = st.tensors();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in entries {
        let dt = match view.dtype() {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
            _ => continue,
        };
        out.names.push(name.clone());
        if select(&name) {
            let data = convert(view.data(), dt)?;
            out.tensors.push(Tensor {
                name,
                shape: view.shape().to_vec(),
                data,
            });
        }
    }
    Ok(out)
}

/// Parse a `.npy` buffer (little-endian `<f4`, `<f2`, C order) as one tensor `array`.
pub fn parse_npy(bytes: &[u8]) -> Result<TensorFile, KvError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file (bad magic)"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| err(".npy header runs past the end of the file"))?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| err(".npy header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = header[i + key.len() + 2..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| err(".npy header has no descr"))?;
    let dtype = if descr.starts_with("'<f4'") {
        "f32"
    } else if descr.starts_with("'<f2'") {
        "f16"
    } else {
        return Err(err(format!(
            "unsupported .npy dtype {} (need <f4 or <f2)",
            descr.split(',').next().unwrap_or("?")
        )));
    };
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(err("Fortran-order .npy arrays are not supported"));
    }
    let shape_s = field("shape").ok_or_else(|| err(".npy header has no shape"))?;
    let close = shape_s.find(')').ok_or_else(|| err("bad .npy shape"))?;
    let shape: Vec<usize> = shape_s[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("bad .npy shape entry `{s}`")))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| err(".npy shape overflows"))?;
    let width = if dtype == "f32" { 4 } else { 2 };
    let need = count
        .checked_mul(width)
        .ok_or_else(|| err(".npy shape overflows"))?;
    if bytes.len() - end != need {
        return Err(err(format!(
            ".npy data is {} bytes but shape {shape:?} needs {need}",
            bytes.len() - end
        )));
    }
    let data = convert(&bytes[end..], dtype)?;
    Ok(TensorFile {
        tensors: vec![Tensor {
            name: "array".into(),
            shape,
            data,
        }],
        metadata: BTreeMap::new(),
        names: vec!["array".into()],
    })
}

/// Write a minimal `.npy` (f32, C order): used by tests and tools.
pub fn write_npy(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_errors() {
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let b = write_npy(&[2, 3, 4], &data);
        let f = parse_npy(&b).unwrap();
        assert_eq!(f.tensors[0].shape, vec![2, 3, 4]);
        assert_eq!(f.tensors[0].data, data);
        assert!(parse_npy(&b[..b.len() - 1]).is_err());
        assert!(parse_npy(b"junk").is_err());
        let e = parse_safetensors(b"GGUF\x03\0\0\0\0\0\0\0", |_| true).unwrap_err();
        assert!(e.to_string().contains("this is a GGUF model"), "{e}");
    }
}

/// How to turn a tensor file into per-head KV data.
#[derive(Debug, Clone, Default)]
pub struct HeadSelect {
    /// Use this tensor (any `[..., head_dim]` shape) as both K and V.
    pub tensor: Option<String>,
    /// Captured files: only these layers (default all with K and V).
    pub layers: Vec<usize>,
    /// Queries per KV head (file queries are subsampled to this many positions).
    pub queries: usize,
    pub seed: u64,
}

/// What [`heads_from_file`] used, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub layout: &'static str,
    pub tensors: Vec<String>,
    pub head_dim: usize,
    pub heads: usize,
    pub tokens: usize,
    pub queries: &'static str,
    pub spectral_calibration: &'static str,
}

fn shape_heads(shape: &[usize]) -> Result<(usize, usize, usize), KvError> {
    match shape {
        [] => Err(err("scalar tensor has no head_dim axis")),
        [d] => Ok((1, 1, *d)),
        [t, d] => Ok((*t, 1, *d)),
        [t, h, d] => Ok((*t, *h, *d)),
        more => {
            let d = more[more.len() - 1];
            let h = more[more.len() - 2];
            Ok((more[..more.len() - 2].iter().product(), h, d))
        }
    }
}

/// Column `h` of a `[t, heads, d]` tensor as `t × d`.
fn head_slice(data: &[f32], t: usize, heads: usize, d: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(t * d);
    for i in 0..t {
        let s = (i * heads + h) * d;
        out.extend_from_slice(&data[s..s + d]);
    }
    out
}

/// Per-KV-head data from a parsed file.
///
/// Captured layout (`layers.{i}.k`, `layers.{i}.v`, optional `layers.{i}.q`, shapes
/// `[tokens, heads, head_dim]`): one head per layer × KV head; queries are the real
/// post-RoPE queries of the query heads that share the KV head (GQA: query head h
/// reads KV head h / (n_heads / n_kv_heads)) at evenly spaced positions, attending
/// causally. Otherwise `sel.tensor` (or the file's only tensor) is used as K and V with
/// synthetic queries. SpectralQuant is calibrated in-sample on the head's own data.
pub fn heads_from_file(
    f: &TensorFile,
    sel: &HeadSelect,
) -> Result<(Vec<crate::metrics::HeadData>, FileSummary), KvError> {
    use crate::metrics::HeadData;
    let find = |n: &str| f.tensors.iter().find(|t| t.name == n);
    let mut heads = Vec::new();
    let mut used = Vec::new();
    let mut real_q = false;
    let captured = sel.tensor.is_none()
        && f.names
            .iter()
            .any(|n| n.starts_with("layers.") && n.ends_with(".k"));
    if captured {
        let mut layers: Vec<usize> = f
            .names
            .iter()
            .filter_map(|n| n.strip_prefix("layers.")?.strip_suffix(".k")?.parse().ok())
            .collect();
        layers.sort_unstable();
        if !sel.layers.is_empty() {
            for l in &sel.layers {
                if !layers.contains(l) {
                    return Err(err(format!(
                        "layer {l} is not in the file (layers: {layers:?})"
                    )));
                }
            }
            layers.retain(|l| sel.layers.contains(l));
        }
        for l in layers {
            let (Some(k), Some(v)) = (
                find(&format!("layers.{l}.k")),
                find(&format!("layers.{l}.v")),
            ) else {
                continue;
            };
            let (t, hk, d) = shape_heads(&k.shape)?;
            if shape_heads(&v.shape)? != (t, hk, d) {
                return Err(err(format!(
                    "layers.{l}.v shape {:?} differs from layers.{l}.k {:?}",
                    v.shape, k.shape
                )));
            }
            if k.data.len() != t * hk * d || t == 0 || d == 0 {
                return Err(err(format!("layers.{l}.k is empty or inconsistent")));
            }
            used.push(k.name.clone());
            used.push(v.name.clone());
            let q = find(&format!("layers.{l}.q"));
            let qinfo = match q {
                Some(q) => {
                    let (tq, hq, dq) = shape_heads(&q.shape)?;
                    if tq != t || dq != d || hq == 0 || !hq.is_multiple_of(hk) {
                        return Err(err(format!(
                            "layers.{l}.q shape {:?} does not fit K {:?} (GQA needs n_heads a multiple of n_kv_heads)",
                            q.shape, k.shape
                        )));
                    }
                    used.push(q.name.clone());
                    Some((q, hq))
                }
                None => None,
            };
            for h in 0..hk {
                let kd = head_slice(&k.data, t, hk, d, h);
                let vd = head_slice(&v.data, t, hk, d, h);
                let (qd, qpos) = match qinfo {
                    Some((q, hq)) => {
                        real_q = true;
                        let group = hq / hk;
                        let per = (sel.queries / group).max(1);
                        let mut qd = Vec::new();
                        let mut pos = Vec::new();
                        for j in 0..per.min(t) {
                            let tok = if per.min(t) == 1 {
                                t - 1
                            } else {
                                j * (t - 1) / (per.min(t) - 1)
                            };
                            for g in 0..group {
                                let qh = h * group + g;
                                let s = (tok * hq + qh) * d;
                                qd.extend_from_slice(&q.data[s..s + d]);
                                pos.push(tok);
                            }
                        }
                        (qd, Some(pos))
                    }
                    None => (
                        crate::synth::queries(&kd, d, sel.queries, sel.seed, heads.len()),
                        None,
                    ),
                };
                heads.push(HeadData {
                    label: format!("layer {l} kv-head {h}"),
                    d,
                    calib_k: kd.clone(),
                    calib_v: vd.clone(),
                    k: kd,
                    v: vd,
                    q: qd,
                    q_pos: qpos,
                });
            }
        }
        if heads.is_empty() {
            return Err(err("no layer has both layers.{i}.k and layers.{i}.v"));
        }
    } else {
        let t = match &sel.tensor {
            Some(n) => find(n).ok_or_else(|| {
                err(format!("no float tensor `{n}` (tensors: {})", f.names.join(", ")))
            })?,
            None if f.tensors.len() == 1 => &f.tensors[0],
            None => {
                return Err(err(format!(
                    "the file holds {} tensors and no layers.{{i}}.k/v; name the tensor to use (tensors: {})",
                    f.names.len(),
                    f.names.join(", ")
                )))
            }
        };
        let (n, hk, d) = shape_heads(&t.shape)?;
        if n == 0 || d == 0 || t.data.len() != n * hk * d {
            return Err(err(format!("tensor `{}` is empty", t.name)));
        }
        used.push(t.name.clone());
        for h in 0..hk {
            let kd = head_slice(&t.data, n, hk, d, h);
            let q = crate::synth::queries(&kd, d, sel.queries, sel.seed, h);
            heads.push(HeadData {
                label: format!("{} head {h}", t.name),
                d,
                calib_k: kd.clone(),
                calib_v: kd.clone(),
                v: kd.clone(),
                k: kd,
                q,
                q_pos: None,
            });
        }
    }
    let d0 = heads[0].d;
    if let Some(h) = heads.iter().find(|h| h.d != d0) {
        return Err(err(format!("mixed head_dim in the selection ({} has {}, expected {d0}); select layers of one head_dim", h.label, h.d)));
    }
    if heads.iter().any(|h| {
        crate::simd::first_non_finite(&h.k).is_some()
            || crate::simd::first_non_finite(&h.v).is_some()
    }) {
        return Err(err("the selected tensors contain NaN or Inf"));
    }
    let summary = FileSummary {
        layout: if captured {
            "captured (layers.{i}.k/v/q)"
        } else {
            "single tensor used as K and V"
        },
        tensors: used,
        head_dim: d0,
        heads: heads.len(),
        tokens: heads[0].tokens(),
        queries: if real_q {
            "captured post-RoPE queries, causal"
        } else {
            "synthetic"
        },
        spectral_calibration: "in-sample (the head's own K/V)",
    };
    Ok((heads, summary))
}
