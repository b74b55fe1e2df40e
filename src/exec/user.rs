//! Resolving docker's `USER` strings against the step's own `/etc/passwd` and `/etc/group`.
//!
//! Semantics follow runc's `user.GetExecUser` as docker uses it: a numeric uid without a passwd
//! entry runs with gid 0 and HOME `/`; a name that is not in passwd is an error; supplementary
//! groups are the groups listing the user's name, unless a group was given explicitly.

/// The ids and home a step's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`; empty or `None` = root).
pub(crate) fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let spec = spec.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let numeric_uid = user_part.parse::<u32>().ok();
    let found = entries.iter().find(|f| match numeric_uid {
        Some(uid) => f[2].parse::<u32>().ok() == Some(uid) || f[0] == user_part,
        None => f[0] == user_part,
    });
    let (name, uid, mut gid, home) = match (found, numeric_uid) {
        (Some(f), _) => (
            Some(f[0].to_string()),
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid {:?} for user {} in /etc/passwd", f[2], f[0]))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("bad gid {:?} for user {} in /etc/passwd", f[3], f[0]))?,
            f.get(5)
                .filter(|h| !h.is_empty())
                .unwrap_or(&"/")
                .to_string(),
        ),
        (None, Some(uid)) => (None, uid, 0, "/".to_string()),
        (None, None) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ));
        }
    };
    let groups_table: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let mut groups = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups_table
                    .iter()
                    .find(|f| f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
        }
        _ => {
            if let Some(name) = &name {
                for f in &groups_table {
                    let members = f.get(3).copied().unwrap_or("");
                    if members.split(',').any(|m| m.trim() == name)
                        && let Ok(id) = f[2].parse::<u32>()
                        && !groups.contains(&id)
                    {
                        groups.push(id);
                    }
                }
            }
        }
    }
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1000:\n";

    #[test]
    fn root_by_default() {
        let u = resolve(None, PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, vec![0, 10]);
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = resolve(Some("app"), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 10, 50]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn numeric_unknown_uid_runs_with_gid_0() {
        let u = resolve(Some("1234"), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1234, 0, "/"));
        let u = resolve(Some("1000:1000"), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000]);
    }

    #[test]
    fn named_group_and_errors() {
        let u = resolve(Some("daemon:staff"), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1, 50));
        assert!(
            resolve(Some("nobody"), PASSWD, GROUP)
                .unwrap_err()
                .contains("nobody")
        );
        assert!(
            resolve(Some("app:nogroup"), PASSWD, GROUP)
                .unwrap_err()
                .contains("nogroup")
        );
    }
}
