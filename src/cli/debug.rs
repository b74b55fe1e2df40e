//! `rbuild debug ...`.

use super::Globals;
use super::args::DebugCommand;

pub(super) fn run(cmd: DebugCommand, _globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse(_) => Err(super::unsupported("debug parse")),
    }
}
