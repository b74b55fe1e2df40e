//! Phase 1 of planning: instructions into stages, FROM lines expanded with the global ARGs,
//! bases and `--from` references resolved, the target chosen and unneeded stages pruned.

use std::collections::{BTreeMap, BTreeSet};

use super::args;
use super::expand;
use super::{BuildOptions, Plan, PlanError, Source, Stage};
use crate::dockerfile::instructions::{FromInstr, Instruction, suggest};
use crate::dockerfile::{Dockerfile, Node};

/// A FROM node, its parsed form and the instructions after it, before resolution.
type RawStage<'a> = (&'a Node, FromInstr<'a>, Vec<(&'a Node, Instruction<'a>)>);

pub(crate) fn build(dockerfile: &Dockerfile, options: BuildOptions) -> Result<Plan<'_>, PlanError> {
    let escape = dockerfile.directives.escape;
    let mut global_decls: Vec<(&str, Option<&str>)> = Vec::new();
    let mut raw: Vec<RawStage> = Vec::new();
    for node in &dockerfile.nodes {
        let instr = Instruction::parse(node)?;
        match instr {
            Instruction::From(f) => raw.push((node, f, Vec::new())),
            Instruction::Arg(a) if raw.is_empty() => global_decls.extend(a.args),
            other => match raw.last_mut() {
                Some((_, _, cmds)) => cmds.push((node, other)),
                None => {
                    return Err(PlanError::BeforeFrom {
                        line: node.start_line,
                        instruction: other.name().to_string(),
                    });
                }
            },
        }
    }
    if raw.is_empty() {
        return Err(PlanError::NoStages);
    }

    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (node, f, _)) in raw.iter().enumerate() {
        if let Some(name) = &f.name {
            if let Some(&first) = names.get(name) {
                return Err(PlanError::DuplicateStage {
                    name: name.clone(),
                    line: node.start_line,
                    first_line: raw[first].0.start_line,
                });
            }
            names.insert(name.clone(), i);
        }
    }

    let target = pick_target(&raw, &names, options.target.as_deref())?;
    let target_name = raw[target].1.name.clone().unwrap_or_default();
    let predefined = args::predefined(
        &options.target_platform,
        &options.build_platform,
        &target_name,
    );
    let globals = args::eval_globals(&global_decls, &options.build_args, &predefined, escape)
        .map_err(|m| PlanError::Invalid {
            line: 0,
            instruction: "ARG".into(),
            message: m,
        })?;
    let scope = args::global_scope(&globals, &predefined);

    let resolver = Refs {
        names: &names,
        lines: raw.iter().map(|(n, _, _)| n.start_line).collect(),
        contexts: &options.named_contexts,
        images: &options.context_images,
    };
    let mut stages = Vec::new();
    for (index, (node, f, commands)) in raw.into_iter().enumerate() {
        let image =
            expand::expand(f.image, &scope, escape).map_err(|m| PlanError::invalid(node, m))?;
        if image.is_empty() {
            return Err(PlanError::invalid(
                node,
                format!("base name ({}) should not be blank", f.image),
            ));
        }
        let platform = f
            .platform
            .map(|p| expand::expand(p, &scope, escape))
            .transpose()
            .map_err(|m| PlanError::invalid(node, m))?;
        let base = resolver.resolve(&image, index, node, true)?;
        let mut deps = BTreeSet::new();
        if let Source::Stage(s) = base {
            deps.insert(s);
        }
        for (cnode, instr) in &commands {
            for from in from_refs(instr) {
                let from = expand::expand(from, &scope, escape)
                    .map_err(|m| PlanError::invalid(cnode, m))?;
                if let Source::Stage(s) = resolver.resolve(&from, index, cnode, false)? {
                    deps.insert(s);
                }
            }
        }
        stages.push(Stage {
            index,
            name: f.name,
            base,
            platform,
            from: node,
            commands,
            deps,
        });
    }

    let order = needed_order(&stages, target);
    Ok(Plan {
        stages,
        target,
        order,
        global_args: globals,
        escape,
        options,
        stage_names: names,
    })
}

/// `COPY --from` and `RUN --mount from=` values of an instruction (unexpanded).
pub(crate) fn from_refs<'i>(instr: &'i Instruction<'_>) -> impl Iterator<Item = &'i str> {
    let copy_from = match instr {
        Instruction::Copy(c) => c.from,
        _ => None,
    };
    // The mounts parsed with the instruction are the specs read without expansion.
    let mounts = match instr {
        Instruction::Run(r) => r.mounts.as_slice(),
        _ => &[],
    };
    copy_from
        .into_iter()
        .chain(mounts.iter().filter_map(|m| m.from.as_deref()))
}

fn pick_target(
    raw: &[RawStage<'_>],
    names: &BTreeMap<String, usize>,
    target: Option<&str>,
) -> Result<usize, PlanError> {
    let Some(t) = target else {
        return Ok(raw.len() - 1);
    };
    if let Some(&i) = names.get(&t.to_lowercase()) {
        return Ok(i);
    }
    if let Ok(i) = t.parse::<usize>()
        && i < raw.len()
    {
        return Ok(i);
    }
    let hint = suggest::did_you_mean(t, names.keys().map(String::as_str))
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default();
    Err(PlanError::UnknownTarget {
        target: t.to_string(),
        hint,
    })
}

struct Refs<'a> {
    names: &'a BTreeMap<String, usize>,
    lines: Vec<usize>,
    contexts: &'a BTreeSet<String>,
    images: &'a BTreeMap<String, String>,
}

impl Refs<'_> {
    /// What `name` refers to from stage `current`: a named context wins for FROM bases (as
    /// BuildKit lets `--build-context` replace a stage or image), then stages, then images.
    fn resolve(
        &self,
        name: &str,
        current: usize,
        node: &Node,
        is_base: bool,
    ) -> Result<Source, PlanError> {
        let lower = name.to_lowercase();
        if self.contexts.contains(name) {
            return Ok(Source::Context(name.to_string()));
        }
        if let Some(image) = self.images.get(name) {
            return Ok(Source::Image(image.clone()));
        }
        if let Some(&i) = self.names.get(&lower) {
            if i >= current {
                return Err(PlanError::ForwardReference {
                    name: name.to_string(),
                    line: node.start_line,
                    defined_line: self.lines[i],
                });
            }
            return Ok(Source::Stage(i));
        }
        if !is_base && let Ok(i) = name.parse::<usize>() {
            if i >= current {
                return Err(PlanError::invalid(
                    node,
                    format!("--from={name}: stage index {i} is not an earlier stage"),
                ));
            }
            return Ok(Source::Stage(i));
        }
        if is_base && lower == "scratch" {
            return Ok(Source::Scratch);
        }
        Ok(Source::Image(name.to_string()))
    }
}

/// The target and everything it needs, dependencies first, in source order where free.
fn needed_order(stages: &[Stage<'_>], target: usize) -> Vec<usize> {
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if needed.insert(i) {
            todo.extend(stages[i].deps.iter().copied());
        }
    }
    // Dependencies always point to earlier stages, so source order is a topological order.
    needed.into_iter().collect()
}
