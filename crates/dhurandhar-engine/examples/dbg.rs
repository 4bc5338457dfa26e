struct Scale(f32);
impl dhurandhar_kv::KvCodec for Scale {
    fn name(&self) -> &str { "scale" }
    fn head_dim(&self) -> usize { 64 }
    fn token_group(&self, _r: dhurandhar_kv::KvRole) -> usize { 1 }
    fn encode(&self, _r: dhurandhar_kv::KvRole, x: &[f32]) -> Result<Vec<u8>, dhurandhar_kv::KvError> {
        Ok(x.iter().flat_map(|v| (v * self.0).to_le_bytes()).collect())
    }
    fn decode(&self, _r: dhurandhar_kv::KvRole, b: &[u8], out: &mut [f32]) -> Result<(), dhurandhar_kv::KvError> {
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) { *o = f32::from_le_bytes(c.try_into().unwrap()); }
        Ok(())
    }
}
fn main() {
    let m = dhurandhar_engine::Model::open(std::path::Path::new(".cache/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let text = std::fs::read_to_string("data/eval/pride-and-prejudice-ch1.txt").unwrap();
    let mut ids = m.tokenizer.encode(&text);
    ids.truncate(128);
    let cs = [1.0 + 1e-6, 1.0 + 1e-4, 1.0 + 1e-2].iter().map(|&s| dhurandhar_engine::CacheCodec::shared(&format!("scale {s}"), std::sync::Arc::new(Scale(s)), 30)).collect();
    let r = dhurandhar_engine::evaluate(&m, &ids, cs, 2, 128, std::env::var_os("Q8").is_none()).unwrap();
    println!("{:?}", r.exact);
    for c in r.codecs { println!("{} kl {} top1 {} ppl {}", c.codec, c.kl_divergence, c.top1_agreement, c.metrics.perplexity); }
}
