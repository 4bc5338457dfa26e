//! Matrix-vector kernels over quantized weights.
//!
//! Q8_0, Q4_0, Q4_1 (portable kernels here) and Q5_0, Q5_1, Q2_K..Q6_K
//! ([`crate::kquants`]) weights are multiplied against activations quantized to 8-bit
//! blocks of 32 ([`Q8Acts`]) with integer dot products: x86 kernels for every one of
//! these types (the private `q8_avx2` module, built for AVX2 and for AVX-512 VNNI and
//! chosen by [`Simd`]) when the CPU has AVX2, the portable loops otherwise (a NEON
//! kernel per type would sit beside the x86 ones). F16/BF16 have their own
//! f32-activation kernels ([`crate::floats`]); anything else, and every type when f32
//! activations are asked for, is dequantized one block at a time into a stack buffer.
//! Either way the weights stay in their stored form.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::quant::{dequantize_block, f16_at, row_bytes, GgmlType, Q8Acts, QK, QK_K};
use crate::EngineError;

/// A quantized matrix borrowed from the weight store: `rows` rows of `cols` values
/// (ggml shape `[cols, rows]`).
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub qtype: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub layout: Layout,
}

/// How a matrix's rows sit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Row after row, as the GGUF stores them.
    #[default]
    Rows,
    /// Groups of eight rows interleaved block by block ([`crate::interleave`]).
    Interleaved8,
}

impl<'a> QMatrix<'a> {
    /// Wrap `data`, checking that its length matches the shape exactly.
    pub fn new(
        qtype: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, EngineError> {
        let rb = row_bytes(qtype, cols)?;
        if rb.checked_mul(rows) != Some(data.len()) {
            return Err(EngineError::Shape(format!(
                "{} matrix {rows}x{cols} needs {} bytes, got {}",
                qtype.name(),
                rb.saturating_mul(rows),
                data.len()
            )));
        }
        Ok(QMatrix {
            qtype,
            rows,
            cols,
            data,
            layout: Layout::Rows,
        })
    }

    /// Interleave a row-major matrix in place ([`crate::interleave`]) and wrap it.
    pub fn interleaved(
        qtype: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a mut [u8],
    ) -> Result<Self, EngineError> {
        QMatrix::new(qtype, rows, cols, data)?;
        crate::interleave::interleave(qtype, rows, cols, data)?;
        Ok(QMatrix {
            qtype,
            rows,
            cols,
            data,
            layout: Layout::Interleaved8,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// Row `r` as raw bytes in the stored format (gathered from its group when the
    /// matrix is interleaved).
    pub fn row(&self, r: usize) -> Cow<'a, [u8]> {
        match self.layout {
            Layout::Rows => {
                let rb = self.row_bytes();
                Cow::Borrowed(&self.data[r * rb..(r + 1) * rb])
            }
            Layout::Interleaved8 => Cow::Owned(crate::interleave::row(
                self.qtype, self.rows, self.cols, self.data, r,
            )),
        }
    }

    /// Dequantize row `r` (e.g. an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), EngineError> {
        if r >= self.rows {
            return Err(EngineError::Shape(format!(
                "row {r} out of range ({} rows)",
                self.rows
            )));
        }
        crate::quant::dequantize_row(self.qtype, &self.row(r), out)
    }

    /// Whether this type multiplies against 8-bit quantized activations.
    pub fn uses_q8(&self) -> bool {
        matches!(self.qtype, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
            || crate::kquants::supports(self.qtype)
    }
}

/// Activations prepared for one weight matrix: 8-bit blocks or plain f32.
pub enum Acts<'a> {
    Q8(&'a Q8Acts),
    F32(&'a [f32]),
}

/// Which kernel set to use, decided once per process. Ordered: each tier can run the
/// kernels of the tiers below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Portable,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX2 whose byte dot products use AVX-512 VNNI's `vpdpbusd` on 256-bit vectors
    /// (AVX512_VNNI + AVX512VL: Ice Lake, Zen 4 and later) instead of `maddubs` + `madd`.
    Avx2Vnni,
}

impl Simd {
    /// Whether this tier runs the AVX2 kernels.
    pub fn avx2(self) -> bool {
        self >= Simd::Avx2
    }

    /// Whether this CPU can run this tier's kernels (the safe entry points that take a
    /// tier check it, so a tier the CPU lacks is a panic, never undefined behaviour).
    pub fn runnable(self) -> bool {
        self <= detected()
    }

    /// Every tier this CPU can run, lowest first (ignores the environment overrides), so
    /// tests can hold each against the others.
    pub fn available() -> Vec<Simd> {
        [Simd::Portable, Simd::Avx2, Simd::Avx2Vnni]
            .into_iter()
            .filter(|t| t.runnable())
            .collect()
    }
}

/// The best tier this CPU supports.
fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static S: OnceLock<Simd> = OnceLock::new();
        *S.get_or_init(|| {
            let has = |f: &[bool]| f.iter().all(|&b| b);
            if !has(&[
                is_x86_feature_detected!("avx2"),
                is_x86_feature_detected!("fma"),
                is_x86_feature_detected!("f16c"),
            ]) {
                Simd::Portable
            } else if has(&[
                is_x86_feature_detected!("avx512vnni"),
                is_x86_feature_detected!("avx512vl"),
            ]) {
                Simd::Avx2Vnni
            } else {
                Simd::Avx2
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Simd::Portable
    }
}

/// The kernel set this process uses: the best detected, capped by `DHURANDHAR_NO_SIMD`
/// (portable only) or `DHURANDHAR_NO_VNNI` (AVX2 without VNNI), which exist to compare
/// the tiers on one machine.
pub fn simd() -> Simd {
    use std::sync::OnceLock;
    static S: OnceLock<Simd> = OnceLock::new();
    *S.get_or_init(|| {
        let cap = if std::env::var_os("DHURANDHAR_NO_SIMD").is_some() {
            Simd::Portable
        } else if std::env::var_os("DHURANDHAR_NO_VNNI").is_some() {
            Simd::Avx2
        } else {
            Simd::Avx2Vnni
        };
        detected().min(cap)
    })
}

// ---------------------------------------------------------------- portable kernels

fn dot_q8_0_portable(w: &[u8], a: &Q8Acts, a_row: usize) -> f32 {
    let nb = a.cols / QK;
    let qs = &a.qs[a_row * a.cols..];
    let ds = &a.d[a_row * nb..];
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[b * 34..b * 34 + 34];
        let mut s = 0i32;
        for j in 0..QK {
            s += (blk[2 + j] as i8 as i32) * qs[b * QK + j] as i32;
        }
        acc += f16_at(blk, 0) * ds[b] * s as f32;
    }
    acc
}

/// Q4_0 and Q4_1 share a kernel: Q4_0 is Q4_1 with offset `-8·d`.
fn dot_q4_portable(w: &[u8], a: &Q8Acts, a_row: usize, q4_1: bool) -> f32 {
    let nb = a.cols / QK;
    let ts = if q4_1 { 20 } else { 18 };
    let qs = &a.qs[a_row * a.cols..];
    let ds = &a.d[a_row * nb..];
    let ss = &a.s[a_row * nb..];
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[b * ts..b * ts + ts];
        let d = f16_at(blk, 0);
        let (m, q) = if q4_1 {
            (f16_at(blk, 2), &blk[4..20])
        } else {
            (-8.0 * d, &blk[2..18])
        };
        let qa = &qs[b * QK..b * QK + QK];
        let mut s = 0i32;
        for j in 0..16 {
            s += (q[j] & 0xF) as i32 * qa[j] as i32 + (q[j] >> 4) as i32 * qa[j + 16] as i32;
        }
        acc += d * ds[b] * s as f32 + m * ss[b];
    }
    acc
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler can vectorise without fast-math.
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// Dequantize block by block and dot with f32 activations (any type).
fn dot_dequant(t: GgmlType, w: &[u8], x: &[f32]) -> f32 {
    if t == GgmlType::F32 {
        let mut acc = 0f32;
        for (c, xs) in w.chunks_exact(4 * 64).zip(x.chunks(64)) {
            let mut buf = [0f32; 64];
            for (o, b) in buf.iter_mut().zip(c.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            acc += dot_f32(&buf[..xs.len()], xs);
        }
        let done = w.len() / (4 * 64) * 64;
        for (i, b) in w[done * 4..].chunks_exact(4).enumerate() {
            acc += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x[done + i];
        }
        return acc;
    }
    let bs = t.block_size() as usize;
    let ts = t.type_size() as usize;
    if bs == 1 {
        // F16 / BF16: dequantize 64 values at a time.
        let mut acc = 0f32;
        for (c, xs) in w.chunks(2 * 64).zip(x.chunks(64)) {
            let mut buf = [0f32; 64];
            for (o, b) in buf.iter_mut().zip(c.chunks_exact(2)) {
                dequantize_block(t, b, std::slice::from_mut(o));
            }
            acc += dot_f32(&buf[..xs.len()], xs);
        }
        return acc;
    }
    let mut buf = [0f32; QK_K];
    let mut acc = 0f32;
    for (b, xs) in w.chunks_exact(ts).zip(x.chunks_exact(bs)) {
        dequantize_block(t, b, &mut buf[..bs]);
        acc += dot_f32(&buf[..bs], xs);
    }
    acc
}

// ---------------------------------------------------------------- AVX2 kernels

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::QK;

    /// Bytes ahead of the current block to prefetch.
    const PREFETCH: usize = 640;

    /// The little-endian f16 at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f16_to_f32(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The sum of the eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The 32 4-bit values of 16 packed bytes: low nibbles in lanes 0..16, high in 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn nibbles(q: *const u8) -> __m256i {
        let m4 = _mm_set1_epi8(0xF);
        let v = _mm_loadu_si128(q as *const __m128i);
        let lo = _mm_and_si128(v, m4);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        _mm256_set_m128i(hi, lo)
    }

    /// Q8_0 weights against f32 activations (no activation rounding).
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `w` holds `x.len()/32` Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = x.len() / QK;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = wp.add(b * 34);
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
            let mut s = _mm256_setzero_ps();
            for g in 0..4 {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(2 + 8 * g) as *const __m128i));
                s = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(q),
                    _mm256_loadu_ps(xp.add(b * QK + 8 * g)),
                    s,
                );
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(blk)), s, acc);
        }
        hsum(acc)
    }

    /// Q4_1 (or Q4_0) weights against f32 activations: `d·Σq·x + m·Σx` per block.
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `w` holds `x.len()/32` blocks of the given type.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_f32<const Q41: bool>(w: &[u8], x: &[f32]) -> f32 {
        let nb = x.len() / QK;
        let ts = if Q41 { 20 } else { 18 };
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let m4 = _mm_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut accm = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = wp.add(b * ts);
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
            let d = f16_to_f32(blk);
            let (m, q) = if Q41 {
                (f16_to_f32(blk.add(2)), blk.add(4))
            } else {
                (-8.0 * d, blk.add(2))
            };
            let v = _mm_loadu_si128(q as *const __m128i);
            let lo = _mm_and_si128(v, m4); // elements 0..16
            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4); // elements 16..32
            let xb = xp.add(b * QK);
            let mut s = _mm256_setzero_ps();
            let mut sx = _mm256_setzero_ps();
            for (g, src) in [
                (0, lo),
                (1, _mm_srli_si128(lo, 8)),
                (2, hi),
                (3, _mm_srli_si128(hi, 8)),
            ] {
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(src));
                let xv = _mm256_loadu_ps(xb.add(8 * g));
                s = _mm256_fmadd_ps(qf, xv, s);
                sx = _mm256_add_ps(sx, xv);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), s, acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(m), sx, accm);
        }
        hsum(_mm256_add_ps(acc, accm))
    }

    /// Scores of `G` query heads (`qs`, `G·d` values) against keys `n` rows of `d`,
    /// `stride` apart from `src + off`: `out[h·ld + j] = scale · ⟨q_h, k_j⟩`, `P`
    /// positions per pass. Each key row is loaded once for the `G` heads, and the
    /// `G·P` sums are independent FMA chains; each sum is formed in the same order
    /// whatever `G` and `P` are, so results do not depend on them.
    ///
    /// # Safety
    /// AVX2/FMA present; `d % 8 == 0`; `qs` holds `G·d` values; every addressed row lies
    /// inside `src`; `out` holds `(G − 1)·ld + n` values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn strided_dots<const G: usize, const P: usize>(
        qs: *const f32,
        d: usize,
        (src, off, stride): (*const f32, usize, usize),
        (j0, n): (usize, usize),
        scale: f32,
        (out, ld): (*mut f32, usize),
    ) {
        let mut j = j0;
        while j + P <= n {
            let mut acc = [[_mm256_setzero_ps(); G]; P];
            let mut i = 0;
            while i < d {
                for (p, accp) in acc.iter_mut().enumerate() {
                    let kv = _mm256_loadu_ps(src.add(off + (j + p) * stride + i));
                    for (h, a) in accp.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(qs.add(h * d + i)), kv, *a);
                    }
                }
                i += 8;
            }
            for (p, accp) in acc.iter().enumerate() {
                for (h, a) in accp.iter().enumerate() {
                    *out.add(h * ld + j + p) = hsum(*a) * scale;
                }
            }
            j += P;
        }
        if P > 1 && j < n {
            strided_dots::<G, 1>(qs, d, (src, off, stride), (j, n), scale, (out, ld));
        }
    }

    /// `outs[h·d + c] += Σ_j p[h·ld + j] · v_j[c]` for `G` heads sharing values `n`
    /// rows of `d`, `stride` apart from `src + off`: each value row is loaded once for
    /// the `G` heads. `C` vectors of 8 per pass over the positions keep `G·C`
    /// accumulators in registers (a pass covers `8·C` of the `d` columns).
    ///
    /// # Safety
    /// AVX2/FMA present; `d % (8·C) == 0`; `p` holds `(G − 1)·ld + n` values, `outs`
    /// `G·d`; every addressed row lies inside `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn strided_axpys<const G: usize, const C: usize>(
        (p, ld, n): (*const f32, usize, usize),
        (src, off, stride): (*const f32, usize, usize),
        outs: *mut f32,
        d: usize,
    ) {
        let mut c0 = 0;
        while c0 < d {
            let mut acc = [[_mm256_setzero_ps(); C]; G];
            for (h, ah) in acc.iter_mut().enumerate() {
                for (c, a) in ah.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(outs.add(h * d + c0 + 8 * c));
                }
            }
            for j in 0..n {
                let vp = src.add(off + j * stride + c0);
                let mut v = [_mm256_setzero_ps(); C];
                for (c, x) in v.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(vp.add(8 * c));
                }
                for (h, ah) in acc.iter_mut().enumerate() {
                    let w = _mm256_set1_ps(*p.add(h * ld + j));
                    for (a, x) in ah.iter_mut().zip(&v) {
                        *a = _mm256_fmadd_ps(w, *x, *a);
                    }
                }
            }
            for (h, ah) in acc.iter().enumerate() {
                for (c, a) in ah.iter().enumerate() {
                    _mm256_storeu_ps(outs.add(h * d + c0 + 8 * c), *a);
                }
            }
            c0 += 8 * C;
        }
    }

    /// f32 dot product.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// `y += a·x` over f32 slices.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `x.len() == y.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            *py.add(i) += a * *px.add(i);
            i += 1;
        }
    }

    /// Four dots sharing `x`: `[⟨w_i, x⟩]` for the four consecutive rows of `w`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `w.len() >= 4 * x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4(w: &[f32], x: &[f32]) -> [f32; 4] {
        let n = x.len();
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 8 <= n {
            let xv = _mm256_loadu_ps(px.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(r * n + i)), xv, *a);
            }
            i += 8;
        }
        let mut out = [0f32; 4];
        for (r, o) in out.iter_mut().enumerate() {
            *o = hsum(acc[r]);
            for j in i..n {
                *o += *pw.add(r * n + j) * *px.add(j);
            }
        }
        out
    }

    /// `y += Σ_i a_i · w_i` over the four consecutive rows of `w`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `w.len() >= 4 * y.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy4(a: [f32; 4], w: &[f32], y: &mut [f32]) {
        let n = y.len();
        let (pw, py) = (w.as_ptr(), y.as_mut_ptr());
        let va = a.map(|v| _mm256_set1_ps(v));
        let mut i = 0;
        while i + 8 <= n {
            let mut r = _mm256_loadu_ps(py.add(i));
            for (k, v) in va.iter().enumerate() {
                r = _mm256_fmadd_ps(*v, _mm256_loadu_ps(pw.add(k * n + i)), r);
            }
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            for (k, v) in a.iter().enumerate() {
                *py.add(i) += v * *pw.add(k * n + i);
            }
            i += 1;
        }
    }
}

/// f32 dot product (SIMD when available).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() {
        // SAFETY: simd() checked avx2/fma/f16c at runtime.
        return unsafe { avx2::dot_f32(a, b) };
    }
    dot_f32(a, b)
}

/// `y += a·x` (SIMD when available).
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() {
        // SAFETY: simd() checked avx2/fma/f16c at runtime.
        return unsafe { avx2::axpy(a, x, y) };
    }
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// Four dot products sharing one vector: `[⟨w_i, x⟩]` for the four consecutive
/// `x.len()`-long rows of `w` (`x` is loaded once for the four).
#[inline]
pub fn dot4(w: &[f32], x: &[f32]) -> [f32; 4] {
    let n = x.len();
    assert!(w.len() >= 4 * n, "dot4 needs four rows");
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() {
        // SAFETY: simd() checked avx2/fma/f16c at runtime; the assert covers the rows.
        return unsafe { avx2::dot4(w, x) };
    }
    std::array::from_fn(|r| dot_f32(&w[r * n..(r + 1) * n], x))
}

/// `y += Σ_i a_i · w_i` for the four consecutive `y.len()`-long rows of `w` (`y` is
/// loaded and stored once for the four).
#[inline]
pub fn axpy4(a: [f32; 4], w: &[f32], y: &mut [f32]) {
    let n = y.len();
    assert!(w.len() >= 4 * n, "axpy4 needs four rows");
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() {
        // SAFETY: simd() checked avx2/fma/f16c at runtime; the assert covers the rows.
        return unsafe { avx2::axpy4(a, w, y) };
    }
    for (k, &ak) in a.iter().enumerate() {
        for (o, v) in y.iter_mut().zip(&w[k * n..(k + 1) * n]) {
            *o += ak * v;
        }
    }
}

/// `s` becomes `softmax(s)` in place: `exp(s − max)`, then a multiply by the inverse sum
/// (as llama.cpp scales). An empty slice stays empty.
pub fn softmax(s: &mut [f32]) {
    let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for e in s.iter_mut() {
        *e = (*e - mx).exp();
        sum += *e;
    }
    let inv = 1.0 / sum;
    for e in s.iter_mut() {
        *e *= inv;
    }
}

/// Keys or values of one KV head: `n` rows of `d` values, row `j` at
/// `src[off + j·stride..][..d]` (the engine's head-major cache: stride `d`, one run per head).
#[derive(Clone, Copy)]
pub struct StridedRows<'a> {
    pub src: &'a [f32],
    pub off: usize,
    pub stride: usize,
    pub d: usize,
}

impl StridedRows<'_> {
    fn check(&self, n: usize, what: &str) {
        if let Some(last) = n.checked_sub(1) {
            assert!(
                self.off + last * self.stride + self.d <= self.src.len(),
                "{what} out of bounds"
            );
        }
    }

    fn row(&self, j: usize) -> &[f32] {
        &self.src[self.off + j * self.stride..][..self.d]
    }
}

/// Attention scores of the query heads `qs` (`g = qs.len() / d` heads of `d` values)
/// that share one KV head: `out[h·ld + j] = scale · ⟨q_h, k_j⟩` for the first `n`
/// positions of `k`. Reading each key row once for the `g` heads sharing it (grouped-
/// query attention) instead of once per head is what keeps long-context decode from
/// paying for the cache `g` times.
pub fn strided_dots(
    qs: &[f32],
    k: StridedRows<'_>,
    scale: f32,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let d = k.d;
    assert!(
        d > 0 && qs.len().is_multiple_of(d),
        "query heads are whole rows"
    );
    let g = qs.len() / d;
    k.check(n, "strided_dots");
    assert!(
        g == 0 || n == 0 || (g - 1) * ld + n <= out.len(),
        "strided_dots output"
    );
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() && d.is_multiple_of(8) {
        // Up to four heads per pass; the positions per pass keep four FMA chains going.
        let mut h0 = 0;
        while h0 < g {
            let gh = (g - h0).min(4);
            let q = qs[h0 * d..].as_ptr();
            let o = out[h0 * ld..].as_mut_ptr();
            let src = (k.src.as_ptr(), k.off, k.stride);
            // SAFETY: features checked; the asserts above cover every key row, query
            // head and output index.
            unsafe {
                match gh {
                    1 => avx2::strided_dots::<1, 4>(q, d, src, (0, n), scale, (o, ld)),
                    2 => avx2::strided_dots::<2, 4>(q, d, src, (0, n), scale, (o, ld)),
                    3 => avx2::strided_dots::<3, 2>(q, d, src, (0, n), scale, (o, ld)),
                    _ => avx2::strided_dots::<4, 2>(q, d, src, (0, n), scale, (o, ld)),
                }
            }
            h0 += gh;
        }
        return;
    }
    for (h, q) in qs.chunks_exact(d).enumerate() {
        for j in 0..n {
            out[h * ld + j] = dot_f32(q, k.row(j)) * scale;
        }
    }
}

/// Weighted sums of values for the `g = outs.len() / d` query heads that share one KV
/// head: `outs[h·d..][..d] += Σ_j p[h·ld + j] · v_j` over the `n` positions of `v`, each
/// value row read once for the `g` heads.
pub fn strided_axpys(p: &[f32], ld: usize, n: usize, v: StridedRows<'_>, outs: &mut [f32]) {
    let d = v.d;
    assert!(
        d > 0 && outs.len().is_multiple_of(d),
        "output heads are whole rows"
    );
    let g = outs.len() / d;
    v.check(n, "strided_axpys");
    assert!(
        g == 0 || n == 0 || (g - 1) * ld + n <= p.len(),
        "strided_axpys weights"
    );
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd().avx2() && d.is_multiple_of(8) {
        let mut h0 = 0;
        while h0 < g {
            // At most 12 accumulators: four vectors a pass for up to three heads, two
            // for four (whichever divides the row).
            let gh = (g - h0).min(4);
            let pp = (p[h0 * ld..].as_ptr(), ld, n);
            let src = (v.src.as_ptr(), v.off, v.stride);
            let o = outs[h0 * d..].as_mut_ptr();
            let c = if gh < 4 && d.is_multiple_of(32) {
                4
            } else if d.is_multiple_of(16) {
                2
            } else {
                1
            };
            // SAFETY: features checked; `c` divides the row; the asserts above cover
            // every value row, weight and output.
            unsafe {
                match (gh, c) {
                    (1, 4) => avx2::strided_axpys::<1, 4>(pp, src, o, d),
                    (2, 4) => avx2::strided_axpys::<2, 4>(pp, src, o, d),
                    (3, 4) => avx2::strided_axpys::<3, 4>(pp, src, o, d),
                    (1, 2) => avx2::strided_axpys::<1, 2>(pp, src, o, d),
                    (2, 2) => avx2::strided_axpys::<2, 2>(pp, src, o, d),
                    (3, 2) => avx2::strided_axpys::<3, 2>(pp, src, o, d),
                    (_, 2) => avx2::strided_axpys::<4, 2>(pp, src, o, d),
                    (1, _) => avx2::strided_axpys::<1, 1>(pp, src, o, d),
                    (2, _) => avx2::strided_axpys::<2, 1>(pp, src, o, d),
                    (3, _) => avx2::strided_axpys::<3, 1>(pp, src, o, d),
                    _ => avx2::strided_axpys::<4, 1>(pp, src, o, d),
                }
            }
            h0 += gh;
        }
        return;
    }
    for (h, out) in outs.chunks_exact_mut(d).enumerate() {
        for j in 0..n {
            let w = p[h * ld + j];
            for (o, x) in out.iter_mut().zip(v.row(j)) {
                *o += w * x;
            }
        }
    }
}

/// Dot product of weight row `w` (of matrix type `t`) with activation row `a_row`.
#[inline]
fn row_dot(t: GgmlType, w: &[u8], acts: &Acts<'_>, a_row: usize, cols: usize, s: Simd) -> f32 {
    match acts {
        Acts::Q8(a) => {
            #[cfg(target_arch = "x86_64")]
            if s.avx2() {
                // SAFETY: `s` is a tier this CPU runs (matmul_on asserts it); the shapes
                // were checked by matmul_on.
                return unsafe { crate::q8_avx2::dot::<1>(s, t, w, a, a_row) }[0];
            }
            if crate::kquants::supports(t) {
                return crate::kquants::dot_portable(t, w, a, a_row);
            }
            match t {
                GgmlType::Q8_0 => dot_q8_0_portable(w, a, a_row),
                GgmlType::Q4_1 => dot_q4_portable(w, a, a_row, true),
                _ => dot_q4_portable(w, a, a_row, false),
            }
        }
        Acts::F32(x) => {
            let xr = &x[a_row * cols..(a_row + 1) * cols];
            if crate::floats::supports(t) {
                return crate::floats::dot_simd(t, w, xr, s);
            }
            #[cfg(target_arch = "x86_64")]
            if s.avx2() {
                // SAFETY: simd() checked the features; matmul() checked the shapes.
                match t {
                    GgmlType::Q8_0 => return unsafe { avx2::dot_q8_0_f32(w, xr) },
                    GgmlType::Q4_1 => return unsafe { avx2::dot_q4_f32::<true>(w, xr) },
                    GgmlType::Q4_0 => return unsafe { avx2::dot_q4_f32::<false>(w, xr) },
                    _ => {}
                }
            }
            if t == GgmlType::F32 && s.avx2() {
                // Aligned or not, F32 weights are little-endian f32s; reinterpret safely.
                if let Ok(wf) = bytemuck_f32(w) {
                    return dot(wf, xr);
                }
            }
            dot_dequant(t, w, xr)
        }
    }
}

/// Whether `row_dot` has a kernel that reads `t` directly against f32 activations.
fn has_f32_kernel(t: GgmlType, s: Simd) -> bool {
    t == GgmlType::F32
        || crate::floats::supports(t)
        || (s.avx2() && matches!(t, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1))
}

/// View little-endian bytes as f32 when aligned (always true on little-endian hosts for
/// GGUF data, which is 32-byte aligned).
fn bytemuck_f32(w: &[u8]) -> Result<&[f32], ()> {
    if cfg!(target_endian = "little")
        && (w.as_ptr() as usize).is_multiple_of(4)
        && w.len().is_multiple_of(4)
    {
        // SAFETY: alignment and length checked above; every bit pattern is a valid f32.
        Ok(unsafe { std::slice::from_raw_parts(w.as_ptr() as *const f32, w.len() / 4) })
    } else {
        Err(())
    }
}

/// Raw pointer wrapper so disjoint output tiles can be written from rayon workers.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every worker writes a disjoint set of indices (distinct row ranges).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `t` in activation rows, `r` in matrix rows.
///
/// `out` is `n_tokens × w.rows`. Rows are split across the current rayon pool when
/// `parallel` is set.
pub fn matmul(
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    out: &mut [f32],
    parallel: bool,
) -> Result<(), EngineError> {
    matmul_on(simd(), w, acts, out, parallel)
}

/// [`matmul`] on kernel tier `s`, one of [`Simd::available`] (tests hold the tiers
/// against each other).
pub(crate) fn matmul_on(
    s: Simd,
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    out: &mut [f32],
    parallel: bool,
) -> Result<(), EngineError> {
    assert!(
        s.runnable(),
        "kernel tier {s:?} is not available on this CPU"
    );
    if w.layout == Layout::Interleaved8
        && !(crate::interleave::fits(w.qtype, w.rows, w.cols)
            && row_bytes(w.qtype, w.cols)?.checked_mul(w.rows) == Some(w.data.len()))
    {
        return Err(EngineError::Shape(format!(
            "{} bytes are not a {} matrix of {}×{} interleaved by eight rows",
            w.data.len(),
            w.qtype.name(),
            w.rows,
            w.cols
        )));
    }
    let n_tok = match acts {
        Acts::Q8(a) => {
            if a.cols != w.cols {
                return Err(EngineError::Shape(format!(
                    "activations have {} columns, matrix has {}",
                    a.cols, w.cols
                )));
            }
            // The SIMD kernels read every row's scales and sums unchecked (Q4_0/Q4_1
            // read them interleaved from `ds`).
            let blocks = a.rows() * (a.cols / QK);
            if a.cols % QK != 0
                || a.d.len() < blocks
                || a.s.len() < blocks
                || a.ds.len() < 2 * blocks
            {
                return Err(EngineError::Shape(format!(
                    "8-bit activations of {} columns have {} scales and {} sums for {} rows",
                    a.cols,
                    a.d.len(),
                    a.s.len(),
                    a.rows()
                )));
            }
            a.rows()
        }
        Acts::F32(x) => {
            if w.cols == 0 || x.len() % w.cols != 0 {
                return Err(EngineError::Shape(format!(
                    "activation length {} is not a multiple of {}",
                    x.len(),
                    w.cols
                )));
            }
            x.len() / w.cols
        }
    };
    // Q8_0/Q4_x weights take 8-bit or f32 activations; other types f32 only.
    if matches!(acts, Acts::Q8(_)) && !w.uses_q8() {
        return Err(EngineError::Shape(format!(
            "{} weights got the wrong activation format",
            w.qtype.name()
        )));
    }
    if out.len() != n_tok * w.rows {
        return Err(EngineError::Shape(format!(
            "output has {} values, expected {}",
            out.len(),
            n_tok * w.rows
        )));
    }
    let rows = w.rows;
    let cols = w.cols;
    let optr = OutPtr(out.as_mut_ptr());
    // Types without a direct f32-activation kernel dequantize block by block inside the
    // dot; with several tokens (prefill, eval) that would redo the row once per token, so
    // the row is dequantized once and dotted against every token instead.
    let dequant_rows = match acts {
        Acts::F32(_) => n_tok > 1 && !has_f32_kernel(w.qtype, s),
        Acts::Q8(_) => false,
    };
    let tile = |r0: usize, r1: usize| {
        let p = optr;
        #[cfg(target_arch = "x86_64")]
        if let (Layout::Interleaved8, true, Acts::Q8(a)) = (w.layout, s.avx2(), acts) {
            let g = crate::interleave::ROWS;
            debug_assert!(r0.is_multiple_of(g) && r1.is_multiple_of(g));
            // SAFETY: `s` is a tier this CPU runs; the matrix's type, whole groups and
            // byte length, the activations' shapes and sums were checked above, and the
            // ranges are whole groups.
            unsafe {
                crate::q8_avx2::x8_rows(
                    s,
                    w.qtype,
                    w.data.as_ptr(),
                    cols / QK,
                    r0 / g,
                    r1 / g,
                    a,
                    n_tok,
                    p.0,
                    rows,
                )
            };
            return;
        }
        if let (true, Acts::F32(x), 1) = (crate::floats::supports(w.qtype), acts, n_tok) {
            // SAFETY: rows r0..r1 of `out` belong to this worker alone.
            let o = unsafe { std::slice::from_raw_parts_mut(p.0.add(r0), r1 - r0) };
            if crate::floats::dot_rows_simd(w.qtype, w.data, w.row_bytes(), (r0, r1), x, o, s) {
                return;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let (true, Acts::Q8(a), 1) = (s.avx2(), acts, n_tok) {
            if r0 < r1 {
                // SAFETY: `s` is a tier this CPU runs; the shapes were checked above
                // (every row holds `a.cols` values, `a` has one row); `out` holds `rows`
                // values.
                unsafe {
                    crate::q8_avx2::dot_rows(
                        s,
                        w.qtype,
                        w.data.as_ptr(),
                        w.row_bytes(),
                        r0,
                        r1,
                        a,
                        0,
                        p.0,
                    )
                };
            }
            return;
        }
        // Prefill: four tokens at a time over every row of the range (the kernels build
        // the four tokens' scale vectors once per range), then the tail token by token.
        #[cfg(target_arch = "x86_64")]
        if let (true, Acts::Q8(a)) = (s.avx2(), acts) {
            let (rb, base) = (w.row_bytes(), w.data.as_ptr());
            let mut t = 0;
            while t + 4 <= n_tok {
                // SAFETY: `s` is a tier this CPU runs; the shapes and `a`'s scales and
                // sums were checked at the top of matmul; `out` holds n_tok × rows values.
                unsafe { crate::q8_avx2::dot4_rows(s, w.qtype, base, rb, r0, r1, a, t, p.0, rows) };
                t += 4;
            }
            for r in r0..r1 {
                for t in t..n_tok {
                    let v = row_dot(w.qtype, &w.row(r), acts, t, cols, s);
                    // SAFETY: as below.
                    unsafe { *p.0.add(t * rows + r) = v };
                }
            }
            return;
        }
        // F16/BF16 prefill: two rows by four tokens per pass, then the tail tokens.
        let mut t0 = 0;
        if let (true, Acts::F32(x), true) = (crate::floats::supports(w.qtype), acts, s.avx2()) {
            let rb = w.row_bytes();
            t0 = n_tok / 4 * 4;
            // A block of rows meets every token group before the next block: its weights
            // stay in cache instead of the matrix streaming from memory per group
            // (measured 1–6% faster on the F16 SmolLM2 at 256 tokens, within the noise).
            let block = (64 * 1024 / rb.max(1)).max(2);
            for b0 in (r0..r1).step_by(block) {
                let b1 = (b0 + block).min(r1);
                for t in (0..t0).step_by(4) {
                    let xs = std::array::from_fn(|j| &x[(t + j) * cols..(t + j + 1) * cols]);
                    crate::floats::rows_x4_simd(w.qtype, w.data, rb, (b0, b1), xs, s, {
                        // SAFETY: r < rows and t + j < n_tok index `out`; row ranges of
                        // different workers are disjoint.
                        |r, j, v| unsafe { *p.0.add((t + j) * rows + r) = v }
                    });
                }
            }
        }
        let mut row_f32 = if dequant_rows {
            vec![0f32; cols]
        } else {
            Vec::new()
        };
        for r in r0..r1 {
            let wr = w.row(r);
            if let (true, Acts::F32(x)) = (dequant_rows, acts) {
                let (bs, ts) = (w.qtype.block_size() as usize, w.qtype.type_size() as usize);
                for (o, b) in row_f32.chunks_exact_mut(bs).zip(wr.chunks_exact(ts)) {
                    dequantize_block(w.qtype, b, o);
                }
                for t in 0..n_tok {
                    let v = dot(&row_f32, &x[t * cols..(t + 1) * cols]);
                    // SAFETY: as below.
                    unsafe { *p.0.add(t * rows + r) = v };
                }
                continue;
            }
            let mut t = t0;
            while t < n_tok {
                let v = row_dot(w.qtype, &wr, acts, t, cols, s);
                // SAFETY: t < n_tok and r < rows, so the index is in bounds; row ranges
                // of different workers are disjoint.
                unsafe { *p.0.add(t * rows + r) = v };
                t += 1;
            }
        }
    };
    let threads = rayon::current_num_threads();
    if !parallel || threads <= 1 || rows < 64 {
        tile(0, rows);
    } else {
        // A few chunks per thread balances load without much scheduling overhead.
        // Whole groups of eight, for interleaved matrices.
        let chunk = rows.div_ceil(threads * 4).max(16).next_multiple_of(8);
        let n_chunks = rows.div_ceil(chunk);
        (0..n_chunks).into_par_iter().for_each(|c| {
            let r0 = c * chunk;
            tile(r0, (r0 + chunk).min(rows));
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // reference loops mirror the format definitions
mod tests {
    use super::*;
    use half::f16;

    fn rng_vals(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in x.chunks(32) {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            out.extend(f16::from_f32(d).to_bits().to_le_bytes());
            for v in b {
                out.push(((v / d).round() as i32).clamp(-127, 127) as i8 as u8);
            }
        }
        out
    }

    fn quantize_q4(x: &[f32], q4_1: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for b in x.chunks(32) {
            let mn = b.iter().cloned().fold(f32::MAX, f32::min);
            let mx = b.iter().cloned().fold(f32::MIN, f32::max);
            let (d, m) = if q4_1 {
                ((mx - mn) / 15.0, mn)
            } else {
                let amax = mn.abs().max(mx.abs());
                (amax / 8.0, -amax)
            };
            let dq = f16::from_f32(d).to_f32();
            out.extend(f16::from_f32(d).to_bits().to_le_bytes());
            if q4_1 {
                out.extend(f16::from_f32(m).to_bits().to_le_bytes());
            }
            let mq = if q4_1 {
                f16::from_f32(m).to_f32()
            } else {
                -8.0 * dq
            };
            let q: Vec<u8> = b
                .iter()
                .map(|v| (((v - mq) / dq).round() as i32).clamp(0, 15) as u8)
                .collect();
            for j in 0..16 {
                out.push(q[j] | (q[j + 16] << 4));
            }
        }
        out
    }

    /// `values` values of type `t` in random blocks: any bit pattern is a valid block once
    /// its f16 scales (at byte offsets `scales` of each block) are sane values.
    fn random_blocks(t: GgmlType, scales: &[usize], values: usize, seed: u32) -> Vec<u8> {
        let ts = t.type_size() as usize;
        let blocks = values / t.block_size() as usize;
        let mut data: Vec<u8> = rng_vals(blocks * ts, seed)
            .iter()
            .map(|v| ((v + 1.0) * 127.9) as u8)
            .collect();
        for (b, block) in data.chunks_exact_mut(ts).enumerate() {
            for (k, &off) in scales.iter().enumerate() {
                let v = f16::from_f32(0.002 * (1 + (b + k) % 7) as f32);
                block[off..off + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        data
    }

    /// The integer kernels must agree with "dequantize the weights, dot in f32" up to
    /// the activation quantization error, on both SIMD paths.
    #[test]
    fn q8_kernels_match_dequantized_reference() {
        let (rows, cols) = (5usize, 608usize); // odd block count exercises the tail
        let wf = rng_vals(rows * cols, 7);
        let n_tok = 6; // one 4-token tile plus a 2-token tail
        let x = rng_vals(n_tok * cols, 11);
        let mut acts = Q8Acts::default();
        acts.quantize_into(&x, cols);
        for (t, data) in [
            (GgmlType::Q8_0, quantize_q8_0(&wf)),
            (GgmlType::Q4_1, quantize_q4(&wf, true)),
            (GgmlType::Q4_0, quantize_q4(&wf, false)),
        ] {
            let m = QMatrix::new(t, rows, cols, &data).unwrap();
            let mut out = vec![0f32; n_tok * rows];
            matmul(&m, &Acts::Q8(&acts), &mut out, false).unwrap();
            for tok in 0..n_tok {
                for r in 0..rows {
                    let mut row = vec![0f32; cols];
                    m.dequantize_row(r, &mut row).unwrap();
                    let xr = &x[tok * cols..(tok + 1) * cols];
                    let want: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let got = out[tok * rows + r];
                    // Activation quantization error grows like sqrt(cols).
                    assert!(
                        (got - want).abs() < 0.01 * (cols as f32).sqrt(),
                        "{t:?} tok {tok} row {r}: {got} vs {want}"
                    );
                    let portable = match t {
                        GgmlType::Q8_0 => dot_q8_0_portable(&m.row(r), &acts, tok),
                        GgmlType::Q4_1 => dot_q4_portable(&m.row(r), &acts, tok, true),
                        _ => dot_q4_portable(&m.row(r), &acts, tok, false),
                    };
                    assert!(
                        (got - portable).abs() < 1e-3,
                        "{t:?} simd {got} vs portable {portable}"
                    );
                }
            }
        }
    }

    /// Decode (one token) and prefill (four tokens at a time, then a tail) run over row
    /// ranges with the type dispatched once: for every 8-bit-activation type, decode
    /// must give exactly the per-row kernel's value, and both the portable one's closely.
    #[test]
    fn row_range_kernels_match_the_per_row_and_portable_ones() {
        let (rows, cols) = (70usize, 512usize);
        // (type, byte offsets of its f16 scales within a block)
        let types: [(GgmlType, &[usize]); 10] = [
            (GgmlType::Q8_0, &[0]),
            (GgmlType::Q4_0, &[0]),
            (GgmlType::Q4_1, &[0, 2]),
            (GgmlType::Q5_0, &[0]),
            (GgmlType::Q5_1, &[0, 2]),
            (GgmlType::Q2K, &[80, 82]),
            (GgmlType::Q3K, &[108]),
            (GgmlType::Q4K, &[0, 2]),
            (GgmlType::Q5K, &[0, 2]),
            (GgmlType::Q6K, &[208]),
        ];
        for n_tok in [1usize, 6] {
            let x = rng_vals(n_tok * cols, 5);
            let mut acts = Q8Acts::default();
            acts.quantize_into(&x, cols);
            let q8 = Acts::Q8(&acts);
            for (t, scales) in types {
                let data = random_blocks(t, scales, rows * cols, 9);
                let m = QMatrix::new(t, rows, cols, &data).unwrap();
                let mut first_simd: Option<Vec<f32>> = None;
                for tier in Simd::available() {
                    let mut out = vec![0f32; n_tok * rows];
                    matmul_on(tier, &m, &q8, &mut out, false).unwrap();
                    for tok in 0..n_tok {
                        for r in 0..rows {
                            let got = out[tok * rows + r];
                            if n_tok == 1 {
                                let per_row = row_dot(t, &m.row(r), &q8, 0, cols, tier);
                                let (a, b) = (got.to_bits(), per_row.to_bits());
                                assert_eq!(a, b, "{t:?} {tier:?} row {r}");
                            }
                            let portable = row_dot(t, &m.row(r), &q8, tok, cols, Simd::Portable);
                            assert!(
                                (got - portable).abs() <= 1e-4 * (1.0 + portable.abs()),
                                "{t:?} {tier:?} token {tok} of {n_tok}, row {r}: {got} vs \
                                 portable {portable}"
                            );
                        }
                    }
                    // The SIMD tiers sum the same integers in the same order.
                    if tier.avx2() {
                        match &first_simd {
                            None => first_simd = Some(out),
                            Some(f) => assert!(
                                f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{t:?}: {tier:?} differs from AVX2"
                            ),
                        }
                    }
                }
            }
        }
    }

    /// Interleaved matrices of every type that interleaves give the row-major result on
    /// every tier, for decode, prefill tiles with a tail, and f32 activations, split
    /// across threads or not; only the float summation order differs.
    #[test]
    fn interleaved_matrices_match_row_major() {
        // 9 groups of eight rows.
        let rows = 72usize;
        // (type, byte offsets of its f16 scales within a block)
        let types: [(GgmlType, &[usize]); 8] = [
            (GgmlType::Q4_0, &[0]),
            (GgmlType::IQ4NL, &[0]),
            (GgmlType::Q4_1, &[0, 2]),
            (GgmlType::Q5_0, &[0]),
            (GgmlType::Q5_1, &[0, 2]),
            (GgmlType::Q8_0, &[0]),
            (GgmlType::Q4K, &[0, 2]),
            (GgmlType::Q5K, &[0, 2]),
        ];
        for (t, scales) in types {
            // 19 blocks of 32 per row (an odd count), or 2 super-blocks of 256.
            let cols = if t.block_size() as usize == QK_K {
                2 * QK_K
            } else {
                19 * QK
            };
            let data = random_blocks(t, scales, rows * cols, 17);
            let m = QMatrix::new(t, rows, cols, &data).unwrap();
            let mut packed = data.clone();
            let x8 = QMatrix::interleaved(t, rows, cols, &mut packed).unwrap();
            assert_ne!(x8.data, &data[..], "interleaving moved no bytes");
            // A hand-built interleaved matrix of the wrong size is refused, not read.
            let short = QMatrix {
                data: &x8.data[..x8.data.len() - 1],
                ..x8
            };
            let zeros = vec![0f32; cols];
            let mut sink = vec![0f32; rows];
            assert!(matmul(&short, &Acts::F32(&zeros), &mut sink, false).is_err());
            for n_tok in [1usize, 7] {
                let x = rng_vals(n_tok * cols, 19 + n_tok as u32);
                let mut acts = Q8Acts::default();
                acts.quantize_into(&x, cols);
                for acts in [Acts::Q8(&acts), Acts::F32(&x)] {
                    let mut want = vec![0f32; n_tok * rows];
                    matmul_on(Simd::Portable, &m, &acts, &mut want, false).unwrap();
                    for tier in Simd::available() {
                        for parallel in [false, true] {
                            let mut got = vec![0f32; n_tok * rows];
                            matmul_on(tier, &x8, &acts, &mut got, parallel).unwrap();
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{t:?} {tier:?} {n_tok} tokens, output {i}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q_weights_with_f32_activations_match_dequantized_reference() {
        let (rows, cols) = (3usize, 96usize);
        let wf = rng_vals(rows * cols, 21);
        let x = rng_vals(2 * cols, 22);
        for (t, data) in [
            (GgmlType::Q8_0, quantize_q8_0(&wf)),
            (GgmlType::Q4_1, quantize_q4(&wf, true)),
            (GgmlType::Q4_0, quantize_q4(&wf, false)),
        ] {
            let m = QMatrix::new(t, rows, cols, &data).unwrap();
            let mut out = vec![0f32; 2 * rows];
            matmul(&m, &Acts::F32(&x), &mut out, false).unwrap();
            for tok in 0..2 {
                for r in 0..rows {
                    let mut row = vec![0f32; cols];
                    m.dequantize_row(r, &mut row).unwrap();
                    let xr = &x[tok * cols..(tok + 1) * cols];
                    let want: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let got = out[tok * rows + r];
                    assert!((got - want).abs() < 1e-4, "{t:?}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn f32_and_f16_matmul_exact() {
        let (rows, cols) = (70usize, 80usize);
        let wf = rng_vals(rows * cols, 3);
        let x = rng_vals(cols, 5);
        let b32: Vec<u8> = wf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b16: Vec<u8> = wf
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        for (t, data) in [(GgmlType::F32, b32), (GgmlType::F16, b16)] {
            let m = QMatrix::new(t, rows, cols, &data).unwrap();
            let mut out = vec![0f32; rows];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            pool.install(|| matmul(&m, &Acts::F32(&x), &mut out, true))
                .unwrap();
            for r in 0..rows {
                let mut row = vec![0f32; cols];
                m.dequantize_row(r, &mut row).unwrap();
                let want: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
                assert!((out[r] - want).abs() < 1e-3);
            }
        }
        // Several tokens (a four-token pass plus a tail) agree with each token alone,
        // on every tier.
        let n_tok = 6;
        let xs = rng_vals(n_tok * cols, 8);
        for t in [GgmlType::F16, GgmlType::BF16] {
            let data: Vec<u8> = wf
                .iter()
                .flat_map(|&v| match t {
                    GgmlType::F16 => f16::from_f32(v).to_bits().to_le_bytes(),
                    _ => half::bf16::from_f32(v).to_bits().to_le_bytes(),
                })
                .collect();
            let m = QMatrix::new(t, rows, cols, &data).unwrap();
            for s in Simd::available() {
                let mut out = vec![0f32; n_tok * rows];
                matmul_on(s, &m, &Acts::F32(&xs), &mut out, false).unwrap();
                for tok in 0..n_tok {
                    let mut one = vec![0f32; rows];
                    let x1 = &xs[tok * cols..(tok + 1) * cols];
                    matmul_on(s, &m, &Acts::F32(x1), &mut one, false).unwrap();
                    let got = &out[tok * rows..(tok + 1) * rows];
                    let close = got.iter().zip(&one).all(|(a, b)| (a - b).abs() < 1e-5);
                    assert!(close, "{t:?} {s:?} token {tok}");
                }
            }
        }
    }

    #[test]
    fn strided_attention_helpers_match_scalar() {
        // Head widths with and without whole 32- and 16-value passes, 1..=6 heads per
        // KV head (more than four run in passes of up to four), 0..=9 positions (the
        // four-position passes and their tails).
        for d in [64usize, 24, 16, 8, 12] {
            let stride = 3 * d;
            let src = rng_vals(12 * stride, 9);
            for g in 1..=6 {
                let qs = rng_vals(g * d, 4 + g as u32);
                for n in [0usize, 1, 5, 9] {
                    let ld = n + 2;
                    let k = StridedRows {
                        src: &src,
                        off: d,
                        stride,
                        d,
                    };
                    let mut s = vec![f32::NAN; g * ld];
                    strided_dots(&qs, k, 0.5, n, &mut s, ld);
                    for (h, q) in qs.chunks_exact(d).enumerate() {
                        for j in 0..n {
                            let r = &src[d + j * stride..2 * d + j * stride];
                            let want: f32 = q.iter().zip(r).map(|(a, b)| a * b).sum::<f32>() * 0.5;
                            let got = s[h * ld + j];
                            assert!((got - want).abs() < 1e-4, "d {d} g {g} n {n} head {h}");
                        }
                        // Entries past n are the caller's, untouched.
                        assert!(s[h * ld + n..h * ld + ld].iter().all(|v| v.is_nan()));
                    }
                    let p: Vec<f32> = (0..g * ld).map(|i| (i as f32 * 0.37).sin()).collect();
                    let mut out = vec![1f32; g * d];
                    strided_axpys(&p, ld, n, k, &mut out);
                    for h in 0..g {
                        for i in 0..d {
                            let want: f32 = 1.0
                                + (0..n)
                                    .map(|j| p[h * ld + j] * src[d + j * stride + i])
                                    .sum::<f32>();
                            let got = out[h * d + i];
                            assert!((got - want).abs() < 1e-4, "d {d} g {g} n {n} head {h}");
                        }
                    }
                }
            }
        }
    }

    /// A group of heads gives each head exactly what it gets alone: the grouped kernels
    /// form every sum in the same order, so grouping changes no bit of the output.
    #[test]
    fn grouped_attention_is_bit_identical_to_one_head_at_a_time() {
        let (d, stride, n) = (64, 192, 37);
        let src = rng_vals(40 * stride, 3);
        let k = StridedRows {
            src: &src,
            off: 64,
            stride,
            d,
        };
        let qs = rng_vals(3 * d, 8);
        let mut grouped = vec![0f32; 3 * n];
        strided_dots(&qs, k, 0.125, n, &mut grouped, n);
        let mut out3 = vec![0f32; 3 * d];
        strided_axpys(&grouped, n, n, k, &mut out3);
        for h in 0..3 {
            let mut one = vec![0f32; n];
            strided_dots(&qs[h * d..(h + 1) * d], k, 0.125, n, &mut one, n);
            assert_eq!(one, grouped[h * n..(h + 1) * n], "scores of head {h}");
            let mut out1 = vec![0f32; d];
            strided_axpys(&one, n, n, k, &mut out1);
            assert_eq!(out1, out3[h * d..(h + 1) * d], "values of head {h}");
        }
    }

    #[test]
    fn shape_errors() {
        let data = vec![0u8; 34];
        assert!(QMatrix::new(GgmlType::Q8_0, 2, 32, &data).is_err());
        let m = QMatrix::new(GgmlType::Q8_0, 1, 32, &data).unwrap();
        let x = vec![0f32; 32];
        let mut out = vec![0f32; 1];
        assert!(matmul(&m, &Acts::F32(&x), &mut out, false).is_ok());
        assert!(matmul(&m, &Acts::F32(&x[..31]), &mut out, false).is_err());
        let mut out2 = vec![0f32; 2];
        assert!(matmul(&m, &Acts::F32(&x), &mut out2, false).is_err());
        // 8-bit activations only pair with Q8_0/Q4_x weights.
        let f16 = vec![0u8; 64];
        let mf = QMatrix::new(GgmlType::F16, 1, 32, &f16).unwrap();
        let mut q = Q8Acts::default();
        q.quantize_into(&x, 32);
        assert!(matmul(&mf, &Acts::Q8(&q), &mut out, false).is_err());
    }
}
