//! Registry commands: `push`, `pull`, `login`, `logout`.

use super::Globals;
use super::args::{LoginArgs, LogoutArgs, PullArgs, PushArgs};

pub(super) fn push(_args: PushArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("push"))
}

pub(super) fn pull(_args: PullArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("pull"))
}

pub(super) fn login(_args: LoginArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("login"))
}

pub(super) fn logout(_args: LogoutArgs, _globals: &Globals) -> anyhow::Result<()> {
    Err(super::unsupported("logout"))
}
