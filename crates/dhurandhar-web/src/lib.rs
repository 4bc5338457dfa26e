//! The dhurandhar web dashboard: an axum server over the `dhurandhar` facade.
//!
//! Every page (Plan, Devices, KV codecs, Measure, Weights, Run, Compare) is a small HTML
//! page with vanilla JavaScript that calls the JSON API under `/api/…`; the API calls
//! the facade and returns its `Serialize` reports unchanged. Assets are compiled into
//! the binary, so the server needs no Node, no Python and no network.
//!
//! ```no_run
//! # async fn run() -> Result<(), dhurandhar_web::WebError> {
//! let config = dhurandhar_web::Config::default();
//! let server = dhurandhar_web::Server::bind(config).await?;
//! println!("http://{}", server.local_addr());
//! server.run().await
//! # }
//! ```
//!
//! Safety rules the server keeps: it binds to 127.0.0.1 unless told otherwise; files
//! are read only under the allowed roots (canonicalised, so `..` and symlinks cannot
//! leave them); request bodies are capped at [`MAX_BODY_BYTES`]; the mmap profiler and
//! the KV capture each run one job at a time and can be cancelled; a panicking handler answers 500 and the
//! server keeps serving.

mod api;
mod assets;
mod error;
mod jobs;
mod paths;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;

pub use api::{
    API_SCHEMA_VERSION, MAX_COMPARE, MAX_GENERATE_TOKENS, MAX_PROFILE_SCALE, MAX_PROFILE_TOKENS,
    MAX_SWEEP_SAMPLES, MAX_UPLOADS,
};
pub use error::{ApiError, WebError};
pub use jobs::{JobState, JobStatus};
pub use paths::{AllowList, Listed, MAX_LISTED, MAX_LIST_DEPTH};

/// Largest request body accepted (an uploaded model profile, a profiler request):
/// model YAML profiles are a few KiB, so 256 KiB bounds hostile uploads with room.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The port the dashboard listens on when none is given.
pub const DEFAULT_PORT: u16 = 7860;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Directories whose files the API may read; empty means the current directory.
    pub allow_dirs: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            allow_dirs: Vec::new(),
        }
    }
}

impl Config {
    /// A warning to show when the server is reachable from other machines.
    pub fn exposure_warning(&self) -> Option<String> {
        (!self.host.is_loopback()).then(|| {
            format!(
                "warning: listening on {}: anyone who can reach this machine can use the \
                 dashboard and read model files under the allowed directories",
                self.host
            )
        })
    }
}

/// Shared state of the handlers: the allowed roots, uploaded profiles, the profiler job
/// and the loaded generation model. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<api::Inner>,
}

impl AppState {
    /// State over the given allowed roots (canonicalised now; a missing root is an error).
    pub fn new(allow_dirs: &[PathBuf]) -> Result<Self, WebError> {
        Ok(AppState {
            inner: Arc::new(api::Inner::new(AllowList::new(allow_dirs)?)),
        })
    }

    /// The roots file access is confined to.
    pub fn allow(&self) -> &AllowList {
        &self.inner.allow
    }
}

/// Every route of the dashboard (pages, assets and `/api/…`) without the hardening
/// layers; [`harden`] adds them. Most callers want [`router`].
pub fn routes() -> Router<AppState> {
    api::routes().merge(assets::routes())
}

/// The layers every served router gets: a handler panic becomes a 500 JSON error (the
/// server keeps serving) and request bodies over [`MAX_BODY_BYTES`] are refused (413).
pub fn harden(router: Router) -> Router {
    use axum::extract::DefaultBodyLimit;
    use tower_http::catch_panic::CatchPanicLayer;
    // The limit is enforced where a body is read (every body extractor honours it), so
    // the 413 comes back as the API's JSON error.
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(error::panic_response))
}

/// The dashboard's router over `state`, hardened.
pub fn router(state: AppState) -> Router {
    harden(routes().with_state(state))
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
    addr: SocketAddr,
}

impl Server {
    /// Check the allowed roots and bind the socket.
    pub async fn bind(config: Config) -> Result<Self, WebError> {
        let state = AppState::new(&config.allow_dirs)?;
        let addr = SocketAddr::new(config.host, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| WebError::Bind(addr, e))?;
        let addr = listener.local_addr().map_err(|e| WebError::Bind(addr, e))?;
        Ok(Server {
            listener,
            app: router(state),
            addr,
        })
    }

    /// Where the server listens (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until Ctrl-C.
    pub async fn run(self) -> Result<(), WebError> {
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(WebError::Serve)
    }
}

/// Bind and serve `config` until Ctrl-C.
pub async fn serve(config: Config) -> Result<(), WebError> {
    Server::bind(config).await?.run().await
}

/// [`serve`] on its own runtime, for callers without one (the CLI): `ready` gets the
/// bound address before the first request is served.
pub fn serve_blocking(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), WebError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(WebError::Serve)?;
    rt.block_on(async {
        let server = Server::bind(config).await?;
        ready(server.local_addr());
        server.run().await
    })
}
