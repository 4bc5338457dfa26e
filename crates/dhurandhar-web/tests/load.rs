//! Loopback load test of the Plan API on a real socket: up to 20,000 requests from 64
//! keep-alive connections, stopped after 30 s whatever the count. Every answer must be
//! a 200 with the plan document; prints the latency percentiles and the process RSS
//! before and after (asserted roughly flat with a generous bound; no timing asserts).

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 64;
const TIME_LIMIT: Duration = Duration::from_secs(30);
/// RSS may grow this much over the run (allocator caches, thread stacks of the
/// blocking pool); a leak of a few KiB per request over 20,000 requests would pass it
/// only if tiny, while anything that keeps reports alive would not.
const RSS_GROWTH_LIMIT: u64 = 256 << 20;

/// One keep-alive connection speaking just enough HTTP/1.1 for JSON answers.
struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        Conn {
            r: BufReader::new(r),
            w,
        }
    }

    /// GET `path`: the status and the body.
    async fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.w.write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = None;
        loop {
            line.clear();
            self.r.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.ok_or_else(|| std::io::Error::other("no content-length"))?;
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_api_under_load_answers_everything() {
    let t = common::tree();
    let server = dhurandhar_web::Server::bind(dhurandhar_web::Config {
        port: 0,
        allow_dirs: vec![t.root.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run());

    // Warm up (the blocking pool's threads, allocator arenas) before the first reading.
    let mut c = Conn::open(addr).await;
    for i in 0..200 {
        let (s, _) = c
            .get(&format!(
                "/api/plan?model=qwen2.5-0.5b&context={}",
                1024 + i
            ))
            .await
            .unwrap();
        assert_eq!(s, 200);
    }
    let rss_before = common::rss_bytes();

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= REQUESTS || start.elapsed() > TIME_LIMIT {
                    break;
                }
                // Contexts and models vary so no answer is a copy of the last.
                let model = ["qwen2.5-0.5b", "gemma4-e2b", "zaya1-8b"][i % 3];
                let path = format!("/api/plan?model={model}&context={}", 512 + (i % 64) * 512);
                let t0 = Instant::now();
                match conn.get(&path).await {
                    Ok((200, body)) if body.starts_with(b"{\"schema_version\":") => {
                        lat.push(t0.elapsed())
                    }
                    Ok((s, body)) => errors.push(format!(
                        "{path}: {s} {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )),
                    Err(e) => {
                        errors.push(format!("{path}: {e}"));
                        conn = Conn::open(addr).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let wall = start.elapsed();
    let rss_after = common::rss_bytes();
    lat.sort();
    let n = lat.len();
    println!(
        "load: {n} Plan requests ({} errors) at {CONCURRENCY} concurrent in {:.2} s = {:.0} req/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; RSS before {} MiB, after {} MiB",
        errors.len(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat[n - 1].as_secs_f64() * 1e3,
        rss_before.unwrap_or(0) >> 20,
        rss_after.unwrap_or(0) >> 20,
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(n > 0);
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        assert!(
            a < b + RSS_GROWTH_LIMIT,
            "RSS grew from {} MiB to {} MiB",
            b >> 20,
            a >> 20
        );
    }
}
