//! The x86 kernels for every type that multiplies against 8-bit activations
//! ([`Q8Acts`]): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the k-quants (see [`crate::kquants`]
//! for the layouts and the choice of activation format). Entry points: [`dot`] (one
//! weight row), [`dot_rows`] (decode over a row range), [`dot4_rows`] (prefill, four
//! tokens at a time) and [`x8_rows`] (decode and prefill on matrices interleaved by eight
//! rows, [`crate::interleave`]).
//!
//! Each kernel unpacks 32 weights of one activation block into a 256-bit register of
//! unsigned bytes, multiplies them with the signed activations, and folds per-block
//! scales in with one `madd` (16-value scales) or a float FMA.
//!
//! # Tiers
//! The kernels are written once, generic over the byte dot product ([`Dp`]), and every
//! entry point is compiled twice: for AVX2 (`maddubs` then `madd`) and for AVX2 with
//! AVX-512 VNNI (`vpdpbusd` on 256-bit vectors, one instruction instead of two on the
//! busiest ports), chosen at run time by [`Simd`]. The sums are equal in both tiers: no
//! `maddubs` pair here can reach the i16 limit (weights ≤ 128 in magnitude, activations
//! within ±127). A NEON module would provide the same entry points.

// `i` indexes the activation rows and their accumulators together.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::interleave::ROWS;
use crate::kernels::avx2::{f16_to_f32 as f16, hsum, nibbles};
use crate::kernels::Simd;
use crate::quant::{GgmlType, Q8Acts, QK, QK_K};

/// Σ of four unsigned × signed byte products into each of eight i32 lanes.
pub(crate) trait Dp {
    /// Whether [`Dp::dot_acc`] is one instruction, which makes an offset folded into
    /// the accumulator free (Q6_K's −32).
    const VNNI: bool;
    /// # Safety
    /// The CPU supports the tier's features (the entry point's `target_feature`s).
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
    /// `acc + dot(u, s)`.
    ///
    /// # Safety
    /// As [`Dp::dot`].
    unsafe fn dot_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
}

/// AVX2: `maddubs` to i16 pairs, `madd` with ones to i32.
pub(crate) struct Avx2Dp;
/// AVX-512 VNNI on 256-bit vectors: `vpdpbusd`.
pub(crate) struct VnniDp;

impl Dp for Avx2Dp {
    const VNNI: bool = false;
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn dot_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, Self::dot(u, s))
    }
}

impl Dp for VnniDp {
    const VNNI: bool = true;
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
    #[inline(always)]
    unsafe fn dot_acc(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
}

/// Defines the kernel `$imp<D: Dp>` from the body given (`#[inline(always)]`) and the
/// entry point `$vis unsafe fn $name(simd: Simd, args…)`, which runs `$imp` compiled for
/// the tier `simd` names: the AVX2 build, or the VNNI build when `simd` is
/// [`Simd::Avx2Vnni`]. Everything `$imp` calls is `#[inline(always)]` or an inlinable
/// intrinsic helper, so each build is one function with its own instruction set.
macro_rules! tiered {
    (
        $(#[$doc:meta])*
        $vis:vis fn $name:ident $([$($g:tt)*])? as $imp:ident $([$($ga:tt)*])?
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $imp<D: Dp $(, $($g)*)?>($($arg: $ty),*) $(-> $ret)? $body

        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name $(<$($g)*>)? (simd: Simd, $($arg: $ty),*) $(-> $ret)? {
            #[target_feature(enable = "avx2,fma,f16c")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2 $(<$($g)*>)? ($($arg: $ty),*) $(-> $ret)? {
                $imp::<Avx2Dp $(, $($ga)*)?>($($arg),*)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn vnni $(<$($g)*>)? ($($arg: $ty),*) $(-> $ret)? {
                $imp::<VnniDp $(, $($ga)*)?>($($arg),*)
            }
            debug_assert!(simd.avx2(), "{simd:?} has no x86 kernels");
            if simd == Simd::Avx2Vnni {
                vnni $(::<$($ga)*>)? ($($arg),*)
            } else {
                avx2 $(::<$($ga)*>)? ($($arg),*)
            }
        }
    };
}

/// How far ahead of the current block the kernels prefetch weights. Rows stream from
/// memory once per token, and the hardware prefetcher alone left one-thread decode short
/// of the memory bandwidth: 2048 B decoded the Q8_0 SmolLM2 14% faster than 640 B, and
/// 4096 B was no better. (The F16 kernel, prefetching every 32 B, measured best at 512.)
const PREFETCH: usize = 2048;

/// i16 lanes 0..8 = `lo`, lanes 8..16 = `hi`: one scale per 16-value half of a
/// 32-value block after `maddubs` (lane `i` holds values `2i, 2i+1`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales16(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16))
}

/// Byte `i` = 0xFF where bit `i` of `x` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
}

/// Pointers to activation row `a_row + i` for `i < N`: values, scales, scaled sums.
struct Rows<const N: usize> {
    qs: [*const i8; N],
    d: [*const f32; N],
    s: [*const f32; N],
}

impl<const N: usize> Rows<N> {
    #[inline(always)]
    unsafe fn new(a: &Q8Acts, a_row: usize) -> Self {
        let nb = a.cols / QK;
        Rows {
            qs: std::array::from_fn(|i| a.qs.as_ptr().add((a_row + i) * a.cols)),
            d: std::array::from_fn(|i| a.d.as_ptr().add((a_row + i) * nb)),
            s: std::array::from_fn(|i| a.s.as_ptr().add((a_row + i) * nb)),
        }
    }

    /// The 32 activations of block `b` of row `i`.
    #[inline(always)]
    unsafe fn q(&self, i: usize, b: usize) -> __m256i {
        _mm256_loadu_si256(self.qs[i].add(b * QK) as *const __m256i)
    }
}

/// Two accumulators per row, alternated per block to hide the FMA latency.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn finish<const N: usize>(acc: [[__m256; 2]; N], scalar: [f32; N]) -> [f32; N] {
    std::array::from_fn(|i| hsum(_mm256_add_ps(acc[i][0], acc[i][1])) + scalar[i])
}

tiered! {
    /// Weight row `w` of type `t` against activation rows `a_row..a_row + N` (N = 1 for
    /// one row; N = 4 in prefill reuses each unpacked block). Q8_0, Q4_0 and Q4_1 take
    /// N = 1 only (their prefill is [`dot4_rows`]).
    ///
    /// # Safety
    /// `simd` is a tier this CPU runs and has AVX2; `w` holds a whole row of `a.cols`
    /// values of type `t`; `a_row + N <= a.rows()` (checked by the callers).
    pub fn dot[const N: usize] as dot_impl[N](
        t: GgmlType,
        w: &[u8],
        a: &Q8Acts,
        a_row: usize,
    ) -> [f32; N] {
        let rows = Rows::<N>::new(a, a_row);
        let nb = a.cols / QK;
        let wp = w.as_ptr();
        match t {
            GgmlType::Q8_0 if N == 1 => [dot_q8_0::<D>(wp, nb, &Rows::new(a, a_row)); N],
            GgmlType::Q4_0 if N == 1 => [dot_q4::<D, false>(wp, nb, a, a_row); N],
            GgmlType::Q4_1 if N == 1 => [dot_q4::<D, true>(wp, nb, a, a_row); N],
            GgmlType::Q5_0 => dot_q5::<D, false, N>(wp, nb, &rows),
            GgmlType::Q5_1 => dot_q5::<D, true, N>(wp, nb, &rows),
            GgmlType::Q2K => dot_q2k::<D, N>(wp, nb, &rows),
            GgmlType::Q3K => dot_q3k::<N>(wp, nb, &rows),
            GgmlType::Q4K => dot_q45k::<D, false, N>(wp, nb, &rows),
            GgmlType::Q5K => dot_q45k::<D, true, N>(wp, nb, &rows),
            GgmlType::Q6K => dot_q6k::<D, N>(wp, nb, &rows, None),
            GgmlType::IQ4NL => dot_iq4::<D, false, N>(wp, nb, &rows),
            GgmlType::IQ4XS => dot_iq4::<D, true, N>(wp, nb, &rows),
            _ => unreachable!("no x86 kernel for {} with {N} rows", t.name()),
        }
    }
}

tiered! {
    /// Activation row `a_row` against weight rows `r0..r1` of a matrix whose rows are
    /// `row_bytes` apart from `w`, into `out[r]`: decode, with the type dispatched once
    /// per range instead of once per row (a 576-wide row is only 18 blocks, and per-row
    /// dispatch cost about a tenth of a token).
    ///
    /// # Safety
    /// As [`dot`] with `N = 1` for every row `r0..r1`; `w` holds `r1` rows; `out` has
    /// room for index `r1 - 1`.
    pub fn dot_rows as dot_rows_impl(
        t: GgmlType,
        w: *const u8,
        row_bytes: usize,
        r0: usize,
        r1: usize,
        a: &Q8Acts,
        a_row: usize,
        out: *mut f32,
    ) {
        let rows = Rows::<1>::new(a, a_row);
        let nb = a.cols / QK;
        macro_rules! each {
            ($kernel:expr) => {
                for r in r0..r1 {
                    *out.add(r) = $kernel(w.add(r * row_bytes), nb, &rows)[0];
                }
            };
        }
        match t {
            GgmlType::Q8_0 => {
                for r in r0..r1 {
                    *out.add(r) = dot_q8_0::<D>(w.add(r * row_bytes), nb, &rows);
                }
            }
            GgmlType::Q4_0 => {
                for r in r0..r1 {
                    *out.add(r) = dot_q4::<D, false>(w.add(r * row_bytes), nb, a, a_row);
                }
            }
            GgmlType::Q4_1 => {
                for r in r0..r1 {
                    *out.add(r) = dot_q4::<D, true>(w.add(r * row_bytes), nb, a, a_row);
                }
            }
            GgmlType::Q5_0 => each!(dot_q5::<D, false, 1>),
            GgmlType::Q5_1 => each!(dot_q5::<D, true, 1>),
            GgmlType::Q2K => each!(dot_q2k::<D, 1>),
            GgmlType::Q3K => each!(dot_q3k::<1>),
            GgmlType::Q4K => each!(dot_q45k::<D, false, 1>),
            GgmlType::Q5K => each!(dot_q45k::<D, true, 1>),
            GgmlType::IQ4NL => each!(dot_iq4::<D, false, 1>),
            GgmlType::IQ4XS => each!(dot_iq4::<D, true, 1>),
            GgmlType::Q6K => {
                let off = if D::VNNI {
                    Some(q6k_offsets::<D, 1>(&rows, nb))
                } else {
                    None
                };
                for r in r0..r1 {
                    let row = w.add(r * row_bytes);
                    *out.add(r) = dot_q6k::<D, 1>(row, nb, &rows, off.as_deref())[0];
                }
            }
            _ => unreachable!("no x86 kernel for {}", t.name()),
        }
    }
}

tiered! {
    /// Activation rows `a_row..a_row + 4` against weight rows `r0..r1` (prefill), into
    /// `out[(a_row + i) · stride + r]`. The 32-value single-scale types (Q8_0, Q4_0,
    /// Q4_1, Q5_0, Q5_1) run [`rows4`]; the k-quants run [`dot`] with `N = 4` row by row,
    /// Q6_K with its offsets computed once for the range on the VNNI tier.
    ///
    /// # Safety
    /// `simd` is a tier this CPU runs and has AVX2; `w` holds `r1` rows of `row_bytes`,
    /// each `a.cols` values of type `t`; `a` holds rows `a_row..a_row + 4` (values,
    /// scales and sums); `out` has room for every index written.
    pub fn dot4_rows as dot4_rows_impl(
        t: GgmlType,
        w: *const u8,
        row_bytes: usize,
        r0: usize,
        r1: usize,
        a: &Q8Acts,
        a_row: usize,
        out: *mut f32,
        stride: usize,
    ) {
        // Direct calls, not a function pointer: an `#[inline(always)]` kernel taken by
        // address is compiled on its own, without the entry point's instruction set.
        macro_rules! run {
            ($kind:expr) => {
                rows4::<D, { $kind }>(w, row_bytes, r0, r1, a, a_row, out, stride)
            };
        }
        match t {
            GgmlType::Q8_0 => run!(Q8_0),
            GgmlType::Q4_0 => run!(Q4_0),
            GgmlType::Q4_1 => run!(Q4_1),
            GgmlType::Q5_0 => run!(Q5_0),
            GgmlType::Q5_1 => run!(Q5_1),
            GgmlType::Q6K => {
                let rows = Rows::<4>::new(a, a_row);
                let nb = a.cols / QK;
                let off = if D::VNNI {
                    Some(q6k_offsets::<D, 4>(&rows, nb))
                } else {
                    None
                };
                for r in r0..r1 {
                    let v = dot_q6k::<D, 4>(w.add(r * row_bytes), nb, &rows, off.as_deref());
                    for i in 0..4 {
                        *out.add((a_row + i) * stride + r) = v[i];
                    }
                }
            }
            _ => {
                for r in r0..r1 {
                    let row = std::slice::from_raw_parts(w.add(r * row_bytes), row_bytes);
                    for (i, v) in dot_impl::<D, 4>(t, row, a, a_row).into_iter().enumerate() {
                        *out.add((a_row + i) * stride + r) = v;
                    }
                }
            }
        }
    }
}

tiered! {
    /// Activation rows `0..n_tok` against row groups `g0..g1` of a matrix interleaved by
    /// eight rows ([`crate::interleave`]: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K) whose
    /// rows are `nb` blocks of 32 values long, into `out[t · stride + r]`: four tokens per
    /// pass over a group (its few KB of weights stay in L1 while the tokens stream past),
    /// the tail one by one.
    ///
    /// # Safety
    /// `simd` is a tier this CPU runs and has AVX2; `t` is one of those types; `w` holds
    /// groups `0..g1` of eight rows of `32 · nb` values; `a` holds `n_tok` rows of `nb`
    /// blocks (values, and `ds`); `out` has room for every `t · stride + r` with
    /// `t < n_tok`, `r < 8 · g1`.
    pub fn x8_rows as x8_rows_impl(
        t: GgmlType,
        w: *const u8,
        nb: usize,
        g0: usize,
        g1: usize,
        a: &Q8Acts,
        n_tok: usize,
        out: *mut f32,
        stride: usize,
    ) {
        // Direct calls, not function pointers (see dot4_rows).
        macro_rules! run {
            ($four:expr, $one:expr, $block_bytes:expr, $block_values:expr) => {{
                let group = ROWS * nb * QK / $block_values * $block_bytes;
                for g in g0..g1 {
                    let (gp, o) = (w.add(g * group), out.add(g * ROWS));
                    let mut tok = 0;
                    while tok + 4 <= n_tok {
                        let v = $four(gp, nb, a, tok);
                        for i in 0..4 {
                            _mm256_storeu_ps(o.add((tok + i) * stride), v[i]);
                        }
                        tok += 4;
                    }
                    for tok in tok..n_tok {
                        let [v] = $one(gp, nb, a, tok);
                        _mm256_storeu_ps(o.add(tok * stride), v);
                    }
                }
            }};
        }
        match t {
            GgmlType::Q4_0 => run!(x8_q45::<D, Q4_0, 4>, x8_q45::<D, Q4_0, 1>, 18, QK),
            GgmlType::Q4_1 => run!(x8_q45::<D, Q4_1, 4>, x8_q45::<D, Q4_1, 1>, 20, QK),
            GgmlType::Q5_0 => run!(x8_q45::<D, Q5_0, 4>, x8_q45::<D, Q5_0, 1>, 22, QK),
            GgmlType::Q5_1 => run!(x8_q45::<D, Q5_1, 4>, x8_q45::<D, Q5_1, 1>, 24, QK),
            GgmlType::Q8_0 => run!(x8_q8_0::<D, 4>, x8_q8_0::<D, 1>, 34, QK),
            GgmlType::IQ4NL => run!(x8_q45::<D, IQ4_NL, 4>, x8_q45::<D, IQ4_NL, 1>, 18, QK),
            GgmlType::Q4K => run!(x8_q45k::<D, false, 4>, x8_q45k::<D, false, 1>, 144, QK_K),
            GgmlType::Q5K => run!(x8_q45k::<D, true, 4>, x8_q45k::<D, true, 1>, 176, QK_K),
            _ => unreachable!("no interleaved kernel for {}", t.name()),
        }
    }
}

/// [`dot8`] for signed weights `v` (IQ4_NL's levels): their magnitudes against the
/// activations with their signs, so AVX2's 16-bit pair sums cannot saturate.
#[inline(always)]
unsafe fn dot8_signed<D: Dp>(v: &[__m256i; 8], qa: *const i8) -> __m256i {
    let four = |w: usize| {
        let a = _mm256_set1_epi32((qa.add(4 * w) as *const i32).read_unaligned());
        _mm256_sign_epi8(a, v[w])
    };
    let mut s0 = D::dot(_mm256_abs_epi8(v[0]), four(0));
    let mut s1 = D::dot(_mm256_abs_epi8(v[1]), four(1));
    for w in (2..8).step_by(2) {
        s0 = D::dot_acc(s0, _mm256_abs_epi8(v[w]), four(w));
        s1 = D::dot_acc(s1, _mm256_abs_epi8(v[w + 1]), four(w + 1));
    }
    _mm256_add_epi32(s0, s1)
}

/// `Σ_w u[w] · a[4w..4w + 4]` for the 32 activations at `qa`, each group of four
/// broadcast to every lane (lane `j` of `u[w]`: four weights of row `j`), in two chains
/// so consecutive products do not wait on each other.
#[inline(always)]
unsafe fn dot8<D: Dp>(u: &[__m256i; 8], qa: *const i8) -> __m256i {
    let four = |w: usize| _mm256_set1_epi32((qa.add(4 * w) as *const i32).read_unaligned());
    let mut s0 = D::dot(u[0], four(0));
    let mut s1 = D::dot(u[1], four(1));
    for w in (2..8).step_by(2) {
        s0 = D::dot_acc(s0, u[w], four(w));
        s1 = D::dot_acc(s1, u[w + 1], four(w + 1));
    }
    _mm256_add_epi32(s0, s1)
}

/// One group of eight interleaved Q4_K/Q5_K rows against activation rows `a_row..a_row +
/// N` (lane `j` of result `i`: row `j`, token `i`). Per super-block column the eight rows'
/// 6-bit scales and mins are unpacked lane-wise from their three scale words, once; each
/// 32-value sub-block `k` is the low (even `k`) or high (odd `k`) nibbles of quant words
/// `8·(k/2)..8·(k/2) + 8` (Q5_K: with bit `k` of the row's high-bit word for the same
/// four values), dotted as in [`x8_q45`] against the activation block it lines up with
/// (one Q8 block of 32 per sub-block): `d·sc·d_a·Σq·q_a − dmin·m·s_a`.
#[inline(always)]
unsafe fn x8_q45k<D: Dp, const Q5: bool, const N: usize>(
    gp: *const u8,
    nb: usize,
    a: &Q8Acts,
    a_row: usize,
) -> [__m256; N] {
    // d ×8, dmin ×8, three scale words, [32 high-bit words,] 128 quant words… as vectors.
    let qh_at = 32 + 3 * 32;
    let qs_at = qh_at + if Q5 { 8 * 32 } else { 0 };
    let column = qs_at + 32 * 32;
    let rows = Rows::<N>::new(a, a_row);
    let (m4, m1) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    let (b6, b4) = (_mm256_set1_epi32(63), _mm256_set1_epi32(0x0F));
    let byte = |w: __m256i, k: i32| {
        _mm256_and_si256(
            _mm256_srlv_epi32(w, _mm256_set1_epi32(8 * k)),
            _mm256_set1_epi32(0xFF),
        )
    };
    let mut acc = [_mm256_setzero_ps(); N];
    let mut macc = [_mm256_setzero_ps(); N];
    for sb in 0..nb / 8 {
        let blk = gp.add(sb * column);
        // A column is 1.1–1.4 KB: twice the usual distance keeps about three columns in
        // flight (not tuned further).
        for l in 0..column / 64 {
            _mm_prefetch::<_MM_HINT_T0>(blk.add(2 * PREFETCH + 64 * l) as *const i8);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
        let sw: [__m256i; 3] =
            std::array::from_fn(|w| _mm256_loadu_si256(blk.add(32 + 32 * w) as *const __m256i));
        // Scale and min of sub-block k for the eight rows (ggml's get_scale_min_k4).
        let (mut dsc, mut dmn) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
        for k in 0..8 {
            let (sc, mn) = if k < 4 {
                let k = k as i32;
                (
                    _mm256_and_si256(byte(sw[0], k), b6),
                    _mm256_and_si256(byte(sw[1], k), b6),
                )
            } else {
                let k = k as i32 - 4;
                let hi = byte(sw[2], k);
                (
                    _mm256_or_si256(
                        _mm256_and_si256(hi, b4),
                        _mm256_slli_epi32::<4>(_mm256_srli_epi32::<6>(byte(sw[0], k))),
                    ),
                    _mm256_or_si256(
                        _mm256_srli_epi32::<4>(hi),
                        _mm256_slli_epi32::<4>(_mm256_srli_epi32::<6>(byte(sw[1], k))),
                    ),
                )
            };
            dsc[k] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
            dmn[k] = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn));
        }
        for g in 0..4 {
            let words: [__m256i; 8] = std::array::from_fn(|w| {
                _mm256_loadu_si256(blk.add(qs_at + 32 * (8 * g + w)) as *const __m256i)
            });
            for h in 0..2 {
                let k = 2 * g + h;
                let q: [__m256i; 8] = std::array::from_fn(|w| {
                    let v = if h == 0 {
                        _mm256_and_si256(words[w], m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(words[w]), m4)
                    };
                    if Q5 {
                        let qh = _mm256_loadu_si256(blk.add(qh_at + 32 * w) as *const __m256i);
                        let bit =
                            _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(k as i32)), m1);
                        _mm256_or_si256(v, _mm256_slli_epi16::<4>(bit))
                    } else {
                        v
                    }
                });
                let b = sb * 8 + k;
                for i in 0..N {
                    let isum = _mm256_cvtepi32_ps(dot8::<D>(&q, rows.qs[i].add(b * QK)));
                    let (da, sa) = (*rows.d[i].add(b), *rows.s[i].add(b));
                    acc[i] =
                        _mm256_fmadd_ps(_mm256_mul_ps(dsc[k], _mm256_set1_ps(da)), isum, acc[i]);
                    macc[i] = _mm256_fmadd_ps(dmn[k], _mm256_set1_ps(sa), macc[i]);
                }
            }
        }
    }
    std::array::from_fn(|i| _mm256_sub_ps(acc[i], macc[i]))
}

/// One group of eight interleaved Q8_0 rows against activation rows `a_row..a_row + N`
/// (lane `j` of result `i`: row `j`, token `i`). The weights are signed, so each vector
/// meets the unsigned-by-signed product as `|w|` (once per vector) against the token's
/// four broadcast values carrying `w`'s sign.
#[inline(always)]
unsafe fn x8_q8_0<D: Dp, const N: usize>(
    gp: *const u8,
    nb: usize,
    a: &Q8Acts,
    a_row: usize,
) -> [__m256; N] {
    const COLUMN: usize = 8 * 34;
    let rows = Rows::<N>::new(a, a_row);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let blk = gp.add(b * COLUMN);
        for l in 0..COLUMN.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 64 * l) as *const i8);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let w: [__m256i; 8] =
            std::array::from_fn(|k| _mm256_loadu_si256(blk.add(16 + 32 * k) as *const __m256i));
        let aw: [__m256i; 8] = std::array::from_fn(|k| _mm256_sign_epi8(w[k], w[k]));
        for i in 0..N {
            let q = rows.qs[i].add(b * QK);
            let four = |k: usize| _mm256_set1_epi32((q.add(4 * k) as *const i32).read_unaligned());
            let mut s0 = D::dot(aw[0], _mm256_sign_epi8(four(0), w[0]));
            let mut s1 = D::dot(aw[1], _mm256_sign_epi8(four(1), w[1]));
            for k in (2..8).step_by(2) {
                s0 = D::dot_acc(s0, aw[k], _mm256_sign_epi8(four(k), w[k]));
                s1 = D::dot_acc(s1, aw[k + 1], _mm256_sign_epi8(four(k + 1), w[k + 1]));
            }
            let isum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
            acc[i] = _mm256_fmadd_ps(
                _mm256_mul_ps(d, _mm256_set1_ps(*rows.d[i].add(b))),
                isum,
                acc[i],
            );
        }
    }
    acc
}

/// One group of eight interleaved Q4_0/Q4_1/Q5_0/Q5_1/IQ4_NL rows against activation rows
/// `a_row..a_row + N`: lane `j` of result `i` is row `j` against token `i`. Per block
/// column, each 32-byte quant vector is unpacked once into low and high nibbles (Q5: with
/// each value's fifth bit from the row's high-bit word in the same lane), and each token
/// multiplies them against its four values of that vector broadcast to every lane; the
/// integer sums are scaled by the eight rows' `d` (one conversion) and the offset term
/// (`m`, or `−8·d` / `−16·d`) is one FMA against the block's activation sum. IQ4_NL's
/// nibbles become its levels with one shuffle and multiply as in [`dot8_signed`].
#[inline(always)]
unsafe fn x8_q45<D: Dp, const KIND: u8, const N: usize>(
    gp: *const u8,
    nb: usize,
    a: &Q8Acts,
    a_row: usize,
) -> [__m256; N] {
    let has_m = KIND == Q4_1 || KIND == Q5_1;
    let q5 = KIND == Q5_0 || KIND == Q5_1;
    let qh_at = if has_m { 32 } else { 16 };
    let q_at = qh_at + if q5 { 32 } else { 0 };
    let column = q_at + 128;
    let offset = match KIND {
        Q4_0 => -8.0,
        Q5_0 => -16.0,
        _ => 0.0,
    };
    let rows = Rows::<N>::new(a, a_row);
    let m4 = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    let levels = _mm_loadu_si128(crate::kquants::IQ4_LEVELS.as_ptr() as *const __m128i);
    let levels = _mm256_set_m128i(levels, levels);
    // Fifth bits of values `4k + i` (low nibbles) and `16 + 4k + i` (high nibbles) into
    // byte `i` of each lane: broadcast the word's byte `k / 2` (or `2 + k / 2`) over the
    // lane, keep bit `i` of its low or high half, and turn it into 0x10.
    let spread = |b: i32| b * 0x0101_0101;
    let fifth = |qh: __m256i, byte: i32, k: usize| {
        let idx = _mm256_setr_epi32(
            spread(byte),
            spread(4 + byte),
            spread(8 + byte),
            spread(12 + byte),
            spread(byte),
            spread(4 + byte),
            spread(8 + byte),
            spread(12 + byte),
        );
        let mask = _mm256_set1_epi32(0x0804_0201 << (4 * (k % 2)));
        let bits = _mm256_and_si256(_mm256_shuffle_epi8(qh, idx), mask);
        _mm256_and_si256(_mm256_cmpeq_epi8(bits, mask), bit4)
    };
    let mut acc = [_mm256_setzero_ps(); N];
    let mut macc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let blk = gp.add(b * column);
        for l in 0..column.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 64 * l) as *const i8);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let m = if has_m {
            _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i))
        } else {
            _mm256_mul_ps(d, _mm256_set1_ps(offset))
        };
        let qh = if q5 {
            _mm256_loadu_si256(blk.add(qh_at) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        // Values 4k..4k + 4 (low nibbles of vector k) in u[k], 16 + 4k.. in u[4 + k].
        let mut u = [_mm256_setzero_si256(); 8];
        for k in 0..4 {
            let v = _mm256_loadu_si256(blk.add(q_at + 32 * k) as *const __m256i);
            u[k] = _mm256_and_si256(v, m4);
            u[4 + k] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            if q5 {
                u[k] = _mm256_or_si256(u[k], fifth(qh, (k / 2) as i32, k));
                u[4 + k] = _mm256_or_si256(u[4 + k], fifth(qh, (2 + k / 2) as i32, k));
            }
        }
        if KIND == IQ4_NL {
            for x in &mut u {
                *x = _mm256_shuffle_epi8(levels, *x);
            }
        }
        for i in 0..N {
            let qa = rows.qs[i].add(b * QK);
            let isum = _mm256_cvtepi32_ps(if KIND == IQ4_NL {
                dot8_signed::<D>(&u, qa)
            } else {
                dot8::<D>(&u, qa)
            });
            let (da, sa) = (*rows.d[i].add(b), *rows.s[i].add(b));
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(da)), isum, acc[i]);
            macc[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(sa), macc[i]);
        }
    }
    std::array::from_fn(|i| _mm256_add_ps(acc[i], macc[i]))
}

// Kinds of 32-value single-scale blocks for [`rows4`] and [`x8_q45`].
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;
const Q5_1: u8 = 4;
/// Q4_0's bytes, each nibble an index into [`crate::kquants::IQ4_LEVELS`].
const IQ4_NL: u8 = 5;

/// Four tokens against a range of rows of a single-scale type (`d·q + m` per block of
/// 32, Q8_0 signed with `m = 0`). The four tokens' activation scales and sums are put in
/// vectors (a token per lane) once for every row; per block, `d_w · d_a` is then one
/// multiply for the four tokens and the offset `m_w · s_a` one FMA.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows4<D: Dp, const KIND: u8>(
    w: *const u8,
    row_bytes: usize,
    r0: usize,
    r1: usize,
    a: &Q8Acts,
    a_row: usize,
    out: *mut f32,
    stride: usize,
) {
    let rows = Rows::<4>::new(a, a_row);
    let nb = a.cols / QK;
    let ts = match KIND {
        Q8_0 => 34,
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        _ => 24,
    };
    let lanes = |p: &[*const f32; 4], b: usize| {
        _mm_setr_ps(*p[0].add(b), *p[1].add(b), *p[2].add(b), *p[3].add(b))
    };
    // [d₀ d₁ d₂ d₃] in both 128-bit lanes, so one in-lane shuffle broadcasts token i.
    let da: Vec<__m256> = (0..nb)
        .map(|b| {
            let v = lanes(&rows.d, b);
            _mm256_set_m128(v, v)
        })
        .collect();
    let sa: Vec<__m128> = if KIND == Q8_0 {
        Vec::new()
    } else {
        (0..nb).map(|b| lanes(&rows.s, b)).collect()
    };
    let bit4 = _mm256_set1_epi8(0x10);
    let fifth =
        |p: *const u8| _mm256_and_si256(bytes_from_bits((p as *const u32).read_unaligned()), bit4);
    for r in r0..r1 {
        let wr = w.add(r * row_bytes);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut macc = _mm_setzero_ps();
        for b in 0..nb {
            let blk = wr.add(b * ts);
            _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
            let d = f16(blk);
            let (q, m) = match KIND {
                Q8_0 => (_mm256_loadu_si256(blk.add(2) as *const __m256i), 0.0),
                Q4_0 => (nibbles(blk.add(2)), -8.0 * d),
                Q4_1 => (nibbles(blk.add(4)), f16(blk.add(2))),
                Q5_0 => (
                    _mm256_or_si256(nibbles(blk.add(6)), fifth(blk.add(2))),
                    -16.0 * d,
                ),
                _ => (
                    _mm256_or_si256(nibbles(blk.add(8)), fifth(blk.add(4))),
                    f16(blk.add(2)),
                ),
            };
            if KIND != Q8_0 {
                macc = _mm_fmadd_ps(_mm_set1_ps(m), sa[b], macc);
            }
            // Q8_0 is signed: |w| against a with w's sign, for maddubs.
            let wq = if KIND == Q8_0 {
                _mm256_sign_epi8(q, q)
            } else {
                q
            };
            let f8 = _mm256_mul_ps(_mm256_set1_ps(d), da[b]);
            for i in 0..4 {
                let qa = rows.q(i, b);
                let qa = if KIND == Q8_0 {
                    _mm256_sign_epi8(qa, q)
                } else {
                    qa
                };
                let p = D::dot(wq, qa);
                let f = match i {
                    0 => _mm256_shuffle_ps::<0x00>(f8, f8),
                    1 => _mm256_shuffle_ps::<0x55>(f8, f8),
                    2 => _mm256_shuffle_ps::<0xAA>(f8, f8),
                    _ => _mm256_shuffle_ps::<0xFF>(f8, f8),
                };
                acc[i] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[i]);
            }
        }
        let mut m = [0f32; 4];
        _mm_storeu_ps(m.as_mut_ptr(), macc);
        for i in 0..4 {
            *out.add((a_row + i) * stride + r) = hsum(acc[i]) + m[i];
        }
    }
}

/// Q8_0 against one activation row: Σ over blocks of `d_w·d_a·Σ q_w·q_a`, two blocks per
/// step into two accumulators. Signed weights meet the unsigned-by-signed product as
/// `|w|` against `a` carrying `w`'s sign.
#[inline(always)]
unsafe fn dot_q8_0<D: Dp>(wp: *const u8, nb: usize, rows: &Rows<1>) -> f32 {
    let block = |b: usize| {
        let blk = wp.add(b * 34);
        let w = _mm256_loadu_si256(blk.add(2) as *const __m256i);
        let p = D::dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(rows.q(0, b), w));
        (
            _mm256_set1_ps(f16(blk) * *rows.d[0].add(b)),
            _mm256_cvtepi32_ps(p),
        )
    };
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut b = 0;
    while b + 1 < nb {
        _mm_prefetch::<_MM_HINT_T0>(wp.add(b * 34 + PREFETCH) as *const i8);
        for h in 0..2 {
            let (d, p) = block(b + h);
            acc[h] = _mm256_fmadd_ps(d, p, acc[h]);
        }
        b += 2;
    }
    if b < nb {
        let (d, p) = block(b);
        acc[0] = _mm256_fmadd_ps(d, p, acc[0]);
    }
    finish([acc], [0.0])[0]
}

/// One Q4 block: `acc += d_w·d_a·Σ q_w·q_a` (8 lanes) and `macc[1] += m_w·s_a`.
#[inline(always)]
unsafe fn q4_block<D: Dp, const Q41: bool>(
    blk: *const u8,
    qa: *const i8,
    das: *const f32,
    acc: &mut __m256,
    macc: &mut __m128,
) {
    let (dm, q) = if Q41 {
        // [d, m] in one conversion.
        let bits = (blk as *const u32).read_unaligned();
        (_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)), blk.add(4))
    } else {
        let bits = (blk as *const u16).read_unaligned() as i32;
        let d = _mm_cvtph_ps(_mm_set1_epi32(bits | (bits << 16)));
        (_mm_mul_ps(d, _mm_setr_ps(1.0, -8.0, 0.0, 0.0)), blk.add(2))
    };
    // [d_a, s_a] interleaved in the activations.
    let da = _mm_castpd_ps(_mm_load_sd(das as *const f64));
    let prod = _mm_mul_ps(dm, da);
    *macc = _mm_add_ps(*macc, prod);
    let p = D::dot(nibbles(q), _mm256_loadu_si256(qa as *const __m256i));
    *acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(p), *acc);
}

/// Q4_1 (or Q4_0, offset −8·d) against activation row `a_row`, two blocks per step.
#[inline(always)]
unsafe fn dot_q4<D: Dp, const Q41: bool>(
    wp: *const u8,
    nb: usize,
    a: &Q8Acts,
    a_row: usize,
) -> f32 {
    let ts = if Q41 { 20 } else { 18 };
    debug_assert!(a.ds.len() >= 2 * (a_row + 1) * nb);
    let qp = a.qs.as_ptr().add(a_row * a.cols);
    let dsp = a.ds.as_ptr().add(2 * a_row * nb);
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut macc = [_mm_setzero_ps(); 2];
    let mut b = 0;
    while b + 1 < nb {
        // Stream ahead: rows are read once per token, straight from DRAM.
        _mm_prefetch::<_MM_HINT_T0>(wp.add(b * ts + PREFETCH) as *const i8);
        for h in 0..2 {
            let (blk, qa, das) = (
                wp.add((b + h) * ts),
                qp.add((b + h) * QK),
                dsp.add(2 * (b + h)),
            );
            q4_block::<D, Q41>(blk, qa, das, &mut acc[h], &mut macc[h]);
        }
        b += 2;
    }
    if b < nb {
        let (blk, qa, das) = (wp.add(b * ts), qp.add(b * QK), dsp.add(2 * b));
        q4_block::<D, Q41>(blk, qa, das, &mut acc[0], &mut macc[0]);
    }
    let m = _mm_add_ps(macc[0], macc[1]);
    finish([acc], [_mm_cvtss_f32(_mm_shuffle_ps(m, m, 1))])[0]
}

/// Q5_0 (`d·(q−16)`) and Q5_1 (`d·q + m`): both as unsigned 5-bit `q` with an offset
/// term `m·d_a·Σq_a` from the activation block sums. Two blocks per step, one per
/// accumulator, so neither FMA chain waits on the other.
#[inline(always)]
unsafe fn dot_q5<D: Dp, const Q51: bool, const N: usize>(
    wp: *const u8,
    nb: usize,
    rows: &Rows<N>,
) -> [f32; N] {
    let ts = if Q51 { 24 } else { 22 };
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut macc = [[_mm_setzero_ps(); 2]; N];
    let mut b = 0;
    while b + 1 < nb {
        _mm_prefetch::<_MM_HINT_T0>(wp.add(b * ts + PREFETCH) as *const i8);
        q5_block::<D, Q51, N>(wp.add(b * ts), b, rows, 0, &mut acc, &mut macc);
        q5_block::<D, Q51, N>(wp.add((b + 1) * ts), b + 1, rows, 1, &mut acc, &mut macc);
        b += 2;
    }
    if b < nb {
        q5_block::<D, Q51, N>(wp.add(b * ts), b, rows, 0, &mut acc, &mut macc);
    }
    let m: [f32; N] = std::array::from_fn(|i| {
        let v = _mm_add_ps(macc[i][0], macc[i][1]);
        _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1))
    });
    finish(acc, m)
}

/// One Q5_0/Q5_1 block `b` into accumulator slot `slot` of every row.
#[inline(always)]
unsafe fn q5_block<D: Dp, const Q51: bool, const N: usize>(
    blk: *const u8,
    b: usize,
    rows: &Rows<N>,
    slot: usize,
    acc: &mut [[__m256; 2]; N],
    macc: &mut [[__m128; 2]; N],
) {
    // Several activation rows already interleave independent FMA chains; a second
    // accumulator per row would only spill registers.
    let slot = if N > 1 { 0 } else { slot };
    let off = if Q51 { 4 } else { 2 };
    // [d, m] as f32 lanes 0 and 1.
    let dm = if Q51 {
        _mm_cvtph_ps(_mm_cvtsi32_si128(
            (blk as *const u32).read_unaligned() as i32
        ))
    } else {
        let bits = (blk as *const u16).read_unaligned() as i32;
        let d = _mm_cvtph_ps(_mm_set1_epi32(bits | (bits << 16)));
        _mm_mul_ps(d, _mm_setr_ps(1.0, -16.0, 0.0, 0.0))
    };
    let qh = (blk.add(off) as *const u32).read_unaligned();
    let v = _mm_loadu_si128(blk.add(off + 4) as *const __m128i);
    let m4 = _mm_set1_epi8(0xF);
    let lo = _mm_and_si128(v, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
    let q = _mm256_or_si256(
        _mm256_set_m128i(hi, lo),
        _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10)),
    );
    for i in 0..N {
        let p = D::dot(q, rows.q(i, b));
        // [d_a, s_a] of the activation block.
        let das = _mm_setr_ps(*rows.d[i].add(b), *rows.s[i].add(b), 0.0, 0.0);
        let prod = _mm_mul_ps(dm, das);
        macc[i][slot] = _mm_add_ps(macc[i][slot], prod);
        acc[i][slot] = _mm256_fmadd_ps(
            _mm256_broadcastss_ps(prod),
            _mm256_cvtepi32_ps(p),
            acc[i][slot],
        );
    }
}

/// Q4_K / Q5_K: eight 32-value sub-blocks with 6-bit scales and mins; the mins meet the
/// activation block sums, the 5th bit of Q5_K comes from `qh` bit `k` of byte `l`.
#[inline(always)]
unsafe fn dot_q45k<D: Dp, const Q5: bool, const N: usize>(
    wp: *const u8,
    nb: usize,
    rows: &Rows<N>,
) -> [f32; N] {
    let ts = if Q5 { 176 } else { 144 };
    let qs_off = if Q5 { 48 } else { 16 };
    let (m4, m1) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(1));
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut macc = [0f32; N];
    for sb in 0..nb / 8 {
        let blk = wp.add(sb * ts);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 64) as *const i8);
        let (d, dmin) = (f16(blk), f16(blk.add(2)));
        let sc = std::slice::from_raw_parts(blk.add(4), 12);
        let mut hbits = if Q5 {
            _mm256_loadu_si256(blk.add(16) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        for g in 0..4 {
            let v = _mm256_loadu_si256(blk.add(qs_off + g * 32) as *const __m256i);
            let mut q0 = _mm256_and_si256(v, m4);
            let mut q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if Q5 {
                q0 = _mm256_or_si256(q0, _mm256_slli_epi16(_mm256_and_si256(hbits, m1), 4));
                hbits = _mm256_srli_epi16(hbits, 1);
                q1 = _mm256_or_si256(q1, _mm256_slli_epi16(_mm256_and_si256(hbits, m1), 4));
                hbits = _mm256_srli_epi16(hbits, 1);
            }
            for (h, q) in [(0, q0), (1, q1)] {
                let k = 2 * g + h;
                let (s, m) = crate::quant::scale_min_k4(k, sc);
                let (ds, dm) = (d * s as f32, dmin * m as f32);
                let b = sb * 8 + k;
                // One accumulator per row when several rows interleave (as in q5_block).
                let h = if N > 1 { 0 } else { h };
                for i in 0..N {
                    let p = D::dot(q, rows.q(i, b));
                    let f = _mm256_set1_ps(ds * *rows.d[i].add(b));
                    acc[i][h] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[i][h]);
                    macc[i] -= dm * *rows.s[i].add(b);
                }
            }
        }
    }
    finish(acc, macc)
}

/// IQ4_NL (`XS` false) / IQ4_XS: each 32-value block's 4-bit indices pick signed
/// levels from [`crate::kquants::IQ4_LEVELS`] with one byte shuffle; the product takes
/// the levels' magnitudes against the activations with the levels' signs (|level| ≤ 127
/// keeps AVX2's 16-bit pair sums below saturation). IQ4_XS scales each block by its
/// super-block's `d` times a 6-bit scale.
#[inline(always)]
unsafe fn dot_iq4<D: Dp, const XS: bool, const N: usize>(
    wp: *const u8,
    nb: usize,
    rows: &Rows<N>,
) -> [f32; N] {
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    // Two blocks per step into the two accumulators (constant slots keep them in
    // registers; a slot computed from the block index put them on the stack).
    if XS {
        for sb in 0..nb / 8 {
            let blk = wp.add(sb * 136);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + 64) as *const i8);
            let hdr = std::slice::from_raw_parts(blk, 8);
            let d = f16(blk);
            for ib in (0..8).step_by(2) {
                let dl = |ib| d * crate::kquants::iq4xs_scale(hdr, ib) as f32;
                let b = sb * 8 + ib;
                iq4_block::<D, N>(b, 0, dl(ib), blk.add(8 + 16 * ib), rows, &mut acc);
                iq4_block::<D, N>(b + 1, 1, dl(ib + 1), blk.add(24 + 16 * ib), rows, &mut acc);
            }
        }
    } else {
        let mut b = 0;
        while b + 1 < nb {
            let blk = wp.add(b * 18);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH) as *const i8);
            iq4_block::<D, N>(b, 0, f16(blk), blk.add(2), rows, &mut acc);
            iq4_block::<D, N>(b + 1, 1, f16(blk.add(18)), blk.add(20), rows, &mut acc);
            b += 2;
        }
        if b < nb {
            let blk = wp.add(b * 18);
            iq4_block::<D, N>(b, 0, f16(blk), blk.add(2), rows, &mut acc);
        }
    }
    finish(acc, [0.0; N])
}

/// One IQ4 block `b` (scale `d`, 16 index bytes at `q`) into accumulator `slot` of
/// every row.
#[inline(always)]
unsafe fn iq4_block<D: Dp, const N: usize>(
    b: usize,
    slot: usize,
    d: f32,
    q: *const u8,
    rows: &Rows<N>,
    acc: &mut [[__m256; 2]; N],
) {
    let levels = _mm_loadu_si128(crate::kquants::IQ4_LEVELS.as_ptr() as *const __m128i);
    let m4 = _mm_set1_epi8(0xF);
    let v = _mm_loadu_si128(q as *const __m128i);
    let idx = _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(v, 4), m4),
        _mm_and_si128(v, m4),
    );
    let lv = _mm256_shuffle_epi8(_mm256_set_m128i(levels, levels), idx);
    let mag = _mm256_abs_epi8(lv);
    // Several activation rows interleave independent chains already.
    let slot = if N > 1 { 0 } else { slot };
    for i in 0..N {
        let p = D::dot(mag, _mm256_sign_epi8(rows.q(i, b), lv));
        let f = _mm256_set1_ps(d * *rows.d[i].add(b));
        acc[i][slot] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[i][slot]);
    }
}

/// Bits 0..2 of each byte moved to bits 4..6 (Q6_K's high bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn high2(m3: __m256i, h: __m256i) -> __m256i {
    _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)
}

/// The four 32-value vectors of 6-bit values in half `n` of a Q6_K super-block.
#[inline(always)]
unsafe fn q6k_quads(blk: *const u8, n: usize) -> [__m256i; 4] {
    let (m4, m3) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3));
    let ql0 = _mm256_loadu_si256(blk.add(n * 64) as *const __m256i);
    let ql1 = _mm256_loadu_si256(blk.add(n * 64 + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(blk.add(128 + n * 32) as *const __m256i);
    [
        _mm256_or_si256(_mm256_and_si256(ql0, m4), high2(m3, qh)),
        _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            high2(m3, _mm256_srli_epi16(qh, 2)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
            high2(m3, _mm256_srli_epi16(qh, 4)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
            high2(m3, _mm256_srli_epi16(qh, 6)),
        ),
    ]
}

/// `−32 · Σ a` over each 4-value group of every activation block of `rows`: Q6_K's
/// offset, computed once per matrix call and shared by every row.
#[inline(always)]
unsafe fn q6k_offsets<D: Dp, const N: usize>(rows: &Rows<N>, nb: usize) -> Vec<[__m256i; N]> {
    let m32 = _mm256_set1_epi8(32);
    let mut off = vec![[_mm256_setzero_si256(); N]; nb];
    for (b, o) in off.iter_mut().enumerate() {
        for i in 0..N {
            o[i] = _mm256_sub_epi32(_mm256_setzero_si256(), D::dot(m32, rows.q(i, b)));
        }
    }
    off
}

/// Q6_K: sixteen 16-value sub-blocks with signed 8-bit scales. Without offsets, `q − 32`
/// is `maddubs(q, a) − maddubs(32, a)` and the scales one `madd`. With the offsets of
/// [`q6k_offsets`] (worth it when the byte dot product accumulates in one instruction,
/// [`Dp::VNNI`]), `Σ (q − 32)·a` per 4-value group is one `dot_acc` onto them and the
/// two 16-value scales one 32-bit multiply. The integers are the same either way, so
/// the result is bit-identical.
#[inline(always)]
unsafe fn dot_q6k<D: Dp, const N: usize>(
    wp: *const u8,
    nb: usize,
    rows: &Rows<N>,
    off: Option<&[[__m256i; N]]>,
) -> [f32; N] {
    debug_assert!(off.is_none_or(|o| o.len() >= nb));
    let m32 = _mm256_set1_epi8(32);
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for sb in 0..nb / 8 {
        let blk = wp.add(sb * 210);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 128) as *const i8);
        let d = f16(blk.add(208));
        let sc = blk.add(192) as *const i8;
        for n in 0..2 {
            for (r, q) in q6k_quads(blk, n).into_iter().enumerate() {
                let k = n * 4 + r;
                let (s0, s1) = (*sc.add(2 * k) as i32, *sc.add(2 * k + 1) as i32);
                let b = sb * 8 + k;
                for i in 0..N {
                    let qa = rows.q(i, b);
                    let p = match off {
                        Some(off) => _mm256_mullo_epi32(
                            D::dot_acc(off[b][i], q, qa),
                            _mm256_set_m128i(_mm_set1_epi32(s1), _mm_set1_epi32(s0)),
                        ),
                        None => _mm256_madd_epi16(
                            _mm256_sub_epi16(
                                _mm256_maddubs_epi16(q, qa),
                                _mm256_maddubs_epi16(m32, qa),
                            ),
                            scales16(s0, s1),
                        ),
                    };
                    let f = _mm256_set1_ps(d * *rows.d[i].add(b));
                    acc[i][0] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[i][0]);
                }
            }
        }
    }
    finish(acc, [0.0; N])
}

/// Q3_K: 2 low bits from `qs`, the third from `hmask` bit `k`; value `(lo | h<<2) − 4`
/// via `maddubs(q, a) − maddubs(4, a)`; sixteen signed 6-bit scales.
#[inline(always)]
unsafe fn dot_q3k<const N: usize>(wp: *const u8, nb: usize, rows: &Rows<N>) -> [f32; N] {
    let (m3, m1, m4) = (
        _mm256_set1_epi8(3),
        _mm256_set1_epi8(1),
        _mm256_set1_epi8(4),
    );
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for sb in 0..nb / 8 {
        let blk = wp.add(sb * 110);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH + 64) as *const i8);
        let d = f16(blk.add(108));
        let sc = crate::kquants::q3k_scales(std::slice::from_raw_parts(blk.add(96), 12));
        let mut hbits = _mm256_loadu_si256(blk as *const __m256i);
        for n in 0..2 {
            let mut v = _mm256_loadu_si256(blk.add(32 + n * 32) as *const __m256i);
            for j in 0..4 {
                let k = n * 4 + j;
                let h = _mm256_slli_epi16(_mm256_and_si256(hbits, m1), 2);
                hbits = _mm256_srli_epi16(hbits, 1);
                let q = _mm256_or_si256(_mm256_and_si256(v, m3), h);
                v = _mm256_srli_epi16(v, 2);
                let s = scales16(sc[2 * k] as i32, sc[2 * k + 1] as i32);
                let b = sb * 8 + k;
                for i in 0..N {
                    let qa = rows.q(i, b);
                    let p =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(q, qa), _mm256_maddubs_epi16(m4, qa));
                    let p = _mm256_madd_epi16(p, s);
                    let f = _mm256_set1_ps(d * *rows.d[i].add(b));
                    acc[i][0] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[i][0]);
                }
            }
        }
    }
    finish(acc, [0.0; N])
}

/// Q2_K: 2-bit `q` with a 4-bit scale and 4-bit min per 16 values:
/// `d·Σ sc·q·a − dmin·Σ m·a`, the min term as `maddubs(min bytes, a)`.
#[inline(always)]
unsafe fn dot_q2k<D: Dp, const N: usize>(wp: *const u8, nb: usize, rows: &Rows<N>) -> [f32; N] {
    let m3 = _mm256_set1_epi8(3);
    // acc[i][0] collects d·Σsc·q·a, acc[i][1] collects dmin·Σm·a (subtracted at the end).
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for sb in 0..nb / 8 {
        let blk = wp.add(sb * 84);
        _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
        let (d, dmin) = (f16(blk.add(80)), f16(blk.add(82)));
        for n in 0..2 {
            let mut v = _mm256_loadu_si256(blk.add(16 + n * 32) as *const __m256i);
            for j in 0..4 {
                let k = n * 4 + j;
                let q = _mm256_and_si256(v, m3);
                v = _mm256_srli_epi16(v, 2);
                let (s0, s1) = (*blk.add(2 * k), *blk.add(2 * k + 1));
                let sc = scales16((s0 & 0xF) as i32, (s1 & 0xF) as i32);
                let mins = _mm256_set_m128i(
                    _mm_set1_epi8((s1 >> 4) as i8),
                    _mm_set1_epi8((s0 >> 4) as i8),
                );
                let b = sb * 8 + k;
                for i in 0..N {
                    let qa = rows.q(i, b);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, qa), sc);
                    let pm = D::dot(mins, qa);
                    let da = *rows.d[i].add(b);
                    acc[i][0] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(p), acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dmin * da),
                        _mm256_cvtepi32_ps(pm),
                        acc[i][1],
                    );
                }
            }
        }
    }
    debug_assert_eq!(QK_K, 8 * QK);
    std::array::from_fn(|i| hsum(_mm256_sub_ps(acc[i][0], acc[i][1])))
}
