//! The build plan: stages, ARG/ENV scoping and a DAG of operations, each with what its cache key needs.
