//! One policy instance: a wasmtime `Store` with the component instantiated in it, and the
//! guest's evaluator resource for the configuration it saw last.
//!
//! An instance is single-threaded (`&mut self`); the pooled runtime hands instances to
//! threads. Every call is bounded by the store's epoch deadline and memory limit; after
//! any trap the instance is poisoned and must be dropped (wasmtime refuses to re-enter an
//! instance that trapped).

use super::bindings::{self, w, Policy, PolicyPre};
use super::{CallError, Limits};
use crate::engine::ConfigSnapshot;
use rollout_policy as p;
use wasmtime::component::ResourceAny;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};

/// Per-store host state: only the resource limiter (the policy imports nothing).
pub struct HostState {
    limits: StoreLimits,
}

/// A live instance of a policy component.
pub struct PolicyInstance {
    store: Store<HostState>,
    bindings: Policy,
    evaluator: Option<(u64, ResourceAny)>,
    epoch_ticks: u64,
    poisoned: bool,
}

impl PolicyInstance {
    /// Instantiate `pre` in a fresh store bounded by `limits`.
    pub(crate) fn new(pre: &PolicyPre<HostState>, limits: &Limits) -> Result<PolicyInstance, CallError> {
        let engine = pre.engine();
        let state = HostState {
            limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).instances(4).tables(16).build(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // The deadline must be set before instantiation, or instantiation itself traps.
        store.set_epoch_deadline(limits.epoch_ticks);
        let bindings = pre.instantiate(&mut store).map_err(CallError::trap)?;
        Ok(PolicyInstance { store, bindings, evaluator: None, epoch_ticks: limits.epoch_ticks, poisoned: false })
    }

    /// Whether a call trapped or timed out; a poisoned instance must be dropped.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Run one guest call under a fresh deadline; any wasmtime error poisons the instance.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&Policy, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        self.store.set_epoch_deadline(self.epoch_ticks);
        match f(&self.bindings, &mut self.store) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.poisoned = true;
                self.evaluator = None;
                Err(CallError::trap(e))
            }
        }
    }

    /// The policy's name and version.
    pub fn info(&mut self) -> Result<(String, String), CallError> {
        let info = self.call(|b, s| b.rollout_policy_rules().call_info(s))?;
        Ok((info.name, info.version))
    }

    /// The evaluator resource for `config`, built when the configuration's version changed.
    fn evaluator(&mut self, config: &ConfigSnapshot) -> Result<ResourceAny, CallError> {
        if let Some((version, res)) = &self.evaluator {
            if *version == config.version() {
                return Ok(*res);
            }
        }
        if let Some((_, old)) = self.evaluator.take() {
            self.call(|_, s| old.resource_drop(s))?;
        }
        let wc = bindings::config_out(config.config());
        let created = self.call(|b, s| b.rollout_policy_rules().evaluator().call_create(s, &wc))?;
        match created {
            Ok(res) => {
                self.evaluator = Some((config.version(), res));
                Ok(res)
            }
            Err(e) => Err(CallError::Config(p::ConfigError { field: e.field, message: e.message })),
        }
    }

    /// Check `config` with the policy (the guest's `create`), keeping the evaluator.
    pub fn configure(&mut self, config: &ConfigSnapshot) -> Result<(), CallError> {
        self.evaluator(config).map(|_| ())
    }

    /// Eligibility of one repository.
    pub fn is_eligible(&mut self, config: &ConfigSnapshot, repo: &p::Repository) -> Result<p::Eligibility, CallError> {
        let ev = self.evaluator(config)?;
        let r = bindings::repository_out(repo);
        let e = self.call(|b, s| b.rollout_policy_rules().evaluator().call_is_eligible(s, ev, &r))?;
        Ok(bindings::eligibility_in(e))
    }

    /// Eligibility of many repositories, in order.
    pub fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError> {
        let ev = self.evaluator(config)?;
        let rs: Vec<w::Repository> = repos.iter().map(bindings::repository_out).collect();
        let out = self.call(|b, s| b.rollout_policy_rules().evaluator().call_is_eligible_batch(s, ev, &rs))?;
        Ok(out.into_iter().map(bindings::eligibility_in).collect())
    }

    /// Where a job runs.
    pub fn route(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        let ev = self.evaluator(config)?;
        let (r, j) = (bindings::repository_out(repo), bindings::job_out(job));
        let d = self.call(|b, s| b.rollout_policy_rules().evaluator().call_route(s, ev, &r, &j))?;
        Ok(bindings::decision_in(d))
    }

    /// Where many jobs run, in order.
    pub fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError> {
        let ev = self.evaluator(config)?;
        let rs: Vec<w::RouteRequest> = requests
            .iter()
            .map(|(r, j)| w::RouteRequest { repository: bindings::repository_out(r), job: bindings::job_out(j) })
            .collect();
        let out = self.call(|b, s| b.rollout_policy_rules().evaluator().call_route_batch(s, ev, &rs))?;
        Ok(out.into_iter().map(bindings::decision_in).collect())
    }

    /// The category of a repository.
    pub fn categorize(&mut self, stats: &p::RepositoryStats) -> Result<p::Categorization, CallError> {
        let st = bindings::stats_out(stats);
        let c = self.call(|b, s| b.rollout_policy_rules().call_categorize(s, st))?;
        Ok(bindings::categorization_in(c))
    }

    /// Health over the window.
    pub fn evaluate_health(
        &mut self,
        config: &p::Config,
        windows: &[p::ProcessorWindow],
    ) -> Result<p::Health, CallError> {
        let wc = bindings::config_out(config);
        let ws: Vec<w::ProcessorWindow> = windows.iter().map(bindings::window_out).collect();
        let h = self.call(|b, s| b.rollout_policy_rules().call_evaluate_health(s, &wc, &ws))?;
        Ok(bindings::health_in(h))
    }
}

impl Drop for PolicyInstance {
    fn drop(&mut self) {
        if let (Some((_, res)), false) = (self.evaluator.take(), self.poisoned) {
            // Dropping the store frees everything; this only runs the guest's destructor.
            let _ = res.resource_drop(&mut self.store);
        }
    }
}
