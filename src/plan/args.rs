//! ARG scoping as BuildKit does it: global ARGs (before the first FROM) are visible only in FROM
//! lines unless a stage redeclares them; `--build-arg` overrides defaults; predefined platform
//! ARGs exist in FROM lines and inside a stage once declared; proxy ARGs reach RUN without
//! being declared and never appear in history.

use std::collections::{BTreeMap, BTreeSet};

use super::Plan;
use super::expand::{self, Vars};
use crate::dockerfile::instructions::Instruction;
use crate::image::Platform;

/// Proxy variables usable without `ARG` (upper and lower case), never recorded in history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// BuildKit's automatic platform ARGs plus TARGETSTAGE.
pub(crate) fn predefined(target: &Platform, build: &Platform, target_stage: &str) -> Vars {
    let mut v = Vars::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        v.insert(format!("{prefix}PLATFORM"), platform_string(p));
        v.insert(format!("{prefix}OS"), p.os.clone());
        v.insert(format!("{prefix}ARCH"), p.architecture.clone());
        v.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    v.insert("TARGETSTAGE".into(), target_stage.to_string());
    v
}

/// Evaluates the global ARGs in order: a `--build-arg` wins, else the default expanded with the
/// globals before it and the predefined ARGs.
pub(crate) fn eval_globals(
    decls: &[(&str, Option<&str>)],
    build_args: &BTreeMap<String, String>,
    predefined: &Vars,
    escape: char,
) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut globals: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (key, default) in decls {
        let value = match (build_args.get(*key), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => {
                let scope = global_scope(&globals, predefined);
                Some(expand::expand(d, &scope, escape)?)
            }
            (None, None) => None,
        };
        globals.insert(key.to_string(), value);
    }
    Ok(globals)
}

/// The variables a FROM line sees: predefined ARGs overridden by set global ARGs.
pub(crate) fn global_scope(globals: &BTreeMap<String, Option<String>>, predefined: &Vars) -> Vars {
    let mut scope = predefined.clone();
    for (k, v) in globals {
        if let Some(v) = v {
            scope.insert(k.clone(), v.clone());
        }
    }
    scope
}

/// The value a stage's `ARG key[=default]` takes (before the default is expanded): the
/// `--build-arg`, else (for a bare `ARG key`) the global or predefined value.
pub(crate) fn stage_arg_override(
    key: &str,
    has_default: bool,
    build_args: &BTreeMap<String, String>,
    globals: &BTreeMap<String, Option<String>>,
    predefined: &Vars,
) -> Option<Option<String>> {
    if let Some(v) = build_args.get(key) {
        return Some(Some(v.clone()));
    }
    if has_default {
        return None;
    }
    if let Some(v) = globals.get(key) {
        return Some(v.clone());
    }
    Some(predefined.get(key).cloned())
}

/// `--build-arg`s that neither the global scope nor any needed stage declares.
pub(crate) fn unused(plan: &Plan<'_>) -> Vec<String> {
    let mut declared: BTreeSet<&str> = plan.global_args.keys().map(String::as_str).collect();
    for &i in &plan.order {
        for (_, instr) in &plan.stages[i].commands {
            if let Instruction::Arg(a) = instr {
                declared.extend(a.args.iter().map(|(k, _)| *k));
            }
        }
    }
    plan.options
        .build_args
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !PROXY_ARGS.contains(&k.as_str()))
        .filter(|k| !matches!(k.as_str(), "SOURCE_DATE_EPOCH" | "BUILDKIT_INLINE_CACHE"))
        .cloned()
        .collect()
}

/// Parses a `SOURCE_DATE_EPOCH` value (seconds since the Unix epoch).
pub fn parse_source_date_epoch(value: &str) -> Result<i64, String> {
    value.trim().parse::<i64>().map_err(|_| {
        format!("invalid SOURCE_DATE_EPOCH {value:?}: expected whole seconds since 1970")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ba(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pre() -> Vars {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        predefined(&p, &"linux/amd64".parse().unwrap(), "final")
    }

    #[test]
    fn predefined_platform_args() {
        let v = pre();
        assert_eq!(v["TARGETPLATFORM"], "linux/arm/v7");
        assert_eq!(v["TARGETARCH"], "arm");
        assert_eq!(v["TARGETVARIANT"], "v7");
        assert_eq!(v["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(v["BUILDVARIANT"], "");
        assert_eq!(v["TARGETSTAGE"], "final");
    }

    #[test]
    fn globals_evaluate_in_order_with_overrides() {
        let decls = [
            ("A", Some("1")),
            ("B", Some("${A}-$TARGETARCH")),
            ("C", None),
            ("D", Some("d")),
        ];
        let g = eval_globals(&decls, &ba(&[("D", "over")]), &pre(), '\\').unwrap();
        assert_eq!(g["A"].as_deref(), Some("1"));
        assert_eq!(g["B"].as_deref(), Some("1-arm"));
        assert_eq!(g["C"], None);
        assert_eq!(g["D"].as_deref(), Some("over"));
        let g = eval_globals(&decls, &ba(&[("A", "x")]), &pre(), '\\').unwrap();
        assert_eq!(g["B"].as_deref(), Some("x-arm"));
    }

    #[test]
    fn stage_args_take_build_arg_then_global() {
        let globals: BTreeMap<String, Option<String>> =
            [("V".to_string(), Some("g".to_string()))].into();
        let p = pre();
        assert_eq!(
            stage_arg_override("V", false, &ba(&[]), &globals, &p),
            Some(Some("g".into()))
        );
        assert_eq!(stage_arg_override("V", true, &ba(&[]), &globals, &p), None);
        assert_eq!(
            stage_arg_override("V", true, &ba(&[("V", "b")]), &globals, &p),
            Some(Some("b".into()))
        );
        assert_eq!(
            stage_arg_override("TARGETOS", false, &ba(&[]), &globals, &p),
            Some(Some("linux".into()))
        );
        assert_eq!(
            stage_arg_override("X", false, &ba(&[]), &globals, &p),
            Some(None)
        );
    }

    #[test]
    fn source_date_epoch() {
        assert_eq!(
            parse_source_date_epoch("1700000000").unwrap(),
            1_700_000_000
        );
        assert!(parse_source_date_epoch("soon").is_err());
    }
}
