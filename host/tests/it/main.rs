//! The host's integration tests, in one test binary: every file here is a module, so the
//! host library and its dependencies are linked once for all of them instead of once per
//! file (`cargo test -p rollout --test it` runs them all; add a filter to pick some, e.g.
//! `cargo test -p rollout --test it http_api::`).
//!
//! Tests that need PostgreSQL read `DATABASE_URL`; without it they print SKIPPED, and under
//! `CI=true` they fail ([`support::pg_url`]).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

/// Tests written once over a [`rollout::store::testing::TestDatabase`], each run on SQLite
/// (a temporary file) and on Postgres (a fresh database of `DATABASE_URL`; SKIPPED without
/// it, a failure under `CI=true`): `both_backends!(test_fn, …)` makes a module per function
/// with a `sqlite` and a `postgres` test. Defined before the modules, so all of them see it.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = rollout::store::testing::TestDatabase::sqlite().await.unwrap();
                super::$name(&db).await;
                db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(url) = crate::support::pg_url(stringify!($name)) else { return };
                let db = rollout::store::testing::TestDatabase::postgres(&url).await.unwrap();
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    )*};
}

mod e2e_support;
mod runtime_support;
mod support;

mod alerts_outbox;
mod authoring_cli;
mod authoring_explain;
mod backlog;
mod cli_ops;
mod config_versions;
mod decision_log;
mod decision_log_store;
mod defects;
mod defects_policy;
mod e2e_failure;
mod e2e_multi_instance;
mod e2e_serve_cli;
mod e2e_status_page;
mod e2e_sync;
mod edges_agree;
mod health_signals;
mod http_api;
mod http_robustness;
mod manager_conformance;
mod policy_candidate;
mod replay;
mod runtime_concurrency;
mod runtime_hostile;
mod runtime_swap;
mod store_conformance;
mod vectors;
