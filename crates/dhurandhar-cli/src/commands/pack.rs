//! `dhurandhar pack | unpack | verify | pack-stats` (not built yet).

#[derive(Debug, clap::Args)]
pub struct PackArgs {}
#[derive(Debug, clap::Args)]
pub struct UnpackArgs {}
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}
#[derive(Debug, clap::Args)]
pub struct StatsArgs {}

pub fn run_pack(_a: PackArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pack` is not built yet")
}
pub fn run_unpack(_a: UnpackArgs) -> anyhow::Result<()> {
    anyhow::bail!("`unpack` is not built yet")
}
pub fn run_verify(_a: VerifyArgs) -> anyhow::Result<()> {
    anyhow::bail!("`verify` is not built yet")
}
pub fn run_stats(_a: StatsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`pack-stats` is not built yet")
}
