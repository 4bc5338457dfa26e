//! The generic driver behind every codec: input validation, fixed-size records per
//! token group, rayon over groups for large batches, and the AVX2/portable kernel
//! choice. Codecs implement only [`GroupCodec`].

use rayon::prelude::*;

use crate::codec::{KvCodec, KvError, KvRole};

/// One codec's per-record kernels. A record holds `group(role)` tokens.
pub(crate) trait GroupCodec: Send + Sync {
    fn name(&self) -> &'static str;
    fn head_dim(&self) -> usize;
    fn bits(&self) -> u32;
    fn group(&self, role: KvRole) -> usize;
    fn record_len(&self, role: KvRole) -> usize;
    /// Length of each [`Scratch`] buffer the kernels need.
    fn scratch_len(&self) -> usize;
    /// Encode `group(role)` tokens (`x`) into `out` (`record_len` bytes). Token indices
    /// in errors are relative to the record.
    fn encode_group(
        &self,
        role: KvRole,
        x: &[f32],
        out: &mut [u8],
        scratch: &mut Scratch,
    ) -> Result<(), KvError>;
    fn decode_group(
        &self,
        role: KvRole,
        rec: &[u8],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), KvError>;
    fn side_bytes(&self, _role: KvRole) -> usize {
        0
    }
}

/// Per-thread working memory of the kernels (sized by [`GroupCodec::scratch_len`]).
pub(crate) struct Scratch {
    pub f: Vec<f32>,
    pub g: Vec<f32>,
    pub h: Vec<f32>,
    pub c: Vec<u8>,
    pub c2: Vec<u8>,
}

impl Scratch {
    pub fn new(n: usize) -> Self {
        Scratch {
            f: vec![0.0; n],
            g: vec![0.0; n],
            h: vec![0.0; n],
            c: vec![0; n],
            c2: vec![0; n],
        }
    }
}

/// Batches below this many values are encoded on the calling thread.
const PAR_MIN_VALUES: usize = 1 << 14;
/// Values per rayon task.
const PAR_CHUNK_VALUES: usize = 1 << 13;

pub(crate) struct Framed<C>(pub C);

impl<C: GroupCodec> Framed<C> {
    pub fn new(c: C) -> Self {
        Framed(c)
    }

    fn tokens(&self, role: KvRole, len: usize) -> Result<usize, KvError> {
        let d = self.0.head_dim();
        if len == 0 {
            return Err(KvError::EmptyBatch);
        }
        if !len.is_multiple_of(d) {
            return Err(KvError::ShapeMismatch { len, head_dim: d });
        }
        let n = len / d;
        let g = self.0.group(role);
        if !n.is_multiple_of(g) {
            return Err(KvError::PartialGroup {
                codec: self.0.name().to_string(),
                role: role.as_str(),
                tokens: n,
                group: g,
            });
        }
        Ok(n)
    }

    fn encode_chunk(
        &self,
        role: KvRole,
        x: &[f32],
        out: &mut [u8],
        scratch: &mut Scratch,
        first_token: usize,
    ) -> Result<(), KvError> {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2() {
            // SAFETY: the CPU supports avx2 and fma (checked just above).
            let r = unsafe { encode_avx2(&self.0, role, x, out, scratch) };
            return r.map_err(|e| offset(e, first_token));
        }
        encode_portable(&self.0, role, x, out, scratch).map_err(|e| offset(e, first_token))
    }

    fn decode_chunk(
        &self,
        role: KvRole,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), KvError> {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2() {
            // SAFETY: the CPU supports avx2 and fma (checked just above).
            return unsafe { decode_avx2(&self.0, role, bytes, out, scratch) };
        }
        decode_portable(&self.0, role, bytes, out, scratch)
    }
}

fn offset(e: KvError, first_token: usize) -> KvError {
    match e {
        KvError::NonFinite {
            token,
            channel,
            value,
        } => KvError::NonFinite {
            token: token + first_token,
            channel,
            value,
        },
        KvError::Overflow { token, magnitude } => KvError::Overflow {
            token: token + first_token,
            magnitude,
        },
        e => e,
    }
}

#[inline(always)]
fn encode_portable<C: GroupCodec>(
    c: &C,
    role: KvRole,
    x: &[f32],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> Result<(), KvError> {
    let d = c.head_dim();
    let g = c.group(role);
    let rl = c.record_len(role);
    for (gi, (xs, o)) in x
        .chunks_exact(g * d)
        .zip(out.chunks_exact_mut(rl))
        .enumerate()
    {
        if let Some(i) = crate::simd::first_non_finite(xs) {
            return Err(KvError::NonFinite {
                token: gi * g + i / d,
                channel: i % d,
                value: xs[i],
            });
        }
        c.encode_group(role, xs, o, scratch)
            .map_err(|e| offset(e, gi * g))?;
    }
    Ok(())
}

#[inline(always)]
fn decode_portable<C: GroupCodec>(
    c: &C,
    role: KvRole,
    bytes: &[u8],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KvError> {
    let d = c.head_dim();
    let g = c.group(role);
    let rl = c.record_len(role);
    for (rec, o) in bytes.chunks_exact(rl).zip(out.chunks_exact_mut(g * d)) {
        c.decode_group(role, rec, o, scratch)?;
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn encode_avx2<C: GroupCodec>(
    c: &C,
    role: KvRole,
    x: &[f32],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> Result<(), KvError> {
    encode_portable(c, role, x, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_avx2<C: GroupCodec>(
    c: &C,
    role: KvRole,
    bytes: &[u8],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KvError> {
    decode_portable(c, role, bytes, out, scratch)
}

impl<C: GroupCodec> KvCodec for Framed<C> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn head_dim(&self) -> usize {
        self.0.head_dim()
    }

    fn token_group(&self, role: KvRole) -> usize {
        self.0.group(role)
    }

    fn bits(&self) -> u32 {
        self.0.bits()
    }

    fn encoded_len(&self, role: KvRole, n_tokens: usize) -> usize {
        n_tokens / self.0.group(role) * self.0.record_len(role)
    }

    fn side_bytes(&self, role: KvRole) -> usize {
        self.0.side_bytes(role)
    }

    fn encode(&self, role: KvRole, x: &[f32]) -> Result<Vec<u8>, KvError> {
        let n = self.tokens(role, x.len())?;
        let d = self.0.head_dim();
        let g = self.0.group(role);
        let rl = self.0.record_len(role);
        let mut out = vec![0u8; n / g * rl];
        let sl = self.0.scratch_len();
        if x.len() >= PAR_MIN_VALUES && rayon::current_num_threads() > 1 {
            let per = (PAR_CHUNK_VALUES / (g * d)).max(1);
            out.par_chunks_mut(per * rl)
                .zip(x.par_chunks(per * g * d))
                .enumerate()
                .try_for_each_init(
                    || Scratch::new(sl),
                    |scr, (ci, (o, xs))| self.encode_chunk(role, xs, o, scr, ci * per * g),
                )?;
        } else {
            let mut scr = Scratch::new(sl);
            self.encode_chunk(role, x, &mut out, &mut scr, 0)?;
        }
        Ok(out)
    }

    fn decode(&self, role: KvRole, bytes: &[u8], out: &mut [f32]) -> Result<(), KvError> {
        let n = self.tokens(role, out.len())?;
        let d = self.0.head_dim();
        let g = self.0.group(role);
        let rl = self.0.record_len(role);
        let expected = n / g * rl;
        if bytes.len() != expected {
            return Err(KvError::EncodedLength {
                codec: self.0.name().to_string(),
                role: role.as_str(),
                tokens: n,
                expected,
                got: bytes.len(),
            });
        }
        let sl = self.0.scratch_len();
        if out.len() >= PAR_MIN_VALUES && rayon::current_num_threads() > 1 {
            let per = (PAR_CHUNK_VALUES / (g * d)).max(1);
            out.par_chunks_mut(per * g * d)
                .zip(bytes.par_chunks(per * rl))
                .try_for_each_init(
                    || Scratch::new(sl),
                    |scr, (o, b)| self.decode_chunk(role, b, o, scr),
                )?;
        } else {
            let mut scr = Scratch::new(sl);
            self.decode_chunk(role, bytes, out, &mut scr)?;
        }
        Ok(())
    }
}
