//! `cargo run --release -p dhurandhar-engine --example bench -- MODEL.gguf [PROMPT] [DECODE] [THREADS]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let path = a
        .get(1)
        .ok_or("usage: bench MODEL.gguf [PROMPT] [DECODE] [THREADS]")?;
    let n: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let d: usize = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let th: usize = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let m = dhurandhar_engine::Model::open(std::path::Path::new(path))?;
    let p = dhurandhar_engine::bench::synthetic_prompt(&m, n);
    let r = dhurandhar_engine::bench::bench(&m, &p, d, th, 2)?;
    println!("{r:?}");
    Ok(())
}
