//! The wasmtime runtime: compiles, checks, pools and hot-swaps policy components.
//!
//! [`Runtime`] is what the rest of the host uses. It implements [`crate::engine::Policy`]
//! (total functions: when the component cannot answer — a trap, a timeout, a memory
//! failure, no policy loaded — the caller gets the `policy_error` fallback of SPEC §2.3),
//! and it swaps policy versions while serving:
//!
//! - **one engine** per process ([`new_engine`]), with epoch interruption ticked every
//!   millisecond by a background thread and the pooling instance allocator;
//! - **compiled once**: a component is compiled with Cranelift and, when a cache directory
//!   is configured, serialised to disk keyed by its sha256 and the engine's compatibility
//!   hash, so a restart or a swap back to a known version skips compilation;
//! - **checked before it serves**: compile, `instantiate_pre` and the typed pre-instance
//!   (the `policy` world, nothing imported), `info()`, and the safety contract on a
//!   generated sample ([`SafetyProperty`]); a refusal names the property and a
//!   counterexample, and the previous version keeps serving;
//! - **bounded calls**: every guest call runs under an epoch deadline (default 10 ms of
//!   running time) and a memory cap (default 16 MiB per instance) ([`Limits`]); an instance
//!   that trapped is discarded;
//! - **pooled instances**: each serving version owns a few instances, each behind its own
//!   lock, so threads decide in parallel; an instance keeps the guest evaluator resource of
//!   the configurations it saw last ([`crate::engine::ConfigSnapshot::version`]);
//! - **atomic swaps**: a call sees the old or the new version, never a mix; the previous
//!   version is kept for [`Runtime::revert`]; a new version whose fallback rate over its
//!   first calls passes a threshold is reverted automatically ([`RuntimeEvent`]).
//!
//! ```
//! use rollout::engine::{ConfigSnapshot, Policy};
//! use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
//! use rollout_policy::{Config, Job, Processor, Repository, Strategy, TriggerSource};
//!
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! let report = runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
//! assert_eq!(report.version.name, "rollout-reference");
//!
//! let config = ConfigSnapshot::new(Config {
//!     is_active: true,
//!     rollout_percentage: 100,
//!     rollout_strategy: Strategy::Percentage,
//!     ..Config::default()
//! });
//! let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
//! let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
//! assert_eq!(runtime.route(&config, &repo, &job)?.processor, Processor::GithubActions);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bindings;
mod cache;
mod instance;
mod pool;
mod safety;
mod sandbox;
mod service;
mod watch;

pub use instance::{HostState, PolicyInstance};
pub use pool::Counts;
pub use safety::SafetyProperty;
pub use sandbox::Sandbox;
pub use service::{
    Candidate, CompileSource, ErrorRecord, FreshCheck, ProbationStatus, Runtime, RuntimeEvent, RuntimeOptions,
    RuntimeStatus, SwapError, SwapReport, VersionStatus,
};
pub use watch::{WatchHandle, WATCH_SOURCE_PREFIX};

use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The reference policy component (`make policy` builds it into
/// `target/wasm/rollout_policy.wasm`; `host/build.rs` insists it exists).
pub static BUNDLED_POLICY: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm/rollout_policy.wasm"));

/// How often the engine's epoch advances: the unit of [`Limits::epoch_ticks`].
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bounds on every guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Epoch ticks (milliseconds, see [`EPOCH_TICK`]) a call may run before it is
    /// interrupted. Ticks are counted only while the call runs guest code, so a thread the
    /// operating system preempts is not charged for the time it waits.
    pub epoch_ticks: u64,
    /// Most linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// 10 ms and 16 MiB.
    fn default() -> Self {
        Limits { epoch_ticks: 10, memory_bytes: 16 << 20 }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component.
    #[error("`{source_name}` is not a valid policy component: {message}")]
    Compile {
        /// Where the bytes came from.
        source_name: String,
        /// The compiler's message.
        message: String,
    },
    /// The component does not implement the `rollout:policy` world.
    #[error("`{source_name}` does not implement the rollout:policy world: {message}")]
    World {
        /// Where the bytes came from.
        source_name: String,
        /// What is missing or mismatched.
        message: String,
    },
    /// A call failed while checking the component.
    #[error("`{source_name}` failed while being checked: {error}")]
    Call {
        /// Where the bytes came from.
        source_name: String,
        /// The failure.
        error: CallError,
    },
    /// The compilation cache directory cannot be used.
    #[error("cannot use the cache directory `{path}`: {message}")]
    Cache {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
}

pub use crate::engine::CallError;

/// The WIT contract `rollout:policy@0.1.0`: `rules` (required), `explain` and `packed`.
pub const CONTRACT_0_1_0: &str = "0.1.0";
/// `rollout:policy@0.1.1`: 0.1.0 plus `monitoring` (health from backlog and processing time).
pub const CONTRACT_0_1_1: &str = "0.1.1";

/// `impl Policy for $t` over its `call(items, |instance| …)`: every decision function is one
/// guest call on a pooled instance (shared by [`Runtime`] and [`Sandbox`]).
macro_rules! policy_through_instances {
    ($t:ty, $version:expr) => {
        $crate::runtime::policy_through_instances!($t, $version, |p: &$t, config, repositories: &[_]| {
            $crate::engine::Policy::is_eligible_batch(p, config, repositories)
        });
    };
    ($t:ty, $version:expr, $read_batch:expr) => {
        impl $crate::engine::Policy for $t {
            fn version(&self) -> Option<$crate::engine::PolicyVersion> {
                ($version)(self).map(|v: std::sync::Arc<$crate::engine::PolicyVersion>| (*v).clone())
            }

            fn version_shared(&self) -> Option<std::sync::Arc<$crate::engine::PolicyVersion>> {
                ($version)(self)
            }

            fn judges_signals(&self) -> bool {
                <$t>::serving_contract(self) == Some($crate::runtime::CONTRACT_0_1_1)
            }

            fn is_eligible_batch_for_read(
                &self,
                config: &std::sync::Arc<$crate::engine::ConfigSnapshot>,
                repositories: &[rollout_policy::Repository],
            ) -> $crate::engine::CallResult<Vec<rollout_policy::Eligibility>> {
                ($read_batch)(self, config, repositories)
            }

            fn is_eligible(
                &self,
                config: &std::sync::Arc<$crate::engine::ConfigSnapshot>,
                repository: &rollout_policy::Repository,
            ) -> $crate::engine::CallResult<rollout_policy::Eligibility> {
                self.call(1, |i| i.is_eligible(config, repository))
            }

            fn is_eligible_batch(
                &self,
                config: &std::sync::Arc<$crate::engine::ConfigSnapshot>,
                repositories: &[rollout_policy::Repository],
            ) -> $crate::engine::CallResult<Vec<rollout_policy::Eligibility>> {
                if repositories.is_empty() {
                    return Ok(Vec::new());
                }
                self.call(repositories.len() as u64, |i| i.is_eligible_batch(config, repositories))
            }

            fn route(
                &self,
                config: &std::sync::Arc<$crate::engine::ConfigSnapshot>,
                repository: &rollout_policy::Repository,
                job: &rollout_policy::Job,
            ) -> $crate::engine::CallResult<rollout_policy::RouteDecision> {
                self.call(1, |i| i.route(config, repository, job))
            }

            fn route_batch(
                &self,
                config: &std::sync::Arc<$crate::engine::ConfigSnapshot>,
                requests: &[(rollout_policy::Repository, rollout_policy::Job)],
            ) -> $crate::engine::CallResult<Vec<rollout_policy::RouteDecision>> {
                if requests.is_empty() {
                    return Ok(Vec::new());
                }
                self.call(requests.len() as u64, |i| i.route_batch(config, requests))
            }

            fn categorize(
                &self,
                stats: &rollout_policy::RepositoryStats,
            ) -> $crate::engine::CallResult<rollout_policy::Categorization> {
                self.call(1, |i| i.categorize(stats))
            }

            fn evaluate_health(
                &self,
                config: &rollout_policy::Config,
                windows: &[rollout_policy::ProcessorWindow],
            ) -> $crate::engine::CallResult<rollout_policy::Health> {
                self.call(1, |i| i.evaluate_health(config, windows))
            }

            fn evaluate_health_signals(
                &self,
                config: &rollout_policy::Config,
                windows: &[rollout_policy::ProcessorWindow],
                signals: &[rollout_policy::ProcessorSignals],
                limits: &rollout_policy::HealthLimits,
            ) -> $crate::engine::CallResult<rollout_policy::Health> {
                self.call(1, |i| i.evaluate_health_signals(config, windows, signals, limits))
            }

            fn explain(
                &self,
                query: &$crate::engine::Query,
            ) -> $crate::engine::CallResult<$crate::engine::Explanation> {
                self.call(1, |i| i.explain(query))
            }
        }
    };
}
pub(crate) use policy_through_instances;

/// Instances (and memories) the process-wide pooling allocator holds. Each runtime keeps
/// a few instances per serving version; 256 leaves room for many runtimes in one process
/// (tests) while reserving a bounded amount of address space.
const POOL_INSTANCES: u32 = 256;

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // `ROLLOUT_WASM_PERFMAP=1`: write /tmp/perf-<pid>.map so `perf` names guest functions.
    if std::env::var_os("ROLLOUT_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            // Keep the first MiB of a reused memory resident: instantiating into a warm
            // slot then resets it with a memset instead of page faults.
            .linear_memory_keep_resident(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The process's engine: Cranelift, epoch interruption, the pooling allocator, no
/// component-model-async (it adds ~0.5 µs to every call; see TOOLCHAIN.md).
///
/// Made once; every call returns a handle to the same engine (cheap to clone). The first
/// call starts the thread that advances the epoch every [`EPOCH_TICK`], which is what makes
/// [`Limits::epoch_ticks`] a deadline in milliseconds. If the pooling allocator cannot
/// reserve its address space, the engine falls back to on-demand allocation.
pub fn new_engine() -> Result<Engine, LoadError> {
    ENGINE
        .get_or_init(|| {
            let engine = Engine::new(&engine_config(true))
                .or_else(|_| Engine::new(&engine_config(false)))
                .map_err(|e| format!("{e:#}"))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("rollout-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                })
                .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
            Ok(engine)
        })
        .clone()
        .map_err(LoadError::Engine)
}

/// A compiled and checked policy component.
#[derive(Clone)]
pub struct CompiledPolicy {
    component: Component,
    pre: bindings::PolicyPre<HostState>,
    sha256: String,
    name: String,
    version: String,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompiledPolicy {
    /// Compile `bytes` (named `source_name` in errors), prove it satisfies the world, and
    /// read its `info()` from a first instance.
    pub fn compile(engine: &Engine, bytes: &[u8], source_name: &str) -> Result<CompiledPolicy, LoadError> {
        let component = compile_component(engine, bytes, source_name)?;
        Self::from_component(engine, component, sha256_hex(bytes), source_name)
    }

    /// Check an already compiled (or deserialised) component.
    pub fn from_component(
        engine: &Engine,
        component: Component,
        sha256: String,
        source_name: &str,
    ) -> Result<CompiledPolicy, LoadError> {
        Self::check(engine, component, sha256, source_name, &Limits::default()).map(|(compiled, _)| compiled)
    }

    /// Check a component and keep the instance that answered `info()`.
    pub(crate) fn check(
        engine: &Engine,
        component: Component,
        sha256: String,
        source_name: &str,
        limits: &Limits,
    ) -> Result<(CompiledPolicy, PolicyInstance), LoadError> {
        let linker: Linker<HostState> = Linker::new(engine);
        let world =
            |e: wasmtime::Error| LoadError::World { source_name: source_name.to_owned(), message: format!("{e:#}") };
        let instance_pre = linker.instantiate_pre(&component).map_err(world)?;
        let pre = bindings::PolicyPre::new(instance_pre).map_err(world)?;
        let mut compiled = CompiledPolicy { component, pre, sha256, name: String::new(), version: String::new() };
        let call = |error| LoadError::Call { source_name: source_name.to_owned(), error };
        let mut first = compiled.instantiate(limits).map_err(call)?;
        let (name, version) = first.info().map_err(call)?;
        compiled.name = name;
        compiled.version = version;
        Ok((compiled, first))
    }

    /// A fresh instance bounded by `limits`.
    pub fn instantiate(&self, limits: &Limits) -> Result<PolicyInstance, CallError> {
        PolicyInstance::new(&self.pre, limits)
    }

    /// The compiled component (for serialising to the on-disk cache).
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// Lowercase hex sha256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The contract version the component speaks, from the interfaces it exports:
    /// [`CONTRACT_0_1_1`] with `monitoring`, else [`CONTRACT_0_1_0`].
    pub fn contract(&self) -> &'static str {
        if self.pre.has_monitoring() {
            CONTRACT_0_1_1
        } else {
            CONTRACT_0_1_0
        }
    }

    /// The optional interfaces the component exports (`explain`, `packed`, `monitoring`),
    /// beside the required `rules`.
    pub fn interfaces(&self) -> Vec<&'static str> {
        let mut out = vec!["rules"];
        for (name, has) in [
            ("explain", self.pre.has_explain()),
            ("packed", self.pre.has_packed()),
            ("monitoring", self.pre.has_monitoring()),
        ] {
            if has {
                out.push(name);
            }
        }
        out
    }

    /// The policy's name, from `info()`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's version, from `info()`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Compile component bytes with Cranelift.
pub(crate) fn compile_component(engine: &Engine, bytes: &[u8], source_name: &str) -> Result<Component, LoadError> {
    Component::new(engine, bytes)
        .map_err(|e| LoadError::Compile { source_name: source_name.to_owned(), message: format!("{e:#}") })
}
