//! `rbuild build --dry-run`: the plan as text (stages that run, in order, what each needs, and
//! each step with its history line).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Op, Plan, Source, StageDispatch};

fn source_text(plan: &Plan<'_>, s: &Source) -> String {
    match s {
        Source::Scratch => "scratch".into(),
        Source::Stage(i) => format!("stage {}", plan.stages[*i].label()),
        Source::Image(r) => format!("image {r}"),
        Source::Context(c) => format!("context {c}"),
        Source::MainContext => "context".into(),
    }
}

impl Plan<'_> {
    /// The dry-run report. `dispatched` (from [`Plan::dispatch`]) adds each stage's steps.
    pub fn render(&self, dispatched: Option<&BTreeMap<usize, StageDispatch>>) -> String {
        let mut out = String::new();
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
            let _ = writeln!(
                out,
                "stage {} [{}] line {}: FROM {}{}",
                s.index,
                s.label(),
                s.from.start_line,
                source_text(self, &s.base),
                s.platform
                    .as_deref()
                    .map(|p| format!(" (platform {p})"))
                    .unwrap_or_default()
            );
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
                                out.push_str(&source_text(self, &c.from));
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
