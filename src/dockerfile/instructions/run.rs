//! `RUN --network` and `--security` values, validated as BuildKit's `commands_runnetwork.go` and
//! `commands_runsecurity.go` do.

use serde::Serialize;

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The builder's default (host networking for rbuild).
    Default,
    /// No network at all.
    None,
    /// The host's network.
    Host,
}

impl NetworkMode {
    pub(crate) fn parse(value: &str) -> Result<NetworkMode, String> {
        match value {
            "default" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(format!("unsupported network mode {value:?}")),
        }
    }
}

/// `--security` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Normal confinement.
    Sandbox,
    /// Extra privileges (needs the `security.insecure` entitlement).
    Insecure,
}

impl SecurityMode {
    pub(crate) fn parse(value: &str) -> Result<SecurityMode, String> {
        match value {
            "sandbox" => Ok(SecurityMode::Sandbox),
            "insecure" => Ok(SecurityMode::Insecure),
            _ => Err(format!("unsupported security mode {value:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_security() {
        assert_eq!(NetworkMode::parse("none").unwrap(), NetworkMode::None);
        assert_eq!(
            NetworkMode::parse("bridge").unwrap_err(),
            "unsupported network mode \"bridge\""
        );
        assert_eq!(
            SecurityMode::parse("insecure").unwrap(),
            SecurityMode::Insecure
        );
        assert!(SecurityMode::parse("x").is_err());
    }
}
