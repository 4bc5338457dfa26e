struct Instant(f64);
impl Instant {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Instant(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(Instant::now().0 - self.0)
    }
}
use dhurandhar_pack::{cast_f32_bytes, huffman, Checkpoint, DType};
fn main() {
    let cp = Checkpoint::open(
        &dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS).unwrap(),
    )
    .unwrap();
    let mut f = Vec::new();
    for t in cp.tensors().iter().filter(|t| t.dtype == DType::F32) {
        f.extend_from_slice(cp.data(t));
    }
    let b = cast_f32_bytes(&f, DType::BF16);
    let n = b.len() / 2;
    let exp: Vec<u8> = b
        .chunks_exact(2)
        .map(|c| (u16::from_le_bytes([c[0], c[1]]).rotate_left(1) >> 8) as u8)
        .collect();
    let plane = &exp[..1 << 19];
    let h = huffman::histogram(plane);
    let lens = huffman::code_lengths(&h);
    let mut enc = Vec::new();
    huffman::encode(plane, &lens, &mut enc);
    let mut out = vec![0u8; plane.len()];
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        huffman::decode(&enc, &mut out).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "huffman decode {:.2} GB/s of symbols; enc {:.3} bits/sym",
        (plane.len() * reps) as f64 / s / 1e9,
        enc.len() as f64 * 8.0 / plane.len() as f64
    );
    let t = Instant::now();
    for _ in 0..20 {
        let mut e = Vec::new();
        huffman::encode(plane, &lens, &mut e);
    }
    println!(
        "huffman encode {:.2} GB/s",
        (plane.len() * 20) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    let _ = n;
    let blobs = dhurandhar_pack::compress_lossless(&b, DType::BF16, 1 << 20);
    let mut o = vec![0u8; b.len()];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let t = Instant::now();
        for _ in 0..5 {
            dhurandhar_pack::decompress_lossless(&blobs, DType::BF16, 1 << 20, &mut o).unwrap();
        }
        println!(
            "bf16 full decode {:.2} GB/s (cpu time, 1 thread)",
            (b.len() * 5) as f64 / t.elapsed().as_secs_f64() / 1e9
        );
    });
}
#[allow(dead_code)]
fn full() {}
