//! The reference rollout policy.
//!
//! Pure decision rules for a progressive rollout (SPEC §2): hash bucketing
//! ([`bucket`]), eligibility and routing ([`Evaluator`]), categorisation ([`categorize()`])
//! and health ([`evaluate_health()`]). The rules read no clock, no randomness, no
//! environment and no files, never panic, and report every decision as data with the rule
//! that made it.
//!
//! Each rule is written once, generic over a [`Tracer`] (the `*_with` functions): the
//! decision functions run it with [`NoTrace`], which compiles away, and the `*_traced`
//! functions run the same code with a [`Trace`] that records every check in words with the
//! values compared — the explanation of the decision, from the code that made it.
//!
//! The crate builds two ways: natively (an `rlib` the host links to run the rules without
//! WebAssembly and to share the domain types) and as a WebAssembly component (the `cdylib`
//! for `wasm32-unknown-unknown`, wrapped by `make policy`), whose boundary is the WIT
//! package in `wit/` (world `explained-policy`: the `rules` of world `policy`, plus
//! `explain`). The glue between the two is the `guest` module (feature `guest`, compiled
//! only for wasm), which other policies built on these rules reuse; feature `component`
//! exports the reference policy through it.
//!
//! ```
//! use rollout_policy::{Config, Evaluator, Job, Processor, Repository, RouteRule, Strategy, TriggerSource};
//!
//! let config = Config { rollout_percentage: 100, is_active: true, rollout_strategy: Strategy::Percentage, ..Config::default() };
//! let evaluator = Evaluator::new(config)?;
//! let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
//! let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
//! let decision = evaluator.route(&repo, &job);
//! assert_eq!(decision.processor, Processor::GithubActions);
//! assert_eq!(decision.rule, RouteRule::ScheduledBulk);
//! # Ok::<(), rollout_policy::ConfigError>(())
//! ```
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo
)]
#![deny(missing_docs)]

// First: `named_enum!` is defined there.
#[macro_use]
mod types;
mod bucket;
mod categorize;
mod columns;
mod eligibility;
mod health;
mod id;
pub mod packed;
mod routing;
mod signals;
mod trace;

#[cfg(all(target_arch = "wasm32", feature = "guest"))]
#[allow(unsafe_code, missing_docs, reason = "wit-bindgen's generated bindings and export glue")]
pub mod guest;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
#[allow(unsafe_code, reason = "wit-bindgen's generated export glue")]
mod component;

pub use bucket::bucket;
pub use categorize::{categorize, categorize_traced, categorize_with};
pub use columns::{encode_option, BatchError, DecisionColumns, EligibilityColumns, JobColumns, RepositoryColumns};
pub use eligibility::Evaluator;
pub use health::{evaluate_health, evaluate_health_traced, evaluate_health_with};
pub use id::{IdSet, RepoId};
pub use signals::{backlog_growing, evaluate_health_signals, raise_by_signals, GROWING_MIN_REPORTS};
pub use trace::{Check, NoTrace, Section, Trace, Tracer, UNTRACED};
pub use types::*;

/// Name reported by the reference policy's `info()`.
pub const POLICY_NAME: &str = "rollout-reference";
/// Version reported by the reference policy's `info()`.
pub const POLICY_VERSION: &str = env!("CARGO_PKG_VERSION");
