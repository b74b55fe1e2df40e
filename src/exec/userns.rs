//! User-namespace id maps: which host ids the container's ids become, and writing the maps.
//!
//! Policy: a non-root user gets container 0 → own id and 1..N → every subordinate range from
//! `/etc/subuid`/`/etc/subgid` (written by the setuid `newuidmap`/`newgidmap`); without ranges,
//! a single-id map (chown to other ids then fails, and we say so once). Host root never runs
//! steps as real root: container 0..65536 maps onto root's own subordinate range when it has one,
//! else onto [`ROOT_FALLBACK_BASE`].

use std::path::Path;
use std::process::Command;
use std::sync::Once;

use serde::{Deserialize, Serialize};

/// First host id of the range used for container ids when rbuild runs as host root and root
/// has no `/etc/subuid` entry. High enough to collide with no real account.
pub const ROOT_FALLBACK_BASE: u32 = 1_000_000_000;
/// Size of the range mapped for host root.
pub const ROOT_RANGE_SIZE: u32 = 65_536;

/// One `container host count` line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub container: u32,
    /// First id outside.
    pub host: u32,
    /// Number of ids.
    pub count: u32,
}

/// How the maps get written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapWriter {
    /// Written straight to `/proc/PID/{uid,gid}_map` (host root, or the single-id map).
    Direct,
    /// Through the setuid helpers `newuidmap` / `newgidmap`.
    NewIdMap,
}

/// The full id mapping of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// uid_map lines.
    pub uids: Vec<IdRange>,
    /// gid_map lines.
    pub gids: Vec<IdRange>,
    /// How they are written.
    pub writer: MapWriter,
}

impl IdMapping {
    /// The mapping for the current process, read from `/etc/subuid` and `/etc/subgid`.
    pub fn current() -> IdMapping {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let name = user_name(uid);
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
        let sub_u = parse_subid(&subuid, name.as_deref(), uid);
        let sub_g = parse_subid(&subgid, name.as_deref(), uid);
        let mapping = compute(uid, gid, &sub_u, &sub_g);
        if mapping.uids.len() == 1 && mapping.uids[0].count == 1 {
            static WARN: Once = Once::new();
            WARN.call_once(|| {
                let who = name.clone().unwrap_or_else(|| uid.to_string());
                tracing::warn!(
                    "no subordinate id ranges for user {who} in /etc/subuid and /etc/subgid: RUN \
                     steps get a single-id user namespace and chown to any other id will fail; \
                     add `{who}:100000:65536` to /etc/subuid and /etc/subgid (needs newuidmap \
                     from the uidmap package)"
                );
            });
        }
        mapping
    }

    /// Host uid that container uid `id` becomes, if mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        translate(&self.uids, id)
    }

    /// Host gid that container gid `id` becomes, if mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        translate(&self.gids, id)
    }

    /// Whether `setgroups(2)` is usable in the namespace (it is denied for single-id maps).
    pub fn allows_setgroups(&self) -> bool {
        self.writer == MapWriter::NewIdMap || rustix::process::geteuid().is_root()
    }
}

fn translate(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.count)
        .map(|r| r.host + (id - r.container))
}

/// Builds the mapping for a user (`uid`, `gid`) with subordinate ranges `(start, count)`.
pub(crate) fn compute(uid: u32, gid: u32, sub_u: &[(u32, u32)], sub_g: &[(u32, u32)]) -> IdMapping {
    if uid == 0 {
        let pick = |sub: &[(u32, u32)]| match sub.first() {
            Some(&(start, count)) => IdRange {
                container: 0,
                host: start,
                count,
            },
            None => IdRange {
                container: 0,
                host: ROOT_FALLBACK_BASE,
                count: ROOT_RANGE_SIZE,
            },
        };
        return IdMapping {
            uids: vec![pick(sub_u)],
            gids: vec![pick(sub_g)],
            writer: MapWriter::Direct,
        };
    }
    let stack = |own: u32, sub: &[(u32, u32)]| {
        let mut out = vec![IdRange {
            container: 0,
            host: own,
            count: 1,
        }];
        let mut next = 1u32;
        for &(start, count) in sub {
            out.push(IdRange {
                container: next,
                host: start,
                count,
            });
            next = next.saturating_add(count);
        }
        out
    };
    if sub_u.is_empty() || sub_g.is_empty() {
        return IdMapping {
            uids: stack(uid, &[]),
            gids: stack(gid, &[]),
            writer: MapWriter::Direct,
        };
    }
    IdMapping {
        uids: stack(uid, sub_u),
        gids: stack(gid, sub_g),
        writer: MapWriter::NewIdMap,
    }
}

/// The `(start, count)` ranges for `name` or numeric `uid` in an `/etc/subuid`-style file.
pub(crate) fn parse_subid(text: &str, name: Option<&str>, uid: u32) -> Vec<(u32, u32)> {
    let uid_s = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let who = parts.next()?;
            let start = parts.next()?.parse().ok()?;
            let count: u32 = parts.next()?.parse().ok()?;
            let matches = Some(who) == name || who == uid_s;
            (matches && count > 0).then_some((start, count))
        })
        .collect()
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.count))
        .collect()
}

/// Writes the maps of process `pid` (called from outside its namespace). Error text names the
/// program or file that failed.
pub(crate) fn write_maps(pid: i32, mapping: &IdMapping) -> Result<(), String> {
    match mapping.writer {
        MapWriter::Direct => {
            let proc = Path::new("/proc").join(pid.to_string());
            if !rustix::process::geteuid().is_root() {
                write_proc(&proc.join("setgroups"), "deny")?;
            }
            write_proc(&proc.join("uid_map"), &map_text(&mapping.uids))?;
            write_proc(&proc.join("gid_map"), &map_text(&mapping.gids))
        }
        MapWriter::NewIdMap => {
            run_idmap("newuidmap", pid, &mapping.uids)?;
            run_idmap("newgidmap", pid, &mapping.gids)
        }
    }
}

fn write_proc(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text)
        .map_err(|e| format!("writing {:?} to {}: {e}", text.trim(), path.display()))
}

fn run_idmap(program: &str, pid: i32, ranges: &[IdRange]) -> Result<(), String> {
    let mut cmd = Command::new(program);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.container.to_string(),
            r.host.to_string(),
            r.count.to_string(),
        ]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {program} (install the uidmap package): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subid_by_name_and_uid() {
        let text = "alice:100000:65536\nbob:165536:65536\n1001:300000:10\nbad line\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 1000),
            vec![(100000, 65536)]
        );
        assert_eq!(parse_subid(text, Some("carol"), 1001), vec![(300000, 10)]);
        assert!(parse_subid(text, None, 5).is_empty());
    }

    #[test]
    fn rootless_with_ranges_stacks_own_id_then_subids() {
        let m = compute(1000, 1000, &[(100000, 65536)], &[(100000, 65536)]);
        assert_eq!(m.writer, MapWriter::NewIdMap);
        assert_eq!(m.host_uid(0), Some(1000));
        assert_eq!(m.host_uid(1), Some(100000));
        assert_eq!(m.host_uid(1234), Some(101233));
        assert_eq!(m.host_uid(65536), Some(165535));
        assert_eq!(m.host_uid(65537), None);
    }

    #[test]
    fn rootless_without_ranges_maps_one_id() {
        let m = compute(1000, 1000, &[], &[]);
        assert_eq!(m.writer, MapWriter::Direct);
        assert_eq!(
            m.uids,
            vec![IdRange {
                container: 0,
                host: 1000,
                count: 1
            }]
        );
        assert_eq!(m.host_uid(1), None);
    }

    #[test]
    fn host_root_is_never_mapped_to_root() {
        let m = compute(0, 0, &[], &[]);
        assert_eq!(m.host_uid(0), Some(ROOT_FALLBACK_BASE));
        assert_ne!(m.host_gid(0), Some(0));
        let m = compute(0, 0, &[(500000, 65536)], &[(600000, 65536)]);
        assert_eq!(m.host_uid(0), Some(500000));
        assert_eq!(m.host_gid(0), Some(600000));
    }
}
