//! The k-quants: 256-value super-blocks of 16- or 32-value sub-blocks, each sub-block
//! with its own scale (and minimum for Q2_K/Q4_K/Q5_K), the sub-block scales themselves
//! quantized against one f16 super-block scale.
//!
//! Per sub-block the scale is not simply range / levels: a short search tries a band of
//! candidate scales, re-fits scale (and minimum) by weighted least squares on the levels
//! each candidate gives, and keeps the one with the smallest weighted error — the
//! published approach of ggml's reference k-quantizers, with their search bands and
//! weights, so the quality class matches `llama-quantize` without an imatrix. Once the
//! sub-block scales are quantized, every value is re-quantized against the scale it
//! will really be read back with.

use crate::{f16_bytes, f16_round, nearest_int, QK_K};

/// Below this a sub-block counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Result of an asymmetric fit: `x ≈ scale·L - min`.
struct Affine {
    scale: f32,
    /// Stored positive: the value subtracted.
    min: f32,
}

/// Fit `x ≈ scale·L + m` with `L` in `0..=nmax` and `m ≤ 0`, minimising
/// `Σ w·err²` (or `Σ w·|err|` with `mad`). Candidates: `nmax + rmin + rdelta·k` levels
/// over the range, `k = 0..=nstep`, each re-fitted by least squares.
#[allow(clippy::too_many_arguments)]
fn fit_affine(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: usize,
    mad: bool,
) -> Affine {
    let n = x.len();
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_w: f32 = w.iter().sum();
    let sum_x: f32 = x.iter().zip(w).map(|(&v, &wi)| v * wi).sum();
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return Affine {
            scale: 0.0,
            min: -min,
        };
    }
    let err = |scale: f32, m: f32, levels: &[u8]| -> f32 {
        let mut e = 0.0f32;
        for i in 0..n {
            let d = scale * levels[i] as f32 + m - x[i];
            e += w[i] * if mad { d.abs() } else { d * d };
        }
        e
    };
    let quant = |iscale: f32, m: f32, levels: &mut [u8]| {
        for (o, &v) in levels.iter_mut().zip(x) {
            *o = nearest_int(iscale * (v - m)).clamp(0, nmax) as u8;
        }
    };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    quant(iscale, min, l);
    let mut best = err(scale, min, l);
    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for k in 0..=nstep {
        iscale = (rmin + rdelta * k as f32 + nmax as f32) / (max - min);
        quant(iscale, min, aux);
        let (mut sl, mut sl2, mut sxl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let li = aux[i] as f32;
            sl += w[i] * li;
            sl2 += w[i] * li * li;
            sxl += w[i] * li * x[i];
        }
        let det = sum_w * sl2 - sl * sl;
        if det > 0.0 {
            let mut s = (sum_w * sxl - sum_x * sl) / det;
            let mut m = (sl2 * sum_x - sl * sxl) / det;
            if m > 0.0 {
                m = 0.0;
                s = sxl / sl2;
            }
            let e = err(s, m, aux);
            if e < best {
                l.copy_from_slice(aux);
                best = e;
                scale = s;
                min = m;
            }
        }
    }
    Affine { scale, min: -min }
}

/// Symmetric fit `x ≈ scale·(L - nmax)` with `L - nmax` in `-nmax..nmax`, weights `x²`,
/// trying 19 scales around `nmax / max` (Q6_K). Returns the scale; `l` gets `L`.
fn fit_symmetric(x: &[f32], nmax: i32, l: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut slx, mut sl2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
            slx += w * v * q;
            sl2 += w * q * q;
        }
        (slx, sl2)
    };
    let mut iscale = -(nmax as f32) / max;
    let (slx, sl2) = sums(iscale);
    let mut best_iscale = iscale;
    let mut scale = if sl2 != 0.0 { slx / sl2 } else { 0.0 };
    let mut best = scale * slx;
    for k in (-9..=9).filter(|&k| k != 0) {
        iscale = -(nmax as f32 + 0.1 * k as f32) / max;
        let (slx, sl2) = sums(iscale);
        // slx²/sl2 is the error reduction of the least-squares scale: keep the largest.
        if sl2 > 0.0 && slx * slx > best * sl2 {
            scale = slx / sl2;
            best = scale * slx;
            best_iscale = iscale;
        }
    }
    for (o, &v) in l.iter_mut().zip(x) {
        *o = (level(best_iscale, v) + nmax) as u8;
    }
    scale
}

/// Symmetric fit for Q3_K: levels `-4..=3`, start from `4 / max`, then move single
/// values to the level that most improves the `x²`-weighted least-squares error, up to
/// five passes. Returns the scale; `l` gets levels + 4.
fn fit_q3(x: &[f32], l: &mut [u8]) -> f32 {
    const NMAX: i32 = 4;
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let mut q = [0i32; 16];
    let (mut slx, mut sl2) = (0.0f32, 0.0f32);
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
        let w = v * v;
        slx += w * v * *qi as f32;
        sl2 += w * (*qi * *qi) as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (qi, &v) in q.iter_mut().zip(x) {
            let w = v * v;
            let slx_o = slx - w * v * *qi as f32;
            if slx_o > 0.0 {
                let sl2_o = sl2 - w * (*qi * *qi) as f32;
                let nq = nearest_int(v * sl2_o / slx_o).clamp(-NMAX, NMAX - 1);
                if nq != *qi {
                    let slx_n = slx_o + w * v * nq as f32;
                    let sl2_n = sl2_o + w * (nq * nq) as f32;
                    if sl2_n > 0.0 && slx_n * slx_n * sl2 > slx * slx * sl2_n {
                        *qi = nq;
                        slx = slx_n;
                        sl2 = sl2_n;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &qi) in l.iter_mut().zip(&q) {
        *o = (qi + NMAX) as u8;
    }
    if sl2 > 0.0 {
        slx / sl2
    } else {
        0.0
    }
}

/// Pack 256 2-bit levels as Q2_K/Q3_K do: byte `32·h + l` holds values
/// `128·h + l + 32·s` in bits `2s..2s+2`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = (l[b] & 3)
                | ((l[b + 32] & 3) << 2)
                | ((l[b + 64] & 3) << 4)
                | ((l[b + 96] & 3) << 6);
        }
    }
}

// Indices run over several parallel arrays laid out like the block: plain loops read best.
#[allow(clippy::needless_range_loop)]
/// `scales: [u8; 16]` (scale low nibble, min high nibble), `qs: [u8; 64]`, `d`, `dmin`.
pub(crate) fn q2_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let mut w = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = v.abs();
        }
        let a = fit_affine(xs, &w, 3, &mut l[16 * j..16 * j + 16], -0.5, 0.1, 15, true);
        scales[j] = a.scale;
        mins[j] = a.min;
    }
    let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
    let max_min = mins.iter().copied().fold(0.0f32, f32::max);
    let mut packed = [0u8; 16];
    let mut d = 0.0;
    if max_scale > 0.0 {
        let is = 15.0 / max_scale;
        for (p, &s) in packed.iter_mut().zip(&scales) {
            *p = nearest_int(is * s).clamp(0, 15) as u8;
        }
        d = max_scale / 15.0;
    }
    let mut dmin = 0.0;
    if max_min > 0.0 {
        let im = 15.0 / max_min;
        for (p, &m) in packed.iter_mut().zip(&mins) {
            *p |= (nearest_int(im * m).clamp(0, 15) as u8) << 4;
        }
        dmin = max_min / 15.0;
    }
    let (dr, dminr) = (f16_round(d), f16_round(dmin));
    for j in 0..16 {
        let dl = dr * (packed[j] & 0xF) as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dminr * (packed[j] >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + ml) / dl).clamp(0, 3) as u8;
        }
    }
    out[0..16].copy_from_slice(&packed);
    pack_2bit(&l, &mut out[16..80]);
    out[80..82].copy_from_slice(&f16_bytes(d));
    out[82..84].copy_from_slice(&f16_bytes(dmin));
}

#[allow(clippy::needless_range_loop)]
/// `hmask: [u8; 32]`, `qs: [u8; 64]`, `scales: [u8; 12]` (16 six-bit scales, +32 bias), `d`.
pub(crate) fn q3_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    for j in 0..16 {
        scales[j] = fit_q3(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
    }
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for &s in &scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    let mut sc = [0u8; 12];
    let mut biased = [32i32; 16];
    let mut d = 0.0;
    if max_scale != 0.0 {
        let is = -32.0 / max_scale;
        for (j, b) in biased.iter_mut().enumerate() {
            *b = nearest_int(is * scales[j]).clamp(-32, 31) + 32;
            let v = *b as u8;
            if j < 8 {
                sc[j] = v & 0xF;
            } else {
                sc[j - 8] |= (v & 0xF) << 4;
            }
            sc[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
        d = 1.0 / is;
    }
    let dr = f16_round(d);
    for j in 0..16 {
        let dl = dr * (biased[j] - 32) as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-4, 3) + 4) as u8;
        }
    }
    // High bit of value i goes to bit i/32 of hmask[i % 32].
    let hmask = &mut out[0..32];
    hmask.fill(0);
    for (i, li) in l.iter_mut().enumerate() {
        if *li > 3 {
            hmask[i % 32] |= 1 << (i / 32);
            *li -= 4;
        }
    }
    pack_2bit(&l, &mut out[32..96]);
    out[96..108].copy_from_slice(&sc);
    out[108..110].copy_from_slice(&f16_bytes(d));
}

/// Q4_K/Q5_K: eight 32-value sub-blocks with 6-bit scale and min. Returns the levels
/// (re-quantized against the stored scales) after writing `d`, `dmin` and the 12 scale
/// bytes into `head` (16 bytes).
fn k_scale_min(x: &[f32], nmax: i32, rmin: f32, nstep: usize, head: &mut [u8]) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let mut w = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = av + v.abs();
        }
        let a = fit_affine(
            xs,
            &w,
            nmax,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = a.scale;
        mins[j] = a.min;
    }
    let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
    let max_min = mins.iter().copied().fold(0.0f32, f32::max);
    let is = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let im = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let sc = &mut head[4..16];
    sc.fill(0);
    for j in 0..8 {
        ls[j] = nearest_int(is * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest_int(im * mins[j]).clamp(0, 63) as u8;
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
    let (d, dmin) = (max_scale / 63.0, max_min / 63.0);
    head[0..2].copy_from_slice(&f16_bytes(d));
    head[2..4].copy_from_slice(&f16_bytes(dmin));
    let (dr, dminr) = (f16_round(d), f16_round(dmin));
    for j in 0..8 {
        let dl = dr * ls[j] as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dminr * lm[j] as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + ml) / dl).clamp(0, nmax) as u8;
        }
    }
    l
}

/// `d`, `dmin`, `scales: [u8; 12]`, `qs: [u8; 128]`: 64-value group `g` in bytes
/// `32g..32g+32`, low nibbles first 32 values, high nibbles the next 32.
pub(crate) fn q4_k(x: &[f32], out: &mut [u8]) {
    let l = k_scale_min(x, 15, -1.0, 20, &mut out[0..16]);
    let qs = &mut out[16..144];
    for g in 0..4 {
        for i in 0..32 {
            qs[32 * g + i] = l[64 * g + i] | (l[64 * g + i + 32] << 4);
        }
    }
}

/// As Q4_K plus `qh: [u8; 32]` before `qs`: bit 4 of value `64g + i` (`+32`) in bit
/// `2g` (`2g+1`) of `qh[i]`.
pub(crate) fn q5_k(x: &[f32], out: &mut [u8]) {
    let l = k_scale_min(x, 31, -0.5, 15, &mut out[0..16]);
    let (qh, qs) = out[16..176].split_at_mut(32);
    qh.fill(0);
    for g in 0..4 {
        for i in 0..32 {
            let (a, b) = (l[64 * g + i], l[64 * g + i + 32]);
            qh[i] |= ((a >> 4) << (2 * g)) | ((b >> 4) << (2 * g + 1));
            qs[32 * g + i] = (a & 0xF) | ((b & 0xF) << 4);
        }
    }
}

/// `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d`. Per 128-value half `h`:
/// `ql[64h + i]` holds values `i` / `i+64` (low/high nibble), `ql[64h + 32 + i]` values
/// `i+32` / `i+96`, `qh[32h + i]` their top two bits in that order.
pub(crate) fn q6_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 16];
    for j in 0..16 {
        scales[j] = fit_symmetric(&x[16 * j..16 * j + 16], 32, &mut l[16 * j..16 * j + 16]);
    }
    let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
    for &s in &scales {
        if s.abs() > amax {
            amax = s.abs();
            max_scale = s;
        }
    }
    if amax < GROUP_MAX_EPS {
        out[..210].fill(0);
        return;
    }
    let is = -128.0 / max_scale;
    let d = 1.0 / is;
    let dr = f16_round(d);
    let mut sc = [0i8; 16];
    for j in 0..16 {
        sc[j] = nearest_int(is * scales[j]).clamp(-128, 127) as i8;
        let dl = dr * sc[j] as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            l[i] = (nearest_int(x[i] / dl).clamp(-32, 31) + 32) as u8;
        }
    }
    let (ql, rest) = out[..210].split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            let (q1, q2, q3, q4) = (l[b], l[b + 32], l[b + 64], l[b + 96]);
            ql[64 * h + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[64 * h + 32 + i] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    for (o, s) in rest[..16].iter_mut().zip(sc) {
        *o = s as u8;
    }
    rest[16..18].copy_from_slice(&f16_bytes(d));
}
