use dhurandhar_engine::Logits;
fn main() {
    let m = dhurandhar_engine::Model::open(std::path::Path::new(".cache/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let ids = m.tokenizer.encode("It is a truth universally acknowledged");
    for n in [1usize, 2, 4] {
        let mut s = m.session(1, None).unwrap();
        let l = s.forward(&ids[..n], Logits::All, None).unwrap();
        let v = m.config.vocab_size;
        let last = &l[(n - 1) * v..];
        println!("n={n}: {:?}", &last[..4]);
    }
    let mut s = m.session(1, None).unwrap();
    let mut l = vec![];
    for i in 0..4 { l = s.forward(&ids[i..i+1], Logits::Last, None).unwrap(); }
    println!("seq4: {:?}", &l[..4]);
}
