//! rollout — the host of the rollout policy component.
//!
//! The rules of a progressive rollout live in a sandboxed WebAssembly component (the WIT
//! package in `wit/`, the reference implementation in `rollout-policy`). This crate is
//! everything around it:
//!
//! - [`engine`]: the one [`engine::Policy`] trait everything decides through;
//! - [`runtime`]: loads components with wasmtime, bounds every call, pools instances,
//!   validates and hot-swaps new versions ([`runtime::Runtime`], [`runtime::Sandbox`]);
//! - [`store`] and [`manager`]: configuration, categories, outcomes and the audit trail in
//!   Postgres or SQLite, every operation of the seed design done atomically;
//! - [`service`]: what a rollout process does — features, decisions, operator operations,
//!   outcomes, the policy lifecycle, background loops — once for every edge;
//! - [`input`]: typed, validated input shared by every edge;
//! - [`http`] and [`cli`]: the thin edges: the `rollout serve` API and the commands;
//! - [`cases`] and [`authoring`]: offline case files, simulate, diff, explain.
//!
//! Embedding the policy in a Rust program takes a runtime and a configuration snapshot:
//!
//! ```no_run
//! use rollout::engine::{ConfigSnapshot, Policy};
//! use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
//! use rollout_policy::{Config, Job, Repository, TriggerSource};
//!
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
//! let config = ConfigSnapshot::new(Config { rollout_percentage: 25, is_active: true, ..Config::default() });
//! let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
//! let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
//! let decision = runtime.route(&config, &repo, &job)?;
//! println!("{} ({})", decision.processor, decision.rule);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod authoring;
pub mod cases;
pub mod cli;
mod demo;
pub mod engine;
pub mod env;
pub mod http;
pub mod input;
pub mod manager;
mod rng;
pub mod runtime;
pub mod service;
pub mod store;
