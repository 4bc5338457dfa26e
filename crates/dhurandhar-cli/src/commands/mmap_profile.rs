//! `dhurandhar mmap-profile` (not built yet).

/// Not built yet.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mmap-profile` is not built yet")
}
