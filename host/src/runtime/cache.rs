//! The on-disk cache: compiled components and safety verdicts, keyed by content.
//!
//! A compiled component is stored as `<sha256>-<engine>.cwasm`, where `<engine>` digests
//! the engine's compatibility hash (wasmtime version, target, compiler settings), so an
//! artifact is only ever loaded by an engine that could have produced it. A passed safety
//! check is stored as `<sha256>.safe-v<contract>-<sample>`: the contract is deterministic
//! and the policy imports nothing, so the same bytes give the same verdict.
//!
//! Files are written to a temporary name and renamed, so a reader never sees half a file.
//! Failures to write are logged and otherwise ignored: the cache only saves time.

use super::LoadError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Feeds a `Hash` value into sha256 (std's hashers are not stable across releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// A cache directory bound to one engine.
#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: String,
}

impl DiskCache {
    /// Use (and create) `dir` for `engine`'s artifacts.
    pub fn new(dir: &Path, engine: &Engine) -> Result<DiskCache, LoadError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LoadError::Cache { path: dir.display().to_string(), message: e.to_string() })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let digest = hasher.0.finalize();
        let engine_key = hex::encode(digest.get(..8).unwrap_or_default());
        Ok(DiskCache { dir: dir.to_owned(), engine_key })
    }

    fn artifact(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    fn verdict(&self, sha256: &str, sample: usize) -> PathBuf {
        self.dir.join(format!("{sha256}.safe-v{}-{sample}", super::safety::CONTRACT_VERSION))
    }

    /// The compiled component for `sha256`, if this engine cached one.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.artifact(sha256);
        // Read into memory rather than `deserialize_file`'s mmap: a file truncated under a
        // mapping (an operator cleaning the directory) would crash the process with SIGBUS.
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: `deserialize` trusts the bytes to be an artifact this wasmtime wrote for a
        // compatible engine; crafted bytes could run arbitrary native code. The file is only
        // ever written by `store` below (into a directory the operator gives the host and
        // must keep writable by the host alone), under a name derived from the component's
        // sha256 and this engine's compatibility hash, written to a temporary name and
        // renamed so it is never read half-written. wasmtime also checks the artifact's
        // header (version, target, flags) and refuses a mismatch, which is how a damaged or
        // foreign file is caught and recompiled.
        #[allow(unsafe_code, reason = "deserialising our own compilation cache; see the SAFETY comment")]
        let component = unsafe { Component::deserialize(engine, &bytes) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable cached component");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Cache `component`, compiled from bytes with digest `sha256`.
    pub fn store(&self, sha256: &str, component: &Component) {
        match component.serialize() {
            Ok(bytes) => self.write(&self.artifact(sha256), &bytes),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot serialise a compiled component"),
        }
    }

    /// Whether bytes with digest `sha256` passed the safety check on a sample of `sample`;
    /// the decisions it checked.
    pub fn verdict_of(&self, sha256: &str, sample: usize) -> Option<u64> {
        let text = std::fs::read_to_string(self.verdict(sha256, sample)).ok()?;
        text.trim().strip_prefix("passed ")?.parse().ok()
    }

    /// Record that bytes with digest `sha256` passed, checking `decisions` decisions.
    pub fn record_verdict(&self, sha256: &str, sample: usize, decisions: u64) {
        self.write(&self.verdict(sha256, sample), format!("passed {decisions}\n").as_bytes());
    }

    fn write(&self, path: &Path, bytes: &[u8]) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write to the policy cache");
        }
    }
}
