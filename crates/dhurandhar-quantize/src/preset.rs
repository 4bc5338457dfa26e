//! Per-tensor type choice for the `llama-quantize` presets (`Q4_K_M`, `Q5_K_S`, …).
//!
//! A preset is a default type plus rules by tensor role, reproducing llama.cpp's
//! `llama_tensor_get_type` for dense and mixture-of-experts models:
//!
//! * only weights of two or more dimensions are quantized; norms, 1-D tensors, expert
//!   gates, positional embeddings and a few small special tensors keep their type;
//! * `output.weight` (or `token_embd.weight` when the model ties its head to the
//!   embedding) gets Q6_K (Q8_0 when its rows do not fit the default's block);
//! * the `_M` / `_S` / `_L` variants give `attn_v` and `ffn_down` more bits on a subset of
//!   layers (the first and last eighth and every third layer between for Q4_K_M/Q5_K_M);
//! * a tensor whose row length is not a multiple of its type's block falls back as
//!   llama.cpp does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, then F16).
//!
//! llama.cpp's extra rules for Falcon, 70B llama models and the i-quant presets are not
//! reproduced (those presets are not offered).

use crate::Format;

/// A `llama-quantize` preset (file type).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl Preset {
    /// Every preset, in the order `--help` lists them.
    pub const ALL: [Preset; 16] = [
        Preset::Q4_K_M,
        Preset::Q4_K_S,
        Preset::Q5_K_M,
        Preset::Q5_K_S,
        Preset::Q6_K,
        Preset::Q8_0,
        Preset::Q4_0,
        Preset::Q4_1,
        Preset::Q5_0,
        Preset::Q5_1,
        Preset::Q2_K,
        Preset::Q3_K_S,
        Preset::Q3_K_M,
        Preset::Q3_K_L,
        Preset::F16,
        Preset::BF16,
    ];

    /// The lower-case name (`"q4_k_m"`), as `llama-quantize` accepts it.
    pub fn name(self) -> &'static str {
        use Preset::*;
        match self {
            F16 => "f16",
            BF16 => "bf16",
            Q8_0 => "q8_0",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q2_K => "q2_k",
            Q3_K_S => "q3_k_s",
            Q3_K_M => "q3_k_m",
            Q3_K_L => "q3_k_l",
            Q4_K_S => "q4_k_s",
            Q4_K_M => "q4_k_m",
            Q5_K_S => "q5_k_s",
            Q5_K_M => "q5_k_m",
            Q6_K => "q6_k",
        }
    }

    /// Parse a name, ignoring case (`Q4_K_M`, `q4_k_m`).
    pub fn from_name(s: &str) -> Option<Preset> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// The `general.file_type` value (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        use Preset::*;
        match self {
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            BF16 => 32,
        }
    }

    /// The type most tensors get.
    pub fn default_format(self) -> Format {
        use Preset::*;
        match self {
            F16 => Format::F16,
            BF16 => Format::BF16,
            Q8_0 => Format::Q8_0,
            Q4_0 => Format::Q4_0,
            Q4_1 => Format::Q4_1,
            Q5_0 => Format::Q5_0,
            Q5_1 => Format::Q5_1,
            Q2_K => Format::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => Format::Q3_K,
            Q4_K_S | Q4_K_M => Format::Q4_K,
            Q5_K_S | Q5_K_M => Format::Q5_K,
            Q6_K => Format::Q6_K,
        }
    }

    /// A one-line description for help texts.
    pub fn describe(self) -> &'static str {
        use Preset::*;
        match self {
            Q4_K_M => "Q4_K; Q6_K on attn_v and ffn_down of some layers and on the output",
            Q4_K_S => "Q4_K; Q5_K on the first attn_v and the first eighth of ffn_down",
            Q5_K_M => "Q5_K; Q6_K on attn_v and ffn_down of some layers and on the output",
            Q5_K_S => "Q5_K; Q6_K output",
            Q6_K => "Q6_K everywhere",
            Q8_0 => "Q8_0 everywhere",
            Q4_0 => "Q4_0; Q6_K output",
            Q4_1 => "Q4_1; Q6_K output",
            Q5_0 => "Q5_0; Q6_K output",
            Q5_1 => "Q5_1; Q6_K output",
            Q2_K => "Q2_K; Q3_K/Q4_K on attn_v, ffn_down, attn_output",
            Q3_K_S => "Q3_K; Q6_K output",
            Q3_K_M => "Q3_K; Q4_K/Q5_K on attn_v, ffn_down, attn_output",
            Q3_K_L => "Q3_K; Q5_K on attn_v, ffn_down, attn_output",
            F16 => "F16 for every weight matrix",
            BF16 => "BF16 for every weight matrix",
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the rules know of a tensor by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorRole {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl TensorRole {
    /// The role of the tensor named `name` (GGUF tensor names, `blk.N.attn_v.weight`).
    pub fn of(name: &str) -> TensorRole {
        use TensorRole::*;
        if name == "output.weight" {
            Output
        } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            AttnQkv
        } else if name.contains("attn_kv_b.weight") {
            AttnKvB
        } else if name.contains("attn_v.weight") {
            AttnV
        } else if name.contains("attn_k.weight") {
            AttnK
        } else if name.contains("attn_q.weight") {
            AttnQ
        } else if name.contains("attn_output.weight") {
            AttnOutput
        } else if name.contains("ffn_up") {
            FfnUp
        } else if name.contains("ffn_gate") {
            FfnGate
        } else if name.contains("ffn_down") {
            FfnDown
        } else {
            Other
        }
    }

    /// Roles that carry the attention values (the most sensitive to quantization).
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            TensorRole::AttnV | TensorRole::AttnQkv | TensorRole::AttnKvB
        )
    }
}

/// The model facts the rules use (from the GGUF metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`.
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: usize,
    /// `{arch}.attention.head_count`.
    pub n_head: usize,
    /// `{arch}.attention.head_count_kv` (0 = same as `n_head`).
    pub n_head_kv: usize,
    /// `{arch}.expert_count` (0 = dense).
    pub n_expert: usize,
}

impl ModelInfo {
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }
}

/// One tensor as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    /// ggml order: `shape[0]` is the row length.
    pub shape: Vec<u64>,
}

/// The decision for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorPlan {
    pub role: TensorRole,
    /// `None`: the tensor is not a quantizable weight and keeps its type and bytes.
    pub target: Option<Format>,
    /// The type the rules chose before the row length forced `target` instead.
    pub fallback_from: Option<Format>,
}

/// Whether llama.cpp quantizes a tensor at all.
fn quantizable(name: &str, shape: &[u64]) -> bool {
    let n_dims = shape.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: [&str; 14] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "time_mix_",
        "attn_rel_b.weight",
        ".position_embd",
        ".patch_embd",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
    ];
    name != "position_embd.weight"
        && name != "token_types.weight"
        && !KEEP.iter().any(|k| name.contains(k))
}

/// The layer number of `blk.N.…`, if any.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The order llama.cpp visits tensors (non-layer tensors first, then by layer, then by
/// name); the per-role layer counters follow it.
fn visit_order(tensors: &[TensorDesc]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tensors.len()).collect();
    idx.sort_by(|&a, &b| {
        let la = layer_of(&tensors[a].name).map_or(-1, |l| l as i64);
        let lb = layer_of(&tensors[b].name).map_or(-1, |l| l as i64);
        la.cmp(&lb)
            .then_with(|| tensors[a].name.cmp(&tensors[b].name))
    });
    idx
}

/// llama.cpp's "more bits" layers: the first and last eighth, and every third between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    // (Past the first clause i ≥ n/8, so the remainder is of a non-negative number.)
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Choose the type of every tensor (same order as `tensors`).
pub fn plan(preset: Preset, model: &ModelInfo, tensors: &[TensorDesc]) -> Vec<TensorPlan> {
    let default = preset.default_format();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let n_attn_v = tensors
        .iter()
        .filter(|t| TensorRole::of(&t.name).is_attn_v())
        .count();
    let mut state = Counters {
        n_attn_v,
        ..Counters::default()
    };
    let mut out = vec![
        TensorPlan {
            role: TensorRole::Other,
            target: None,
            fallback_from: None,
        };
        tensors.len()
    ];
    for i in visit_order(tensors) {
        let t = &tensors[i];
        let role = TensorRole::of(&t.name);
        out[i].role = role;
        if !quantizable(&t.name, &t.shape) {
            continue;
        }
        if !default.is_quantized() {
            out[i].target = Some(default);
            continue;
        }
        let chosen = choose(preset, model, t, role, tied, &mut state);
        let row = t.shape.first().copied().unwrap_or(1) as usize;
        let (target, from) = fallback(chosen, row);
        out[i].target = Some(target);
        out[i].fallback_from = from.then_some(chosen);
    }
    out
}

#[derive(Debug, Default)]
struct Counters {
    n_attn_v: usize,
    i_attn_v: usize,
    i_ffn_down: usize,
}

/// The rules of `llama_tensor_get_type` for the presets offered here.
fn choose(
    preset: Preset,
    m: &ModelInfo,
    t: &TensorDesc,
    role: TensorRole,
    tied: bool,
    c: &mut Counters,
) -> Format {
    use Preset as P;
    use TensorRole as R;
    let default = preset.default_format();
    let row = t.shape.first().copied().unwrap_or(1) as usize;
    let n_layer = m.n_layer.max(1);
    let layer = |counter: usize| -> usize {
        if m.n_expert > 1 {
            layer_of(&t.name).unwrap_or(counter)
        } else {
            counter
        }
    };
    if role == R::Output || (tied && role == R::TokenEmbd) {
        return if !row.is_multiple_of(default.block_size()) {
            Format::Q8_0
        } else if default != Format::Q8_0 {
            Format::Q6_K
        } else {
            default
        };
    }
    let mut ty = default;
    match role {
        r if r.is_attn_v() => {
            let i = c.i_attn_v;
            ty = match preset {
                P::Q2_K if m.n_gqa() >= 4 => Format::Q4_K,
                P::Q2_K => Format::Q3_K,
                P::Q3_K_M if i < 2 => Format::Q5_K,
                P::Q3_K_M => Format::Q4_K,
                P::Q3_K_L => Format::Q5_K,
                P::Q4_K_M | P::Q5_K_M if use_more_bits(i, c.n_attn_v) => Format::Q6_K,
                P::Q4_K_S if i < 4 => Format::Q5_K,
                _ => default,
            };
            if m.n_expert == 8 {
                ty = Format::Q8_0;
            }
            c.i_attn_v += 1;
        }
        R::AttnK if m.n_expert == 8 => ty = Format::Q8_0,
        R::FfnDown => {
            let i = layer(c.i_ffn_down);
            ty = match preset {
                P::Q2_K => Format::Q3_K,
                P::Q3_K_M if i < n_layer / 16 => Format::Q5_K,
                P::Q3_K_M => Format::Q4_K,
                P::Q3_K_L => Format::Q5_K,
                P::Q4_K_M | P::Q5_K_M if use_more_bits(i, n_layer) => Format::Q6_K,
                P::Q4_K_S if i < n_layer / 8 => Format::Q5_K,
                _ => default,
            };
            c.i_ffn_down += 1;
        }
        R::AttnOutput => {
            if m.n_expert == 8 {
                if matches!(
                    preset,
                    P::Q2_K | P::Q3_K_S | P::Q3_K_M | P::Q4_K_S | P::Q4_K_M
                ) {
                    ty = Format::Q5_K;
                }
            } else {
                ty = match preset {
                    P::Q2_K => Format::Q3_K,
                    P::Q3_K_M => Format::Q4_K,
                    P::Q3_K_L => Format::Q5_K,
                    _ => default,
                };
            }
        }
        _ => {}
    }
    // (llama.cpp's separate attn_qkv rule sits after the attn_v-like branch, which
    // already takes attn_qkv, so it never applies and is not reproduced.)
    ty
}

/// The type a tensor with rows of `row` values really gets when `chosen` does not fit,
/// and whether it changed.
pub fn fallback(chosen: Format, row: usize) -> (Format, bool) {
    if row.is_multiple_of(chosen.block_size()) {
        return (chosen, false);
    }
    let next = match chosen {
        Format::Q2_K | Format::Q3_K => Format::Q4_0,
        Format::Q4_K => Format::Q5_0,
        Format::Q5_K => Format::Q5_1,
        Format::Q6_K => Format::Q8_0,
        other => other,
    };
    if row.is_multiple_of(next.block_size()) {
        (next, true)
    } else {
        (Format::F16, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_like(n_layer: usize, hidden: u64, ffn: u64, tied: bool) -> Vec<TensorDesc> {
        let mut v = vec![
            TensorDesc {
                name: "token_embd.weight".into(),
                shape: vec![hidden, 1000],
            },
            TensorDesc {
                name: "output_norm.weight".into(),
                shape: vec![hidden],
            },
        ];
        if !tied {
            v.push(TensorDesc {
                name: "output.weight".into(),
                shape: vec![hidden, 1000],
            });
        }
        for l in 0..n_layer {
            for (n, s) in [
                ("attn_norm.weight", vec![hidden]),
                ("attn_q.weight", vec![hidden, hidden]),
                ("attn_k.weight", vec![hidden, hidden / 4]),
                ("attn_v.weight", vec![hidden, hidden / 4]),
                ("attn_output.weight", vec![hidden, hidden]),
                ("ffn_gate.weight", vec![hidden, ffn]),
                ("ffn_up.weight", vec![hidden, ffn]),
                ("ffn_down.weight", vec![ffn, hidden]),
            ] {
                v.push(TensorDesc {
                    name: format!("blk.{l}.{n}"),
                    shape: s,
                });
            }
        }
        v
    }

    fn info(n_layer: usize) -> ModelInfo {
        ModelInfo {
            arch: "llama".into(),
            n_layer,
            n_head: 8,
            n_head_kv: 2,
            n_expert: 0,
        }
    }

    fn target(ts: &[TensorDesc], p: &[TensorPlan], name: &str) -> Option<Format> {
        p[ts.iter().position(|t| t.name == name).unwrap()].target
    }

    #[test]
    fn names_and_file_types_round_trip() {
        for p in Preset::ALL {
            assert_eq!(Preset::from_name(p.name()), Some(p));
            assert_eq!(Preset::from_name(&p.name().to_uppercase()), Some(p));
        }
        assert_eq!(Preset::from_name("q4_k_x"), None);
        assert_eq!(Preset::Q4_K_M.file_type(), 15);
    }

    #[test]
    fn more_bits_layers_match_the_published_pattern() {
        // 24 layers: first 3, last 3, and every third from layer 5.
        let got: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(got, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn q4_k_m_mixes_by_role() {
        let ts = llama_like(24, 1024, 2816, false);
        let p = plan(Preset::Q4_K_M, &info(24), &ts);
        assert_eq!(target(&ts, &p, "output.weight"), Some(Format::Q6_K));
        assert_eq!(target(&ts, &p, "token_embd.weight"), Some(Format::Q4_K));
        assert_eq!(target(&ts, &p, "output_norm.weight"), None);
        assert_eq!(target(&ts, &p, "blk.0.attn_v.weight"), Some(Format::Q6_K));
        assert_eq!(target(&ts, &p, "blk.3.attn_v.weight"), Some(Format::Q4_K));
        assert_eq!(target(&ts, &p, "blk.5.ffn_down.weight"), Some(Format::Q6_K));
        assert_eq!(target(&ts, &p, "blk.6.ffn_down.weight"), Some(Format::Q4_K));
        // ffn_down rows are 2816 = 11·256 long: Q6_K fits.
        assert_eq!(target(&ts, &p, "blk.0.ffn_down.weight"), Some(Format::Q6_K));
        assert_eq!(target(&ts, &p, "blk.7.attn_q.weight"), Some(Format::Q4_K));
    }

    #[test]
    fn tied_embedding_gets_the_output_type_and_rows_off_the_grid_fall_back() {
        // SmolLM2-135M: hidden 576 = 2.25 · 256.
        let ts = llama_like(30, 576, 1536, true);
        let p = plan(Preset::Q4_K_M, &info(30), &ts);
        assert_eq!(target(&ts, &p, "token_embd.weight"), Some(Format::Q8_0));
        let q = ts
            .iter()
            .position(|t| t.name == "blk.4.attn_q.weight")
            .unwrap();
        assert_eq!(p[q].target, Some(Format::Q5_0));
        assert_eq!(p[q].fallback_from, Some(Format::Q4_K));
        // ffn_down rows are 1536 = 6·256: no fallback.
        assert_eq!(target(&ts, &p, "blk.4.ffn_down.weight"), Some(Format::Q4_K));
        assert_eq!(target(&ts, &p, "blk.0.ffn_down.weight"), Some(Format::Q6_K));
        let p5 = plan(Preset::Q5_K_M, &info(30), &ts);
        assert_eq!(target(&ts, &p5, "blk.4.attn_q.weight"), Some(Format::Q5_1));
        assert_eq!(target(&ts, &p5, "blk.0.attn_v.weight"), Some(Format::Q8_0));
    }

    #[test]
    fn float_presets_convert_every_matrix_and_keep_vectors() {
        let ts = llama_like(2, 64, 128, true);
        let p = plan(Preset::F16, &info(2), &ts);
        for (t, d) in ts.iter().zip(&p) {
            let want = (t.shape.len() > 1).then_some(Format::F16);
            assert_eq!(d.target, want, "{}", t.name);
        }
    }

    #[test]
    fn fallback_chain() {
        assert_eq!(fallback(Format::Q4_K, 512), (Format::Q4_K, false));
        assert_eq!(fallback(Format::Q6_K, 576), (Format::Q8_0, true));
        assert_eq!(fallback(Format::Q3_K, 96), (Format::Q4_0, true));
        assert_eq!(fallback(Format::Q4_K, 100), (Format::F16, true));
        assert_eq!(fallback(Format::Q8_0, 100), (Format::F16, true));
    }
}
