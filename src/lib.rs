//! rbuild: a daemonless, rootless, Docker-compatible container image builder.
//!
//! The pipeline reads top to bottom:
//! Dockerfile text → [`dockerfile`] (BuildKit-exact parser and word expansion) →
//! [`plan`] (stages, ARG/ENV scoping, a DAG of operations with cache keys) →
//! [`solver`] (runs the DAG, reuses cached results) → workers: file operations from the
//! [`context`] and the rootless [`exec`]utor over [`snapshot`]s; diffs become layers via
//! [`layer`] → [`store`] (content-addressed blobs, OCI layout) → [`export`] (registry push,
//! tarballs, local dir). One [`registry`] client serves pull and push. [`image`] holds the
//! OCI data model shared by all of them; [`cli`] is the only place that talks to the user.
//! While it works, the solver emits [`progress`] events; the CLI renders them.

pub mod cli;
pub mod context;
pub mod dockerfile;
pub mod exec;
pub mod export;
pub mod image;
pub mod layer;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod snapshot;
pub mod solver;
pub mod store;
