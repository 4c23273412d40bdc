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
//!
//! **Nothing in the directory is trusted for being there** (a compiled artifact is native
//! code; a verdict skips the safety contract). The directory is created `0700` and refused
//! when another user owns it or it is group- or world-writable. Every artifact and verdict
//! carries an HMAC-SHA256 tag under a 32-byte key kept in `key` (`0600`, created from
//! `/dev/urandom` on first use, refused when readable by others), over the component's
//! digest, the engine key and the content. A file without a valid tag — foreign, tampered
//! with, or written by an older version — is removed and recompiled (or re-checked), never
//! loaded.

use super::LoadError;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The length of the HMAC key and of a tag.
const TAG_LEN: usize = 32;

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
#[derive(Clone)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: String,
    key: [u8; TAG_LEN],
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Use (and create, private) `dir` for `engine`'s artifacts; refuse a directory others
    /// could write to.
    pub fn new(dir: &Path, engine: &Engine) -> Result<DiskCache, LoadError> {
        let refuse = |message: String| LoadError::Cache { path: dir.display().to_string(), message };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| refuse(e.to_string()))?;
        check_private(dir).map_err(refuse)?;
        let key = read_or_create_key(&dir.join("key")).map_err(refuse)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let digest = hasher.0.finalize();
        let engine_key = hex::encode(digest.get(..8).unwrap_or_default());
        Ok(DiskCache { dir: dir.to_owned(), engine_key, key })
    }

    /// The tag of `parts` (each length-prefixed, so no two sequences collide).
    fn tag(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        #[allow(clippy::expect_used, reason = "HMAC accepts a key of any length")]
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("hmac takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    fn artifact_tag(&self, sha256: &str, artifact: &[u8]) -> Hmac<Sha256> {
        self.tag(&[b"rollout-cwasm", sha256.as_bytes(), self.engine_key.as_bytes(), artifact])
    }

    fn verdict_tag(&self, sha256: &str, sample: usize, decisions: u64) -> Hmac<Sha256> {
        let contract = super::safety::CONTRACT_VERSION.to_string();
        let (sample, decisions) = (sample.to_string(), decisions.to_string());
        self.tag(&[b"rollout-verdict", sha256.as_bytes(), contract.as_bytes(), sample.as_bytes(), decisions.as_bytes()])
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
        let authentic = bytes
            .split_at_checked(TAG_LEN)
            .filter(|(tag, artifact)| self.artifact_tag(sha256, artifact).verify_slice(tag).is_ok());
        let Some((_, artifact)) = authentic else {
            tracing::warn!(path = %path.display(), "discarding a cached component without a valid tag");
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: `deserialize` trusts the bytes to be an artifact this wasmtime wrote for a
        // compatible engine; crafted bytes could run arbitrary native code. These bytes carry
        // a valid HMAC under this cache's private key over the component's digest, this
        // engine's key and the bytes themselves, so they are exactly what `store` below
        // wrote from a component this process compiled (the key is readable by the cache's
        // owner alone, and the directory is refused when others can write to it). wasmtime
        // also checks the artifact's header (version, target, flags).
        #[allow(unsafe_code, reason = "deserialising our own authenticated compilation cache; see the SAFETY comment")]
        let component = unsafe { Component::deserialize(engine, artifact) };
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
            Ok(bytes) => {
                let tag = self.artifact_tag(sha256, &bytes).finalize().into_bytes();
                let mut file = Vec::with_capacity(TAG_LEN + bytes.len());
                file.extend_from_slice(&tag);
                file.extend_from_slice(&bytes);
                self.write(&self.artifact(sha256), &file);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot serialise a compiled component"),
        }
    }

    /// Whether bytes with digest `sha256` passed the safety check on a sample of `sample`;
    /// the decisions it checked.
    pub fn verdict_of(&self, sha256: &str, sample: usize) -> Option<u64> {
        let path = self.verdict(sha256, sample);
        let text = std::fs::read_to_string(&path).ok()?;
        let verdict = text.trim().strip_prefix("passed ").and_then(|rest| {
            let (decisions, tag) = rest.split_once(' ')?;
            let decisions: u64 = decisions.parse().ok()?;
            let tag = hex::decode(tag).ok()?;
            self.verdict_tag(sha256, sample, decisions).verify_slice(&tag).is_ok().then_some(decisions)
        });
        if verdict.is_none() {
            tracing::warn!(path = %path.display(), "discarding a safety verdict without a valid tag");
            let _ = std::fs::remove_file(&path);
        }
        verdict
    }

    /// Record that bytes with digest `sha256` passed, checking `decisions` decisions.
    pub fn record_verdict(&self, sha256: &str, sample: usize, decisions: u64) {
        let tag = hex::encode(self.verdict_tag(sha256, sample, decisions).finalize().into_bytes());
        self.write(&self.verdict(sha256, sample), format!("passed {decisions} {tag}\n").as_bytes());
    }

    fn write(&self, path: &Path, bytes: &[u8]) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write to the policy cache");
        }
    }
}

/// Refuse a directory another user owns or could write to. Our own uid is read off a file
/// this process creates there (the uid files are created with), so no libc call is needed.
fn check_private(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by other users (mode {mode:04o}); a compiled policy is native code: \
             make it private (`chmod 700`) or pass another --policy-cache"
        ));
    }
    let probe = dir.join(format!(".owner-probe-{}", std::process::id()));
    let ours = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|f| f.metadata())
        .map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    let ours = ours.map_err(|e| format!("cannot write to it: {e}"))?;
    if meta.uid() != ours {
        return Err(format!(
            "it is owned by uid {}, not by this process's uid {ours}: pass a directory of your own to --policy-cache",
            meta.uid()
        ));
    }
    Ok(())
}

/// The cache's HMAC key: read from `path` (refused when others can read or write it), or
/// created there (`0600`) from the system's random source.
fn read_or_create_key(path: &Path) -> Result<[u8; TAG_LEN], String> {
    let named = |e: std::io::Error| format!("key `{}`: {e}", path.display());
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            let mut key = [0u8; TAG_LEN];
            let mut random = std::fs::File::open("/dev/urandom").map_err(named)?;
            std::io::Read::read_exact(&mut random, &mut key).map_err(named)?;
            if let Err(e) = file.write_all(&key).and_then(|()| file.sync_all()) {
                let _ = std::fs::remove_file(path);
                return Err(named(e));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(named)?;
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "key `{}` is readable or writable by other users (mode {:04o}): `chmod 600` it",
                    path.display(),
                    meta.mode() & 0o7777
                ));
            }
            let bytes = std::fs::read(path).map_err(named)?;
            bytes.try_into().map_err(|b: Vec<u8>| {
                format!("key `{}` holds {} bytes, not {TAG_LEN}: remove it to make a new one", path.display(), b.len())
            })
        }
        Err(e) => Err(named(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn engine() -> Engine {
        super::super::new_engine().unwrap()
    }

    fn component(engine: &Engine) -> Component {
        Component::new(engine, wat::parse_str("(component)").unwrap()).unwrap()
    }

    #[test]
    fn the_policy_cache_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        DiskCache::new(&dir, &engine()).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.join("key")).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_policy_cache_others_can_write_to_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o770, 0o707, 0o777] {
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = DiskCache::new(tmp.path(), &engine()).unwrap_err().to_string();
            assert!(err.contains("writable by other users"), "mode {mode:o}: {err}");
        }
    }

    #[test]
    fn a_policy_cache_owned_by_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let chowned = std::os::unix::fs::chown(tmp.path(), Some(65534), Some(65534));
        if chowned.is_err() {
            // Only root can give a directory away; as anyone else the check is the same code.
            eprintln!("SKIPPED: not root, cannot chown a directory to another user");
            return;
        }
        let err = DiskCache::new(tmp.path(), &engine()).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn a_planted_or_tampered_artifact_is_never_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = DiskCache::new(tmp.path(), &engine).unwrap();
        let sha = "ab".repeat(32);
        let c = component(&engine);
        cache.store(&sha, &c);
        assert!(cache.load(&engine, &sha).is_some(), "what the cache wrote is loaded");

        // Tampered: one byte of the artifact changed.
        let path = cache.artifact(&sha);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.load(&engine, &sha).is_none());
        assert!(!path.exists(), "a file that fails authentication is removed");

        // Planted: a genuine wasmtime artifact for this engine, written without the key.
        std::fs::write(&path, c.serialize().unwrap()).unwrap();
        assert!(cache.load(&engine, &sha).is_none());

        // Authentic for another component's digest: not accepted under this one.
        cache.store(&sha, &c);
        std::fs::rename(&path, cache.artifact(&"cd".repeat(32))).unwrap();
        assert!(cache.load(&engine, &"cd".repeat(32)).is_none());
    }

    #[test]
    fn a_forged_safety_verdict_does_not_skip_the_contract() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(tmp.path(), &engine()).unwrap();
        let sha = "ef".repeat(32);
        std::fs::write(cache.verdict(&sha, 64), "passed 5000\n").unwrap();
        assert_eq!(cache.verdict_of(&sha, 64), None, "an untagged verdict is not believed");
        cache.record_verdict(&sha, 64, 5000);
        assert_eq!(cache.verdict_of(&sha, 64), Some(5000));
        let text = std::fs::read_to_string(cache.verdict(&sha, 64)).unwrap().replace("5000", "5001");
        std::fs::write(cache.verdict(&sha, 64), text).unwrap();
        assert_eq!(cache.verdict_of(&sha, 64), None, "an edited verdict is not believed");
        // A key from another cache does not vouch for this one.
        let other = tempfile::tempdir().unwrap();
        let other = DiskCache::new(other.path(), &engine()).unwrap();
        other.record_verdict(&sha, 64, 7);
        std::fs::copy(other.verdict(&sha, 64), cache.verdict(&sha, 64)).unwrap();
        assert_eq!(cache.verdict_of(&sha, 64), None);
    }
}
