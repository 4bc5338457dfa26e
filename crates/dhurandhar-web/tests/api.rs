//! Every endpoint of the dashboard's API through the hardened router (no socket):
//! answers, validation errors, path confinement, oversized and malformed requests.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get as route_get;
use axum::Router;
use common::*;

#[tokio::test]
async fn health_pages_and_assets() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let h = get(&app, "/api/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["ok"], true);
    for (page, title) in [
        ("plan", "Plan"),
        ("devices", "Devices"),
        ("kv", "KV codecs"),
        ("measure", "Measure"),
        ("weights", "Weights"),
        ("run", "Run"),
        ("compare", "Compare"),
    ] {
        let a = get(&app, &format!("/{page}")).await;
        assert_eq!(a.status, 200, "{page}");
        assert!(a.content_type.starts_with("text/html"), "{page}");
        let html = a.text();
        assert!(html.contains(&format!("<h1>{title}</h1>")), "{page}");
        assert!(html.contains(&format!("/assets/{page}.js")), "{page}");
        let js = get(&app, &format!("/assets/{page}.js")).await;
        assert_eq!(js.status, 200, "{page}.js");
        assert!(js.content_type.starts_with("text/javascript"));
    }
    assert_eq!(get(&app, "/assets/app.js").await.status, 200);
    assert_eq!(get(&app, "/assets/style.css").await.status, 200);
    assert_eq!(get(&app, "/assets/nope.js").await.status, 404);
    let root = get(&app, "/").await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    let missing = get(&app, "/api/nothing/here").await;
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("/api/nothing/here"));
}

#[tokio::test]
async fn catalog_lists_models_devices_codecs_and_limits() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let c = get(&app, "/api/catalog").await.json();
    let models = c["models"].as_array().unwrap();
    assert!(models.iter().any(|m| m["name"] == "gemma4-e2b"));
    assert!(!c["devices"]["devices"].as_array().unwrap().is_empty());
    let codecs = c["codecs"].as_array().unwrap();
    let q8 = codecs.iter().find(|x| x["name"] == "q8_0").unwrap();
    assert_eq!(q8["bits"], serde_json::json!([8]));
    assert_eq!(
        c["limits"]["max_body_bytes"],
        dhurandhar_web::MAX_BODY_BYTES
    );
    assert_eq!(
        c["allow_dirs"][0].as_str().unwrap(),
        t.root.display().to_string()
    );
}

#[tokio::test]
async fn plan_matches_the_facade_and_validates_its_query() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let a = get(
        &app,
        "/api/plan?model=qwen2.5-0.5b&context=32768&devices=low_tier_mobile_emmc",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let direct = dhurandhar::plan::analyze(&dhurandhar::plan::AnalyzeOptions {
        model: "qwen2.5-0.5b".into(),
        context_tokens: 32768,
        devices: vec!["low_tier_mobile_emmc".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(a.json(), serde_json::to_value(&direct).unwrap());

    // Every control moves the report.
    let j = get(
        &app,
        "/api/plan?model=qwen2.5-0.5b&context=4096&weights=q8_0&kv_codec=q4_0&kv_bits=4&strip_vision=true&ram_mb=900&flash_gbps=1.5&devices=laptop_nvme&target_tps=20",
    )
    .await
    .json();
    assert_eq!(j["context_tokens"], 4096);
    assert_eq!(j["weight_format"]["name"], "q8_0");
    assert_eq!(j["kv"]["codec"], "q4_0");
    assert_eq!(j["devices"].as_array().unwrap().len(), 2);
    let flat = get(&app, "/api/plan?kv_codec=none&kv_bits=3.5")
        .await
        .json();
    assert_eq!(flat["kv"]["what_if"], true);
    let plain = get(&app, "/api/plan?weights=4.5").await.json();
    assert_eq!(plain["weight_format"]["bits_per_weight"], 4.5);

    for (q, status, phrase) in [
        ("context=abc", 400, "context"),
        ("context=-5", 400, "context"),
        ("colour=blue", 400, "colour"),
        ("model=qwen9", 400, "unknown model"),
        ("kv_codec=zip", 400, "unknown codec"),
        ("kv_codec=none", 400, "kv_bits"),
        ("kv_codec=q8_0&kv_bits=2.5", 400, "kv_bits"),
        ("ram_mb=100", 400, "flash_gbps"),
        ("weights=int3000", 400, "int3000"),
        ("devices=toaster", 400, "toaster"),
        ("budget_gb=-1", 400, "budget_gb"),
        ("context=0", 400, "context"),
    ] {
        let a = get(&app, &format!("/api/plan?{q}")).await;
        assert_eq!(a.status.as_u16(), status, "{q}: {}", a.text());
        assert!(a.content_type.starts_with("application/json"), "{q}");
        assert!(a.error().contains(phrase), "{q}: {}", a.error());
    }
}

#[tokio::test]
async fn file_access_is_confined_to_the_allowed_roots() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    // Inside: relative and absolute, the profile is planned from the file.
    for spec in [
        "sub/mine.yaml".to_string(),
        t.root.join("sub/mine.yaml").display().to_string(),
    ] {
        let a = get(&app, &format!("/api/plan?model={}", enc(&spec))).await;
        assert_eq!(a.status, 200, "{spec}: {}", a.text());
        assert_eq!(
            a.json()["model_origin"],
            t.root.join("sub/mine.yaml").display().to_string()
        );
    }
    let secret = t.outside.join("secret.yaml").display().to_string();
    let traversals = [
        "../outside/secret.yaml".to_string(),
        "sub/../../outside/secret.yaml".to_string(),
        "./sub/../sub/mine.yaml".to_string(),
        secret.clone(),
        "/etc/passwd".to_string(),
        "escape.yaml".to_string(), // symlink out of the tree
        format!("{}/../outside/secret.yaml", t.root.display()),
    ];
    for spec in &traversals {
        for uri in [
            format!("/api/plan?model={}", enc(spec)),
            format!("/api/inspect?path={}", enc(spec)),
            format!("/api/pack/stats?path={}", enc(spec)),
            format!("/api/plan?devices={}", enc(&format!("{spec}.yaml"))),
        ] {
            let a = get(&app, &uri).await;
            // A device path that does not exist inside the roots may be a 404 instead.
            assert!(
                a.status == 403 || (uri.contains("devices") && a.status == 404),
                "{uri}: {} {}",
                a.status,
                a.text()
            );
            assert!(!a.error().is_empty());
        }
    }
    // The secret's bytes never come back, whatever the spelling.
    let a = get(&app, &format!("/api/inspect?path={}", enc(&secret))).await;
    assert!(a.error().contains("outside the allowed directories"));
    let a = get(&app, "/api/inspect?path=nothing.gguf").await;
    assert_eq!(a.status, 404);
    let a = get(&app, "/api/inspect?path=").await;
    assert_eq!(a.status, 400);
    let a = get(&app, "/api/inspect?path=a%00b").await;
    assert_eq!(a.status, 400);
    let a = get(&app, "/api/inspect").await;
    assert_eq!(a.status, 400, "missing path");
    assert!(a.error().contains("path"));

    // The listing stays inside too.
    let l = get(&app, "/api/files?ext=yaml,dhp").await.json();
    let files: Vec<String> = l["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(files.iter().any(|f| f.ends_with("sub/mine.yaml")));
    assert!(files.iter().any(|f| f.ends_with("tiny.dhp")));
    assert!(files
        .iter()
        .all(|f| f.starts_with(&t.root.display().to_string())));
    assert_eq!(get(&app, "/api/files").await.status, 400);
}

#[tokio::test]
async fn uploads_are_planned_and_bounded() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let yaml = dhurandhar::catalog::model_yaml("qwen2.5-0.5b")
        .unwrap()
        .replace("name: qwen2.5-0.5b", "name: my-upload");
    let a = post(&app, "/api/models", "text/plain", yaml.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(a.json()["name"], "my-upload");
    let p = get(&app, &format!("/api/plan?model={}", enc(&id))).await;
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(p.json()["model"]["name"], "my-upload");
    assert!(p.json()["model_origin"]
        .as_str()
        .unwrap()
        .contains("uploaded"));
    let cat = get(&app, "/api/catalog").await.json();
    assert_eq!(cat["uploads"][0]["id"], id.as_str());
    // An upload is plan-only: other jobs say so.
    let s = get(&app, &format!("/api/kv/sweep?models={}", enc(&id))).await;
    assert_eq!(s.status, 400);
    assert_eq!(get(&app, "/api/plan?model=upload:999").await.status, 404);

    let bad = post(&app, "/api/models", "text/plain", "name: [unclosed").await;
    assert_eq!(bad.status, 400);
    assert!(!bad.error().is_empty());
    let not_a_model = post(&app, "/api/models", "text/plain", "just: text\n").await;
    assert_eq!(not_a_model.status, 400);
    let big = format!("{yaml}\n# {}\n", "x".repeat(dhurandhar_web::MAX_BODY_BYTES));
    let over = post(&app, "/api/models", "text/plain", big).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    let binary = post(&app, "/api/models", "text/plain", vec![0xffu8, 0xfe, 0x00]).await;
    assert_eq!(binary.status, 400);
}

#[tokio::test]
async fn compare_plans_each_configuration() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let c1 = enc("model=qwen2.5-0.5b&context=4096&devices=laptop_nvme");
    let c2 = enc("model=gemma4-e2b&kv_codec=q8_0&kv_bits=8&devices=laptop_nvme");
    let a = get(&app, &format!("/api/compare?c={c1}&c={c2}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    let configs = j["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0]["report"]["model"]["name"], "qwen2.5-0.5b");
    assert_eq!(configs[1]["report"]["kv"]["codec"], "q8_0");
    assert_eq!(get(&app, "/api/compare").await.status, 400);
    let nine = vec![format!("c={c1}"); 9].join("&");
    assert_eq!(get(&app, &format!("/api/compare?{nine}")).await.status, 400);
    let bad = get(&app, &format!("/api/compare?c={c1}&c={}", enc("context=x"))).await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().starts_with("c[1]"), "{}", bad.error());
    let trav = get(&app, &format!("/api/compare?c={}", enc("model=../x.yaml"))).await;
    assert_eq!(trav.status, 403);
    assert_eq!(get(&app, "/api/compare?d=1").await.status, 400);
}

#[tokio::test]
async fn kv_sweep_runs_the_facade_sweep() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let a = get(
        &app,
        "/api/kv/sweep?models=qwen2.5-0.5b&codecs=turbo-mse,q8_0&bits=4,8&samples=64&queries=8&context=4096",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    let points = j["points"].as_array().unwrap();
    // turbo-mse at 4 and 8; q8_0 at 8 only (q8_0 at 4 is listed as skipped).
    assert_eq!(points.len(), 3);
    assert_eq!(j["skipped"].as_array().unwrap().len(), 1);
    let p8 = points.iter().find(|p| p["codec"] == "q8_0").unwrap();
    assert!(p8["nmse"].as_f64().unwrap() < 1e-3);
    let cross = get(
        &app,
        "/api/kv/sweep?models=all&codecs=q4_0&bits=4&samples=32&queries=4",
    )
    .await;
    assert_eq!(cross.status, 200);
    assert_eq!(
        cross.json()["points"].as_array().unwrap().len(),
        dhurandhar::dhurandhar_model::registry::names().len()
    );
    for (q, phrase) in [
        ("codecs=zip", "unknown codec"),
        ("bits=four", "bits"),
        ("samples=100000", "samples"),
        ("distribution=uniformish", "distribution"),
        ("models=nope", "unknown model"),
        ("models=../m.yaml", "`..`"),
    ] {
        let a = get(&app, &format!("/api/kv/sweep?{q}")).await;
        assert!(a.status.is_client_error(), "{q}: {}", a.status);
        assert!(a.error().contains(phrase), "{q}: {}", a.error());
    }
}

#[tokio::test]
async fn pack_stats_and_inspect_read_allowed_files() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    let s = get(&app, "/api/pack/stats?path=tiny.dhp").await;
    assert_eq!(s.status, 200, "{}", s.text());
    let j = s.json();
    assert_eq!(j["tensors"][0]["name"], "w");
    assert_eq!(j["input_bytes"], 64 * 64 * 4);
    let not_pack = get(&app, "/api/pack/stats?path=tiny.safetensors").await;
    assert_eq!(not_pack.status, 400);
    assert!(not_pack.error().contains("tiny.safetensors"));
    let i = get(&app, "/api/inspect?path=tiny.safetensors").await;
    assert_eq!(i.status, 200, "{}", i.text());
    assert_eq!(i.json()["format"], "safetensors");
}

/// Poll `/api/profile` until the job leaves `running`.
async fn wait_profile(app: &Router) -> serde_json::Value {
    for _ in 0..600 {
        let s = get(app, "/api/profile").await.json();
        if s["state"] != "running" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("profiler did not finish within 60 s");
}

#[tokio::test]
async fn profiler_runs_one_at_a_time_streams_and_cancels() {
    let t = tree();
    let app = app(std::slice::from_ref(&t.root));
    assert_eq!(get(&app, "/api/profile").await.json()["state"], "idle");
    // A short run, its events read to the end.
    let body = r#"{"model":"qwen2.5-0.5b","scale":0.01,"num_tokens":200,"warmup_tokens":10,"modes":["warm"],"patterns":["random_decode"]}"#;
    let a = post(&app, "/api/profile", "application/json", body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let ev = get(&app, "/api/profile/events").await;
    assert!(ev.content_type.starts_with("text/event-stream"));
    let text = ev.text();
    assert!(text.contains("event: status"), "{text}");
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap();
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["report"]["results"][0]["pattern"], "random_decode");
    assert_eq!(last["report"]["num_tokens"], 200);
    // The Measure page's histograms: every timed token in a bucket of the report.
    let h = &last["report"]["histograms"][0];
    assert_eq!(h["pattern"], "random_decode");
    assert_eq!(h["mode"], "warm");
    let counted: u64 = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 200);

    // A long run: a second start is refused, cancel stops it.
    let long = r#"{"model":"qwen2.5-0.5b","scale":0.01,"num_tokens":1000000,"modes":["warm"]}"#;
    assert_eq!(
        post(&app, "/api/profile", "application/json", long)
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let again = post(&app, "/api/profile", "application/json", long).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.error().contains("already"));
    let c = post(&app, "/api/profile/cancel", "application/json", "").await;
    assert_eq!(c.json()["cancelled"], true);
    let end = wait_profile(&app).await;
    assert_eq!(end["state"], "cancelled", "{end}");
    let c = post(&app, "/api/profile/cancel", "application/json", "").await;
    assert_eq!(c.json()["cancelled"], false);

    for (body, ctype, status) in [
        ("{not json", "application/json", 400),
        (r#"{"num_tokens":-1}"#, "application/json", 422),
        (r#"{"speed":"max"}"#, "application/json", 422),
        (r#"{"num_tokens":100000000}"#, "application/json", 400),
        (r#"{"patterns":["zigzag"]}"#, "application/json", 400),
        (r#"{"modes":["lukewarm"]}"#, "application/json", 400),
        (r#"{"path":"x.gguf"}"#, "application/json", 400),
        (
            r#"{"path":"../outside/secret.yaml","tensor":"t"}"#,
            "application/json",
            403,
        ),
        (r#"{"target_tps":0}"#, "application/json", 400),
        (r#"{"scale":5}"#, "application/json", 400),
        ("{}", "text/plain", 415),
    ] {
        let a = post(&app, "/api/profile", ctype, body).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.text());
        assert!(!a.error().is_empty(), "{body}");
    }
    let huge = format!(
        r#"{{"model":"{}"}}"#,
        "m".repeat(dhurandhar_web::MAX_BODY_BYTES)
    );
    let a = post(&app, "/api/profile", "application/json", huge).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(&app, "/api/profile").await.json()["state"], "cancelled");
}

#[tokio::test]
async fn generation_streams_tokens_from_the_fixture() {
    let t = tree();
    let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let gguf_dir = gguf.parent().unwrap().canonicalize().unwrap();
    let app = app(&[t.root.clone(), gguf_dir]);
    let path = gguf.canonicalize().unwrap().display().to_string();
    let uri = format!(
        "/api/run?path={}&prompt={}&max_tokens=8&chat=true",
        enc(&path),
        enc("What is the capital of France?")
    );
    let a = get(&app, &uri).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.content_type.starts_with("text/event-stream"));
    let text = a.text();
    let start = text.split("event: start\ndata: ").nth(1).unwrap();
    let start: serde_json::Value = serde_json::from_str(start.lines().next().unwrap()).unwrap();
    assert_eq!(start["weight_store"], "mmap", "{text}");
    assert!(start["prompt_tokens"].as_u64().unwrap() > 0);
    let tokens = text.matches("event: token").count();
    assert!((1..=8).contains(&tokens), "{text}");
    let done = text.split("event: done\ndata: ").nth(1).unwrap();
    let report: serde_json::Value = serde_json::from_str(done.lines().next().unwrap()).unwrap();
    assert_eq!(report["generated_tokens"], tokens);
    // The message went through the GGUF's chat template: the same prompt through the
    // facade gives the same text (greedy).
    assert_eq!(start["chat_format"], "template", "{text}");
    let model = dhurandhar::generate::load_model(&gguf).unwrap();
    let (prompt, _) = dhurandhar::generate::chat_prompt(
        &model,
        &[dhurandhar::generate::ChatMessage::new(
            "user",
            "What is the capital of France?",
        )],
    )
    .unwrap();
    let direct = dhurandhar::generate::Generator::with_model(
        model,
        &dhurandhar::generate::GenerateOptions {
            model: gguf.clone(),
            prompt,
            max_tokens: 8,
            ..Default::default()
        },
    )
    .unwrap()
    .finish()
    .unwrap();
    assert_eq!(report["text"], direct.text);
    // A chat given as messages is the same request.
    let msgs = r#"[{"role": "user", "content": "What is the capital of France?"}]"#;
    let b = get(
        &app,
        &format!(
            "/api/run?path={}&messages={}&max_tokens=8",
            enc(&path),
            enc(msgs)
        ),
    )
    .await;
    let bd = b.text();
    let bdone = bd.split("event: done\ndata: ").nth(1).unwrap();
    let breport: serde_json::Value = serde_json::from_str(bdone.lines().next().unwrap()).unwrap();
    assert_eq!(breport["text"], direct.text);
    let bad = get(
        &app,
        &format!(
            "/api/run?path={}&messages={}",
            enc(&path),
            enc("[{\"role\": 1}]")
        ),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("messages"), "{}", bad.text());

    // Streamed weights under a budget: the same greedy text, and the report says so.
    let a = get(
        &app,
        &format!("{uri}&weights=stream&ram_budget={}", enc("1GiB")),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    let start = text.split("event: start\ndata: ").nth(1).unwrap();
    let start: serde_json::Value = serde_json::from_str(start.lines().next().unwrap()).unwrap();
    assert_eq!(start["weight_store"], "stream", "{text}");
    assert_eq!(start["ram_budget_bytes"], 1u64 << 30, "{text}");
    let done = text.split("event: done\ndata: ").nth(1).unwrap();
    let streamed: serde_json::Value = serde_json::from_str(done.lines().next().unwrap()).unwrap();
    assert_eq!(streamed["text"], report["text"]);
    assert_eq!(streamed["weights"]["mode"], "stream");

    for (q, status) in [
        (format!("path={}&prompt=hi&weights=disk", enc(&path)), 400),
        (
            format!(
                "path={}&prompt=hi&weights=stream&ram_budget=lots",
                enc(&path)
            ),
            400,
        ),
        (
            format!("path={}&prompt=hi&ram_budget=80MiB", enc(&path)),
            400,
        ),
        (
            format!("path={}&prompt=hi&max_tokens=100000", enc(&path)),
            400,
        ),
        (format!("path={}&prompt=hi&temperature=-1", enc(&path)), 400),
        (format!("path={}", enc(&path)), 400),
        ("path=..%2Fx.gguf&prompt=hi".to_string(), 403),
        ("path=tiny.safetensors&prompt=hi".to_string(), 400),
    ] {
        let a = get(&app, &format!("/api/run?{q}")).await;
        assert_eq!(a.status.as_u16(), status, "{q}: {}", a.text());
        assert!(!a.error().is_empty());
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_server_keeps_serving() {
    let t = tree();
    let state = dhurandhar_web::AppState::new(std::slice::from_ref(&t.root)).unwrap();
    let app = dhurandhar_web::harden(
        Router::new()
            .route(
                "/boom",
                route_get(|| async {
                    if true {
                        panic!("handler exploded");
                    }
                    "unreachable"
                }),
            )
            .merge(dhurandhar_web::routes().with_state(state)),
    );
    let a = get(&app, "/boom").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.error().contains("panicked"));
    let b = get(&app, "/api/health").await;
    assert_eq!(b.status, 200);
    // Methods the API does not have are refused, not served.
    let put = send(&app, Request::put("/api/plan").body(Body::empty()).unwrap()).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_exposure_warning_is_for_non_loopback_hosts_only() {
    let mut c = dhurandhar_web::Config::default();
    assert!(c.exposure_warning().is_none());
    c.host = "0.0.0.0".parse().unwrap();
    assert!(c.exposure_warning().unwrap().contains("0.0.0.0"));
    c.host = "::1".parse().unwrap();
    assert!(c.exposure_warning().is_none());
    let missing = dhurandhar_web::AppState::new(&["/no/such/dir".into()]);
    assert!(missing.is_err());
}

#[tokio::test]
async fn kv_compare_runs_the_codecs_on_captured_kv() {
    let t = tree();
    let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    std::fs::write(
        t.root.join("text.txt"),
        "The capital of France is Paris. The capital of Italy is Rome. ".repeat(8),
    )
    .unwrap();
    dhurandhar::kv::capture(
        &dhurandhar::kv::CaptureOptions {
            model: gguf,
            text_file: t.root.join("text.txt"),
            out: t.root.join("kv.safetensors"),
            max_tokens: 64,
            threads: None,
        },
        &dhurandhar::NoProgress,
        &dhurandhar::CancelToken::new(),
    )
    .unwrap();
    let app = app(std::slice::from_ref(&t.root));
    let a = get(
        &app,
        "/api/kv/compare?data=kv.safetensors&codecs=turbo-mse,q8_0&bits=4,8&layers=0,1",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json();
    let rows = j["rows"].as_array().unwrap();
    // turbo-mse at 4 and 8, q8_0 at 8 (its only width).
    assert_eq!(rows.len(), 3, "{j}");
    assert!(rows.iter().all(|r| r["nmse"].as_f64().unwrap() < 0.1));
    assert!(j["config"]["data"]
        .as_str()
        .unwrap()
        .ends_with("kv.safetensors"));
    for (q, status) in [
        ("data=..%2Fkv.safetensors", 403),
        ("data=kv.safetensors&bits=x", 400),
        ("data=kv.safetensors&codecs=zip", 400),
        ("data=tiny.dhp", 400),
        ("codecs=q8_0", 400),
    ] {
        let a = get(&app, &format!("/api/kv/compare?{q}")).await;
        assert_eq!(a.status.as_u16(), status, "{q}: {}", a.text());
        assert!(!a.error().is_empty());
    }
}

/// Poll `/api/kv/capture` until the job leaves `running`.
async fn capture_settled(app: &Router) -> serde_json::Value {
    loop {
        let s = get(app, "/api/kv/capture").await.json();
        if s["state"] != "running" {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kv_capture_from_a_gguf_feeds_the_codec_comparison() {
    let t = tree();
    let Some(gguf) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let gguf_dir = gguf.parent().unwrap().canonicalize().unwrap();
    let app = app(&[t.root.clone(), gguf_dir]);
    let path = gguf.canonicalize().unwrap().display().to_string();
    assert_eq!(get(&app, "/api/kv/capture").await.json()["state"], "idle");
    let text = "The capital of France is Paris. The capital of Italy is Rome. ".repeat(8);
    let body = serde_json::json!({ "path": path, "text": text, "max_tokens": 48, "codecs": "turbo-mse,q8_0", "bits": "4,8", "layers": "0,1" });
    let a = post(
        &app,
        "/api/kv/capture",
        "application/json",
        body.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let s = capture_settled(&app).await;
    assert_eq!(s["state"], "done", "{s}");
    let r = &s["report"];
    assert_eq!(r["capture"]["n_tokens"], 48);
    // The same rows as comparing a capture made by the facade directly.
    std::fs::write(t.root.join("text.txt"), &text).unwrap();
    dhurandhar::kv::capture(
        &dhurandhar::kv::CaptureOptions {
            model: gguf.clone(),
            text_file: t.root.join("text.txt"),
            out: t.root.join("kv.safetensors"),
            max_tokens: 48,
            threads: None,
        },
        &dhurandhar::NoProgress,
        &dhurandhar::CancelToken::new(),
    )
    .unwrap();
    let direct = get(
        &app,
        "/api/kv/compare?data=kv.safetensors&codecs=turbo-mse,q8_0&bits=4,8&layers=0,1",
    )
    .await
    .json();
    assert_eq!(r["compare"]["rows"], direct["rows"], "{r}");
    assert_eq!(r["compare"]["rows"].as_array().unwrap().len(), 3);

    // A long capture: one at a time (a second start is refused), and cancelled.
    let long = serde_json::json!({ "path": path, "text": "word ".repeat(4000) });
    let a = post(
        &app,
        "/api/kv/capture",
        "application/json",
        long.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert_eq!(
        post(
            &app,
            "/api/kv/capture",
            "application/json",
            long.to_string()
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post(&app, "/api/kv/capture/cancel", "application/json", "")
            .await
            .json()["cancelled"],
        true
    );
    let s = capture_settled(&app).await;
    assert_eq!(s["state"], "cancelled", "{s}");

    for (b, status) in [
        (serde_json::json!({ "path": "../x.gguf" }), 403),
        (
            serde_json::json!({ "path": path, "max_tokens": 100000 }),
            400,
        ),
        (serde_json::json!({ "path": path, "max_tokens": 0 }), 400),
        (serde_json::json!({ "path": path, "text": " " }), 400),
        (serde_json::json!({ "path": path, "codecs": "zip" }), 400),
        (serde_json::json!({ "path": path, "bits": "x" }), 400),
        (serde_json::json!({ "path": path, "nope": 1 }), 422),
    ] {
        let a = post(&app, "/api/kv/capture", "application/json", b.to_string()).await;
        assert_eq!(a.status.as_u16(), status, "{b}: {}", a.text());
        assert!(!a.error().is_empty());
    }
    // A file that is not a GGUF fails the job with the reason.
    let a = post(
        &app,
        "/api/kv/capture",
        "application/json",
        r#"{"path":"tiny.safetensors"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let s = capture_settled(&app).await;
    assert_eq!(s["state"], "failed", "{s}");
    assert!(!s["error"].as_str().unwrap().is_empty());
}
