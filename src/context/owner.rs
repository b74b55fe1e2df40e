//! `--chown=user[:group]` as BuildKit resolves it: numeric ids used as given (a user id alone
//! also sets the group id), names looked up in the destination root's `/etc/passwd` and
//! `/etc/group` (a user name alone takes its primary group).

use std::path::Path;

use super::ContextError;

/// A parsed but unresolved `--chown` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChownSpec {
    raw: String,
    user: String,
    group: Option<String>,
}

/// Resolved numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chown {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl ChownSpec {
    /// Parses `user`, `user:group`, `uid`, `uid:gid` (names or numbers on either side).
    pub fn parse(raw: &str) -> Result<ChownSpec, ContextError> {
        let bad = |reason: &str| ContextError::Chown {
            spec: raw.to_string(),
            reason: reason.to_string(),
        };
        let (user, group) = match raw.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (raw, None),
        };
        if user.is_empty() {
            return Err(bad("missing user"));
        }
        if group.is_some_and(str::is_empty) {
            return Err(bad("missing group after ':'"));
        }
        Ok(ChownSpec {
            raw: raw.to_string(),
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }

    /// The flag value as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Resolves names through `dest_root`'s `/etc/passwd` and `/etc/group`; `what` names the
    /// file or instruction for the error message when a name is unknown.
    pub fn resolve(&self, dest_root: Option<&Path>, what: &str) -> Result<Chown, ContextError> {
        let err = |reason: String| ContextError::Chown {
            spec: self.raw.clone(),
            reason,
        };
        let (uid, primary_gid) = match self.user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => {
                let passwd = read_db(dest_root, "etc/passwd").map_err(&err)?;
                lookup(&passwd, &self.user, 2, Some(3))
                    .map(|(u, g)| (u, g.unwrap_or(u)))
                    .ok_or_else(|| {
                        err(format!(
                            "unable to find user {:?} in /etc/passwd of the destination (for {what})",
                            self.user
                        ))
                    })?
            }
        };
        let gid = match &self.group {
            None => primary_gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    let group = read_db(dest_root, "etc/group").map_err(&err)?;
                    lookup(&group, g, 2, None).map(|(gid, _)| gid).ok_or_else(|| {
                        err(format!(
                            "unable to find group {g:?} in /etc/group of the destination (for {what})"
                        ))
                    })?
                }
            },
        };
        Ok(Chown { uid, gid })
    }
}

fn read_db(dest_root: Option<&Path>, rel: &str) -> Result<String, String> {
    let Some(root) = dest_root else {
        return Ok(String::new());
    };
    // The database may itself be a symlink inside the image; resolve it inside the root.
    let resolved =
        super::select::resolve_in_root(root, rel, true, true, rel).map_err(|e| e.to_string())?;
    let Some(resolved) = resolved else {
        return Ok(String::new());
    };
    let path = root.join(resolved);
    match std::fs::read(&path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Finds `name` in a colon-separated database, returning fields `id_field` and `second`.
fn lookup(
    db: &str,
    name: &str,
    id_field: usize,
    second: Option<usize>,
) -> Option<(u32, Option<u32>)> {
    for line in db.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            continue;
        }
        let id = fields.get(id_field)?.trim().parse().ok()?;
        let other = second
            .and_then(|i| fields.get(i))
            .and_then(|f| f.trim().parse().ok());
        return Some((id, other));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        dir
    }

    #[test]
    fn numeric_and_named_owners() {
        let r = root();
        let res = |s: &str| ChownSpec::parse(s).unwrap().resolve(Some(r.path()), "x");
        assert_eq!(res("10").unwrap(), Chown { uid: 10, gid: 10 });
        assert_eq!(res("10:20").unwrap(), Chown { uid: 10, gid: 20 });
        assert_eq!(
            res("app").unwrap(),
            Chown {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(res("app:staff").unwrap(), Chown { uid: 1000, gid: 50 });
        assert_eq!(res("0:staff").unwrap(), Chown { uid: 0, gid: 50 });
        let e = res("nobody").unwrap_err().to_string();
        assert!(e.contains("\"nobody\"") && e.contains("for x"), "{e}");
        let e = res("app:wheel").unwrap_err().to_string();
        assert!(e.contains("\"wheel\""), "{e}");
        assert!(ChownSpec::parse(":1").is_err());
        assert!(ChownSpec::parse("1:").is_err());
    }

    #[test]
    fn names_without_a_root_fail() {
        let e = ChownSpec::parse("app")
            .unwrap()
            .resolve(None, "f")
            .unwrap_err();
        assert!(e.to_string().contains("unable to find user"));
    }
}
