//! `--watch`: poll a policy file and load it when its contents change.

use super::{sha256_hex, Runtime};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often the file is polled. A change is picked up within two polls: one to see it,
/// one to see it has stopped changing (so a file being written is not loaded half-way).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The `source` of versions the watcher loads (and of its refusals): this prefix and the
/// file's path, e.g. `watch:/etc/rollout/policy.wasm`. The server audits activations with
/// this source as `policy_activated` rows triggered by `watch`.
pub const WATCH_SOURCE_PREFIX: &str = "watch:";

/// Watches a policy file; stops (and joins its thread) when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stop watching and wait for the watcher to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub(super) fn spawn(runtime: Runtime, path: PathBuf) -> WatchHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("rollout-policy-watch".into())
        .spawn(move || run(&runtime, &path, &flag))
        .map_err(|e| tracing::error!(error = %e, "cannot start the policy watcher"))
        .ok();
    WatchHandle { stop, thread }
}

fn run(runtime: &Runtime, path: &std::path::Path, stop: &AtomicBool) {
    let source = format!("{WATCH_SOURCE_PREFIX}{}", path.display());
    // The stamp last acted on; `None` at first, so the file is checked at once.
    let mut settled: Option<Stamp> = None;
    let mut seen: Stamp = None;
    // The digest last tried, so a refused file is not retried until it changes.
    let mut tried: Option<String> = None;
    loop {
        let now = stamp(path);
        if now.is_some() && settled != Some(now) && (settled.is_none() || now == seen) {
            settled = Some(now);
            match runtime.read(path) {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    if tried.as_deref() != Some(&sha) && runtime.active_sha256().as_deref() != Some(&sha) {
                        tried = Some(sha);
                        match runtime.load_bytes(&bytes, &source) {
                            Ok(report) => tracing::info!(
                                policy = %report.version.name,
                                version = %report.version.version,
                                sha256 = %report.version.sha256,
                                "policy file changed: new version serving"
                            ),
                            Err(e) => tracing::warn!(error = %e, "policy file changed: new version refused"),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the watched policy file");
                    runtime.refuse(&source, e);
                }
            }
        }
        seen = now;
        // Sleep in short steps so dropping the handle returns quickly.
        for _ in 0..5 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(WATCH_INTERVAL / 5);
        }
    }
}
