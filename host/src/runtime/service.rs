//! [`Runtime`]: the serving policy, hot swaps, status and events.

use super::cache::DiskCache;
use super::pool::{Counts, Probation, Serving, Verdict, Version};
use super::safety::{Checker, SafetyProperty, MIN_SAMPLE};
use super::{compile_component, sha256_hex, CallError, CompiledPolicy, Limits, LoadError, PolicyInstance};
use crate::engine::{CallResult, PolicyVersion};
use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How a [`Runtime`] runs policies.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Bounds on every guest call (default 10 ms, 16 MiB).
    pub limits: Limits,
    /// Instances per serving version; `0` means twice the available parallelism.
    pub pool_size: usize,
    /// Where compiled components and safety verdicts are cached; `None` keeps them in
    /// memory only. The directory must be writable by this host alone (a cached artifact
    /// is trusted native code).
    pub cache_dir: Option<PathBuf>,
    /// Largest component accepted, in bytes (default 8 MiB).
    pub max_upload_bytes: usize,
    /// Calls a newly loaded version is watched for; `0` disables automatic revert.
    pub auto_revert_window: u64,
    /// Share of those calls (0.0..=1.0) that may fall back before the version is reverted.
    pub auto_revert_threshold: f64,
    /// Repositories in the safety check's sample (at least 1,000).
    pub validation_sample: usize,
}

impl Default for RuntimeOptions {
    /// 10 ms / 16 MiB calls, 2 × cores instances, no disk cache, 8 MiB uploads, revert when
    /// more than 5 % of the first 1,000 calls fall back, a 1,000-repository sample.
    fn default() -> Self {
        RuntimeOptions {
            limits: Limits::default(),
            pool_size: 0,
            cache_dir: None,
            max_upload_bytes: 8 << 20,
            auto_revert_window: 1000,
            auto_revert_threshold: 0.05,
            validation_sample: MIN_SAMPLE,
        }
    }
}

/// Why a version was not loaded or activated. The serving version is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The bytes are larger than [`RuntimeOptions::max_upload_bytes`].
    #[error("policy `{source_name}` is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Where the bytes came from.
        source_name: String,
        /// Their size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The file could not be read.
    #[error("cannot read policy `{path}`: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The component does not compile, does not implement the world, or cannot answer
    /// `info()`.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The policy breaks the safety contract.
    #[error("policy breaks the safety contract, {property}: {counterexample}")]
    Unsafe {
        /// The property it breaks.
        property: SafetyProperty,
        /// The input that shows it and what the policy answered.
        counterexample: String,
    },
    /// There is no previous version to revert to.
    #[error("no previous policy version to revert to")]
    NoPrevious,
}

/// Where a loaded version's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileSource {
    /// Compiled now with Cranelift.
    Compiled,
    /// Deserialised from the on-disk cache.
    DiskCache,
    /// Already loaded in this process.
    Memory,
}

/// What a successful load or revert did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwapReport {
    /// The version now serving (for [`Runtime::validate_bytes`]: the version checked).
    pub version: PolicyVersion,
    /// The version serving before, now kept for [`Runtime::revert`].
    pub previous: Option<PolicyVersion>,
    /// Where the bytes came from.
    pub source: String,
    /// Where the compiled code came from.
    pub compiled: CompileSource,
    /// Decisions the safety check of the fixed sample made; `None` when a verdict for
    /// these exact bytes was already known (in memory or on disk).
    pub validated_decisions: Option<u64>,
    /// The check of a fresh random sample, made on every load whether or not the fixed
    /// verdict was known; `None` when nothing was checked (unchanged, revert).
    pub fresh_check: Option<FreshCheck>,
    /// The version was already serving; nothing changed.
    pub unchanged: bool,
    /// Time from the call to the new version serving, in milliseconds.
    pub elapsed_ms: f64,
}

/// The safety check of a fresh random sample (see [`super::SafetyProperty`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FreshCheck {
    /// The seed the sample was drawn from (part of any counterexample, to reproduce it).
    pub seed: u64,
    /// Decisions checked.
    pub decisions: u64,
}

/// An error kept for the status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorRecord {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What was being loaded.
    pub source: String,
    /// The error.
    pub message: String,
}

/// A version in the status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    /// Name, semver and sha256.
    #[serde(flatten)]
    pub policy: PolicyVersion,
    /// Where it was loaded from.
    pub source: String,
    /// When this process loaded it.
    pub loaded_at: DateTime<Utc>,
    /// Decisions, fallbacks and failures since it was loaded.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The first calls of the serving version, watched for automatic revert.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbationStatus {
    /// Calls watched so far.
    pub calls: u64,
    /// Of those, calls answered with the fallback.
    pub failed_calls: u64,
    /// Calls watched in all.
    pub window: u64,
    /// Largest share of failed calls tolerated.
    pub threshold: f64,
    /// The window is over.
    pub over: bool,
}

/// What the runtime is doing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeStatus {
    /// The version serving, if any.
    pub active: Option<VersionStatus>,
    /// When the serving version was activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// The version kept for revert.
    pub previous: Option<VersionStatus>,
    /// The last failed load, refusal or automatic revert.
    pub last_error: Option<ErrorRecord>,
    /// Every version loaded in this process (the most recent first), with its counts.
    pub versions: Vec<VersionStatus>,
    /// Activations (loads, reverts, automatic reverts).
    pub swaps: u64,
    /// Automatic reverts.
    pub auto_reverts: u64,
    /// Decisions answered with the fallback because no version was loaded.
    pub fallbacks_without_policy: u64,
    /// The serving version's probation, if it has one.
    pub probation: Option<ProbationStatus>,
    /// Bounds on every call.
    pub limits: Limits,
    /// Instances per serving version.
    pub pool_size: usize,
}

/// Something an operator may want in the audit log.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RuntimeEvent {
    /// A version started serving after a load or a manual revert.
    Activated {
        /// The new version.
        version: PolicyVersion,
        /// The version it replaced.
        previous: Option<PolicyVersion>,
        /// Where it came from (`revert` for a manual revert).
        source: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A version was refused; the serving version is unchanged.
    Refused {
        /// Where it came from.
        source: String,
        /// Why.
        error: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A new version fell back too often in its first calls.
    ProbationFailed {
        /// The failing version.
        version: PolicyVersion,
        /// Calls watched when it failed.
        calls: u64,
        /// Of those, calls answered with the fallback.
        failed_calls: u64,
        /// The version now serving instead; `None` when there was none to revert to.
        reverted_to: Option<PolicyVersion>,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Safety verdicts of this process, by `(sha256, sample size)`: the check is deterministic
/// and the policy imports nothing, so bytes that passed once pass again (every runtime of
/// the process shares them; the disk cache shares them across processes).
static VERDICTS: Mutex<Vec<(String, usize, u64)>> = Mutex::new(Vec::new());

fn known_verdict(sha256: &str, sample: usize) -> Option<u64> {
    lock(&VERDICTS).iter().find(|(s, n, _)| s == sha256 && *n == sample).map(|(_, _, d)| *d)
}

fn record_verdict(sha256: &str, sample: usize, decisions: u64) {
    let mut verdicts = lock(&VERDICTS);
    if !verdicts.iter().any(|(s, n, _)| s == sha256 && *n == sample) {
        verdicts.push((sha256.to_owned(), sample, decisions));
    }
}

/// A seed for a fresh safety sample: different in every call and every process.
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one((
        std::time::SystemTime::now(),
        std::process::id(),
        CALLS.fetch_add(1, Relaxed),
    ))
}

/// Loaded versions kept in memory for swaps back and forth without recompiling.
const KNOWN_VERSIONS: usize = 16;

struct Control {
    previous: Option<Arc<Version>>,
    /// Most recently loaded first.
    known: Vec<Arc<Version>>,
    last_error: Option<ErrorRecord>,
    swaps: u64,
    auto_reverts: u64,
}

struct Inner {
    options: RuntimeOptions,
    pool_size: usize,
    sample: usize,
    engine: wasmtime::Engine,
    cache: Option<DiskCache>,
    active: ArcSwapOption<Serving>,
    control: Mutex<Control>,
    no_policy: AtomicU64,
    subscribers: Mutex<Vec<Sender<RuntimeEvent>>>,
}

/// The policy runtime: serves decisions from the active version and swaps versions while
/// serving. Cheap to clone (a handle); `Send + Sync`.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("active", &self.policy_version()).field("options", &self.inner.options).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

impl Runtime {
    /// A runtime with no version loaded (every decision falls back until one is).
    pub fn new(options: RuntimeOptions) -> Result<Runtime, LoadError> {
        let engine = super::new_engine()?;
        let cache = options.cache_dir.as_deref().map(|d| DiskCache::new(d, &engine)).transpose()?;
        let pool_size = match options.pool_size {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() * 2).clamp(2, 64),
            n => n.min(64),
        };
        let sample = options.validation_sample.max(MIN_SAMPLE);
        let control = Control { previous: None, known: Vec::new(), last_error: None, swaps: 0, auto_reverts: 0 };
        Ok(Runtime {
            inner: Arc::new(Inner {
                options,
                pool_size,
                sample,
                engine,
                cache,
                active: ArcSwapOption::const_empty(),
                control: Mutex::new(control),
                no_policy: AtomicU64::new(0),
                subscribers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The options this runtime was made with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    /// Receive every [`RuntimeEvent`] from now on (swaps, refusals, automatic reverts).
    pub fn subscribe(&self) -> Receiver<RuntimeEvent> {
        let (tx, rx) = channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    fn emit(&self, event: RuntimeEvent) {
        lock(&self.inner.subscribers).retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn record_error(&self, source: &str, message: String) {
        lock(&self.inner.control).last_error = Some(ErrorRecord { at: Utc::now(), source: source.to_owned(), message });
    }

    pub(crate) fn refuse(&self, source: &str, error: SwapError) -> SwapError {
        let message = error.to_string();
        self.record_error(source, message.clone());
        self.emit(RuntimeEvent::Refused { source: source.to_owned(), error: message, at: Utc::now() });
        error
    }

    /// Check `bytes` (size, compilation, world, `info()`, safety contract) and make them
    /// the serving version; the version serving before is kept for [`Runtime::revert`].
    /// On any failure the serving version is unchanged, the error is kept in the status
    /// and a [`RuntimeEvent::Refused`] is sent.
    pub fn load_bytes(&self, bytes: &[u8], source: &str) -> Result<SwapReport, SwapError> {
        let start = Instant::now();
        let sha256 = sha256_hex(bytes);
        if let Some(serving) = self.inner.active.load().as_ref() {
            if serving.version.info.sha256 == sha256 {
                return Ok(SwapReport {
                    version: PolicyVersion::clone(&serving.version.info),
                    previous: lock(&self.inner.control).previous.as_ref().map(|v| PolicyVersion::clone(&v.info)),
                    source: source.to_owned(),
                    compiled: CompileSource::Memory,
                    validated_decisions: None,
                    fresh_check: None,
                    unchanged: true,
                    elapsed_ms: elapsed_ms(start),
                });
            }
        }
        let (version, warm, compiled, validated, fresh) =
            self.prepare(bytes, &sha256, source).map_err(|e| self.refuse(source, e))?;
        let previous = self.activate(version.clone(), warm, true);
        self.emit(RuntimeEvent::Activated {
            version: PolicyVersion::clone(&version.info),
            previous: previous.clone(),
            source: source.to_owned(),
            at: Utc::now(),
        });
        Ok(SwapReport {
            version: PolicyVersion::clone(&version.info),
            previous,
            source: source.to_owned(),
            compiled,
            validated_decisions: validated,
            fresh_check: Some(fresh),
            unchanged: false,
            elapsed_ms: elapsed_ms(start),
        })
    }

    /// [`Runtime::load_bytes`] with the contents of `path`.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<SwapReport, SwapError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = self.read(path).map_err(|e| self.refuse(&source, e))?;
        self.load_bytes(&bytes, &source)
    }

    pub(crate) fn read(&self, path: &Path) -> Result<Vec<u8>, SwapError> {
        let read_error =
            |e: std::io::Error| SwapError::Read { path: path.display().to_string(), message: e.to_string() };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        self.check_size(size, &path.display().to_string())?;
        std::fs::read(path).map_err(read_error)
    }

    fn check_size(&self, size: u64, source: &str) -> Result<(), SwapError> {
        let limit = self.inner.options.max_upload_bytes;
        if size > limit as u64 {
            return Err(SwapError::TooLarge { source_name: source.to_owned(), size, limit });
        }
        Ok(())
    }

    /// Check `bytes` as [`Runtime::load_bytes`] does, without activating them (for
    /// uploads). A version that passes stays compiled in memory, so loading it next is
    /// quick.
    pub fn validate_bytes(&self, bytes: &[u8], source: &str) -> Result<PolicyVersion, SwapError> {
        let sha256 = sha256_hex(bytes);
        self.prepare(bytes, &sha256, source).map(|(v, ..)| PolicyVersion::clone(&v.info))
    }

    /// Compile (or find), check and validate a version.
    #[allow(clippy::type_complexity, reason = "private plumbing")]
    fn prepare(
        &self,
        bytes: &[u8],
        sha256: &str,
        source: &str,
    ) -> Result<(Arc<Version>, Option<PolicyInstance>, CompileSource, Option<u64>, FreshCheck), SwapError> {
        self.check_size(bytes.len() as u64, source)?;
        let inner = &self.inner;
        let limits = inner.options.limits;
        let known = lock(&inner.control).known.iter().find(|v| v.info.sha256 == sha256).cloned();
        let (version, mut warm, compiled) = match known {
            Some(v) => (v, None, CompileSource::Memory),
            None => {
                let cached = inner.cache.as_ref().and_then(|c| c.load(&inner.engine, sha256));
                let (component, from) = match cached {
                    Some(c) => (c, CompileSource::DiskCache),
                    None => {
                        let c = compile_component(&inner.engine, bytes, source)?;
                        if let Some(cache) = &inner.cache {
                            cache.store(sha256, &c);
                        }
                        (c, CompileSource::Compiled)
                    }
                };
                let (compiled, first) =
                    CompiledPolicy::check(&inner.engine, component, sha256.to_owned(), source, &limits)?;
                let version = Arc::new(Version::new(compiled, source));
                let verdict = known_verdict(sha256, inner.sample)
                    .or_else(|| inner.cache.as_ref().and_then(|c| c.verdict_of(sha256, inner.sample)));
                if let Some(decisions) = verdict {
                    let _ = version.validated.set(decisions);
                }
                (version, Some(first), from)
            }
        };
        let mut instance = match warm.take() {
            Some(i) => i,
            None => version
                .compiled
                .instantiate(&limits)
                .map_err(|error| LoadError::Call { source_name: source.to_owned(), error })?,
        };
        let validated = match version.validated.get() {
            Some(_) => None,
            None => {
                let checked = Checker::new(&mut instance, inner.sample)
                    .run()
                    .map_err(|v| SwapError::Unsafe { property: v.property, counterexample: v.counterexample })?;
                let _ = version.validated.set(checked);
                record_verdict(sha256, inner.sample, checked);
                if let Some(cache) = &inner.cache {
                    cache.record_verdict(sha256, inner.sample, checked);
                }
                Some(checked)
            }
        };
        // The fresh sample, every time: a cached verdict covers the fixed sample only.
        let seed = fresh_seed();
        let decisions = Checker::fresh(&mut instance, seed)
            .run()
            .map_err(|v| SwapError::Unsafe { property: v.property, counterexample: v.counterexample })?;
        self.remember(&version);
        Ok((version, Some(instance), compiled, validated, FreshCheck { seed, decisions }))
    }

    fn remember(&self, version: &Arc<Version>) {
        let mut control = lock(&self.inner.control);
        control.known.retain(|v| !Arc::ptr_eq(v, version));
        control.known.insert(0, version.clone());
        if control.known.len() > KNOWN_VERSIONS {
            let active = self.inner.active.load_full();
            let keep = |v: &Arc<Version>| {
                active.as_ref().is_some_and(|s| Arc::ptr_eq(&s.version, v))
                    || control.previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, v))
            };
            if let Some(i) = control.known.iter().rposition(|v| !keep(v)) {
                control.known.remove(i);
            }
        }
    }

    /// Check `bytes` as [`Runtime::load_bytes`] does (size, compilation, world, `info()`,
    /// the safety contract on the fixed and a fresh sample) and load them *beside* the
    /// serving version, as a [`Candidate`] with its own pool of instances: shadow and canary
    /// evaluation (`service::candidate`). The serving version is unchanged; a refusal is
    /// kept in the status like any other.
    pub fn candidate_bytes(&self, bytes: &[u8], source: &str) -> Result<Candidate, SwapError> {
        let sha256 = sha256_hex(bytes);
        let (version, warm, ..) = self.prepare(bytes, &sha256, source).map_err(|e| self.refuse(source, e))?;
        let limits = self.inner.options.limits;
        Ok(Candidate { serving: Arc::new(Serving::new(version, self.inner.pool_size, limits, None, warm)) })
    }

    /// Make `version` serve; the version serving before becomes the previous one.
    fn activate(&self, version: Arc<Version>, warm: Option<PolicyInstance>, probation: bool) -> Option<PolicyVersion> {
        let opts = &self.inner.options;
        let probation = (probation && opts.auto_revert_window > 0)
            .then(|| Probation::new(opts.auto_revert_window, opts.auto_revert_threshold));
        // Instantiate the pool before taking the lock: callers never wait for it.
        let serving = Arc::new(Serving::new(version, self.inner.pool_size, opts.limits, probation, warm));
        let mut control = lock(&self.inner.control);
        let old = self.inner.active.swap(Some(serving));
        control.swaps += 1;
        let previous = old.as_ref().map(|s| s.version.clone());
        if previous.is_some() {
            control.previous = previous.clone();
        }
        drop(control);
        // `old` drops here or when its last in-flight call finishes.
        previous.map(|v| PolicyVersion::clone(&v.info))
    }

    /// Make the previous version serve again; the version serving now becomes the previous
    /// one.
    pub fn revert(&self) -> Result<SwapReport, SwapError> {
        let start = Instant::now();
        let Some(target) = lock(&self.inner.control).previous.clone() else {
            return Err(SwapError::NoPrevious);
        };
        let previous = self.activate(target.clone(), None, false);
        self.emit(RuntimeEvent::Activated {
            version: PolicyVersion::clone(&target.info),
            previous: previous.clone(),
            source: "revert".to_owned(),
            at: Utc::now(),
        });
        Ok(SwapReport {
            version: PolicyVersion::clone(&target.info),
            previous,
            source: "revert".to_owned(),
            compiled: CompileSource::Memory,
            validated_decisions: None,
            fresh_check: None,
            unchanged: false,
            elapsed_ms: elapsed_ms(start),
        })
    }

    /// A probation failed on `failing`: revert to the previous version if `failing` still
    /// serves.
    #[cold]
    fn probation_failed(&self, failing: &Arc<Serving>, calls: u64, failed: u64) {
        let current = self.inner.active.load_full();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, failing)) {
            return;
        }
        let target = lock(&self.inner.control).previous.clone();
        let reverted_to = target.map(|t| {
            self.activate(t.clone(), None, false);
            lock(&self.inner.control).auto_reverts += 1;
            PolicyVersion::clone(&t.info)
        });
        let info = &failing.version.info;
        let message = format!(
            "policy `{}` {} ({}) fell back on {failed} of its first {calls} calls; {}",
            info.name,
            info.version,
            info.sha256,
            match &reverted_to {
                Some(t) => format!("reverted to `{}` {} ({})", t.name, t.version, t.sha256),
                None => "no previous version to revert to".to_owned(),
            }
        );
        tracing::warn!("{message}");
        self.record_error("auto-revert", message);
        self.emit(RuntimeEvent::ProbationFailed {
            version: PolicyVersion::clone(info),
            calls,
            failed_calls: failed,
            reverted_to,
            at: Utc::now(),
        });
    }

    /// Run `f` on an instance of the serving version; an error (and a counted fallback) when
    /// there is none or the call failed.
    #[inline]
    fn call<R>(&self, items: u64, f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>) -> CallResult<R> {
        self.call_with(items, true, f)
    }

    /// [`Runtime::call`]; `probation` false for a read, which a new version's probation
    /// does not count.
    #[inline]
    fn call_with<R>(
        &self,
        items: u64,
        probation: bool,
        f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>,
    ) -> CallResult<R> {
        let guard = self.inner.active.load();
        let Some(serving) = guard.as_ref() else {
            self.inner.no_policy.fetch_add(items, Relaxed);
            return Err(CallError::NoPolicy);
        };
        let (result, verdict) = serving.call_with(items, probation, f);
        if let Verdict::Failed { calls, failed } = verdict {
            self.probation_failed(serving, calls, failed);
        }
        result
    }

    /// The status: serving and previous versions, counts, the last error.
    pub fn status(&self) -> RuntimeStatus {
        let active = self.inner.active.load_full();
        let control = lock(&self.inner.control);
        let counts = |v: &Arc<Version>| {
            let mut c = v.ended_counts();
            if let Some(s) = active.as_ref().filter(|s| Arc::ptr_eq(&s.version, v)) {
                let live = s.counts();
                c.decisions += live.decisions;
                c.fallbacks += live.fallbacks;
                c.traps += live.traps;
                c.timeouts += live.timeouts;
                c.memory_failures += live.memory_failures;
                c.config_refusals += live.config_refusals;
            }
            c
        };
        let status_of = |v: &Arc<Version>| VersionStatus {
            policy: PolicyVersion::clone(&v.info),
            source: v.source.clone(),
            loaded_at: v.loaded_at,
            counts: counts(v),
        };
        let mut versions: Vec<VersionStatus> = control.known.iter().map(status_of).collect();
        if let Some(s) = &active {
            if !control.known.iter().any(|v| Arc::ptr_eq(v, &s.version)) {
                versions.push(status_of(&s.version));
            }
        }
        RuntimeStatus {
            active: active.as_ref().map(|s| status_of(&s.version)),
            activated_at: active.as_ref().map(|s| s.activated_at),
            previous: control.previous.as_ref().map(status_of),
            last_error: control.last_error.clone(),
            versions,
            swaps: control.swaps,
            auto_reverts: control.auto_reverts,
            fallbacks_without_policy: self.inner.no_policy.load(Relaxed),
            probation: active.as_ref().and_then(|s| s.probation.as_ref()).map(|p| {
                let (calls, failed_calls, over) = p.snapshot();
                ProbationStatus { calls, failed_calls, window: p.window, threshold: p.threshold, over }
            }),
            limits: self.inner.options.limits,
            pool_size: self.inner.pool_size,
        }
    }

    /// Poll `path` (every 250 ms) and load it whenever its contents change, including at
    /// once if they differ from the serving version. Failures are kept in the status and
    /// sent as [`RuntimeEvent::Refused`]. Watching stops when the handle is dropped.
    pub fn watch(&self, path: impl Into<PathBuf>) -> super::WatchHandle {
        super::watch::spawn(self.clone(), path.into())
    }

    /// The sha256 of the serving version.
    pub(crate) fn active_sha256(&self) -> Option<String> {
        self.inner.active.load().as_ref().map(|s| s.version.info.sha256.clone())
    }

    /// The version serving now; `None` before the first load (the same as
    /// [`crate::engine::Policy::version`], callable without the trait in scope).
    pub fn policy_version(&self) -> Option<PolicyVersion> {
        self.inner.active.load().as_ref().map(|s| PolicyVersion::clone(&s.version.info))
    }

    /// The contract version of the serving component (`None` with none serving).
    pub fn serving_contract(&self) -> Option<&'static str> {
        self.inner.active.load().as_ref().map(|s| s.version.compiled.contract())
    }

    /// Instances alive in the serving version's pool (for tests and the status page).
    pub fn live_instances(&self) -> usize {
        self.inner.active.load().as_ref().map_or(0, |s| s.live_instances())
    }
}

/// A validated policy version loaded beside the serving one ([`Runtime::candidate_bytes`]):
/// it answers calls from its own pool of instances and never serves unless its caller sends
/// it a decision. Cheap to clone (a handle). A trap discards the instance, as in serving, and
/// is counted in [`Candidate::counts`]; there is no probation (the canary guard judges it).
#[derive(Clone)]
pub struct Candidate {
    serving: Arc<Serving>,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate").field("version", &self.serving.version.info).finish()
    }
}

impl Candidate {
    #[inline]
    fn call<R>(&self, items: u64, f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>) -> CallResult<R> {
        self.serving.call_with(items, false, f).0
    }

    /// The candidate's name, semver and sha256 (always `Some`; the shape of
    /// [`Runtime::policy_version`]).
    pub fn policy_version(&self) -> Option<PolicyVersion> {
        Some(PolicyVersion::clone(&self.serving.version.info))
    }

    /// The candidate's sha256.
    pub fn sha256(&self) -> &str {
        &self.serving.version.info.sha256
    }

    /// The contract version the component implements.
    pub fn serving_contract(&self) -> Option<&'static str> {
        Some(self.serving.version.compiled.contract())
    }

    /// Its decisions, fallbacks and traps so far.
    pub fn counts(&self) -> Counts {
        self.serving.counts()
    }
}

super::policy_through_instances!(Candidate, |c: &Candidate| Some(c.serving.version.info.clone()));

super::policy_through_instances!(
    Runtime,
    |r: &Runtime| r.inner.active.load().as_ref().map(|s| s.version.info.clone()),
    |r: &Runtime, config, repositories: &[_]| {
        if repositories.is_empty() {
            return Ok(Vec::new());
        }
        r.call_with(repositories.len() as u64, false, |i| i.is_eligible_batch(config, repositories))
    }
);
