//! Vertex numbering for the progress stream: every step that does work (and every FROM of an
//! image) gets its `#N` before the build starts, in stage order then step order, so numbers do
//! not depend on which parallel stage happens to start first.

use std::collections::BTreeMap;

use crate::plan::{Op, Plan, Source, StageDispatch};
use crate::progress::{Event, StepPosition, step_prefix};

/// One numbered vertex: its id, the text shown for it, and its step position.
#[derive(Debug, Clone)]
pub(crate) struct Vertex {
    pub id: u64,
    pub name: String,
    pub step: StepPosition,
}

impl Vertex {
    /// The event announcing this vertex.
    pub(crate) fn started(&self) -> Event {
        Event::Started {
            id: self.id,
            name: self.name.clone(),
            step: Some(self.step.clone()),
        }
    }
}

/// The numbered vertices of one build.
#[derive(Debug, Default)]
pub(crate) struct Vertices {
    /// By (stage index, step index in `StageDispatch::steps`).
    steps: BTreeMap<(usize, usize), Vertex>,
    /// The FROM vertex of stages based on an image.
    from: BTreeMap<usize, Vertex>,
    /// Ids used before these (the `[internal] load metadata` vertices of planning).
    before: u64,
}

/// The text BuildKit shows for an instruction: its source, first line only (heredoc bodies
/// follow on later lines).
fn instruction_text(plan: &Plan, stage: usize, line: usize, created_by: &str) -> String {
    let node = plan.stages[stage]
        .commands
        .iter()
        .map(|(n, _)| n)
        .find(|n| n.start_line == line && !n.original.is_empty());
    match node {
        Some(n) => n
            .original
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        // ONBUILD triggers have no node of their own in this stage.
        None => created_by.trim_end_matches(" # buildkit").to_string(),
    }
}

impl Vertices {
    /// Numbers the vertices of the stages in `dispatched` (the ones the target needs).
    #[cfg(test)]
    pub(crate) fn number(plan: &Plan, dispatched: &BTreeMap<usize, StageDispatch>) -> Self {
        Self::number_after(plan, dispatched, 0)
    }

    /// [`Vertices::number`], starting after the `before` ids already used.
    pub(crate) fn number_after(
        plan: &Plan,
        dispatched: &BTreeMap<usize, StageDispatch>,
        before: u64,
    ) -> Self {
        let mut v = Vertices {
            before,
            ..Vertices::default()
        };
        let mut next = before + 1;
        let multi = plan.stages.len() > 1;
        for (&index, d) in dispatched {
            let stage_name = plan.stages[index]
                .name
                .clone()
                .or_else(|| multi.then(|| format!("stage-{index}")));
            let total = d.steps.len() + 1;
            let pos = |i: usize, line: usize| StepPosition {
                stage: index,
                stage_name: stage_name.clone(),
                index: i,
                total,
                line,
            };
            if let Source::Image(r) = &d.base {
                let image = d
                    .base_image
                    .as_ref()
                    .map_or(r.as_str(), |i| i.name.as_str());
                let step = pos(1, d.from_line);
                v.from.insert(
                    index,
                    Vertex {
                        id: next,
                        name: format!("{} FROM {image}", step_prefix(&step)),
                        step,
                    },
                );
                next += 1;
            }
            for (k, s) in d.steps.iter().enumerate() {
                if matches!(s.op, Op::Metadata) {
                    continue;
                }
                let step = pos(k + 2, s.line);
                let text = instruction_text(plan, index, s.line, &s.created_by);
                v.steps.insert(
                    (index, k),
                    Vertex {
                        id: next,
                        name: format!("{} {text}", step_prefix(&step)),
                        step,
                    },
                );
                next += 1;
            }
        }
        v
    }

    /// The vertex of step `k` of stage `stage` (none for metadata-only steps).
    pub(crate) fn step(&self, stage: usize, k: usize) -> Option<&Vertex> {
        self.steps.get(&(stage, k))
    }

    /// The FROM vertex of `stage`, when its base is an image.
    pub(crate) fn from(&self, stage: usize) -> Option<&Vertex> {
        self.from.get(&stage)
    }

    /// How many vertices there are (the next free id is this plus one).
    pub(crate) fn count(&self) -> u64 {
        self.before + (self.steps.len() + self.from.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageConfig, Platform};
    use crate::plan::{BuildOptions, ImageResolver, ResolvedImage};

    /// Resolves every image to an empty config under a canonical name.
    struct Fixed;
    impl ImageResolver for Fixed {
        fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Ok(ResolvedImage {
                name: format!("docker.io/library/{reference}"),
                manifest_digest: None,
                config: ImageConfig::default(),
            })
        }
    }

    fn number(text: &str) -> (Vertices, BTreeMap<usize, StageDispatch>) {
        let df = crate::dockerfile::parse(text).unwrap();
        let plan = Plan::new(&df, BuildOptions::host()).unwrap();
        let dispatched = plan.dispatch(&Fixed, &crate::plan::parse_trigger).unwrap();
        (Vertices::number(&plan, &dispatched), dispatched)
    }

    #[test]
    fn numbers_filesystem_steps_and_image_bases_in_stage_order() {
        let (v, d) = number(
            "FROM alpine AS build\nENV A=1\nRUN make \\\n  all\n\
             FROM scratch AS unused\nCOPY x /x\n\
             FROM scratch\nCOPY --from=build /app /app\nLABEL a=b\nWORKDIR /w\n",
        );
        // The unused stage is not built, so it gets no numbers.
        assert!(!d.contains_key(&1));
        let from = v.from(0).unwrap();
        assert_eq!(
            (from.id, from.name.as_str()),
            (1, "[build 1/3] FROM docker.io/library/alpine")
        );
        assert!(v.step(0, 0).is_none(), "ENV is not a vertex");
        let run = v.step(0, 1).unwrap();
        assert_eq!(
            (run.id, run.name.as_str()),
            (2, "[build 3/3] RUN make   all")
        );
        assert_eq!(run.step.line, 3);
        assert!(v.from(2).is_none(), "FROM scratch is not a vertex");
        let copy = v.step(2, 0).unwrap();
        assert_eq!(
            (copy.id, copy.name.as_str()),
            (3, "[stage-2 2/4] COPY --from=build /app /app")
        );
        assert_eq!(v.step(2, 2).unwrap().name, "[stage-2 4/4] WORKDIR /w");
        assert_eq!(v.count(), 4);
    }

    #[test]
    fn numbers_continue_after_the_metadata_vertices() {
        let df = crate::dockerfile::parse("FROM alpine\nCOPY a /a\n").unwrap();
        let plan = Plan::new(&df, BuildOptions::host()).unwrap();
        let dispatched = plan.dispatch(&Fixed, &crate::plan::parse_trigger).unwrap();
        let v = Vertices::number_after(&plan, &dispatched, 2);
        assert_eq!(v.from(0).unwrap().id, 3);
        assert_eq!(v.step(0, 0).unwrap().id, 4);
        assert_eq!(v.count(), 4, "the next free id is 5");
    }

    #[test]
    fn single_stage_has_no_stage_name() {
        let (v, _) = number("FROM scratch\nCOPY a /a\n");
        assert_eq!(v.step(0, 0).unwrap().name, "[2/2] COPY a /a");
        assert_eq!(v.step(0, 0).unwrap().step.stage_name, None);
    }
}
