//! `dhurandhar serve`: the local web dashboard (all of it lives in `dhurandhar-web`).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = dhurandhar_web::DEFAULT_PORT)]
    pub port: u16,

    /// Address to bind. Anything but a loopback address exposes the dashboard (and the
    /// model files under --allow-dir) to the network; a warning is printed.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Open the dashboard in the default browser once the server listens.
    #[arg(long)]
    pub open: bool,

    /// A directory whose files the dashboard may read (models, packs); repeatable.
    /// Default: the current directory. Paths outside (also through symlinks) are refused.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub allow_dirs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = dhurandhar_web::Config {
        host: args.host,
        port: args.port,
        allow_dirs: args.allow_dirs,
    };
    if let Some(w) = config.exposure_warning() {
        eprintln!("{w}");
    }
    let open = args.open;
    dhurandhar_web::serve_blocking(config, |addr| {
        let url = format!("http://{addr}/");
        println!("dhurandhar dashboard: {url}  (Ctrl-C stops it)");
        if open {
            if let Err(e) = std::process::Command::new("xdg-open").arg(&url).spawn() {
                eprintln!("cannot open a browser ({e}); open {url} yourself");
            }
        }
    })
    .context("dhurandhar serve")
}
