//! The training pass's operations, each a forward and the backward that the trainer
//! chains: RMSNorm, RoPE's rotation, causal attention with grouped KV heads, the gated
//! activations, the LoRA update, the frozen (quantized) projection's input gradient and
//! cross-entropy. Backward functions *add* into their gradient outputs, so a value used
//! twice (a residual, Q/K/V's shared input) collects both contributions.

use rayon::prelude::*;

use crate::arch::Activation;
use crate::kernels::{axpy, axpy4, dot, dot4, QMatrix};
use crate::quant::dequantize_block;
use crate::EngineError;

/// RMSNorm of each `w.len()`-wide row of `x` into `out`; returns each row's
/// `1/rms`, which the backward needs.
pub(crate) fn rmsnorm_fwd(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Vec<f32> {
    let d = w.len();
    x.chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .map(|(xr, or)| {
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + eps).sqrt();
            for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
                *o = v * r * g;
            }
            r
        })
        .collect()
}

/// `dx += ∂(rmsnorm(x)·w)/∂x · dy`, row by row, with `inv` from [`rmsnorm_fwd`]:
/// `dx_i = r·w_i·dy_i − r³/d · x_i · Σ_j w_j·dy_j·x_j`.
/// Through an optional post-norm (Gemma's `post_*_norm`): the gradient at the norm's
/// input, or `dy` itself when the layer has none.
pub(crate) fn post_norm_bwd(w: Option<&[f32]>, x: &[f32], inv: &[f32], dy: Vec<f32>) -> Vec<f32> {
    match w {
        Some(w) => {
            let mut g = vec![0f32; dy.len()];
            rmsnorm_bwd(x, w, inv, &dy, &mut g);
            g
        }
        None => dy,
    }
}

pub(crate) fn rmsnorm_bwd(x: &[f32], w: &[f32], inv: &[f32], dy: &[f32], dx: &mut [f32]) {
    let d = w.len();
    for (((xr, dyr), dxr), &r) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(inv)
    {
        let s: f32 = xr.iter().zip(dyr).zip(w).map(|((x, g), w)| x * g * w).sum();
        let c = r * r * r * s / d as f32;
        for (((o, &x), &g), &w) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
            *o += r * w * g - c * x;
        }
    }
}

/// Causal self-attention over one sequence (positions `0..n`) with grouped KV heads:
/// `q` is `n × (nh·hd)`, `k`/`v` are `n × (nkv·hd)`; `window` limits each query to the
/// last `w` positions. Returns `n × (nh·hd)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_fwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    scale: f32,
    window: Option<usize>,
) -> Vec<f32> {
    let (qd, kvd, group) = (nh * hd, nkv * hd, nh / nkv);
    let mut out = vec![0f32; n * qd];
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / nh, i % nh);
        let kh = h / group;
        let lo = window.map_or(0, |w| (t + 1).saturating_sub(w));
        let p = probs(&q[t * qd + h * hd..][..hd], k, kvd, kh * hd, lo, t, scale);
        for (j, &pj) in p.iter().enumerate() {
            axpy(pj, &v[(lo + j) * kvd + kh * hd..][..hd], o);
        }
    });
    out
}

/// Softmax of one query's scores against keys `lo..=t` of KV head offset `off`.
fn probs(
    qv: &[f32],
    k: &[f32],
    kvd: usize,
    off: usize,
    lo: usize,
    t: usize,
    scale: f32,
) -> Vec<f32> {
    let hd = qv.len();
    let mut s: Vec<f32> = (lo..=t)
        .map(|j| dot(qv, &k[j * kvd + off..][..hd]) * scale)
        .collect();
    crate::kernels::softmax(&mut s);
    s
}

/// Gradients of [`attention_fwd`] with respect to `q`, `k`, `v`, added into `dq`, `dk`,
/// `dv`. The probabilities are recomputed (nothing `n × n` is kept between passes);
/// work is split by KV head, which owns its group's query heads and its own K/V rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_bwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    n: usize,
    (nh, nkv, hd): (usize, usize, usize),
    scale: f32,
    window: Option<usize>,
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let (qd, kvd, group) = (nh * hd, nkv * hd, nh / nkv);
    let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..nkv)
        .into_par_iter()
        .map(|kh| {
            let (mut gq, mut gk, mut gv) = (
                vec![0f32; n * group * hd],
                vec![0f32; n * hd],
                vec![0f32; n * hd],
            );
            for hg in 0..group {
                let h = kh * group + hg;
                for t in 0..n {
                    let lo = window.map_or(0, |w| (t + 1).saturating_sub(w));
                    let qv = &q[t * qd + h * hd..][..hd];
                    let go = &dout[t * qd + h * hd..][..hd];
                    let p = probs(qv, k, kvd, kh * hd, lo, t, scale);
                    // dP_j = dO·v_j; dS_j = P_j (dP_j − Σ P dP).
                    let dp: Vec<f32> = (lo..=t)
                        .map(|j| dot(go, &v[j * kvd + kh * hd..][..hd]))
                        .collect();
                    let mean: f32 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    let gqt = &mut gq[(t * group + hg) * hd..][..hd];
                    for (jj, (&pj, &dpj)) in p.iter().zip(&dp).enumerate() {
                        let j = lo + jj;
                        axpy(pj, go, &mut gv[j * hd..][..hd]);
                        let ds = pj * (dpj - mean) * scale;
                        axpy(ds, &k[j * kvd + kh * hd..][..hd], gqt);
                        axpy(ds, qv, &mut gk[j * hd..][..hd]);
                    }
                }
            }
            (gq, gk, gv)
        })
        .collect();
    for (kh, (gq, gk, gv)) in parts.into_iter().enumerate() {
        for t in 0..n {
            for hg in 0..group {
                let h = kh * group + hg;
                let dst = &mut dq[t * qd + h * hd..][..hd];
                axpy(1.0, &gq[(t * group + hg) * hd..][..hd], dst);
            }
            axpy(1.0, &gk[t * hd..][..hd], &mut dk[t * kvd + kh * hd..][..hd]);
            axpy(1.0, &gv[t * hd..][..hd], &mut dv[t * kvd + kh * hd..][..hd]);
        }
    }
}

/// `act(gate) ⊙ up`.
pub(crate) fn gated_fwd(act: Activation, gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| activation(act, g).0 * u)
        .collect()
}

/// `dgate += ∂/∂gate`, `dup += ∂/∂up` of [`gated_fwd`].
pub(crate) fn gated_bwd(
    act: Activation,
    gate: &[f32],
    up: &[f32],
    dy: &[f32],
    dgate: &mut [f32],
    dup: &mut [f32],
) {
    for i in 0..gate.len() {
        let (a, da) = activation(act, gate[i]);
        dgate[i] += dy[i] * up[i] * da;
        dup[i] += dy[i] * a;
    }
}

/// An activation and its derivative at `x`.
fn activation(act: Activation, x: f32) -> (f32, f32) {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
        Activation::GeluTanh => {
            const K: f32 = 0.797_884_6;
            const C: f32 = 0.044_715;
            let th = (K * (x + C * x * x * x)).tanh();
            let y = 0.5 * x * (1.0 + th);
            let dy = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * K * (1.0 + 3.0 * C * x * x);
            (y, dy)
        }
    }
}

/// Rows of a quantized matrix dequantized together (one block's f32 copy stays in
/// cache while every token of a thread's share uses it).
const ROW_BLOCK: usize = 16;

/// Check shapes and call `f(token range's dy/x chunk, out chunk, f32 rows r0..r1)` for
/// every thread's share of tokens and every block of rows, each block of rows
/// dequantized once per share.
fn by_row_blocks(
    w: &QMatrix<'_>,
    n: usize,
    threads: usize,
    (src, src_w): (&[f32], usize),
    (dst, dst_w): (&mut [f32], usize),
    f: impl Fn(&[f32], &mut [f32], usize, usize, &[f32]) + Sync,
) -> Result<(), EngineError> {
    let (rows, cols) = (w.rows, w.cols);
    if src.len() != n * src_w || dst.len() != n * dst_w {
        return Err(EngineError::Shape(format!(
            "a {rows}x{cols} matrix got {} inputs and {} outputs for {n} tokens",
            src.len(),
            dst.len()
        )));
    }
    let (bs, ts) = (w.qtype.block_size() as usize, w.qtype.type_size() as usize);
    if bs == 0 || !cols.is_multiple_of(bs) {
        return Err(EngineError::Shape(format!(
            "{} rows of {cols} values are not whole blocks",
            w.qtype.name()
        )));
    }
    let per = n.div_ceil(threads.max(1)).max(1);
    dst.par_chunks_mut(per * dst_w)
        .zip(src.par_chunks(per * src_w))
        .for_each(|(dc, sc)| {
            let mut buf = vec![0f32; ROW_BLOCK * cols];
            for r0 in (0..rows).step_by(ROW_BLOCK) {
                let r1 = (r0 + ROW_BLOCK).min(rows);
                for (r, out) in (r0..r1).zip(buf.chunks_exact_mut(cols)) {
                    for (o, b) in out.chunks_exact_mut(bs).zip(w.row(r).chunks_exact(ts)) {
                        dequantize_block(w.qtype, b, o);
                    }
                }
                f(sc, dc, r0, r1, &buf[..(r1 - r0) * cols]);
            }
        });
    Ok(())
}

/// `y = W·x` for `n` rows of `x` (`n × cols`) into `y` (`n × rows`), in f32: each block
/// of weight rows is dequantized once and dotted against every token (the inference
/// kernels' per-token unpacking would redo it `n` times).
pub(crate) fn matmul_fwd(
    w: &QMatrix<'_>,
    x: &[f32],
    y: &mut [f32],
    n: usize,
    threads: usize,
) -> Result<(), EngineError> {
    let (rows, cols) = (w.rows, w.cols);
    by_row_blocks(
        w,
        n,
        threads,
        (x, cols),
        (y, rows),
        |xc, yc, r0, r1, buf| {
            for (xt, yt) in xc.chunks_exact(cols).zip(yc.chunks_exact_mut(rows)) {
                let mut r = r0;
                while r + 4 <= r1 {
                    let v = dot4(&buf[(r - r0) * cols..(r - r0 + 4) * cols], xt);
                    yt[r..r + 4].copy_from_slice(&v);
                    r += 4;
                }
                for r in r..r1 {
                    yt[r] = dot(&buf[(r - r0) * cols..(r - r0 + 1) * cols], xt);
                }
            }
        },
    )
}

/// `dx += dy · W` for a frozen quantized `W` (`rows × cols`) and `n` rows of `dy`
/// (`n × rows`): the input gradient of `y = W·x`. Work is split by token so no two
/// threads write the same row of `dx`.
pub(crate) fn matmul_t(
    w: &QMatrix<'_>,
    dy: &[f32],
    dx: &mut [f32],
    n: usize,
    threads: usize,
) -> Result<(), EngineError> {
    let (rows, cols) = (w.rows, w.cols);
    by_row_blocks(
        w,
        n,
        threads,
        (dy, rows),
        (dx, cols),
        |gc, dxc, r0, r1, buf| {
            for (g, dxt) in gc.chunks_exact(rows).zip(dxc.chunks_exact_mut(cols)) {
                let mut r = r0;
                while r + 4 <= r1 {
                    let a = [g[r], g[r + 1], g[r + 2], g[r + 3]];
                    axpy4(a, &buf[(r - r0) * cols..(r - r0 + 4) * cols], dxt);
                    r += 4;
                }
                for r in r..r1 {
                    axpy(g[r], &buf[(r - r0) * cols..(r - r0 + 1) * cols], dxt);
                }
            }
        },
    )
}

/// One LoRA pair in training layout: `a` is `r × in` (PEFT's `lora_A`), `bt` is
/// `r × out` (PEFT's `lora_B` transposed, so the update is `r` contiguous axpys).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PairRef<'a> {
    pub r: usize,
    pub fin: usize,
    pub fout: usize,
    pub a: &'a [f32],
    pub bt: &'a [f32],
    pub scale: f32,
}

/// `y += scale · B·(A·x)` for `n` rows; returns `u = A·x` (`n × r`), which the backward
/// needs.
pub(crate) fn lora_fwd(p: &PairRef<'_>, x: &[f32], y: &mut [f32], n: usize) -> Vec<f32> {
    let mut u = vec![0f32; n * p.r];
    for t in 0..n {
        let xt = &x[t * p.fin..(t + 1) * p.fin];
        let yt = &mut y[t * p.fout..(t + 1) * p.fout];
        for (j, (a, bt)) in
            p.a.chunks_exact(p.fin)
                .zip(p.bt.chunks_exact(p.fout))
                .enumerate()
        {
            let uj = dot(a, xt);
            u[t * p.r + j] = uj;
            axpy(p.scale * uj, bt, yt);
        }
    }
    u
}

/// Backward of [`lora_fwd`]: `ga += ∂/∂A`, `gbt += ∂/∂Bᵀ`, `dx += ∂/∂x`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lora_bwd(
    p: &PairRef<'_>,
    x: &[f32],
    u: &[f32],
    dy: &[f32],
    n: usize,
    ga: &mut [f32],
    gbt: &mut [f32],
    dx: &mut [f32],
) {
    let mut du = vec![0f32; p.r];
    for t in 0..n {
        let xt = &x[t * p.fin..(t + 1) * p.fin];
        let dyt = &dy[t * p.fout..(t + 1) * p.fout];
        let dxt = &mut dx[t * p.fin..(t + 1) * p.fin];
        for j in 0..p.r {
            let bt = &p.bt[j * p.fout..(j + 1) * p.fout];
            du[j] = p.scale * dot(bt, dyt);
            axpy(
                p.scale * u[t * p.r + j],
                dyt,
                &mut gbt[j * p.fout..(j + 1) * p.fout],
            );
        }
        for j in 0..p.r {
            axpy(du[j], xt, &mut ga[j * p.fin..(j + 1) * p.fin]);
            axpy(du[j], &p.a[j * p.fin..(j + 1) * p.fin], dxt);
        }
    }
}

/// Cross-entropy of one row of logits against `label`: the loss, and
/// `softmax − onehot` written over the logits (the gradient of the loss).
pub(crate) fn cross_entropy(logits: &mut [f32], label: usize) -> f64 {
    let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| ((z - mx) as f64).exp()).sum();
    let loss = sum.ln() + mx as f64 - logits[label] as f64;
    let inv = 1.0 / sum;
    for z in logits.iter_mut() {
        *z = (((*z - mx) as f64).exp() * inv) as f32;
    }
    logits[label] -= 1.0;
    loss
}

/// Dropout's mask for `len` values, a pure function of `key` and the element index (so
/// the backward and a resumed run draw the same mask without storing it): `1/(1−p)` for
/// kept elements, 0 for dropped ones.
pub(crate) fn dropout_mask(len: usize, p: f32, key: u64) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    (0..len as u64)
        .map(|i| {
            let u = (splitmix64(key ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as f32
                / (1u64 << 24) as f32;
            if u < p {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    //! Each backward against central finite differences of its forward, on random
    //! inputs, through a random linear read-out `L = Σ c·y` (so every output matters).

    use super::*;
    use crate::quant::GgmlType;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-s..s)).collect()
    }

    fn readout(y: &[f32], c: &[f32]) -> f64 {
        y.iter().zip(c).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Check `analytic` against `(L(x+h) − L(x−h)) / 2h` at every element of `x`.
    fn check(name: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
        let h = 1e-2f32;
        let mut worst = 0f64;
        for i in 0..x.len() {
            let mut xp = x.to_vec();
            xp[i] += h;
            let mut xm = x.to_vec();
            xm[i] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h as f64);
            let err =
                (fd - analytic[i] as f64).abs() / (1e-2 + fd.abs().max(analytic[i].abs() as f64));
            worst = worst.max(err);
        }
        assert!(worst < 2e-2, "{name}: worst relative error {worst:.2e}");
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (d, rows) = (8, 3);
        let x = rand_vec(&mut rng, d * rows, 1.0);
        let w = rand_vec(&mut rng, d, 1.0);
        let c = rand_vec(&mut rng, d * rows, 1.0);
        let f = |x: &[f32]| {
            let mut y = vec![0f32; x.len()];
            rmsnorm_fwd(x, &w, 1e-5, &mut y);
            readout(&y, &c)
        };
        let mut y = vec![0f32; x.len()];
        let inv = rmsnorm_fwd(&x, &w, 1e-5, &mut y);
        let mut dx = vec![0f32; x.len()];
        rmsnorm_bwd(&x, &w, &inv, &c, &mut dx);
        check("rmsnorm", &x, &dx, f);
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (n, nh, nkv, hd) = (5, 4, 2, 8);
        let q = rand_vec(&mut rng, n * nh * hd, 1.0);
        let k = rand_vec(&mut rng, n * nkv * hd, 1.0);
        let v = rand_vec(&mut rng, n * nkv * hd, 1.0);
        let c = rand_vec(&mut rng, n * nh * hd, 1.0);
        for window in [None, Some(3)] {
            let att = |q: &[f32], k: &[f32], v: &[f32]| {
                readout(&attention_fwd(q, k, v, n, nh, nkv, hd, 0.35, window), &c)
            };
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; q.len()],
                vec![0f32; k.len()],
                vec![0f32; v.len()],
            );
            attention_bwd(
                &q,
                &k,
                &v,
                &c,
                n,
                (nh, nkv, hd),
                0.35,
                window,
                (&mut dq, &mut dk, &mut dv),
            );
            check("attention dq", &q, &dq, |x| att(x, &k, &v));
            check("attention dk", &k, &dk, |x| att(&q, x, &v));
            check("attention dv", &v, &dv, |x| att(&q, &k, x));
        }
    }

    #[test]
    fn gated_activations_backward_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let g = rand_vec(&mut rng, 16, 3.0);
        let u = rand_vec(&mut rng, 16, 2.0);
        let c = rand_vec(&mut rng, 16, 1.0);
        for act in [Activation::Silu, Activation::GeluTanh] {
            let (mut dg, mut du) = (vec![0f32; 16], vec![0f32; 16]);
            gated_bwd(act, &g, &u, &c, &mut dg, &mut du);
            check("gate", &g, &dg, |x| readout(&gated_fwd(act, x, &u), &c));
            check("up", &u, &du, |x| readout(&gated_fwd(act, &g, x), &c));
        }
    }

    #[test]
    fn lora_backward_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (n, r, fin, fout) = (3, 2, 8, 6);
        let a = rand_vec(&mut rng, r * fin, 1.0);
        let bt = rand_vec(&mut rng, r * fout, 1.0);
        let x = rand_vec(&mut rng, n * fin, 1.0);
        let c = rand_vec(&mut rng, n * fout, 1.0);
        let run = |a: &[f32], bt: &[f32], x: &[f32]| {
            let p = PairRef {
                r,
                fin,
                fout,
                a,
                bt,
                scale: 1.5,
            };
            let mut y = vec![0f32; n * fout];
            lora_fwd(&p, x, &mut y, n);
            readout(&y, &c)
        };
        let p = PairRef {
            r,
            fin,
            fout,
            a: &a,
            bt: &bt,
            scale: 1.5,
        };
        let mut y = vec![0f32; n * fout];
        let u = lora_fwd(&p, &x, &mut y, n);
        let (mut ga, mut gbt, mut dx) = (
            vec![0f32; a.len()],
            vec![0f32; bt.len()],
            vec![0f32; x.len()],
        );
        lora_bwd(&p, &x, &u, &c, n, &mut ga, &mut gbt, &mut dx);
        check("lora A", &a, &ga, |v| run(v, &bt, &x));
        check("lora B", &bt, &gbt, |v| run(&a, v, &x));
        check("lora x", &x, &dx, |v| run(&a, &bt, v));
    }

    #[test]
    fn frozen_projection_forward_and_backward() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (rows, cols, n) = (37, 64, 5);
        let w = rand_vec(&mut rng, rows * cols, 1.0);
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = QMatrix::new(GgmlType::F32, rows, cols, &bytes).unwrap();
        let dy = rand_vec(&mut rng, n * rows, 1.0);
        for threads in [1, 2, 3] {
            let mut dx = vec![1f32; n * cols];
            matmul_t(&m, &dy, &mut dx, n, threads).unwrap();
            for t in 0..n {
                for c in 0..cols {
                    let want: f32 = 1.0
                        + (0..rows)
                            .map(|r| dy[t * rows + r] * w[r * cols + c])
                            .sum::<f32>();
                    assert!((dx[t * cols + c] - want).abs() < 1e-4, "threads {threads}");
                }
            }
        }
        let x = rand_vec(&mut rng, n * cols, 1.0);
        for threads in [1, 2] {
            let mut y = vec![0f32; n * rows];
            matmul_fwd(&m, &x, &mut y, n, threads).unwrap();
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum();
                    assert!(
                        (y[t * rows + r] - want).abs() < 1e-4,
                        "forward, threads {threads}"
                    );
                }
            }
        }
        let mut short = vec![0f32; 3];
        assert!(matmul_t(&m, &dy, &mut short, n, 1).is_err());
        assert!(matmul_fwd(&m, &x, &mut short, n, 1).is_err());
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let z = rand_vec(&mut rng, 10, 3.0);
        let mut g = z.clone();
        cross_entropy(&mut g, 4);
        check("cross entropy", &z, &g, |x| {
            cross_entropy(&mut x.to_vec(), 4)
        });
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_repeats_per_key() {
        let a = dropout_mask(10_000, 0.25, 7);
        let kept = a.iter().filter(|&&v| v != 0.0).count();
        assert!((7_200..7_800).contains(&kept), "kept {kept}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(a, dropout_mask(10_000, 0.25, 7));
        assert_ne!(a, dropout_mask(10_000, 0.25, 8));
    }
}
