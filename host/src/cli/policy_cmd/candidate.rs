//! `rollout policy shadow | canary | promote | candidate | stop-candidate`: roll a stored
//! policy version out the way features are rolled out ([`crate::service::candidate`]): the
//! same calls as `POST /v1/policies/{sha256}/shadow`, `…/canary`, `…/promote`,
//! `POST /v1/policies/candidate/stop` and `GET /v1/policies/shadow`.
//!
//! These commands write the stored state; the servers follow it (at once on Postgres, at
//! their next re-read on SQLite) and keep the counts in memory. `rollout policy candidate
//! --server URL` reads one server's counts; without it the stored state and history are
//! shown.

use super::{reason, DatabaseArg};
use crate::cli::context::{actor, open, Ctx, Needs};
use crate::cli::output::{print_json, short};
use crate::cli::{CliError, CliResult, Exit};
use crate::service::candidate::{check_percentage, parse_interval, CanaryRequest, CandidateStatus};
use anyhow::{anyhow, Context};

/// Options of `rollout policy shadow`.
#[derive(Debug, clap::Args)]
pub struct ShadowArgs {
    /// The version's sha256, or a unique prefix of at least 6 hex digits.
    pub sha256: String,
    /// Share of live decisions the candidate also evaluates, 0–1.
    #[arg(long = "sample", value_name = "RATE")]
    pub sample_rate: f64,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Options of `rollout policy canary`.
#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// The version's sha256, or a unique prefix of at least 6 hex digits.
    pub sha256: String,
    /// Share of repositories it serves, percent (0–100); with `--steps`, the first step
    /// when omitted.
    #[arg(long)]
    pub percentage: Option<f64>,
    /// A schedule of shares, e.g. `1,5,25,100`: each held for `--interval` while the guard
    /// is satisfied, then the next; promoted after the last.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<f64>,
    /// How long each share is held (`30s`, `10m`, `1h`, or seconds).
    #[arg(long)]
    pub interval: Option<String>,
    /// The guard reverts when the canary's fallback rate exceeds the control's by more
    /// than this (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub max_fallback_rate: f64,
    /// The guard reverts when the canary's outcome error rate exceeds the control's by
    /// more than this (0–1).
    #[arg(long, default_value_t = 0.02)]
    pub max_error_rate_delta: f64,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Options of `rollout policy promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The candidate's sha256, or a unique prefix of at least 6 hex digits.
    pub sha256: String,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Options of `rollout policy stop-candidate`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Options of `rollout policy candidate`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A running server (`http://host:port`) whose in-memory counts to show: shadow
    /// matches and mismatches, canary cohorts, the guard.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Stored events shown.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Run `rollout policy shadow`.
pub async fn shadow(args: ShadowArgs, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let (service, _) = open(ctx, Needs::Policy).await?;
    let sha = service.resolve_policy(&args.sha256).await.map_err(CliError::service("cannot find the policy"))?;
    let status = service
        .start_shadow(&sha, args.sample_rate, reason, &actor()?)
        .await
        .map_err(CliError::service(format!("cannot shadow policy `{sha}`")))?;
    done(
        ctx,
        &status,
        &format!("policy {} in shadow on {} % of decisions", short(sha.as_str()), args.sample_rate * 100.0),
    )
}

/// Run `rollout policy canary`.
pub async fn canary(args: CanaryArgs, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let mut steps = args.steps.clone();
    let percentage = match args.percentage {
        Some(p) => p,
        None if !steps.is_empty() => steps.remove(0),
        None => return Err(CliError::usage(anyhow!("give `--percentage` or `--steps`"))),
    };
    check_percentage("percentage", percentage).map_err(|e| CliError::usage(anyhow!("`--percentage`: {e}")))?;
    let interval_seconds = match args.interval.as_deref() {
        Some(i) => parse_interval(i).map_err(|e| CliError::usage(anyhow!("`--interval`: {e}")))?,
        None => 0,
    };
    let request = CanaryRequest {
        percentage,
        max_fallback_rate: args.max_fallback_rate,
        max_error_rate_delta: args.max_error_rate_delta,
        steps,
        interval_seconds,
    };
    let (service, _) = open(ctx, Needs::Policy).await?;
    let sha = service.resolve_policy(&args.sha256).await.map_err(CliError::service("cannot find the policy"))?;
    let status = service
        .start_canary(&sha, request, reason, &actor()?)
        .await
        .map_err(CliError::service(format!("cannot start a canary of policy `{sha}`")))?;
    done(ctx, &status, &format!("policy {} serves {percentage}% of repositories", short(sha.as_str())))
}

/// Run `rollout policy promote`.
pub async fn promote(args: PromoteArgs, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let sha = service.resolve_policy(&args.sha256).await.map_err(CliError::service("cannot find the policy"))?;
    let done = service
        .promote_candidate(&sha, reason, &actor()?)
        .await
        .map_err(CliError::service(format!("cannot promote policy `{sha}`")))?;
    if ctx.json {
        print_json(&done)?;
    } else {
        outln!(
            "promoted {} {} (sha256 {}); previously {}",
            done.serving.name,
            done.serving.version,
            short(sha.as_str()),
            done.previous_sha256.as_deref().map_or("the bundled policy", short)
        );
    }
    Ok(Exit::Ok)
}

/// Run `rollout policy stop-candidate`.
pub async fn stop(args: StopArgs, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let status = service
        .stop_candidate(reason, &actor()?)
        .await
        .map_err(CliError::service("cannot stop the policy candidate"))?;
    done(ctx, &status, "the policy candidate was stopped")
}

/// Run `rollout policy candidate`.
pub async fn status(args: StatusArgs, ctx: &Ctx) -> CliResult {
    if let Some(server) = &args.server {
        let body = http_get(server, "/v1/policies/shadow").map_err(CliError::unavailable)?;
        let value: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("`{server}` answered with something that is not JSON"))
            .map_err(CliError::unavailable)?;
        if ctx.json {
            print_json(&value)?;
        } else {
            print_live(&value);
        }
        return Ok(Exit::Ok);
    }
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let history =
        service.candidate_history(args.limit).await.map_err(CliError::service("cannot read the policy candidate"))?;
    if ctx.json {
        print_json(&serde_json::json!({ "history": history }))?;
        return Ok(Exit::Ok);
    }
    match history.first().and_then(|e| e.state.as_ref()) {
        Some(state) => outln!("{}", describe(state)),
        None => outln!("no policy candidate"),
    }
    for e in &history {
        outln!(
            "{}  {:<16} {}  by {}{}",
            e.created_at.format("%Y-%m-%d %H:%M:%S"),
            e.action.as_str(),
            short(&e.sha256),
            e.triggered_by,
            e.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    Ok(Exit::Ok)
}

fn done(ctx: &Ctx, status: &CandidateStatus, text: &str) -> CliResult {
    if ctx.json {
        print_json(status)?;
    } else {
        outln!("{text}");
        if let Some(e) = &status.refused_here {
            outln!("note: refused by this process: {e}");
        }
    }
    Ok(Exit::Ok)
}

/// A stored candidate state in one line.
fn describe(state: &serde_json::Value) -> String {
    let sha = state.get("sha256").and_then(serde_json::Value::as_str).unwrap_or("");
    let f = |k: &str| state.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    match state.get("mode").and_then(serde_json::Value::as_str) {
        Some("shadow") => format!("candidate {} in shadow on {} % of decisions", short(sha), f("sample_rate") * 100.0),
        Some("canary") => {
            let steps: Vec<String> = state
                .get("steps")
                .and_then(serde_json::Value::as_array)
                .map(|a| a.iter().map(|s| format!("{}", s.as_f64().unwrap_or(0.0))).collect())
                .unwrap_or_default();
            let schedule = if steps.is_empty() {
                String::new()
            } else {
                format!(", then {} % every {} s", steps.join(", "), f("interval_seconds"))
            };
            format!(
                "candidate {} serves a {} % canary{schedule} (guard: max fallback rate {}, max error rate delta {})",
                short(sha),
                f("percentage"),
                f("max_fallback_rate"),
                f("max_error_rate_delta")
            )
        }
        _ => format!("candidate {state}"),
    }
}

/// The shadow and canary counts of a server's answer, as text.
fn print_live(v: &serde_json::Value) {
    let Some(state) = v.get("state").filter(|s| !s.is_null()) else {
        outln!("no policy candidate");
        return;
    };
    outln!("{}", describe(state));
    let n = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    outln!("shadow: {} offered, {} dropped (queue full)", n(v, "shadow_offered"), n(v, "shadow_dropped"));
    if let Some(features) = v.get("shadow").and_then(serde_json::Value::as_object) {
        for (name, f) in features {
            outln!(
                "  {name}: {} evaluated, {} matched, {} mismatched, {} candidate errors",
                n(f, "evaluated"),
                n(f, "matched"),
                n(f, "mismatched"),
                n(f, "candidate_errors")
            );
            for key in ["rule_pairs", "reason_pairs"] {
                if let Some(pairs) = f.get(key).and_then(serde_json::Value::as_object) {
                    for (pair, count) in pairs {
                        outln!("    {pair}: {count}");
                    }
                }
            }
        }
    }
    for key in ["canary", "control"] {
        if let Some(c) = v.get(key).filter(|c| !c.is_null()) {
            outln!(
                "{key}: {} decisions, {} fallbacks, {} outcomes, {} failures",
                n(c, "decisions"),
                n(c, "fallbacks"),
                n(c, "outcomes"),
                n(c, "failures")
            );
        }
    }
    if let Some(g) = v.get("guard").filter(|g| !g.is_null()) {
        let text = |k: &str| g.get(k).and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
        let num = |k: &str| g.get(k).and_then(serde_json::Value::as_f64);
        let line = match text("state").as_str() {
            "satisfied" => {
                let fallback = match (num("fallback_diff_lower"), num("fallback_diff_upper")) {
                    (Some(l), Some(u)) => format!("fallback rate difference in [{l:.4}, {u:.4}]"),
                    _ => String::new(),
                };
                let error = match (num("error_diff_lower"), num("error_diff_upper")) {
                    (Some(l), Some(u)) => format!("error rate difference in [{l:.4}, {u:.4}]"),
                    _ => text("error_reason"),
                };
                format!("satisfied after {} checks; {fallback}; {error}", n(v, "checks"))
            }
            "worse" => format!("worse: {}", text("detail")),
            "waiting" => format!("waiting: {}", text("reason")),
            _ => g.to_string(),
        };
        outln!("guard: {line}");
    }
}

/// A plain-HTTP GET of `path` on `server` (`http://host:port`): the body of a 200.
fn http_get(server: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = server
        .trim()
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("invalid `--server` `{server}`: expected http://host:port"))?;
    let host = rest.trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).with_context(|| format!("cannot connect to `{server}`"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("cannot read the answer of `{server}`"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow!("`{server}` answered without a body"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(anyhow!("`{server}{path}` answered `{status}`"));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// The payload of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 {
            break;
        }
        let Some(chunk) = tail.get(..n) else { break };
        out.push_str(chunk);
        rest = tail.get(n + 2..).unwrap_or_default();
    }
    out
}
