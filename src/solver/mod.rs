//! The solver: runs a plan's DAG in parallel, skipping what the target does not need and reusing cached results.
