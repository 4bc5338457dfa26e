//! End-to-end checks on the real SmolLM2-135M fixture (skipped when it is not fetched).

use dhurandhar_engine::{Logits, Model, Sampler};

fn model() -> Option<Model> {
    let p = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)?;
    Some(Model::open(&p).expect("fixture loads"))
}

#[test]
fn config_matches_the_fixture() {
    let Some(m) = model() else { return };
    let c = &m.config;
    assert_eq!(
        (
            c.n_layers,
            c.dim,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.ffn_dim,
            c.vocab_size
        ),
        (30, 576, 9, 3, 64, 1536, 49152)
    );
    assert_eq!(c.rope_base, 100000.0);
    assert!(c.tied_embeddings);
    assert!(!m.tokenizer.add_bos);
}

#[test]
fn tokenizer_matches_reference_ids() {
    let Some(m) = model() else { return };
    let t = &m.tokenizer;
    let ids = t.encode("The capital of France is");
    let strs: Vec<&str> = ids.iter().map(|&i| t.token_str(i).unwrap()).collect();
    assert_eq!(strs, ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
    assert_eq!(t.decode(&ids), "The capital of France is");
}

#[test]
fn greedy_continues_with_paris() {
    let Some(m) = model() else { return };
    let ids = m.tokenizer.encode("The capital of France is");
    let mut s = m.session(1, None).unwrap();
    let mut logits = s.forward(&ids, Logits::Last, None).unwrap();
    let mut sampler = Sampler::greedy();
    let mut out = Vec::new();
    for _ in 0..4 {
        let tok = sampler.sample(&logits);
        out.push(tok);
        logits = s.forward(&[tok], Logits::Last, None).unwrap();
    }
    let text = m.tokenizer.decode(&out);
    assert!(text.trim_start().starts_with("Paris"), "got {text:?}");
}

/// A lossless "codec" with a token group, to check the cache's codec plumbing: groups are
/// encoded as they complete, the partial group stays exact, and nothing else changes.
struct Identity {
    group: usize,
    scale: f32,
}

impl dhurandhar_kv::KvCodec for Identity {
    fn name(&self) -> &str {
        "identity"
    }
    fn head_dim(&self) -> usize {
        64
    }
    fn token_group(&self, _role: dhurandhar_kv::KvRole) -> usize {
        self.group
    }
    fn encode(
        &self,
        _role: dhurandhar_kv::KvRole,
        x: &[f32],
    ) -> Result<Vec<u8>, dhurandhar_kv::KvError> {
        assert_eq!(x.len() % (64 * self.group), 0, "encode got a partial group");
        Ok(x.iter()
            .flat_map(|v| (v * self.scale).to_le_bytes())
            .collect())
    }
    fn decode(
        &self,
        _role: dhurandhar_kv::KvRole,
        b: &[u8],
        out: &mut [f32],
    ) -> Result<(), dhurandhar_kv::KvError> {
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes(c.try_into().unwrap());
        }
        Ok(())
    }
}

fn codec(group: usize, scale: f32, n_layers: usize) -> dhurandhar_engine::CacheCodec {
    dhurandhar_engine::CacheCodec::shared(
        "identity",
        std::sync::Arc::new(Identity { group, scale }),
        n_layers,
    )
}

#[test]
fn lossless_codec_matches_exact_and_lossy_codec_does_not() {
    let Some(m) = model() else { return };
    let ids = m.tokenizer.encode(
        "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    );
    let n = ids.len();
    let exact = dhurandhar_engine::evaluate(&m, &ids, vec![], 1, 7, true).unwrap();
    let report = dhurandhar_engine::evaluate(
        &m,
        &ids,
        vec![codec(1, 1.0, 30), codec(4, 1.0, 30), codec(4, 0.5, 30)],
        2,
        5, // chunks not aligned with the groups
        true,
    )
    .unwrap();
    assert_eq!(
        report.exact, exact.exact,
        "chunking/threads must not change the exact pass"
    );
    for c in &report.codecs[..2] {
        assert!(
            c.kl_divergence < 1e-9,
            "lossless codec changed the output: {c:?}"
        );
        assert_eq!(c.top1_agreement, 1.0);
        assert_eq!(c.bits_per_value, Some(32.0));
    }
    // Halving every stored K/V (complete groups only) must change the predictions.
    assert!(report.codecs[2].kl_divergence > 1e-3);
    assert_eq!(report.tokens, n);
}

#[test]
fn capture_shapes_and_rope() {
    let Some(m) = model() else { return };
    let ids = m.tokenizer.encode("Hello there, general Kenobi.");
    let c = &m.config;
    let mut cap = dhurandhar_engine::Capture::new(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim);
    let mut s = m.session(1, None).unwrap();
    s.forward(&ids[..3], Logits::None, Some(&mut cap)).unwrap();
    s.forward(&ids[3..], Logits::None, Some(&mut cap)).unwrap();
    assert_eq!(cap.n_tokens, ids.len());
    for l in &cap.layers {
        assert_eq!(l.k.len(), ids.len() * 3 * 64);
        assert_eq!(l.k_pre_rope.len(), ids.len() * 3 * 64);
        assert_eq!(l.v.len(), ids.len() * 3 * 64);
        assert_eq!(l.q.len(), ids.len() * 9 * 64);
        // Position 0 is not rotated.
        assert_eq!(l.k[..192], l.k_pre_rope[..192]);
    }
}
