//! The host's integration tests, in one test binary: every file here is a module, so the
//! host library and its dependencies are linked once for all of them instead of once per
//! file (`cargo test -p rollout --test it` runs them all; add a filter to pick some, e.g.
//! `cargo test -p rollout --test it http_api::`).
//!
//! Tests that need PostgreSQL read `DATABASE_URL`; without it they print SKIPPED, and under
//! `CI=true` they fail ([`support::pg_url`]).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod e2e_support;
mod runtime_support;
mod support;

mod alerts_outbox;
mod authoring_cli;
mod authoring_explain;
mod backlog;
mod cli_ops;
mod config_versions;
mod defects;
mod defects_policy;
mod e2e_failure;
mod e2e_multi_instance;
mod e2e_serve_cli;
mod e2e_status_page;
mod edges_agree;
mod health_signals;
mod http_api;
mod http_robustness;
mod manager_conformance;
mod runtime_concurrency;
mod runtime_hostile;
mod runtime_swap;
mod store_conformance;
mod vectors;
