//! `dhurandhar kv capture` (not built yet).

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`kv capture` is not built yet")
}
