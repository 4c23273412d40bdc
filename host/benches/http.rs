//! HTTP benchmark: route decisions per second and p99 latency of `rollout serve` over
//! loopback, beside the same server's `/healthz` rate, an open-loop latency at a fixed
//! rate, and its idle RSS with the policy loaded.
//!
//! `cargo bench --bench http` starts the release `rollout serve` on a temporary SQLite
//! database with the bundled policy, reads its idle RSS (`VmRSS` of `/proc/PID/status`),
//! then drives it from keep-alive connections (a minimal HTTP/1.1 client on one thread, so
//! the server gets the rest of the machine):
//!
//! - **closed loop**, three alternating rounds of `POST /v1/features/{f}/route` and
//!   `GET /healthz` at the same concurrency: `http_route_rps` and `http_healthz_rps` are
//!   the medians, `http_route_ratio` the median of the rounds' route ÷ healthz (goal ≥
//!   0.85: a decision costs little beyond the HTTP stack itself);
//! - **open loop**: requests sent on a fixed schedule at half the measured route rate,
//!   each latency counted from the time it was *due*, not sent, so a stall is charged to
//!   every request it delayed (no coordinated omission): `http_route_open_p99_ms`.
//!
//! - **logged**, after the rounds, eight pairs of adjacent 3 s slices of the same route load,
//!   one unlogged and one with the feature's decision-log sample rate at 1.0 (every
//!   decision logged to the server's database by its background writer), the order
//!   alternating, the writer drained between pairs: `http_route_rps_logged`, and
//!   `http_route_logged_ratio` the median of the pairs' logged ÷ unlogged (goal ≥ 0.85:
//!   logging costs at most 15 %), with the entries dropped because the queue was full
//!   (`decision_log_dropped`; a ratio bought by dropping is not a ratio). Pairs rather than
//!   rounds: rounds seconds apart on a shared 2-core machine differ by ±20 %.
//!   `HTTP_BENCH_ONLY=logged` runs these pairs alone (no SUMMARY lines), e.g. under `perf`.
//!
//! - **policy candidate**, in each round the same route load with a candidate version (the
//!   reference policy as built for contract 0.1.0: the same rules, another sha256) in
//!   shadow on every decision (`http_route_rps_shadow`; `http_route_shadow_ratio` the
//!   median of shadow ÷ unlogged, goal ≥ 0.80, with `policy_shadow_dropped`, the shadow
//!   evaluations dropped because the worker's queue was full), then serving a 50 % canary
//!   (`http_route_rps_canary`, `http_route_canary_ratio`, goal ≥ 0.95);
//!
//! - **OFREP**, in each round the same load as single OFREP evaluations of the routing flag
//!   (`POST /ofrep/v1/evaluate/flags/{f}%2Fprocessor`): `ofrep_eval_rps`;
//! - **sync fan-out**: 1,000 subscribers of `GET /v1/sync/{f}/events`, a percentage change,
//!   the time from sending it until each subscriber has read the new snapshot: the p99,
//!   median of 3 changes, `sync_fanout_ms` (goal ≤ 1,000 ms);
//! - **sync idle**: 10,000 subscribers open at once on a second, fresh server (so the figure
//!   is what the subscribers cost, not what the load above left in the first one's
//!   allocator), its RSS: `sync_idle_rss_mib` (goal ≤ 256 MiB).
//!
//! Targets: p99 ≤ 3 ms, idle RSS ≤ 64 MiB.
//!
//! Under `cargo test` (no `--bench` argument) it makes a short smoke run instead.
//! Environment: `HTTP_BENCH_SECS` (each round and the open loop; default 5, at most 30), `HTTP_BENCH_CONNECTIONS`
//! (default 32).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FEATURE: &str = "hybrid_progressive_capture";
const TOKEN: &str = "bench-token-of-enough-length";

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(
    clippy::zombie_processes,
    reason = "every failure path kills and waits; the success path hands the child to ServerProcess, whose drop waits"
)]
fn start_server(db: &std::path::Path) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .args(["serve", "--listen", "127.0.0.1:0", "--health-interval", "3600"])
        .env("ROLLOUT_SERVICE_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rollout serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let start = Instant::now();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rollout serve did not start");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("").parse().expect("address");
            // keep draining stdout so the server never blocks on it
            std::thread::spawn(move || for _ in reader.lines() {});
            return ServerProcess { child, addr };
        }
    }
}

/// The CPU time process `pid` has used (user and system, all threads), in µs: fields 14
/// and 15 of `/proc/PID/stat`, in USER_HZ (100 per second on Linux).
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which is in parentheses and may hold spaces
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // field n of the file is fields[n - 3] here (pid and name before)
    (ticks(11) + ticks(12)) * 10_000.0
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn request(method: &str, path: &str, body: &str, token: bool) -> Vec<u8> {
    let auth = if token { format!("Authorization: Bearer {TOKEN}\r\n") } else { String::new() };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request and its response on a keep-alive connection; the status code.
async fn exchange(stream: &mut tokio::net::TcpStream, req: &[u8], buf: &mut Vec<u8>) -> u16 {
    stream.write_all(req).await.expect("write");
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end]).expect("utf-8 head");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
                })
                .expect("content-length");
            if buf.len() >= head_end + 4 + length {
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                return status;
            }
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct LoadResult {
    decisions: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// The 1,024 repositories and varied jobs of the load, as `(repository id, trigger source,
/// max_items)`.
fn load_inputs() -> impl Iterator<Item = (String, &'static str, u128)> {
    (0..1024u128).map(|i| {
        let id = uuid::Uuid::from_u128(0x9e37_79b9_7f4a_4c15_8000_0000_0000_0000 ^ (i * 0x0001_0000_0001)).to_string();
        (id, ["manual", "scheduled", "automatic"][(i % 3) as usize], i % 100)
    })
}

/// The route requests: 1,024 repositories, jobs that vary.
fn route_requests() -> Vec<Vec<u8>> {
    load_inputs()
        .map(|(id, trigger, items)| {
            let body = format!(
                "{{\"repository_id\":\"{id}\",\"job\":{{\"trigger_source\":\"{trigger}\",\"max_items\":{items}}}}}"
            );
            request("POST", &format!("/v1/features/{FEATURE}/route"), &body, false)
        })
        .collect()
}

/// OFREP single evaluations of the routing flag: the same repositories and jobs as
/// [`route_requests`], as OpenFeature contexts.
fn ofrep_requests() -> Vec<Vec<u8>> {
    load_inputs()
        .map(|(id, trigger, items)| {
            let body = format!(
                "{{\"context\":{{\"targetingKey\":\"{id}\",\"trigger_source\":\"{trigger}\",\"max_items\":{items}}}}}"
            );
            request("POST", &format!("/ofrep/v1/evaluate/flags/{FEATURE}%2Fprocessor"), &body, false)
        })
        .collect()
}

/// Open `n` sync subscriptions (`GET /v1/sync/{f}/events`), each read until its first
/// snapshot; the open streams and the `config_version` they were given.
async fn subscribe(addr: SocketAddr, n: usize) -> (Vec<tokio::net::TcpStream>, i64) {
    let req = format!("GET /v1/sync/{FEATURE}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    let mut streams = Vec::with_capacity(n);
    let mut version = 0;
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let k = stream.read(&mut chunk).await.expect("read");
            assert!(k > 0, "the sync stream closed");
            buf.extend_from_slice(&chunk[..k]);
            if let Some(v) = snapshot_version(&buf) {
                version = v;
                break;
            }
        }
        streams.push(stream);
    }
    (streams, version)
}

/// The `config_version` of the first snapshot event in `buf`.
fn snapshot_version(buf: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(buf);
    let at = text.find("\"config_version\":")? + "\"config_version\":".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    text[at + digits.len()..].starts_with([',', '}']).then(|| digits.parse().ok()).flatten()
}

/// Fan-out: `n` subscribers, a percentage change, and the time until each subscriber has
/// the new snapshot, measured from the moment the change was sent (a bound on "committed →
/// applied"); the p99 in ms.
async fn fanout_p99_ms(addr: SocketAddr, n: usize, percentage: u8) -> f64 {
    let (streams, version) = subscribe(addr, n).await;
    let mut tasks = Vec::with_capacity(n);
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let k = stream.read(&mut chunk).await.ok()?;
                if k == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..k]);
                // the first event after the change carries the next version
                let text = String::from_utf8_lossy(&buf);
                if let Some(at) = text.find("event: snapshot") {
                    if snapshot_version(&buf[at..]).is_some_and(|v| v > version) {
                        return Some(Instant::now());
                    }
                }
            }
        }));
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let body = format!("{{\"percentage\":{percentage},\"reason\":\"fan-out bench\"}}");
    let sent = Instant::now();
    let put = request("PUT", &format!("/v1/features/{FEATURE}/percentage"), &body, true);
    assert_eq!(exchange(&mut stream, &put, &mut buf).await, 200, "{}", String::from_utf8_lossy(&buf));
    let mut ms: Vec<f64> = Vec::with_capacity(n);
    for t in tasks {
        let at = tokio::time::timeout(Duration::from_secs(60), t).await.expect("a subscriber got the change in 60 s");
        let at = at.expect("subscriber task").expect("the stream ended before the change");
        ms.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms.get(((ms.len() as f64 - 1.0) * 0.99).round() as usize).copied().unwrap_or(0.0)
}

/// Closed loop: each connection sends its next request when the last one answered.
async fn load(addr: SocketAddr, connections: usize, duration: Duration, requests: &[Vec<u8>]) -> LoadResult {
    let requests = std::sync::Arc::new(requests.to_vec());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(8192);
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut i = c * 31;
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = exchange(&mut stream, &requests[i % requests.len()], &mut buf).await;
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                assert_eq!(status, 200, "route answered {status}: {}", String::from_utf8_lossy(&buf));
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.expect("connection task"));
    }
    let elapsed = start.elapsed();
    LoadResult { decisions: latencies_us.len() as u64, elapsed, latencies_us }
}

/// Open loop: request `k` of connection `c` is due at `start + (k·connections + c) / rate`;
/// a connection that is behind sends at once, and every latency runs from the due time.
async fn open_loop(
    addr: SocketAddr,
    connections: usize,
    rate: f64,
    duration: Duration,
    requests: &[Vec<u8>],
) -> LoadResult {
    let requests = std::sync::Arc::new(requests.to_vec());
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let total = (rate * duration.as_secs_f64()) as u64;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(8192);
            let mut latencies = Vec::new();
            let mut k = 0u64;
            loop {
                let n = k * connections as u64 + c as u64;
                if n >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due).await;
                let status = exchange(&mut stream, &requests[(n as usize) % requests.len()], &mut buf).await;
                latencies.push(u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX));
                assert_eq!(status, 200, "route answered {status}: {}", String::from_utf8_lossy(&buf));
                k += 1;
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.expect("connection task"));
    }
    let elapsed = start.elapsed();
    LoadResult { decisions: latencies_us.len() as u64, elapsed, latencies_us }
}

/// The median (of an even count, the mean of the middle two).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

/// Set the feature's decision-log sample rate (`PUT …/decision-log`).
async fn set_sample_rate(addr: SocketAddr, rate: f64) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let body = format!("{{\"sample_rate\":{rate}}}");
    let req = request("PUT", &format!("/v1/features/{FEATURE}/decision-log"), &body, true);
    assert_eq!(exchange(&mut stream, &req, &mut buf).await, 200, "{}", String::from_utf8_lossy(&buf));
}

/// Wait until the decision log's queue is empty (at most 60 s), then until the batch taken
/// last is written (the written count still for 200 ms).
async fn drained(addr: SocketAddr) {
    let start = Instant::now();
    while metric(addr, "rollout_decision_log_queue_entries ").await > 0.0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the decision log's queue did not drain in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut written = metric(addr, "rollout_decision_log_written_total ").await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = metric(addr, "rollout_decision_log_written_total ").await;
        if now == written {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the decision log's writer did not finish in 60 s");
        written = now;
    }
}

/// Store `bytes` as a policy version (not activated); its sha256.
async fn upload_policy(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let mut req = format!(
        "POST /v1/policies HTTP/1.1\r\nHost: bench\r\nContent-Type: application/wasm\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    )
    .into_bytes();
    req.extend_from_slice(bytes);
    assert_eq!(exchange(&mut stream, &req, &mut buf).await, 201, "{}", String::from_utf8_lossy(&buf));
    let text = String::from_utf8_lossy(&buf);
    let at = text.find("\"sha256\":\"").expect("a sha256 in the upload's answer") + 10;
    text[at..at + 64].to_owned()
}

/// `POST path` with a JSON body, expecting 200.
async fn post_ok(addr: SocketAddr, path: &str, body: &str) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let req = request("POST", path, body, true);
    assert_eq!(exchange(&mut stream, &req, &mut buf).await, 200, "{path}: {}", String::from_utf8_lossy(&buf));
}

/// A sample of the server's `/metrics` (0 when absent).
async fn metric(addr: SocketAddr, sample: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    exchange(&mut stream, b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n", &mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("HTTP_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5).clamp(1, 30);
    let connections: usize =
        std::env::var("HTTP_BENCH_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(32).clamp(1, 1024);
    let (duration, connections) =
        if bench { (Duration::from_secs(secs), connections) } else { (Duration::from_millis(500), 2) };

    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(&dir.path().join("bench.db"));
    let pid = server.child.id();
    // one thread for the load generator: the server keeps the other core(s)
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        let mut buf = Vec::new();
        let set = request(
            "PUT",
            &format!("/v1/features/{FEATURE}/percentage"),
            "{\"percentage\":50,\"reason\":\"bench\"}",
            true,
        );
        assert_eq!(exchange(&mut stream, &set, &mut buf).await, 200, "{}", String::from_utf8_lossy(&buf));
    });
    std::thread::sleep(Duration::from_millis(if bench { 2000 } else { 200 }));
    let idle_rss_kib = vm_rss_kib(pid);

    // warm up the connections and the policy instances, then measure
    let routes = route_requests();
    let healthz = vec![b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec()];
    rt.block_on(load(server.addr, connections, Duration::from_millis(if bench { 1000 } else { 100 }), &routes));
    // `HTTP_BENCH_ONLY=logged`: only the logged pairs (to study the logging cost, e.g.
    // under perf); none of the SUMMARY lines is printed
    let only_logged = std::env::var("HTTP_BENCH_ONLY").is_ok_and(|v| v == "logged");
    let rounds = if only_logged {
        0
    } else if bench {
        3
    } else {
        1
    };
    let (mut route_rps, mut healthz_rps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut logged_rps, mut logged_ratios) = (Vec::new(), Vec::new());
    let mut cpu_per_decision: Vec<(f64, f64)> = Vec::new();
    let mut ofrep_rps = Vec::new();
    let ofrep = ofrep_requests();
    let mut route_latencies = Vec::new();
    let mut decisions = 0;
    // the policy candidate: the reference policy as built for contract 0.1.0 (the same
    // routing rules, another sha256), in shadow on every decision, then as a 50 % canary
    let candidate_bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/rollout_policy-0.1.0.wasm"))
            .expect("tests/fixtures/rollout_policy-0.1.0.wasm");
    let candidate = rt.block_on(upload_policy(server.addr, &candidate_bytes));
    let (mut shadow_rps, mut shadow_ratios, mut canary_rps, mut canary_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut shadow_dropped = 0.0;
    for _ in 0..rounds {
        let r = rt.block_on(load(server.addr, connections, duration, &routes));
        let h = rt.block_on(load(server.addr, connections, duration, &healthz));
        let (rr, hr) = (r.decisions as f64 / r.elapsed.as_secs_f64(), h.decisions as f64 / h.elapsed.as_secs_f64());
        let o = rt.block_on(load(server.addr, connections, duration, &ofrep));
        ofrep_rps.push(o.decisions as f64 / o.elapsed.as_secs_f64());
        // the same load with the candidate in shadow on every decision, then as a canary
        rt.block_on(post_ok(server.addr, &format!("/v1/policies/{candidate}/shadow"), "{\"sample_rate\":1.0}"));
        let sh = rt.block_on(load(server.addr, connections, duration, &routes));
        shadow_dropped += rt.block_on(metric(server.addr, "rollout_policy_shadow_dropped_total "));
        rt.block_on(post_ok(server.addr, &format!("/v1/policies/{candidate}/canary"), "{\"percentage\":50}"));
        let ca = rt.block_on(load(server.addr, connections, duration, &routes));
        rt.block_on(post_ok(server.addr, "/v1/policies/candidate/stop", "{}"));
        let (shr, car) =
            (sh.decisions as f64 / sh.elapsed.as_secs_f64(), ca.decisions as f64 / ca.elapsed.as_secs_f64());
        shadow_rps.push(shr);
        shadow_ratios.push(shr / rr);
        canary_rps.push(car);
        canary_ratios.push(car / rr);
        route_rps.push(rr);
        healthz_rps.push(hr);
        ratios.push(rr / hr);
        decisions += r.decisions;
        route_latencies.extend(r.latencies_us);
    }
    // logged against unlogged in adjacent pairs of slices, the order alternating: two
    // rounds seconds apart on a shared machine differ by ±20 % (seen here), a pair's two
    // slices by the machine's drift over one slice. After a logged slice the writer drains
    // what is queued (outside any slice) before the next one starts, so no slice pays for
    // another's entries. Not charged: the batch still queued when a logged slice ends (under
    // one batch of 10,000 entries, about 1 % of a 3 s slice's entries).
    let pairs = if bench { 8 } else { 1 };
    let slice = if bench { duration.mul_f64(0.6) } else { duration };
    for pair in 0..pairs {
        // (the rate, and the server's CPU time per decision: a logged slice's including the
        // drain after it, so what the writer does after the slice is charged to it)
        let unlogged = |rt: &tokio::runtime::Runtime| {
            let cpu = cpu_us(pid);
            let u = rt.block_on(load(server.addr, connections, slice, &routes));
            (u.decisions as f64 / u.elapsed.as_secs_f64(), (cpu_us(pid) - cpu) / u.decisions.max(1) as f64)
        };
        let logged = |rt: &tokio::runtime::Runtime| {
            rt.block_on(set_sample_rate(server.addr, 1.0));
            let cpu = cpu_us(pid);
            let l = rt.block_on(load(server.addr, connections, slice, &routes));
            rt.block_on(set_sample_rate(server.addr, 0.0));
            rt.block_on(drained(server.addr));
            (l.decisions as f64 / l.elapsed.as_secs_f64(), (cpu_us(pid) - cpu) / l.decisions.max(1) as f64)
        };
        let ((ur, ucpu), (lr, lcpu)) = if pair % 2 == 0 {
            let u = unlogged(&rt);
            (u, logged(&rt))
        } else {
            let l = logged(&rt);
            (unlogged(&rt), l)
        };
        logged_rps.push(lr);
        logged_ratios.push(lr / ur);
        cpu_per_decision.push((ucpu, lcpu));
    }
    let loaded_rss_kib = vm_rss_kib(pid);
    let written = rt.block_on(metric(server.addr, "rollout_decision_log_written_total "));
    let dropped = rt.block_on(metric(server.addr, "rollout_decision_log_dropped_total{reason=\"queue_full\"} "));
    let (logged, logged_ratio) = (median(logged_rps.clone()), median(logged_ratios.clone()));
    let (cpu_unlogged, cpu_logged) = (
        median(cpu_per_decision.iter().map(|c| c.0).collect()),
        median(cpu_per_decision.iter().map(|c| c.1).collect()),
    );
    let cpu_line = format!(
        "server CPU per decision (user + system, all threads; logged: the slice and the drain after it): unlogged \
         {cpu_unlogged:.1} µs, logged {cpu_logged:.1} µs (medians over the pairs; logged − unlogged per pair {})",
        cpu_per_decision.iter().map(|(u, l)| format!("{:.1}", l - u)).collect::<Vec<_>>().join(" / ")
    );
    if only_logged {
        println!(
            "http route with every decision logged: {} /s (median {logged:.0}); logged ÷ unlogged per pair {} (median \
             {logged_ratio:.2}); {written:.0} entries written, {dropped:.0} dropped (queue full)",
            logged_rps.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / "),
            logged_ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
        );
        println!("{cpu_line}");
        return;
    }
    let ofrep_median = median(ofrep_rps.clone());
    let per_round = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ");
    let (shadow, shadow_ratio) = (median(shadow_rps.clone()), median(shadow_ratios.clone()));
    let (canary, canary_ratio) = (median(canary_rps.clone()), median(canary_ratios.clone()));
    println!(
        "http route with a policy candidate in shadow on every decision: {} /s (median {shadow:.0}); shadow ÷ plain \
         per round {} (median {shadow_ratio:.2}, goal ≥ 0.80); {shadow_dropped:.0} shadow evaluations dropped",
        per_round(&shadow_rps),
        shadow_ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
    );
    println!(
        "http route with a 50 % canary: {} /s (median {canary:.0}); canary ÷ plain per round {} (median \
         {canary_ratio:.2}, goal ≥ 0.95)",
        per_round(&canary_rps),
        canary_ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
    );

    // sync: fan-out to 1,000 subscribers (median of 3 changes' p99), then 10,000 idle ones
    let (fanout_n, idle_n) = if bench { (1000, 10_000) } else { (20, 50) };
    let fanouts: Vec<f64> = (0..if bench { 3 } else { 1 })
        .map(|k| rt.block_on(fanout_p99_ms(server.addr, fanout_n, 60 + k as u8)))
        .collect();
    let fanout = median(fanouts.clone());
    // idle subscribers on a server of their own: what 10,000 connected clients cost, not
    // what the load above left in the allocator of the first one
    let (before_idle, idle_subscribers_rss) = {
        let idle_server = start_server(&dir.path().join("idle.db"));
        let idle_pid = idle_server.child.id();
        std::thread::sleep(Duration::from_millis(if bench { 2000 } else { 200 }));
        let before = vm_rss_kib(idle_pid);
        let (idle_streams, _) = rt.block_on(subscribe(idle_server.addr, idle_n));
        std::thread::sleep(Duration::from_millis(if bench { 3000 } else { 200 }));
        let with = vm_rss_kib(idle_pid);
        drop(idle_streams);
        (before, with)
    };
    let (rps, health_rps, ratio) = (median(route_rps.clone()), median(healthz_rps.clone()), median(ratios.clone()));

    // open loop at half the closed-loop route rate
    let rate = (rps / 2.0).max(100.0);
    let open = rt.block_on(open_loop(server.addr, connections, rate, duration, &routes));
    let mut open_sorted = open.latencies_us;
    open_sorted.sort_unstable();

    let mut sorted = route_latencies;
    sorted.sort_unstable();
    let (p50, p99, max) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99), percentile(&sorted, 1.0));
    let (open_p50, open_p99) = (percentile(&open_sorted, 0.50), percentile(&open_sorted, 0.99));
    let idle_mib = idle_rss_kib as f64 / 1024.0;
    let rounded = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ");
    println!(
        "http route (closed loop, {connections} keep-alive connections, {rounds} rounds of {:.1} s): {decisions} \
         decisions, {} /s (median {rps:.0}), p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
        duration.as_secs_f64(),
        rounded(&route_rps),
    );
    println!(
        "http /healthz (same connections, alternating rounds): {} /s (median {health_rps:.0}); route ÷ healthz per \
         round {} (median {ratio:.2})",
        rounded(&healthz_rps),
        ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
    );
    println!(
        "http route (open loop at {rate:.0}/s, latency from the due time): {} requests, p50 {open_p50:.3} ms, p99 \
         {open_p99:.3} ms",
        open_sorted.len()
    );
    println!(
        "http route with every decision logged (sample rate 1.0, {pairs} pairs of {:.1} s slices, logged and \
         unlogged): {} /s (median {logged:.0}); logged ÷ unlogged per pair {} (median {logged_ratio:.2}, goal ≥ \
         0.85); {written:.0} entries written, {dropped:.0} dropped (queue full)",
        slice.as_secs_f64(),
        rounded(&logged_rps),
        logged_ratios.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" / "),
    );
    println!("{cpu_line}");
    println!(
        "ofrep single evaluations of `{FEATURE}/processor` (same connections, alternating rounds): {} /s (median \
         {ofrep_median:.0})",
        rounded(&ofrep_rps)
    );
    println!(
        "sync fan-out: a percentage change sent → the new snapshot read by each of {fanout_n} subscribers, p99 per \
         change {} ms (median {fanout:.1} ms)",
        fanouts.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ")
    );
    println!(
        "sync idle: {idle_n} subscribers open on a fresh rollout serve: RSS {:.1} MiB (before them {:.1} MiB; {:.1} KiB \
         per subscriber)",
        idle_subscribers_rss as f64 / 1024.0,
        before_idle as f64 / 1024.0,
        idle_subscribers_rss.saturating_sub(before_idle) as f64 / idle_n as f64
    );
    println!("rollout serve RSS: idle {idle_mib:.1} MiB, after load {:.1} MiB", loaded_rss_kib as f64 / 1024.0);
    if bench {
        println!("SUMMARY http_route_rps: {rps:.0}");
        println!("SUMMARY http_route_rps_logged: {logged:.0}");
        println!("SUMMARY ofrep_eval_rps: {ofrep_median:.0}");
        println!("SUMMARY sync_fanout_ms: {fanout:.1}");
        println!("SUMMARY sync_idle_rss_mib: {:.1}", idle_subscribers_rss as f64 / 1024.0);
        println!("SUMMARY http_route_logged_ratio: {logged_ratio:.2}");
        println!("SUMMARY http_route_rps_shadow: {shadow:.0}");
        println!("SUMMARY http_route_shadow_ratio: {shadow_ratio:.2}");
        println!("SUMMARY policy_shadow_dropped: {shadow_dropped:.0}");
        println!("SUMMARY http_route_rps_canary: {canary:.0}");
        println!("SUMMARY http_route_canary_ratio: {canary_ratio:.2}");
        println!("SUMMARY decision_log_dropped: {dropped:.0}");
        println!("SUMMARY http_route_p99_ms: {p99:.3}");
        println!("SUMMARY http_healthz_rps: {health_rps:.0}");
        println!("SUMMARY http_route_ratio: {ratio:.2}");
        println!("SUMMARY http_route_open_rate: {rate:.0}");
        println!("SUMMARY http_route_open_p99_ms: {open_p99:.3}");
        println!("SUMMARY idle_rss_mib: {idle_mib:.1}");
    } else {
        assert!(decisions > 0, "no decisions in the smoke run");
        assert!(written > 0.0, "no decision was logged in the smoke run");
        assert!(ofrep_median > 0.0, "no OFREP evaluation in the smoke run");
        assert!(fanout > 0.0, "no subscriber saw the change in the smoke run");
        assert!(!open_sorted.is_empty(), "no requests in the open-loop smoke run");
        assert!(idle_rss_kib > 0, "cannot read the server's RSS");
    }
}
