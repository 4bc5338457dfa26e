//! The pages and their scripts, compiled into the binary (no files are read at run
//! time, nothing is fetched from the network).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// `(page path, title, body HTML)`: every page shares one shell.
pub const PAGES: &[(&str, &str, &str)] = &[
    ("plan", "Plan", include_str!("../assets/plan.html")),
    ("devices", "Devices", include_str!("../assets/devices.html")),
    ("kv", "KV codecs", include_str!("../assets/kv.html")),
    ("measure", "Measure", include_str!("../assets/measure.html")),
    ("weights", "Weights", include_str!("../assets/weights.html")),
    ("run", "Run", include_str!("../assets/run.html")),
    ("compare", "Compare", include_str!("../assets/compare.html")),
];

const SHELL: &str = include_str!("../assets/shell.html");

/// `(file name, content type, content)` under `/assets/`.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../assets/app.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
    ("plan.js", JS, include_str!("../assets/plan.js")),
    ("devices.js", JS, include_str!("../assets/devices.js")),
    ("kv.js", JS, include_str!("../assets/kv.js")),
    ("measure.js", JS, include_str!("../assets/measure.js")),
    ("weights.js", JS, include_str!("../assets/weights.js")),
    ("run.js", JS, include_str!("../assets/run.js")),
    ("compare.js", JS, include_str!("../assets/compare.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

pub(crate) fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/", get(|| async { Redirect::to("/plan") }))
        .route("/assets/{name}", get(asset));
    for &(path, title, body) in PAGES {
        let html = SHELL
            .replace("{{TITLE}}", title)
            .replace("{{PAGE}}", path)
            .replace("{{BODY}}", body);
        r = r.route(
            &format!("/{path}"),
            get(move || {
                let html = html.clone();
                async move { page(html) }
            }),
        );
    }
    r
}

fn page(html: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Pages run only their own scripts and talk only to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'",
            ),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some(&(_, ty, body)) => ([(header::CONTENT_TYPE, ty)], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
