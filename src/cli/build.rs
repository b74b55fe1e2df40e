//! `rbuild build`.

use super::Globals;
use super::args::BuildArgs;

pub(super) fn run(_args: BuildArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("build"))
}
