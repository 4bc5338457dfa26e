//! `dhurandhar generate` (not built yet).

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`generate` is not built yet")
}
