//! Helpers shared by the API, load and browser tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

/// A directory tree for the allow-list tests: `root/` is allowed and holds a model
/// profile, a tiny safetensors file and its `.dhp` pack; `outside/secret.yaml` is not
/// allowed, and `root/escape.yaml` is a symlink to it.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub outside: PathBuf,
}

/// A float32 safetensors file of one 64×64 tensor (values from a fixed formula).
pub fn write_safetensors(path: &Path) {
    let n = 64 * 64;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[64,64],"data_offsets":[0,{}]}}}}"#,
        n * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for i in 0..n {
        bytes.extend_from_slice(&(((i * 37) % 101) as f32 / 50.0 - 1.0).to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

pub fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let yaml = dhurandhar::catalog::model_yaml("qwen2.5-0.5b").unwrap();
    std::fs::write(root.join("sub/mine.yaml"), &yaml).unwrap();
    std::fs::write(outside.join("secret.yaml"), &yaml).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.yaml"), root.join("escape.yaml")).unwrap();
    write_safetensors(&root.join("tiny.safetensors"));
    dhurandhar::pack::pack(
        &dhurandhar::pack::PackOptions {
            input: root.join("tiny.safetensors"),
            output: root.join("tiny.dhp"),
            ..Default::default()
        },
        &dhurandhar::NoProgress,
        &dhurandhar::CancelToken::new(),
    )
    .unwrap();
    // The profiler's synthetic tables go to one throwaway cache for the whole process
    // (tests run in parallel; the variable is process-wide).
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    std::env::set_var("DHURANDHAR_CACHE", cache.path());
    let root = root.canonicalize().unwrap();
    let outside = outside.canonicalize().unwrap();
    Tree { dir, root, outside }
}

/// The hardened router over `roots`.
pub fn app(roots: &[PathBuf]) -> Router {
    dhurandhar_web::router(dhurandhar_web::AppState::new(roots).unwrap())
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error` of a 4xx/5xx JSON answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {}", self.text()))
            .to_string()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

pub async fn post(app: &Router, uri: &str, content_type: &str, body: impl Into<Body>) -> Answer {
    send(
        app,
        Request::post(uri)
            .header("content-type", content_type)
            .body(body.into())
            .unwrap(),
    )
    .await
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resident set of this process in bytes (Linux), `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    dhurandhar::dhurandhar_profile::MemorySnapshot::current().rss_bytes
}
