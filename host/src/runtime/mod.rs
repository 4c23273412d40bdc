//! The wasmtime runtime: compiles, checks and runs policy components.
//!
//! A component is compiled once per [`wasmtime::Engine`] into a [`CompiledPolicy`]: the
//! component, its pre-instantiation (which proves the component satisfies the `policy`
//! world and imports nothing the host does not give), its sha256 and its `info()`.
//! [`PolicyInstance`]s are instantiated from it; each call is bounded by an epoch deadline
//! and a memory cap ([`Limits`]).

mod bindings;
mod instance;

pub use instance::{HostState, PolicyInstance};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

/// Bounds on every guest call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Epoch ticks a call may run before it is interrupted (the runtime ticks the engine's
    /// epoch once per millisecond, so this is the deadline in milliseconds).
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
}

/// Why a guest call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The guest trapped, ran out of time or memory, or the call could not be made.
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The policy refused the configuration.
    #[error("policy refused the configuration: {0}")]
    Config(rollout_policy::ConfigError),
    /// An earlier call trapped; the instance cannot be entered again.
    #[error("policy instance is unusable after an earlier trap")]
    Poisoned,
}

impl CallError {
    pub(crate) fn trap(e: wasmtime::Error) -> CallError {
        CallError::Trap(format!("{e:#}"))
    }
}

/// The engine configuration every runtime uses: Cranelift, epoch interruption, no
/// component-model-async (it adds ~0.5 µs to every call; see TOOLCHAIN.md).
pub fn new_engine() -> Result<Engine, LoadError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))
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
        f.debug_struct("CompiledPolicy").field("name", &self.name).field("version", &self.version).field("sha256", &self.sha256).finish()
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
        let component = Component::new(engine, bytes)
            .map_err(|e| LoadError::Compile { source_name: source_name.to_owned(), message: format!("{e:#}") })?;
        Self::from_component(engine, component, sha256_hex(bytes), source_name)
    }

    /// Check an already compiled (or deserialised) component.
    pub fn from_component(
        engine: &Engine,
        component: Component,
        sha256: String,
        source_name: &str,
    ) -> Result<CompiledPolicy, LoadError> {
        let linker: Linker<HostState> = Linker::new(engine);
        let world = |e: wasmtime::Error| LoadError::World { source_name: source_name.to_owned(), message: format!("{e:#}") };
        let instance_pre = linker.instantiate_pre(&component).map_err(world)?;
        let pre = bindings::PolicyPre::new(instance_pre).map_err(world)?;
        let mut compiled = CompiledPolicy { component, pre, sha256, name: String::new(), version: String::new() };
        let mut first = compiled
            .instantiate(&Limits::default())
            .map_err(|error| LoadError::Call { source_name: source_name.to_owned(), error })?;
        let (name, version) =
            first.info().map_err(|error| LoadError::Call { source_name: source_name.to_owned(), error })?;
        compiled.name = name;
        compiled.version = version;
        Ok(compiled)
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

    /// The policy's name, from `info()`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's version, from `info()`.
    pub fn version(&self) -> &str {
        &self.version
    }
}
