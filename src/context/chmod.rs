//! `--chmod` values: octal (`0755`, `644`) replace the permission bits; symbolic clauses
//! (`u+x,g-w,o=r`, `a+X`, `u=g`) adjust each copied file's and directory's own mode, as BuildKit
//! applies them to both. An omitted "who" means all (no umask, matching BuildKit).

use super::ContextError;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: char,
    perms: Vec<char>,
    copy_from: Option<char>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    who: u32,
    actions: Vec<Action>,
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// Octal: the exact permission and special bits.
    Octal(u32),
    /// Symbolic clauses applied to the existing mode.
    Symbolic(String, Vec<SymbolicClause>),
}

/// One comma-separated clause of a symbolic mode (opaque; see [`Chmod::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicClause(Clause);

impl Chmod {
    /// Parses an octal or symbolic mode.
    pub fn parse(raw: &str) -> Result<Chmod, ContextError> {
        let bad = |reason: &str| ContextError::Chmod {
            spec: raw.to_string(),
            reason: reason.to_string(),
        };
        if raw.is_empty() {
            return Err(bad("empty mode"));
        }
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            let v = u32::from_str_radix(raw, 8).map_err(|_| bad("invalid octal mode"))?;
            if v > 0o7777 {
                return Err(bad("octal mode out of range (max 7777)"));
            }
            return Ok(Chmod::Octal(v));
        }
        let mut clauses = Vec::new();
        for part in raw.split(',') {
            let chars: Vec<char> = part.chars().collect();
            let mut i = 0;
            let mut who = 0u32;
            while i < chars.len() && "ugoa".contains(chars[i]) {
                who |= match chars[i] {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
                i += 1;
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut actions = Vec::new();
            if i >= chars.len() {
                return Err(bad("missing operator (+, - or =)"));
            }
            while i < chars.len() {
                let op = chars[i];
                if !"+-=".contains(op) {
                    return Err(bad(&format!("unexpected {op:?} (expected +, - or =)")));
                }
                i += 1;
                let mut perms = Vec::new();
                let mut copy_from = None;
                if i < chars.len() && "ugo".contains(chars[i]) {
                    copy_from = Some(chars[i]);
                    i += 1;
                } else {
                    while i < chars.len() && "rwxXst".contains(chars[i]) {
                        perms.push(chars[i]);
                        i += 1;
                    }
                }
                actions.push(Action {
                    op,
                    perms,
                    copy_from,
                });
            }
            clauses.push(SymbolicClause(Clause { who, actions }));
        }
        Ok(Chmod::Symbolic(raw.to_string(), clauses))
    }

    /// The new permission bits (including setuid/setgid/sticky) for an entry whose current mode
    /// is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(_, clauses) => {
                let mut mode = mode & 0o7777;
                for SymbolicClause(c) in clauses {
                    for a in &c.actions {
                        let bits = match a.copy_from {
                            Some(from) => {
                                let src = match from {
                                    'u' => (mode >> 6) & 7,
                                    'g' => (mode >> 3) & 7,
                                    _ => mode & 7,
                                };
                                (src << 6 | src << 3 | src) & c.who & 0o777
                            }
                            None => perm_bits(&a.perms, mode, is_dir) & c.who,
                        };
                        mode = match a.op {
                            '+' => mode | bits,
                            '-' => mode & !bits,
                            _ => {
                                // `=` clears the classes named (keeping dirs' setgid like chmod).
                                let clear = c.who & 0o777
                                    | (c.who
                                        & (S_ISUID | S_ISGID)
                                        & !(if is_dir { S_ISGID } else { 0 }));
                                (mode & !clear) | bits
                            }
                        };
                    }
                }
                mode
            }
        }
    }

    /// The flag value as written (for cache keys and history).
    pub fn as_string(&self) -> String {
        match self {
            Chmod::Octal(m) => format!("{m:o}"),
            Chmod::Symbolic(s, _) => s.clone(),
        }
    }
}

fn perm_bits(perms: &[char], mode: u32, is_dir: bool) -> u32 {
    let mut bits = 0;
    for p in perms {
        bits |= match p {
            'r' => 0o444,
            'w' => 0o222,
            'x' => 0o111,
            'X' if is_dir || mode & 0o111 != 0 => 0o111,
            's' => S_ISUID | S_ISGID,
            't' => S_ISVTX,
            _ => 0,
        };
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_modes() {
        assert_eq!(ap("755", 0o600, false), 0o755);
        assert_eq!(ap("0644", 0o777, true), 0o644);
        assert_eq!(ap("4755", 0o600, false), 0o4755);
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("17777").is_err());
        assert!(Chmod::parse("").is_err());
    }

    #[test]
    fn symbolic_modes() {
        assert_eq!(ap("u+x", 0o644, false), 0o744);
        assert_eq!(ap("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(ap("+x", 0o644, false), 0o755);
        assert_eq!(ap("a-w", 0o666, false), 0o444);
        assert_eq!(ap("o=r", 0o777, false), 0o774);
        assert_eq!(ap("go=", 0o755, false), 0o700);
        assert_eq!(ap("a+X", 0o644, false), 0o644);
        assert_eq!(ap("a+X", 0o644, true), 0o755);
        assert_eq!(ap("a+X", 0o744, false), 0o755);
        assert_eq!(ap("u+s", 0o755, false), 0o4755);
        assert_eq!(ap("g+s", 0o755, true), 0o2755);
        assert_eq!(ap("+t", 0o777, true), 0o1777);
        assert_eq!(ap("g=u", 0o700, false), 0o770);
        assert_eq!(ap("u=rwx,go=rx", 0o600, false), 0o755);
        assert!(Chmod::parse("u").is_err());
        assert!(Chmod::parse("u*x").is_err());
        assert!(Chmod::parse("z+x").is_err());
    }
}
