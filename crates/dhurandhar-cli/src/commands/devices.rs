//! `dhurandhar devices` (not built yet).

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`devices` is not built yet")
}
