//! Teacher-forced logits against a llama.cpp golden (`scripts/goldens/make_goldens.sh`):
//! the one comparison every such test makes.
//!
//! llama.cpp quantizes activations to Q8_1 on the fly and the engine to its own Q8
//! blocks: two independent roundings, so the logits of two correct implementations differ
//! by up to about twice the rounding noise of one. The noise is measured on our side in
//! the same run (our Q8 pass against our f32-activation pass of the same weights) instead
//! of assumed, then:
//! - every logit in llama.cpp's top-k is within 2 × noise of ours;
//! - the top-1 is the same wherever llama.cpp's top-1 beats its top-2 by more than twice
//!   our noise at that position (closer calls are ties within rounding and may flip
//!   either way; the noise is taken per position because its maximum over all positions
//!   is one outlier that would make every other position look unjudgeable);
//! - the rms difference is within 2 × the rms noise.
//!
//! A real defect (a wrong RoPE base, norm epsilon, head layout, kernel or adapter) moves
//! logits by whole units and flips clear winners, and fails this.

use serde_json::Value;

/// llama.cpp's top-k `(token, logit)` per position, from a golden's `positions`.
pub fn top_k(positions: &Value) -> Vec<Vec<(usize, f32)>> {
    positions
        .as_array()
        .expect("positions is an array")
        .iter()
        .map(|p| {
            p.as_array()
                .expect("a position is an array")
                .iter()
                .map(|e| {
                    (
                        e[0].as_u64().unwrap() as usize,
                        e[1].as_f64().unwrap() as f32,
                    )
                })
                .collect()
        })
        .collect()
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    pub positions: usize,
    pub top1_agree: usize,
    /// Positions whose top-1 beats the top-2 by more than twice that position's noise.
    pub clear: usize,
    /// Max and rms |ours with Q8 activations − ours with f32| over the golden's top-k.
    pub noise: f32,
    pub noise_rms: f64,
    /// Rms and max |ours − llama.cpp| over the golden's top-k.
    pub diff_rms: f64,
    pub worst: f32,
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

/// Compare our logits (`q8`: 8-bit activations as llama.cpp, `f32`: the same pass with
/// f32 activations; `positions × vocab` each) with llama.cpp's top-k; panics with the
/// position and figures on a disagreement.
pub fn check(q8: &[f32], f32: &[f32], vocab: usize, tops: &[Vec<(usize, f32)>]) -> Agreement {
    assert_eq!(
        q8.len(),
        tops.len() * vocab,
        "one logits row per golden position"
    );
    assert_eq!(f32.len(), q8.len());
    let (mut noise, mut noise_sq, mut diff_sq, mut n) = (0f32, 0f64, 0f64, 0f64);
    for (i, top) in tops.iter().enumerate() {
        for &(id, want) in top {
            let d = q8[i * vocab + id] - f32[i * vocab + id];
            noise = noise.max(d.abs());
            noise_sq += (d * d) as f64;
            diff_sq += ((q8[i * vocab + id] - want) as f64).powi(2);
            n += 1.0;
        }
    }
    let (noise_rms, diff_rms) = ((noise_sq / n).sqrt(), (diff_sq / n).sqrt());
    // A broken Q8 path would show noise of whole logits, and would widen `tol`: bound it.
    let tol = 2.0 * noise;
    let (mut agree, mut clear, mut worst) = (0, 0, 0f32);
    for (i, top) in tops.iter().enumerate() {
        let row = &q8[i * vocab..(i + 1) * vocab];
        for &(id, want) in top {
            worst = worst.max((row[id] - want).abs());
        }
        let same = argmax(row) == top[0].0;
        agree += same as usize;
        let here = top
            .iter()
            .map(|&(id, _)| (row[id] - f32[i * vocab + id]).abs())
            .fold(0f32, f32::max);
        if top[0].1 - top[1].1 > 2.0 * here {
            clear += 1;
            assert!(
                same,
                "position {i}: llama.cpp's clear top-1 {:?} (margin {:.3} > 2 × our noise there {here:.3}) but ours is {}",
                top[0],
                top[0].1 - top[1].1,
                argmax(row)
            );
        }
    }
    let a = Agreement {
        positions: tops.len(),
        top1_agree: agree,
        clear,
        noise,
        noise_rms,
        diff_rms,
        worst,
    };
    eprintln!(
        "top-1 agreement {agree}/{} ({clear} clear winners, all agree); own Q8-vs-f32 noise max {noise:.3} rms {noise_rms:.3}; rms |ours - llama.cpp| {diff_rms:.3}; worst |ours - llama.cpp| over top-k {worst:.3} (bound {tol:.3})",
        tops.len()
    );
    assert!(
        noise > 0.0 && noise < 2.0,
        "activation rounding noise {noise} out of its expected range"
    );
    assert!(worst <= tol, "worst |logit diff| {worst} > {tol}");
    assert!(
        diff_rms <= 2.0 * noise_rms,
        "rms |ours - llama.cpp| {diff_rms:.3} > 2 x our rounding rms {noise_rms:.3}"
    );
    assert!(
        clear * 3 > tops.len(),
        "too few clear positions to judge ({clear})"
    );
    a
}
