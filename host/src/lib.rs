//! rollout — the host of the rollout policy component.
#![deny(missing_docs)]

pub mod engine;
pub mod authoring;
pub mod store;
pub mod http;
pub mod demo;
pub mod manager;
pub mod env;
