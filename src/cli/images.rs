//! Local store commands: `images`, `inspect`, `tag`, `rmi`, `prune`.

use super::Globals;
use super::args::{ImagesArgs, InspectArgs, PruneArgs, RmiArgs, TagArgs};

pub(super) fn images(_args: ImagesArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("images"))
}

pub(super) fn inspect(_args: InspectArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("inspect"))
}

pub(super) fn tag(_args: TagArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("tag"))
}

pub(super) fn rmi(_args: RmiArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("rmi"))
}

pub(super) fn prune(_args: PruneArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("prune"))
}
