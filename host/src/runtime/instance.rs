//! One policy instance: a wasmtime `Store` with the component instantiated in it, and the
//! guest's evaluator resources for the configurations it saw last.
//!
//! An instance is single-threaded (`&mut self`); the pool hands instances to threads.
//! Every call is bounded by the store's epoch deadline and memory limit; after any trap
//! the instance is poisoned and must be dropped (wasmtime refuses to re-enter an instance
//! that trapped).

use super::bindings::{self, w, Exports, PolicyPre};
use super::{CallError, Limits};
use crate::engine::{ConfigSnapshot, Decision, Explanation, Query};
use rollout_policy as p;
use wasmtime::component::ResourceAny;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

/// Evaluator resources an instance keeps, most recently used first. A host serving a few
/// rollouts at once alternates between their configurations without rebuilding.
const EVALUATORS: usize = 8;

/// Per-store host state: the resource limiter and the deadline bookkeeping (the policy
/// imports nothing).
pub struct HostState {
    memory_cap: usize,
    memory_denied: bool,
    ticks_left: u64,
    timed_out: bool,
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A live instance of a policy component.
pub struct PolicyInstance {
    store: Store<HostState>,
    exports: Exports,
    /// `(config version, resource)`, most recently used first.
    evaluators: Vec<(u64, ResourceAny)>,
    limits: Limits,
    poisoned: bool,
}

impl PolicyInstance {
    /// Instantiate `pre` in a fresh store bounded by `limits`.
    pub(crate) fn new(pre: &PolicyPre<HostState>, limits: &Limits) -> Result<PolicyInstance, CallError> {
        let state = HostState {
            memory_cap: limits.memory_bytes,
            memory_denied: false,
            ticks_left: limits.epoch_ticks,
            timed_out: false,
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        // The deadline fires at every epoch tick the guest runs through; the callback
        // charges one tick to the call and interrupts it when none are left. Counting ticks
        // seen while running (rather than a fixed wall-clock deadline) keeps a thread that
        // was preempted mid-call from timing out spuriously.
        store.epoch_deadline_callback(|mut cx| {
            let state = cx.data_mut();
            if state.ticks_left == 0 {
                state.timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            Ok(UpdateDeadline::Continue(1))
        });
        // The deadline must be set before instantiation, or instantiation itself traps.
        store.set_epoch_deadline(1);
        let exports = pre.instantiate(&mut store).map_err(|e| {
            if store.data().memory_denied {
                CallError::MemoryExhausted(limits.memory_bytes)
            } else {
                CallError::Instantiate(format!("{e:#}"))
            }
        })?;
        Ok(PolicyInstance {
            store,
            exports,
            evaluators: Vec::with_capacity(EVALUATORS),
            limits: *limits,
            poisoned: false,
        })
    }

    /// Whether a call trapped or timed out; a poisoned instance must be dropped.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Run one guest call under a fresh deadline; any wasmtime error poisons the instance.
    #[inline]
    fn call<T>(
        &mut self,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        let state = self.store.data_mut();
        state.ticks_left = self.limits.epoch_ticks;
        state.timed_out = false;
        state.memory_denied = false;
        self.store.set_epoch_deadline(1);
        match f(&self.exports, &mut self.store) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.poisoned = true;
                self.evaluators.clear();
                let state = self.store.data();
                Err(if state.timed_out {
                    CallError::Timeout(self.limits.epoch_ticks)
                } else if state.memory_denied {
                    CallError::MemoryExhausted(self.limits.memory_bytes)
                } else {
                    CallError::trap(e)
                })
            }
        }
    }

    /// The policy's name and version.
    pub fn info(&mut self) -> Result<(String, String), CallError> {
        let info = self.call(|b, s| b.rules.call_info(s))?;
        Ok((info.name, info.version))
    }

    /// The evaluator resource for `config`, built when this instance has not seen the
    /// configuration's version (or has evicted it).
    #[inline]
    fn evaluator(&mut self, config: &ConfigSnapshot) -> Result<ResourceAny, CallError> {
        let version = config.version();
        if let Some(&(v, res)) = self.evaluators.first() {
            if v == version {
                return Ok(res);
            }
        }
        if let Some(i) = self.evaluators.iter().position(|(v, _)| *v == version) {
            let hit = self.evaluators.remove(i);
            self.evaluators.insert(0, hit);
            return Ok(hit.1);
        }
        self.create_evaluator(config)
    }

    #[cold]
    fn create_evaluator(&mut self, config: &ConfigSnapshot) -> Result<ResourceAny, CallError> {
        if self.evaluators.len() >= EVALUATORS {
            if let Some((_, old)) = self.evaluators.pop() {
                // Runs the guest's destructor, so its memory does not grow with every
                // configuration it ever saw.
                self.call(|_, s| old.resource_drop(s))?;
            }
        }
        let wc = bindings::config_out(config.config());
        let created = self.call(|b, s| b.rules.evaluator().call_create(s, &wc))?;
        match created {
            Ok(res) => {
                self.evaluators.insert(0, (config.version(), res));
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
        let e = self.call(|b, s| b.rules.evaluator().call_is_eligible(s, ev, &r))?;
        Ok(bindings::eligibility_in(e))
    }

    /// Eligibility of many repositories, in order.
    pub fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError> {
        let ev = self.evaluator(config)?;
        let rs = bindings::repository_columns_out(p::RepositoryColumns::encode(repos));
        let out = self
            .call(|b, s| b.rules.evaluator().call_is_eligible_batch(s, ev, &rs))?
            .map_err(bindings::batch_error_in)?;
        bindings::eligibility_columns_in(out).decode(repos.len()).map_err(bindings::bad_columns)
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
        let d = self.call(|b, s| b.rules.evaluator().call_route(s, ev, &r, &j))?;
        Ok(bindings::decision_in(d))
    }

    /// Where many jobs run, in order.
    pub fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError> {
        let ev = self.evaluator(config)?;
        // Columns: numbers cross the boundary as one copy per column (rollout_policy::columns).
        let rs = bindings::repository_columns_out(p::RepositoryColumns::encode(requests.iter().map(|(r, _)| r)));
        let js = bindings::job_columns_out(p::JobColumns::encode(requests.iter().map(|(_, j)| j)));
        let out = self
            .call(|b, s| b.rules.evaluator().call_route_batch(s, ev, &rs, &js))?
            .map_err(bindings::batch_error_in)?;
        bindings::decision_columns_in(out).decode(requests.len()).map_err(bindings::bad_columns)
    }

    /// The category of a repository.
    pub fn categorize(&mut self, stats: &p::RepositoryStats) -> Result<p::Categorization, CallError> {
        let st = bindings::stats_out(stats);
        let c = self.call(|b, s| b.rules.call_categorize(s, st))?;
        Ok(bindings::categorization_in(c))
    }

    /// The decision for `query` and the checks that reached it, from the component's own
    /// `explain` interface ([`CallError::Unsupported`] when it has none).
    pub fn explain(&mut self, query: &Query) -> Result<Explanation, CallError> {
        if self.exports.explain.is_none() {
            return Err(CallError::Unsupported(
                "this policy cannot explain its decisions: it does not export `rollout:policy/explain` (built \
                 before the contract had it)"
                    .into(),
            ));
        }
        let refused = |e: w::ConfigError| CallError::Config(p::ConfigError { field: e.field, message: e.message });
        let checks = |c: Vec<bindings::explain_iface::Check>| c.into_iter().map(bindings::check_in).collect();
        let missing = || wasmtime::Error::msg("the explain interface vanished");
        Ok(match query {
            Query::IsEligible(c, r) => {
                let (wc, wr) = (bindings::config_out(c), bindings::repository_out(r));
                let (d, cs) = self
                    .call(|b, s| b.explain.as_ref().ok_or_else(missing)?.call_explain_eligibility(s, &wc, &wr))?
                    .map_err(refused)?;
                Explanation { decision: Decision::Eligibility(bindings::eligibility_in(d)), checks: checks(cs) }
            }
            Query::Route(c, r, j) => {
                let (wc, wr, wj) = (bindings::config_out(c), bindings::repository_out(r), bindings::job_out(j));
                let (d, cs) = self
                    .call(|b, s| b.explain.as_ref().ok_or_else(missing)?.call_explain_route(s, &wc, &wr, &wj))?
                    .map_err(refused)?;
                Explanation { decision: Decision::Route(bindings::decision_in(d)), checks: checks(cs) }
            }
            Query::Categorize(st) => {
                let ws = bindings::stats_out(st);
                let (d, cs) =
                    self.call(|b, s| b.explain.as_ref().ok_or_else(missing)?.call_explain_categorize(s, ws))?;
                Explanation { decision: Decision::Categorization(bindings::categorization_in(d)), checks: checks(cs) }
            }
            Query::EvaluateHealth(c, w) => {
                let wc = bindings::config_out(c);
                let ws: Vec<w::ProcessorWindow> = w.iter().map(bindings::window_out).collect();
                let (d, cs) =
                    self.call(|b, s| b.explain.as_ref().ok_or_else(missing)?.call_explain_health(s, &wc, &ws))?;
                Explanation { decision: Decision::Health(bindings::health_in(d)), checks: checks(cs) }
            }
        })
    }

    /// Health over the window.
    pub fn evaluate_health(
        &mut self,
        config: &p::Config,
        windows: &[p::ProcessorWindow],
    ) -> Result<p::Health, CallError> {
        let wc = bindings::config_out(config);
        let ws: Vec<w::ProcessorWindow> = windows.iter().map(bindings::window_out).collect();
        let h = self.call(|b, s| b.rules.call_evaluate_health(s, &wc, &ws))?;
        Ok(bindings::health_in(h))
    }
}
