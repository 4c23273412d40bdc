//! [`Sandbox`]: one policy component as it is, for the offline tools.
//!
//! The case runner (`rollout policy test|eval`), the authoring tools (simulate, diff, bench,
//! explain) and embedders that test a component want its decisions — including the wrong
//! ones — so a sandbox skips the safety contract and has no probation; it keeps the same
//! bounds on every call (deadline, memory cap) and the same instance handling as a serving
//! version (a trapped instance is replaced by a fresh one on the next call).

use super::pool::{Serving, Version};
use super::{new_engine, CompiledPolicy, Limits, LoadError, PolicyInstance};
use crate::engine::{CallError, CallResult};
use std::sync::Arc;

/// One compiled component with one instance slot. `Send + Sync`; calls from several
/// threads take turns.
pub struct Sandbox {
    serving: Serving,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("policy", &self.serving.version.info).finish()
    }
}

impl Sandbox {
    /// Compile `bytes` (named `source` in errors), check that they implement the world and
    /// answer `info()`, and keep the first instance.
    pub fn compile(bytes: &[u8], source: &str, limits: Limits) -> Result<Sandbox, LoadError> {
        let engine = new_engine()?;
        let component = super::compile_component(&engine, bytes, source)?;
        let (compiled, first) = CompiledPolicy::check(&engine, component, super::sha256_hex(bytes), source, &limits)?;
        Ok(Sandbox::from_compiled(compiled, source, limits, Some(first)))
    }

    /// A sandbox over an already compiled policy.
    pub fn new(compiled: CompiledPolicy, limits: Limits) -> Sandbox {
        Sandbox::from_compiled(compiled, "compiled", limits, None)
    }

    fn from_compiled(compiled: CompiledPolicy, source: &str, limits: Limits, warm: Option<PolicyInstance>) -> Sandbox {
        let version = Arc::new(Version::new(compiled, source));
        Sandbox { serving: Serving::new(version, 1, limits, None, warm) }
    }

    fn call<R>(&self, items: u64, f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>) -> CallResult<R> {
        self.serving.call(items, f).0
    }

    /// The contract version of the component.
    pub fn serving_contract(&self) -> Option<&'static str> {
        Some(self.serving.version.compiled.contract())
    }

    /// The contract version the component speaks ([`super::CompiledPolicy::contract`]).
    pub fn contract(&self) -> &'static str {
        self.serving.version.compiled.contract()
    }

    /// The interfaces the component exports ([`super::CompiledPolicy::interfaces`]).
    pub fn interfaces(&self) -> Vec<&'static str> {
        self.serving.version.compiled.interfaces()
    }
}

super::policy_through_instances!(Sandbox, |s: &Sandbox| Some(s.serving.version.info.clone()));
