//! Policy authoring tools: what an author runs offline before a new policy version serves.
//!
//! - [`simulate`]: ramp a configuration through percentages over a set of repositories and
//!   check that raising the percentage only ever adds repositories;
//! - [`diff`]: evaluate two policy versions on the same case files or recorded requests and
//!   group the decisions that change;
//! - [`mod@bench`]: decisions per second of a component, one call per decision and batched;
//! - [`explain`]: the chain of checks of SPEC §2 in words, with the line that decided;
//! - [`replay`]: re-evaluate logged decisions under their own policy and configuration
//!   (a determinism check) or under another policy (a what-if), and export them.
//!
//! The CLI (`rollout policy simulate|diff|bench`, `rollout explain`) is a thin shell over
//! these modules. Every tool asks its policy through the one policy trait,
//! [`crate::engine::Policy`]: a component ([`crate::runtime::Sandbox`]) or the reference
//! rules linked natively ([`crate::engine::NativePolicy`]), so the logic is tested without
//! WebAssembly too.

pub mod bench;
pub mod diff;
pub mod explain;
pub mod replay;
pub mod simulate;
