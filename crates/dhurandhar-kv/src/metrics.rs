//! Quality metrics of a reconstruction, per head.
//!
//! * `nmse` = Σ‖x − x̂‖² / Σ‖x‖² over the head's vectors.
//! * `cosine` = mean over vectors of x·x̂ / (max(‖x‖, ε)·max(‖x̂‖, ε)), ε = 1e-8.
//! * `norm_ratio` = mean over vectors of ‖x̂‖ / max(‖x‖, ε).
//! * Inner products ⟨q, k⟩ vs ⟨q, k̂⟩ over all query × key pairs: `ip_bias_slope` is the
//!   least-squares slope of ⟨q,k̂⟩ on ⟨q,k⟩ (1 = unbiased; < 1 = shrunk), and
//!   `ip_err_var` = Var(⟨q,k̂⟩ − ⟨q,k⟩) / Var(⟨q,k⟩).
//! * Attention: o = softmax(q Kᵀ/√d)·V (causal when the query carries a position),
//!   `attn_rel_err` = mean over queries of ‖o − ô‖/‖o‖ with K̂, V̂, and `attn_kl` =
//!   mean over queries of KL(p ‖ p̂) between the attention distributions (nats).

use serde::Serialize;

/// One head's exact data: keys and values (`n × d`) and queries (`m × d`).
#[derive(Debug, Clone)]
pub struct HeadData {
    pub label: String,
    pub d: usize,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub q: Vec<f32>,
    /// Position of each query (it sees keys `0..=pos`); `None` = sees all keys.
    pub q_pos: Option<Vec<usize>>,
    /// Samples to calibrate SpectralQuant on (keys, values).
    pub calib_k: Vec<f32>,
    pub calib_v: Vec<f32>,
}

impl HeadData {
    pub fn tokens(&self) -> usize {
        self.k.len() / self.d
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct HeadMetrics {
    pub nmse: f64,
    pub cosine: f64,
    pub norm_ratio: f64,
    pub ip_bias_slope: f64,
    pub ip_err_var: f64,
    pub attn_rel_err: f64,
    pub attn_kl: f64,
    pub v_nmse: f64,
}

/// (nmse, mean cosine, mean norm ratio) of `xh` against `x`.
pub fn vector_metrics(x: &[f32], xh: &[f32], d: usize) -> (f64, f64, f64) {
    const EPS: f64 = 1e-8;
    let (mut err, mut tot, mut cos, mut nr) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let n = x.len() / d;
    for (a, b) in x.chunks_exact(d).zip(xh.chunks_exact(d)) {
        let (mut aa, mut bb, mut ab, mut ee) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&u, &v) in a.iter().zip(b) {
            let (u, v) = (u as f64, v as f64);
            aa += u * u;
            bb += v * v;
            ab += u * v;
            ee += (u - v) * (u - v);
        }
        err += ee;
        tot += aa;
        cos += ab / (aa.sqrt().max(EPS) * bb.sqrt().max(EPS));
        nr += bb.sqrt() / aa.sqrt().max(EPS);
    }
    let n = n.max(1) as f64;
    let nmse = if tot > 0.0 { err / tot } else { 0.0 };
    (nmse, cos / n, nr / n)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ia = a.chunks_exact(8);
    let mut ib = b.chunks_exact(8);
    for (x, y) in (&mut ia).zip(&mut ib) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut t = 0.0;
    for (x, y) in ia.remainder().iter().zip(ib.remainder()) {
        t += x * y;
    }
    acc.iter().sum::<f32>() + t
}

/// Scores q·K/√d for every query, row-major `m × n`.
fn scores(q: &[f32], k: &[f32], d: usize) -> Vec<f32> {
    let s = 1.0 / (d as f32).sqrt();
    let mut out = Vec::with_capacity(q.len() / d * (k.len() / d));
    for qi in q.chunks_exact(d) {
        out.extend(k.chunks_exact(d).map(|kj| dot(qi, kj) * s));
    }
    out
}

/// Full metrics of one head given its reconstructed keys and values.
pub fn head_metrics(h: &HeadData, kh: &[f32], vh: &[f32]) -> HeadMetrics {
    let d = h.d;
    let n = h.tokens();
    let (nmse, cosine, norm_ratio) = vector_metrics(&h.k, kh, d);
    let (v_nmse, _, _) = vector_metrics(&h.v, vh, d);
    let s = scores(&h.q, &h.k, d);
    let sh = scores(&h.q, kh, d);
    // Inner-product regression over the visible pairs.
    let m = h.q.len() / d;
    let visible = |i: usize| -> usize {
        match &h.q_pos {
            Some(p) => (p[i] + 1).min(n),
            None => n,
        }
    };
    let (mut sy, mut syh, mut cnt) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..visible(i) {
            sy += s[i * n + j] as f64;
            syh += sh[i * n + j] as f64;
            cnt += 1.0;
        }
    }
    let (my, myh) = (sy / cnt.max(1.0), syh / cnt.max(1.0));
    let (mut sxx, mut sxy, mut se, mut see) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..visible(i) {
            let y = s[i * n + j] as f64 - my;
            let yh = sh[i * n + j] as f64 - myh;
            sxx += y * y;
            sxy += y * yh;
            let e = yh - y;
            se += e;
            see += e * e;
        }
    }
    let c = cnt.max(1.0);
    let ip_bias_slope = if sxx > 0.0 { sxy / sxx } else { 1.0 };
    let var_e = see / c - (se / c).powi(2);
    let ip_err_var = if sxx > 0.0 {
        var_e.max(0.0) / (sxx / c)
    } else {
        0.0
    };
    // Attention outputs.
    let (mut rel, mut kl) = (0.0f64, 0.0f64);
    let mut p = vec![0.0f64; n];
    let mut ph = vec![0.0f64; n];
    let mut o = vec![0.0f64; d];
    let mut oh = vec![0.0f64; d];
    for i in 0..m {
        let nv = visible(i);
        softmax(&s[i * n..i * n + nv], &mut p[..nv]);
        softmax(&sh[i * n..i * n + nv], &mut ph[..nv]);
        o.fill(0.0);
        oh.fill(0.0);
        for j in 0..nv {
            let (vj, vhj) = (&h.v[j * d..(j + 1) * d], &vh[j * d..(j + 1) * d]);
            for c in 0..d {
                o[c] += p[j] * vj[c] as f64;
                oh[c] += ph[j] * vhj[c] as f64;
            }
            if p[j] > 0.0 {
                kl += p[j] * (p[j].ln() - ph[j].max(1e-300).ln());
            }
        }
        let num: f64 = o.iter().zip(&oh).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f64 = o.iter().map(|a| a * a).sum();
        rel += if den > 0.0 {
            (num / den).sqrt()
        } else {
            num.sqrt()
        };
    }
    let mm = m.max(1) as f64;
    HeadMetrics {
        nmse,
        cosine,
        norm_ratio,
        ip_bias_slope,
        ip_err_var,
        attn_rel_err: rel / mm,
        attn_kl: (kl / mm).max(0.0),
        v_nmse,
    }
}

fn softmax(s: &[f32], p: &mut [f64]) {
    let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut z = 0.0;
    for (pi, &si) in p.iter_mut().zip(s) {
        *pi = (si as f64 - mx).exp();
        z += *pi;
    }
    for pi in p.iter_mut() {
        *pi /= z;
    }
}

/// Median of a slice (mean of the middle two for even lengths); NaN-free input.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reconstruction_is_perfect() {
        let d = 8;
        let k: Vec<f32> = (0..d * 10).map(|i| (i as f32 * 0.3).sin()).collect();
        let v: Vec<f32> = (0..d * 10).map(|i| (i as f32 * 0.7).cos()).collect();
        let h = HeadData {
            label: "h".into(),
            d,
            k: k.clone(),
            v: v.clone(),
            q: k[..d * 3].to_vec(),
            q_pos: Some(vec![0, 4, 9]),
            calib_k: vec![],
            calib_v: vec![],
        };
        let m = head_metrics(&h, &k, &v);
        assert_eq!(m.nmse, 0.0);
        assert!((m.cosine - 1.0).abs() < 1e-9 && (m.norm_ratio - 1.0).abs() < 1e-9);
        assert!((m.ip_bias_slope - 1.0).abs() < 1e-9 && m.ip_err_var < 1e-12);
        assert!(m.attn_rel_err < 1e-9 && m.attn_kl < 1e-12);
    }

    #[test]
    fn halved_keys_show_slope_one_half() {
        let d = 4;
        let k: Vec<f32> = (0..d * 20).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
        let kh: Vec<f32> = k.iter().map(|v| v * 0.5).collect();
        let h = HeadData {
            label: "h".into(),
            d,
            k: k.clone(),
            v: k.clone(),
            q: k[..d * 5].to_vec(),
            q_pos: None,
            calib_k: vec![],
            calib_v: vec![],
        };
        let m = head_metrics(&h, &kh, &k);
        assert!((m.ip_bias_slope - 0.5).abs() < 1e-6, "{}", m.ip_bias_slope);
        assert!((m.nmse - 0.25).abs() < 1e-6);
        assert!((m.norm_ratio - 0.5).abs() < 1e-6);
        assert!(m.attn_kl > 0.0);
    }
}
