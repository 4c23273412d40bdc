//! The policy lifecycle: which policy a process starts with, upload, validate, activate,
//! revert, and reconciliation with the database.
//!
//! The database is the source of truth across instances (`policy_versions.active`). An
//! activation is validated by this process's runtime first (a refusal changes nothing),
//! recorded (the active flag and a `policy_activated` / `policy_reverted` history row in one
//! transaction, which notifies every instance on Postgres), then served here; the other
//! instances load it when notified or at their next re-read ([`Service::reconcile_policy`]).

use super::{Service, ServiceError, ServiceResult};
use crate::engine::PolicyVersion;
use crate::input::values::{Actor, Reason, Sha256};
use crate::runtime::{sha256_hex, Runtime, SwapError, SwapReport, BUNDLED_POLICY};
use crate::store::{NewPolicyVersion, PolicyVersionRow, Store};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The notification payload announcing an upload.
pub const UPLOADED_PREFIX: &str = "policy_uploaded:";

/// Stored versions prepared ahead of activation at each re-read.
const PREPARE_NEWEST: usize = 3;

/// The bytes of the policy a process started with.
#[derive(Clone)]
pub struct StartupPolicy {
    /// Where they came from (`bundled`, a file path, `database <sha>`).
    pub source: String,
    /// The component bytes.
    pub bytes: Arc<Vec<u8>>,
}

impl StartupPolicy {
    /// The bundled reference policy.
    pub fn bundled() -> StartupPolicy {
        StartupPolicy { source: "bundled".into(), bytes: Arc::new(BUNDLED_POLICY.to_vec()) }
    }
}

impl std::fmt::Debug for StartupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupPolicy").field("source", &self.source).field("size", &self.bytes.len()).finish()
    }
}

/// Where the policy a process runs came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOrigin {
    /// A file named on the command line.
    File,
    /// The version active in `policy_versions`.
    Database,
    /// The bundled reference policy (none is active in the database, or the active one was
    /// refused here).
    Bundled,
}

/// What [`start_policy`] loaded.
#[derive(Debug, Clone)]
pub struct Started {
    /// What a revert may go back to when no other version was ever activated: the file or
    /// the bundled policy.
    pub fallback: StartupPolicy,
    /// The version serving now.
    pub serving: PolicyVersion,
    /// Where it came from.
    pub origin: PolicyOrigin,
    /// The active digest in the database at start (already served, or deliberately not
    /// served with a file): only a later change of it is loaded.
    pub active_in_database: Option<String>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("the policy task failed: {e}")))
}

fn swap_error(e: SwapError) -> ServiceError {
    match e {
        SwapError::TooLarge { limit, .. } => ServiceError::TooLarge { limit },
        other => ServiceError::PolicyRejected(other.to_string()),
    }
}

async fn load(runtime: &Runtime, bytes: Arc<Vec<u8>>, source: String) -> ServiceResult<SwapReport> {
    let runtime = runtime.clone();
    blocking(move || runtime.load_bytes(&bytes, &source)).await?.map_err(swap_error)
}

/// The one rule deciding which policy a process runs at start (`rollout serve` and every
/// CLI command that decides): `file` when given (refused → an error naming it); else the
/// version active in `policy_versions`; else — none active, or the active one refused
/// here (logged) — the bundled reference policy.
pub async fn start_policy(store: &Store, runtime: &Runtime, file: Option<&Path>) -> ServiceResult<Started> {
    let versions = store.list_policy_versions().await?;
    let active = versions.into_iter().find(|v| v.active).map(|v| v.sha256);
    if let Some(path) = file {
        let bytes = std::fs::read(path)
            .map_err(|e| ServiceError::invalid("policy", format!("cannot read policy `{}`: {e}", path.display())))?;
        let fallback = StartupPolicy { source: path.display().to_string(), bytes: Arc::new(bytes) };
        let report = load(runtime, fallback.bytes.clone(), fallback.source.clone())
            .await
            .map_err(|e| ServiceError::invalid("policy", format!("policy `{}` was refused: {e}", path.display())))?;
        return Ok(Started {
            fallback,
            serving: report.version,
            origin: PolicyOrigin::File,
            active_in_database: active,
        });
    }
    if let Some(sha) = &active {
        match store.policy_bytes(sha).await? {
            Some(bytes) => match load(runtime, Arc::new(bytes), format!("database {sha}")).await {
                Ok(report) => {
                    return Ok(Started {
                        fallback: StartupPolicy::bundled(),
                        serving: report.version,
                        origin: PolicyOrigin::Database,
                        active_in_database: active,
                    })
                }
                Err(e) => tracing::error!("the active policy `{sha}` was refused, running the bundled policy: {e}"),
            },
            None => tracing::error!("the active policy `{sha}` has no bytes, running the bundled policy"),
        }
    }
    let fallback = StartupPolicy::bundled();
    let report = load(runtime, fallback.bytes.clone(), fallback.source.clone())
        .await
        .map_err(|e| ServiceError::Internal(format!("cannot load the bundled reference policy: {e}")))?;
    Ok(Started { fallback, serving: report.version, origin: PolicyOrigin::Bundled, active_in_database: active })
}

/// The service's memory of the policy lifecycle.
///
/// What this process *serves* (the runtime's version) is what reconciliation compares with
/// the database's active version — never a remembered digest — so a load that failed, or a
/// revert in memory, is corrected at the next re-read. Activations, reconciliations and
/// automatic reverts of one process take turns (`turn`), so the version served after the
/// last of them is the one the database names.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    /// Held by whoever changes the serving version from the database's.
    turn: tokio::sync::Mutex<()>,
    /// With `--policy FILE`: the database's active digest at start, deliberately not served;
    /// the file serves until the database's active version changes.
    held_back: Mutex<Option<Option<String>>>,
    /// Versions refused here (by the runtime, or reverted by probation), with the activation
    /// they were refused under: not loaded again until activated again.
    refused: Mutex<HashMap<String, Option<chrono::DateTime<chrono::Utc>>>>,
    /// Stored policy versions this process compiled and validated (or refused), by digest.
    prepared: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<bool>>>>,
}

impl PolicyState {
    fn refuse(&self, sha256: &str, activated_at: Option<chrono::DateTime<chrono::Utc>>) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.insert(sha256.to_owned(), activated_at);
        }
    }

    fn is_refused(&self, row: &PolicyVersionRow) -> bool {
        self.refused.lock().is_ok_and(|r| r.get(&row.sha256).is_some_and(|at| *at == row.activated_at))
    }

    fn forget_refusal(&self, sha256: &str) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.remove(sha256);
        }
    }

    /// Whether `active` is the version held back at start (and so not to be loaded).
    fn holds_back(&self, active: Option<&str>) -> bool {
        let Ok(mut held) = self.held_back.lock() else { return false };
        match &*held {
            Some(at_start) if at_start.as_deref() == active => true,
            Some(_) => {
                *held = None;
                false
            }
            None => false,
        }
    }
}

/// A stored version in a listing, with whether this process has it compiled and validated.
#[derive(Debug, Clone, Serialize)]
pub struct ListedVersion {
    /// The stored row.
    #[serde(flatten)]
    pub row: PolicyVersionRow,
    /// `true` validated here, `false` refused here, `null` not tried yet.
    pub prepared_here: Option<bool>,
}

/// The stored versions and the one serving here.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyListing {
    /// The version serving in this process.
    pub serving: Option<PolicyVersion>,
    /// Stored versions, newest first.
    pub versions: Vec<ListedVersion>,
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    /// The stored row.
    pub policy: PolicyVersionRow,
    /// Always true: a refused component is not stored.
    pub validated: bool,
}

/// What an activation or a revert did.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    /// `policy_activated` or `policy_reverted`.
    pub action: &'static str,
    /// The version now active (and serving here).
    pub serving: PolicyVersion,
    /// The version active before (`null`: none was; the bundled policy served).
    pub previous_sha256: Option<String>,
    /// Time from the call to the version serving here, in milliseconds.
    pub elapsed_ms: f64,
}

impl Service {
    /// Adopt what [`start_policy`] loaded: with a policy file, the database's active version
    /// at start is held back (the file serves) until the database's active version changes.
    pub fn started_with(&self, started: &Started) {
        if started.origin == PolicyOrigin::File {
            if let Ok(mut held) = self.inner.policies.held_back.lock() {
                *held = Some(started.active_in_database.clone());
            }
        }
    }

    /// Check `bytes` with the runtime without activating them.
    async fn validate(&self, bytes: Arc<Vec<u8>>, source: String) -> ServiceResult<PolicyVersion> {
        let runtime = self.inner.runtime.clone();
        blocking(move || runtime.validate_bytes(&bytes, &source)).await?.map_err(swap_error)
    }

    fn cell(&self, sha256: &str) -> Arc<tokio::sync::OnceCell<bool>> {
        match self.inner.policies.prepared.lock() {
            Ok(mut map) => map.entry(sha256.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Whether this process has compiled and validated the stored version `sha256` (`None`:
    /// not tried yet).
    pub fn prepared(&self, sha256: &str) -> Option<bool> {
        self.inner.policies.prepared.lock().ok().and_then(|m| m.get(sha256).and_then(|c| c.get().copied()))
    }

    /// Compile and validate the stored version `sha256` once in this process (concurrent
    /// callers wait for the same work), so activating it later is a quick swap. `Ok(false)`:
    /// refused (or absent).
    pub async fn prepare(&self, sha256: &str) -> ServiceResult<bool> {
        let cell = self.cell(sha256);
        let result = cell
            .get_or_try_init(|| async {
                let bytes = self.observed(self.inner.store.policy_bytes(sha256)).await?;
                let Some(bytes) = bytes else { return Ok(false) };
                match self.validate(Arc::new(bytes), format!("database {sha256}")).await {
                    Ok(_) => Ok(true),
                    Err(e) => {
                        tracing::error!("stored policy `{sha256}` is refused here: {e}");
                        Ok::<bool, ServiceError>(false)
                    }
                }
            })
            .await;
        result.copied()
    }

    /// The stored versions (newest first) and the one serving here.
    pub async fn list_policies(&self) -> ServiceResult<PolicyListing> {
        self.inner.db.require()?;
        let rows = self.observed(self.inner.store.list_policy_versions()).await?;
        let versions = rows
            .into_iter()
            .map(|row| {
                let prepared_here = self.prepared(&row.sha256);
                ListedVersion { row, prepared_here }
            })
            .collect();
        Ok(PolicyListing { serving: self.inner.runtime.policy_version(), versions })
    }

    /// A full digest from a digest or a unique prefix of at least 6 hex digits.
    pub async fn resolve_policy(&self, given: &str) -> ServiceResult<Sha256> {
        let g = given.trim().to_ascii_lowercase();
        if g.len() < 6 || g.len() > 64 || !g.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ServiceError::invalid(
                "sha256",
                format!("invalid policy digest `{given}`: expected a sha256 or a prefix of at least 6 hex digits"),
            ));
        }
        let rows = self.observed(self.inner.store.list_policy_versions()).await?;
        let matches: Vec<String> = rows.into_iter().map(|r| r.sha256).filter(|s| s.starts_with(&g)).collect();
        match matches.as_slice() {
            [one] => Sha256::new(one).map_err(ServiceError::Internal),
            [] => Err(ServiceError::NotFound {
                field: "sha256".into(),
                message: format!("unknown policy `{given}`: no stored policy version has this sha256"),
            }),
            _ => Err(ServiceError::invalid(
                "sha256",
                format!("ambiguous policy `{given}`: {} stored versions start with it", matches.len()),
            )),
        }
    }

    /// Validate `bytes` with the runtime, then store them (not activated); the other
    /// instances are told so they prepare the version.
    pub async fn upload_policy(
        &self,
        bytes: Vec<u8>,
        source: &str,
        notes: Option<String>,
        actor: &Actor,
    ) -> ServiceResult<Uploaded> {
        if bytes.is_empty() {
            return Err(ServiceError::invalid("body", "the policy is empty: send the component's bytes"));
        }
        self.inner.db.require()?;
        let bytes = Arc::new(bytes);
        let sha256 = sha256_hex(&bytes);
        let version = self.validate(bytes.clone(), format!("{source} {sha256}")).await?;
        let new = NewPolicyVersion {
            bytes: bytes.to_vec(),
            sha256,
            name: Some(version.name.clone()),
            semver: version.version.clone(),
            notes,
            uploaded_by: Some(actor.as_str().to_owned()),
        };
        let row = self.observed(self.inner.store.put_policy_version(&new)).await?;
        let _ = self.cell(&row.sha256).set(true);
        self.announce_upload(&row.sha256).await;
        Ok(Uploaded { policy: row, validated: true })
    }

    async fn announce_upload(&self, sha256: &str) {
        if let Err(e) = self.inner.store.notify(&format!("{UPLOADED_PREFIX}{sha256}")).await {
            tracing::warn!("cannot announce the upload of `{sha256}`: {e}");
        }
    }

    /// Validate the stored version `sha256`, make it the active one (audited as
    /// `policy_activated`) and serve it here.
    pub async fn activate_policy(
        &self,
        sha256: &Sha256,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<Activated> {
        self.inner.db.require()?;
        self.activate_stored(sha256.as_str(), false, reason, actor).await
    }

    async fn activate_stored(
        &self,
        sha256: &str,
        revert: bool,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<Activated> {
        let bytes =
            self.observed(self.inner.store.policy_bytes(sha256)).await?.ok_or_else(|| ServiceError::NotFound {
                field: "sha256".into(),
                message: format!("unknown policy `{sha256}`: no stored policy version has this sha256"),
            })?;
        let bytes = Arc::new(bytes);
        let source = format!("database {sha256}");
        // validate first: a refusal leaves both the database and the serving version unchanged
        self.validate(bytes.clone(), source.clone()).await?;
        let _ = self.cell(sha256).set(true);
        let reason = reason.as_ref().map(Reason::as_str);
        // the database write and the load take their turn together, so that of two
        // activations in this process the one recorded last is the one served
        let _turn = self.inner.policies.turn.lock().await;
        let previous =
            self.observed(self.inner.store.activate_policy_version(sha256, revert, reason, actor.as_str())).await?;
        self.inner.policies.forget_refusal(sha256);
        self.inner.policies.holds_back(Some(sha256));
        let report = load(&self.inner.runtime, bytes, source).await.map_err(|e| {
            tracing::error!("policy `{sha256}` is active in the database but could not be loaded here: {e}");
            ServiceError::Internal(format!("policy `{sha256}` was recorded as active but could not be loaded: {e}"))
        })?;
        Ok(Activated {
            action: if revert { "policy_reverted" } else { "policy_activated" },
            serving: report.version,
            previous_sha256: previous,
            elapsed_ms: report.elapsed_ms,
        })
    }

    /// Make the previously active version active again (audited as `policy_reverted`): the
    /// most recently activated version that is not active; when none was ever activated, the
    /// policy this process started with ([`ServiceOptions::startup_policy`], the bundled
    /// policy when unset), stored now so it can be activated like any other.
    ///
    /// [`ServiceOptions::startup_policy`]: super::ServiceOptions::startup_policy
    pub async fn revert_policy(&self, reason: Option<Reason>, actor: &Actor) -> ServiceResult<Activated> {
        self.inner.db.require()?;
        let rows = self.observed(self.inner.store.list_policy_versions()).await?;
        let (active, target) = crate::store::revert_target(&rows);
        let (active, mut target) = (active.map(str::to_owned), target.map(str::to_owned));
        if target.is_none() {
            let startup = self.inner.options.startup_policy.clone().unwrap_or_else(StartupPolicy::bundled);
            let sha = sha256_hex(&startup.bytes);
            if active.as_deref().is_some_and(|a| a != sha) {
                let version = self.validate(startup.bytes.clone(), startup.source.clone()).await?;
                let new = NewPolicyVersion {
                    bytes: startup.bytes.to_vec(),
                    sha256: sha.clone(),
                    name: Some(version.name),
                    semver: version.version,
                    notes: Some(format!("the policy this process started with ({})", startup.source)),
                    uploaded_by: Some(actor.as_str().to_owned()),
                };
                self.observed(self.inner.store.put_policy_version(&new)).await?;
                target = Some(sha);
            }
        }
        let Some(target) = target else {
            return Err(ServiceError::Conflict(
                "no previous policy version to revert to: no other version was ever activated, and the active one is \
                 the policy this process started with"
                    .into(),
            ));
        };
        self.activate_stored(&target, true, reason, actor).await
    }

    /// Serve the database's active policy when this process serves another one (unless it
    /// was refused here under its current activation, or is held back by a policy file);
    /// prepare the newest stored versions not prepared yet, so activating them is quick.
    pub async fn reconcile_policy(&self) {
        let _turn = self.inner.policies.turn.lock().await;
        let Ok(rows) = self.observed(self.inner.store.list_policy_versions()).await else { return };
        for row in rows.iter().filter(|r| !r.active).take(PREPARE_NEWEST) {
            if self.prepared(&row.sha256).is_none() {
                let (service, sha) = (self.clone(), row.sha256.clone());
                tokio::spawn(async move { service.prepare(&sha).await });
            }
        }
        let active = rows.iter().find(|r| r.active);
        if self.inner.policies.holds_back(active.map(|r| r.sha256.as_str())) {
            return;
        }
        // none active: whatever this process started with keeps serving
        let Some(row) = active else { return };
        let sha = &row.sha256;
        if self.inner.runtime.policy_version().is_some_and(|v| &v.sha256 == sha) || self.inner.policies.is_refused(row)
        {
            return;
        }
        // wait for a preparation already under way instead of compiling twice
        let _ = self.prepare(sha).await;
        match self.observed(self.inner.store.policy_bytes(sha)).await {
            Ok(Some(bytes)) => match load(&self.inner.runtime, Arc::new(bytes), format!("database {sha}")).await {
                Ok(report) => tracing::info!(
                    "now serving policy `{}` {} ({sha}) activated in the database",
                    report.version.name,
                    report.version.version
                ),
                Err(e) => {
                    tracing::error!("policy `{sha}` is active in the database but was refused here: {e}");
                    self.inner.policies.refuse(sha, row.activated_at);
                }
            },
            Ok(None) => {
                tracing::error!("policy `{sha}` is active in the database but has no bytes");
                self.inner.policies.refuse(sha, row.activated_at);
            }
            // tried again at the next re-read
            Err(e) => tracing::warn!("cannot read policy `{sha}`: {e}"),
        }
    }

    /// Record an automatic revert of this process's runtime (a new version fell back too
    /// often in its first calls) so that every instance converges: when the failing version
    /// is the database's active one, the version the runtime went back to is made active in
    /// its place — a compare-and-set on the failing version, so of several instances
    /// reverting it exactly one writes the `policy_reverted` row — and the failing version is
    /// not loaded here again until it is activated again. A failing version served from a
    /// file is audited with a history row of its own.
    pub(crate) async fn record_probation_failure(
        &self,
        failing: &PolicyVersion,
        reverted_to: Option<&PolicyVersion>,
        calls: u64,
        failed_calls: u64,
    ) -> ServiceResult<()> {
        let reason = format!(
            "policy {} {} fell back on {failed_calls} of its first {calls} calls: reverted automatically",
            failing.name, failing.version
        );
        let details = serde_json::json!({"failed": failing, "reverted_to": reverted_to, "calls": calls, "failed_calls": failed_calls});
        let _turn = self.inner.policies.turn.lock().await;
        let rows = self.observed(self.inner.store.list_policy_versions()).await?;
        let active = rows.iter().find(|r| r.active);
        if let Some(row) = active.filter(|r| r.sha256 == failing.sha256) {
            self.inner.policies.refuse(&row.sha256, row.activated_at);
        }
        let target = match (active, reverted_to) {
            (Some(row), Some(to)) if row.sha256 == failing.sha256 => self.stored_target(&rows, to).await?,
            _ => None,
        };
        if let Some(target) = target {
            let done = self
                .observed(self.inner.store.activate_policy_version_if(
                    &target,
                    Some(&failing.sha256),
                    true,
                    Some(&reason),
                    "auto_revert",
                    &details,
                ))
                .await?;
            if done.is_none() {
                tracing::info!("policy `{}` was already replaced in the database", failing.sha256);
            }
            return Ok(());
        }
        let entry = crate::store::NewHistory {
            action: crate::store::HistoryAction::PolicyReverted,
            previous_percentage: None,
            new_percentage: None,
            reason: Some(reason),
            triggered_by: "auto_revert".to_owned(),
            metadata: details,
        };
        self.observed(self.inner.store.append_history(None, &entry)).await?;
        Ok(())
    }

    /// The digest of `to` among the stored versions, storing it first when it is the policy
    /// this process started with; `None` when it is neither.
    async fn stored_target(&self, rows: &[PolicyVersionRow], to: &PolicyVersion) -> ServiceResult<Option<String>> {
        if rows.iter().any(|r| r.sha256 == to.sha256) {
            return Ok(Some(to.sha256.clone()));
        }
        let startup = self.inner.options.startup_policy.clone().unwrap_or_else(StartupPolicy::bundled);
        if sha256_hex(&startup.bytes) != to.sha256 {
            return Ok(None);
        }
        let new = NewPolicyVersion {
            bytes: startup.bytes.to_vec(),
            sha256: to.sha256.clone(),
            name: Some(to.name.clone()),
            semver: to.version.clone(),
            notes: Some(format!("the policy this process started with ({})", startup.source)),
            uploaded_by: Some("auto_revert".to_owned()),
        };
        self.observed(self.inner.store.put_policy_version(&new)).await?;
        Ok(Some(to.sha256.clone()))
    }
}
