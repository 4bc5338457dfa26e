//! End-to-end in headless Chromium over chromedriver (fantoccini): every page loads
//! with real data, a control change updates its chart and table, the profiler streams
//! progress and is cancelled, a generated token stream appears. Screenshots of each
//! page go to `target/web-e2e/` (git-ignored).
//!
//! Runs when `DHURANDHAR_E2E=1` (set by `scripts/test_web.sh`, which installs Debian's
//! `chromium` and `chromium-driver` first); otherwise it says why it did not run.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_bin(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

async fn start_browser(profile: &Path) -> (Driver, Client) {
    let driver_bin = find_bin(&["chromedriver"]).expect(
        "chromedriver not found: install Debian's chromium-driver (scripts/test_web.sh does)",
    );
    let chromium = find_bin(&["chromium", "chromium-browser"]).expect("chromium not found");
    let port = free_port();
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver");
    let driver = Driver(child);
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1300,1500",
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let mut b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps.clone());
        match b.connect(&url).await {
            Ok(c) => return (driver, c),
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot open a chromedriver session: {e}"),
        }
    }
}

/// Evaluate `expr` in the page.
async fn js(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Wait until `expr` is truthy in the page; its value.
async fn until(c: &Client, what: &str, expr: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = js(c, expr).await;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if start.elapsed() > WAIT {
            let status = js(c, "document.querySelector('#status') && document.querySelector('#status').textContent").await;
            panic!("timed out waiting for {what} ({expr}); page status: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the table cell in row `row` (first column matches) and column `col`.
fn cell_js(table: &str, row: &str, col: usize) -> String {
    format!(
        "(() => {{ const r = [...document.querySelectorAll('{table} tbody tr')].find(tr => tr.cells[0].textContent === '{row}'); return r ? r.cells[{col}].textContent : null; }})()"
    )
}

async fn set_input(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    // Let the last paint settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_a_real_browser() {
    if std::env::var("DHURANDHAR_E2E").as_deref() != Ok("1") {
        eprintln!(
            "skipping the browser test: set DHURANDHAR_E2E=1 (scripts/test_web.sh installs \
             chromium and chromium-driver and runs it)"
        );
        return;
    }
    let gguf = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF)
        .expect("the browser test needs the SmolLM2 fixture");
    let t = common::tree();
    // A real pack for the Weights page when the MiniLM fixture is there.
    if let Some(st) = dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS) {
        dhurandhar::pack::pack(
            &dhurandhar::pack::PackOptions {
                input: st,
                output: t.root.join("minilm-quant.dhp"),
                mode: dhurandhar::pack::PackMode::QuantResidual,
                ..Default::default()
            },
            &dhurandhar::NoProgress,
            &dhurandhar::CancelToken::new(),
        )
        .unwrap();
    }
    // Real KV for the KV page's captured-data section.
    std::fs::write(
        t.root.join("text.txt"),
        "The capital of France is Paris. The capital of Italy is Rome. ".repeat(8),
    )
    .unwrap();
    dhurandhar::kv::capture(
        &dhurandhar::kv::CaptureOptions {
            model: gguf.clone(),
            text_file: t.root.join("text.txt"),
            out: t.root.join("kv-capture.safetensors"),
            max_tokens: 64,
            threads: None,
        },
        &dhurandhar::NoProgress,
        &dhurandhar::CancelToken::new(),
    )
    .unwrap();
    let gguf_dir = gguf.parent().unwrap().canonicalize().unwrap();
    let gguf = gguf.canonicalize().unwrap();
    // The probed host lives in this cache: empty until the Run page's second turn, so the
    // first turn shows why there is no prediction and the second the prediction.
    let cache = t.root.join("cache");
    std::env::set_var("DHURANDHAR_CACHE", &cache);
    let server = dhurandhar_web::Server::bind(dhurandhar_web::Config {
        port: 0,
        allow_dirs: vec![t.root.clone(), gguf_dir],
        ..Default::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run());

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/web-e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let (_driver, c) = start_browser(&t.dir.path().join("chromium-profile")).await;

    // ---------------------------------------------------------------- Plan
    c.goto(&format!("{base}/plan")).await.unwrap();
    until(
        &c,
        "the plan chart",
        "document.querySelector('#chart svg rect[data-segment=kv_cache]')",
    )
    .await;
    let kv_cell = cell_js("#components", "kv_cache", 1);
    let kv_before = until(&c, "the kv_cache row", &kv_cell).await;
    let width_before = js(
        &c,
        "+document.querySelector('#chart svg rect[data-segment=kv_cache]').getAttribute('width')",
    )
    .await;
    set_input(&c, "[data-k=context]", "131072").await;
    let kv_after = until(
        &c,
        "the kv_cache row to change",
        &format!("(() => {{ const v = {kv_cell}; return v !== {kv_before} ? v : null; }})()"),
    )
    .await;
    let width_after = js(
        &c,
        "+document.querySelector('#chart svg rect[data-segment=kv_cache]').getAttribute('width')",
    )
    .await;
    assert!(
        width_after.as_f64().unwrap() > width_before.as_f64().unwrap(),
        "kv_cache bar {width_before} -> {width_after} ({kv_before} -> {kv_after})"
    );
    assert!(js(&c, "location.search")
        .await
        .as_str()
        .unwrap()
        .contains("context=131072"));
    let budget = js(
        &c,
        "document.querySelector('[data-budget]').getAttribute('data-budget')",
    )
    .await;
    set_input(&c, "#budget", "2").await;
    until(
        &c,
        "the budget line to move",
        &format!(
            "document.querySelector('[data-budget]').getAttribute('data-budget') !== {budget}"
        ),
    )
    .await;
    set_input(&c, "#budget", "1.5").await;
    set_input(&c, "[data-k=context]", "32768").await;
    until(
        &c,
        "the plan at 32k",
        &format!("({kv_cell}) === {kv_before}"),
    )
    .await;
    shot(&c, &shots, "plan").await;

    // ---------------------------------------------------------------- Devices
    c.goto(&format!("{base}/devices")).await.unwrap();
    let rows = "document.querySelectorAll('#devices tbody tr').length";
    let n = until(&c, "the device table", rows).await.as_u64().unwrap();
    assert!(n >= 5, "{n} devices");
    assert!(
        js(&c, "document.querySelectorAll('#devices .mode').length")
            .await
            .as_u64()
            .unwrap()
            >= 5
    );
    assert!(
        js(&c, "document.querySelectorAll('#chart svg rect').length")
            .await
            .as_u64()
            .unwrap()
            >= n
    );
    set_input(&c, "#ram", "900").await;
    set_input(&c, "#flash", "1.5").await;
    until(
        &c,
        "the custom device row",
        &format!("{rows} === {}", n + 1),
    )
    .await;
    until(
        &c,
        "the custom device bar",
        &format!(
            "document.querySelectorAll('#chart svg rect').length >= {}",
            n + 1
        ),
    )
    .await;
    shot(&c, &shots, "devices").await;

    // ---------------------------------------------------------------- KV codecs
    c.goto(&format!("{base}/kv")).await.unwrap();
    let points = "document.querySelectorAll('#points tbody tr').length";
    let before = until(&c, "the sweep table", points).await.as_u64().unwrap();
    assert!(
        js(&c, "document.querySelectorAll('#chart svg circle').length")
            .await
            .as_u64()
            .unwrap()
            == before
    );
    c.find(Locator::Css("input[name=codec][value=kivi2]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the sweep without kivi2",
        &format!("{points} > 0 && {points} < {before}"),
    )
    .await;
    until(
        &c,
        "the chart without kivi2",
        &format!("document.querySelectorAll('#chart svg circle').length === {points}"),
    )
    .await;
    assert!(
        js(&c, "document.querySelectorAll('#mem svg rect').length")
            .await
            .as_u64()
            .unwrap()
            > 0
    );
    c.find(Locator::Css("#cross"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the cross-model table",
        "document.querySelectorAll('#xtable tbody tr').length >= 13",
    )
    .await;
    set_input(&c, "#cappath", "kv-capture.safetensors").await;
    c.find(Locator::Css("#capgo"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the captured-KV table",
        "document.querySelectorAll('#captable tbody tr').length > 0",
    )
    .await;
    assert!(
        js(
            &c,
            "document.querySelectorAll('#capchart svg circle').length"
        )
        .await
        .as_u64()
        .unwrap()
            > 0
    );
    // Capture KV from the GGUF on the server, then the same comparison on it.
    js(
        &c,
        "(document.querySelector('#captable').replaceChildren(), true)",
    )
    .await;
    set_input(&c, "#capmodelpath", &gguf.display().to_string()).await;
    set_input(&c, "#captokens", "64").await;
    c.find(Locator::Css("#capstart"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the finished capture",
        "document.querySelector('#capphase').textContent.startsWith('done')",
    )
    .await;
    until(
        &c,
        "the table on the new capture",
        "document.querySelectorAll('#captable tbody tr').length > 0",
    )
    .await;
    let status = js(&c, "document.querySelector('#status').textContent").await;
    assert!(
        status.as_str().unwrap().starts_with("captured 64 tokens"),
        "{status}"
    );
    shot(&c, &shots, "kv").await;

    // ---------------------------------------------------------------- Measure
    c.goto(&format!("{base}/measure")).await.unwrap();
    until(
        &c,
        "the measure controls",
        "document.querySelectorAll('input[name=pattern]').length",
    )
    .await;
    set_input(&c, "#tokens", "1000000").await;
    c.find(Locator::Css("#start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Progress streams in: the bar advances while the run goes on.
    // Cancel as soon as the first progress arrives: a million tokens per pattern and
    // mode take seconds even on a fast machine, while the click takes milliseconds.
    // (Waiting for a second tick first let a quiet CI runner finish the whole job.)
    until(&c, "streamed progress", "document.querySelector('#bar').value > 0 && document.querySelector('#phase').textContent.startsWith('running')").await;
    c.find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the cancelled state",
        "document.querySelector('#phase').textContent.startsWith('cancelled')",
    )
    .await;
    set_input(&c, "#tokens", "3000").await;
    c.find(Locator::Css("#start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the finished run",
        "document.querySelector('#phase').textContent.startsWith('done')",
    )
    .await;
    until(
        &c,
        "the results table",
        "document.querySelectorAll('#results tbody tr').length >= 1",
    )
    .await;
    assert!(
        js(&c, "document.querySelectorAll('#chart svg rect').length")
            .await
            .as_u64()
            .unwrap()
            >= 1
    );
    // The latency histograms: one panel of bars per run, and their table.
    assert!(
        js(
            &c,
            "document.querySelectorAll('#hist svg rect[data-count]').length"
        )
        .await
        .as_u64()
        .unwrap()
            >= 2
    );
    assert!(
        js(
            &c,
            "document.querySelectorAll('#hist-table tbody tr').length"
        )
        .await
        .as_u64()
        .unwrap()
            >= 1
    );
    shot(&c, &shots, "measure").await;

    // ---------------------------------------------------------------- Weights
    c.goto(&format!("{base}/weights")).await.unwrap();
    until(
        &c,
        "the tensor table",
        "document.querySelectorAll('#tensors tbody tr').length",
    )
    .await;
    assert!(
        js(&c, "document.querySelectorAll('#chart svg rect').length")
            .await
            .as_u64()
            .unwrap()
            >= 1
    );
    shot(&c, &shots, "weights").await;

    // ---------------------------------------------------------------- Run
    c.goto(&format!("{base}/run")).await.unwrap();
    until(
        &c,
        "the model list",
        "document.querySelectorAll('#file option').length > 1",
    )
    .await;
    set_input(&c, "#path", &gguf.display().to_string()).await;
    set_input(&c, "#max", "24").await;
    c.find(Locator::Css("#go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the first streamed token",
        "document.querySelector('#out').textContent.length > 0",
    )
    .await;
    until(
        &c,
        "the end of the stream",
        "document.querySelector('#status').textContent.startsWith('done')",
    )
    .await;
    let n = js(&c, "+document.querySelector('#n').textContent")
        .await
        .as_u64()
        .unwrap();
    assert!((1..=24).contains(&n), "{n} tokens");
    assert!(
        js(&c, "document.querySelectorAll('#chart svg circle').length")
            .await
            .as_u64()
            .unwrap()
            >= 1
            || n == 1
    );
    assert_eq!(
        js(&c, "document.querySelector('#store').textContent").await,
        "mmap"
    );
    // The mapped file was just read through: its pages are in the page cache.
    let hit = js(&c, "document.querySelector('#hit').textContent").await;
    let hit: f64 = hit.as_str().unwrap().trim_end_matches('%').parse().unwrap();
    assert!((50.0..=100.0).contains(&hit), "{hit}");
    // The chat went through SmolLM2's own template (ChatML, from the GGUF).
    assert_eq!(
        js(&c, "document.querySelector('#format').textContent").await,
        "the model's chat template"
    );
    let note = js(&c, "document.querySelector('#predicted-note').textContent").await;
    let note = note.as_str().unwrap();
    assert!(
        note.starts_with("no prediction:") && note.contains("probe"),
        "{note}"
    );
    // Probe the host (quickly) into the cache: the next turn is predicted.
    dhurandhar::probe::probe(
        &dhurandhar::probe::ProbeOptions {
            scratch_dir: Some(t.root.clone()),
            ..dhurandhar::probe::ProbeOptions::quick()
        },
        &dhurandhar::NoProgress,
        &dhurandhar::CancelToken::new(),
    )
    .unwrap();
    const PROMPT_TOKENS: &str = "(() => { const h = Array.from(document.querySelectorAll('#report th')).map(t => t.textContent); return +document.querySelectorAll('#report td')[h.indexOf('prompt_tokens')].textContent; })()";
    let prompt1 = js(&c, PROMPT_TOKENS).await.as_f64().unwrap();
    // A second turn: the transcript keeps the first exchange and appends the new one,
    // and this time the weights stream from the file (the smallest pool: no budget).
    assert_eq!(
        js(&c, "document.querySelector('#budget').disabled").await,
        true
    );
    js(
        &c,
        "(() => { const s = document.querySelector('#weights'); s.value = 'stream'; s.dispatchEvent(new Event('change')); })()",
    )
    .await;
    assert_eq!(
        js(&c, "document.querySelector('#budget').disabled").await,
        false
    );
    set_input(&c, "#prompt", "And of Italy?").await;
    js(&c, "document.querySelector('#status').textContent = ''").await;
    c.find(Locator::Css("#go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the second reply",
        "document.querySelector('#status').textContent.startsWith('done')",
    )
    .await;
    let turns = js(
        &c,
        "Array.from(document.querySelectorAll('#transcript .turn')).map(d => d.className.split('-')[1] + ':' + d.textContent)",
    )
    .await;
    let turns: Vec<String> = serde_json::from_value(turns).unwrap();
    assert_eq!(turns.len(), 4, "{turns:?}");
    assert!(turns[0].starts_with("user:") && turns[0].contains("capital of France"));
    assert!(turns[1].starts_with("assistant:"));
    assert!(turns[2].starts_with("user:") && turns[2].contains("Italy"));
    assert!(turns[3].starts_with("assistant:"));
    // The second prompt carried the first exchange: more prompt tokens than the first.
    let prompt2 = js(&c, PROMPT_TOKENS).await.as_f64().unwrap();
    assert!(prompt2 > prompt1, "{prompt2} <= {prompt1}");
    let store = js(&c, "document.querySelector('#store').textContent").await;
    let store = store.as_str().unwrap();
    assert!(
        store.starts_with("stream: ") && store.contains("read per token"),
        "{store}"
    );
    // The smallest pool pins nothing: every pass reads every layer from the file.
    assert_eq!(
        js(&c, "document.querySelector('#hit').textContent").await,
        "0.0%"
    );
    // The planner's prediction for this streamed turn on the probed host, beside it.
    let note = js(&c, "document.querySelector('#predicted-note').textContent").await;
    assert!(
        note.as_str().unwrap().starts_with("host probed")
            && note.as_str().unwrap().contains("weights stream"),
        "{note}"
    );
    let rows = js(
        &c,
        "Array.from(document.querySelectorAll('#predicted tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))",
    )
    .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    eprintln!("Run page, planner vs measured: {note} {rows:?}");
    let decode = rows
        .iter()
        .find(|r| r[0] == "decode tokens/s")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        decode[1].parse::<f64>().unwrap() > 0.0 && decode[2].parse::<f64>().unwrap() > 0.0,
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r[0] == "flash bytes per token"),
        "{rows:?}"
    );
    shot(&c, &shots, "run").await;

    // ---------------------------------------------------------------- Compare
    c.goto(&format!("{base}/compare")).await.unwrap();
    let cols = "document.querySelectorAll('#table thead th').length";
    until(&c, "two configurations", &format!("{cols} === 3")).await;
    c.find(Locator::Css("#add"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "three configurations", &format!("{cols} === 4")).await;
    let url = js(&c, "location.href").await.as_str().unwrap().to_string();
    assert_eq!(url.matches("c=").count(), 3, "{url}");
    // The URL alone restores the comparison.
    c.goto(&url).await.unwrap();
    until(&c, "the shared comparison", &format!("{cols} === 4")).await;
    assert_eq!(
        js(
            &c,
            "document.querySelectorAll('#chart svg text').length > 0"
        )
        .await,
        true
    );
    shot(&c, &shots, "compare").await;

    // Every page has its download links.
    for page in ["plan", "devices", "kv", "compare"] {
        c.goto(&format!("{base}/{page}")).await.unwrap();
        until(
            &c,
            &format!("{page} downloads"),
            "document.querySelectorAll('.downloads a[download]').length >= 2",
        )
        .await;
    }
    c.close().await.unwrap();
    eprintln!("screenshots in {}", shots.display());
}
