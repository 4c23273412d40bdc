//! One policy instance: a wasmtime `Store` with the component instantiated in it, and the
//! guest's evaluator resources for the configurations it saw last.
//!
//! Single decisions go through the component's `packed` interface when it has one and the
//! request fits it (a UUID id, a job without `job_type` or PR numbers): one scalar call,
//! nothing copied into guest memory. Everything else takes the typed `rules` call. The
//! safety contract checks on every load that both answer exactly as the batch does
//! ([`super::SafetyProperty::SingleAgrees`]).
//!
//! An instance is single-threaded (`&mut self`); the pool hands instances to threads.
//! Every call is bounded by the store's epoch deadline and memory limit; after any trap
//! the instance is poisoned and must be dropped (wasmtime refuses to re-enter an instance
//! that trapped).

use super::bindings::{self, w, Exports, PolicyPre};
use super::{CallError, Limits};
use crate::engine::{ConfigSnapshot, Decision, Explanation, Query};
use rollout_policy as p;
use rollout_policy::packed::{self as packing, PackedQuery};
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

/// What an instance built for one configuration: the typed evaluator resource and, when
/// the component has `packed`, the handle of the same configuration in its table.
#[derive(Debug, Clone, Copy)]
struct Evaluators {
    version: u64,
    resource: ResourceAny,
    packed: Option<u32>,
}

/// A live instance of a policy component.
pub struct PolicyInstance {
    store: Store<HostState>,
    exports: Exports,
    /// Most recently used first.
    evaluators: Vec<Evaluators>,
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

    /// The evaluators for `config`, built when this instance has not seen the
    /// configuration's version (or has evicted it).
    #[inline]
    fn evaluators(&mut self, config: &ConfigSnapshot) -> Result<Evaluators, CallError> {
        let version = config.version();
        if let Some(&hit) = self.evaluators.first() {
            if hit.version == version {
                return Ok(hit);
            }
        }
        if let Some(i) = self.evaluators.iter().position(|e| e.version == version) {
            let hit = self.evaluators.remove(i);
            self.evaluators.insert(0, hit);
            return Ok(hit);
        }
        self.create_evaluators(config)
    }

    #[cold]
    fn create_evaluators(&mut self, config: &ConfigSnapshot) -> Result<Evaluators, CallError> {
        if self.evaluators.len() >= EVALUATORS {
            if let Some(old) = self.evaluators.pop() {
                // Runs the guest's destructor (and frees its packed handle), so its memory
                // does not grow with every configuration it ever saw.
                self.call(|_, s| old.resource.resource_drop(s))?;
                if let Some(handle) = old.packed {
                    self.call(|b, s| b.packed.as_ref().map_or(Ok(()), |x| x.call_close(s, handle)))?;
                }
            }
        }
        let wc = bindings::config_out(config.config());
        let resource = self
            .call(|b, s| b.rules.evaluator().call_create(s, &wc))?
            .map_err(|e| CallError::Config(p::ConfigError { field: e.field, message: e.message }))?;
        // A component whose `packed.open` refuses what `create` accepted is served by the
        // typed calls only, for this configuration.
        let packed = match self.exports.packed.is_some() {
            true => self.call(|b, s| match &b.packed {
                Some(x) => x.call_open(s, &wc).map(|opened| opened.ok()),
                None => Ok(None),
            })?,
            false => None,
        };
        let built = Evaluators { version: config.version(), resource, packed };
        self.evaluators.insert(0, built);
        Ok(built)
    }

    /// Whether this instance answers single decisions through `packed` (the component
    /// exports it).
    pub fn has_packed(&self) -> bool {
        self.exports.packed.is_some()
    }

    /// Whether the component exports `monitoring` (contract 0.1.1).
    pub fn has_monitoring(&self) -> bool {
        self.exports.monitoring.is_some()
    }

    /// Check `config` with the policy (the guest's `create`), keeping the evaluator.
    pub fn configure(&mut self, config: &ConfigSnapshot) -> Result<(), CallError> {
        self.evaluators(config).map(|_| ())
    }

    /// Eligibility of one repository: through `packed` when the component has it and the
    /// id is a UUID, else the typed call.
    #[inline]
    pub fn is_eligible(&mut self, config: &ConfigSnapshot, repo: &p::Repository) -> Result<p::Eligibility, CallError> {
        let ev = self.evaluators(config)?;
        if let (Some(handle), Some((hi, lo, category))) = (ev.packed, PackedQuery::encode_repository(repo)) {
            let answer = self.call(|b, s| match &b.packed {
                Some(x) => x.call_is_eligible(s, handle, hi, lo, category),
                None => Ok(packing::REFUSED),
            })?;
            return packing::decode_eligibility(answer).map_err(bindings::bad_packed);
        }
        self.is_eligible_with(ev, repo)
    }

    /// Eligibility of one repository through the typed call, whatever the request.
    pub fn is_eligible_typed(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
    ) -> Result<p::Eligibility, CallError> {
        let ev = self.evaluators(config)?;
        self.is_eligible_with(ev, repo)
    }

    fn is_eligible_with(&mut self, ev: Evaluators, repo: &p::Repository) -> Result<p::Eligibility, CallError> {
        let r = bindings::repository_out(repo);
        let e = self.call(|b, s| b.rules.evaluator().call_is_eligible(s, ev.resource, &r))?;
        Ok(bindings::eligibility_in(e))
    }

    /// Eligibility of many repositories, in order.
    pub fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError> {
        let ev = self.evaluators(config)?.resource;
        let rs = bindings::repository_columns_out(p::RepositoryColumns::encode(repos));
        let out = self
            .call(|b, s| b.rules.evaluator().call_is_eligible_batch(s, ev, &rs))?
            .map_err(bindings::batch_error_in)?;
        bindings::eligibility_columns_in(out).decode(repos.len()).map_err(bindings::bad_columns)
    }

    /// Where a job runs: through `packed` when the component has it and the request fits
    /// ([`PackedQuery::encode`]), else the typed call.
    #[inline]
    pub fn route(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        let ev = self.evaluators(config)?;
        if let (Some(handle), Some(q)) = (ev.packed, PackedQuery::encode(repo, job)) {
            let answer = self.call(|b, s| match &b.packed {
                Some(x) => {
                    x.call_route(s, handle, q.hi, q.lo, q.category, q.trigger_source, q.time_range_days, q.max_items)
                }
                None => Ok(packing::REFUSED),
            })?;
            return packing::decode_route(answer).map_err(bindings::bad_packed);
        }
        self.route_with(ev, repo, job)
    }

    /// Where a job runs, through the typed call whatever the request.
    pub fn route_typed(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        let ev = self.evaluators(config)?;
        self.route_with(ev, repo, job)
    }

    fn route_with(
        &mut self,
        ev: Evaluators,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        let (r, j) = (bindings::repository_out(repo), bindings::job_out(job));
        let d = self.call(|b, s| b.rules.evaluator().call_route(s, ev.resource, &r, &j))?;
        Ok(bindings::decision_in(d))
    }

    /// Where many jobs run, in order.
    pub fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError> {
        let ev = self.evaluators(config)?.resource;
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

    /// Health from every indicator: the component's `monitoring` call when it speaks
    /// contract 0.1.1, else `rules.evaluate-health` (error rate only; the signals are not
    /// judged by a component that does not know them).
    pub fn evaluate_health_signals(
        &mut self,
        config: &p::Config,
        windows: &[p::ProcessorWindow],
        signals: &[p::ProcessorSignals],
        limits: &p::HealthLimits,
    ) -> Result<p::Health, CallError> {
        if !self.has_monitoring() {
            return self.evaluate_health(config, windows);
        }
        let wc = bindings::config_out(config);
        let ws: Vec<w::ProcessorWindow> = windows.iter().map(bindings::window_out).collect();
        let wsig: Vec<w::ProcessorSignals> = signals.iter().map(bindings::signals_out).collect();
        let wl = bindings::limits_out(limits);
        let missing = || wasmtime::Error::msg("the monitoring interface vanished");
        let h = self.call(|b, s| {
            b.monitoring.as_ref().ok_or_else(missing)?.call_evaluate_health_signals(s, &wc, &ws, &wsig, wl)
        })?;
        Ok(bindings::health_in(h))
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
