//! `rbuild build --dry-run`: the plan as text (stages that run, in order, what each needs, and
//! each step with its history line).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Op, Plan, Source, StageDispatch};

/// Writes where `s` takes files from (written in place: a dry run of a large Dockerfile
/// names a source for every COPY).
fn write_source(out: &mut String, plan: &Plan<'_>, s: &Source) {
    match s {
        Source::Scratch => out.push_str("scratch"),
        Source::Stage(i) => match &plan.stages[*i].name {
            Some(name) => {
                out.push_str("stage ");
                out.push_str(name);
            }
            None => {
                let _ = write!(out, "stage {i}");
            }
        },
        Source::Image(r) => {
            out.push_str("image ");
            out.push_str(r);
        }
        Source::Context(c) => {
            out.push_str("context ");
            out.push_str(c);
        }
        Source::MainContext => out.push_str("context"),
    }
}

impl Plan<'_> {
    /// The dry-run report. `dispatched` (from [`Plan::dispatch`]) adds each stage's steps.
    pub fn render(&self, dispatched: Option<&BTreeMap<usize, StageDispatch>>) -> String {
        // About one line per step: sized once instead of grown by doubling.
        let steps: usize = dispatched.map_or(0, |d| {
            d.values()
                .flat_map(|s| &s.steps)
                .map(|s| s.created_by.len() + 48)
                .sum()
        });
        let mut out = String::with_capacity(steps + 128 * self.stages.len());
        let target = &self.stages[self.target];
        let _ = writeln!(out, "target: {} (stage {})", target.label(), target.index);
        let order: Vec<String> = self.order.iter().map(|&i| self.stages[i].label()).collect();
        let _ = writeln!(out, "order: {}", order.join(" -> "));
        let skipped: Vec<String> = self
            .stages
            .iter()
            .filter(|s| !self.order.contains(&s.index))
            .map(Stage::label)
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "skipped: {}", skipped.join(", "));
        }
        for &i in &self.order {
            let s = &self.stages[i];
            let deps: Vec<String> = s.deps.iter().map(|d| self.stages[*d].label()).collect();
            let _ = write!(
                out,
                "stage {} [{}] line {}: FROM ",
                s.index,
                s.label(),
                s.from.start_line,
            );
            write_source(&mut out, self, &s.base);
            if let Some(p) = &s.platform {
                let _ = write!(out, " (platform {p})");
            }
            out.push('\n');
            if !deps.is_empty() {
                let _ = writeln!(out, "  needs: {}", deps.join(", "));
            }
            match dispatched.and_then(|d| d.get(&i)) {
                Some(d) => {
                    for step in &d.steps {
                        let _ = write!(out, "  line {} ", step.line);
                        match &step.op {
                            Op::Metadata => out.push_str("meta"),
                            Op::Mkdir { .. } => out.push_str("mkdir"),
                            Op::Copy(c) => {
                                out.push_str("copy from ");
                                write_source(&mut out, self, &c.from);
                            }
                            Op::Run(_) => out.push_str("exec"),
                        }
                        out.push_str(": ");
                        out.push_str(&step.created_by);
                        out.push('\n');
                    }
                }
                None => {
                    for (node, _) in &s.commands {
                        let _ =
                            writeln!(out, "  line {}: {}", node.start_line, node.original.trim());
                    }
                }
            }
        }
        out
    }
}

use super::Stage;
