//! The status page in a real browser: headless Chromium (Debian `chromium`) loads `/` from a
//! running `rollout serve` over a demo-seeded database. The rendered values (percentage,
//! error rates, p95, job counts, cost, participation, decisions by rule, alerts) are checked
//! against the JSON API's; a screenshot at a phone-sized viewport is kept in
//! `target/artifacts/status-page.png` (CI keeps it as an artifact); and after a percentage
//! change the open page shows the new value through its live refresh, without a reload
//! (checked over the DevTools protocol: a mark set in the page survives). Without Chromium:
//! fails under CI=true, SKIPPED otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, get, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const F: &str = "hybrid_progressive_capture";

fn chromium() -> Option<String> {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(candidate.to_owned());
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("chromium is not installed (apt-get install -y chromium)");
    }
    eprintln!("\n*** SKIPPED the status page browser test: chromium is not installed ***\n");
    None
}

/// The flags every Chromium run here takes.
const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// Run Chromium to completion with `args`; its stdout.
fn run_chromium(browser: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The DOM of `url` after Chromium loaded it (scripts ran for 2 s of virtual time: less
/// than the refresh period, so this is the page as served).
fn dump_dom(browser: &str, url: &str) -> String {
    run_chromium(browser, &["--virtual-time-budget=2000", "--dump-dom", url])
}

/// The text of the element whose `id` is `id` in a DOM dump (up to its first child tag).
fn text_by_id(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = dom.get(start..)?;
    let rest = rest.get(rest.find('>')? + 1..)?;
    rest.get(..rest.find('<')?).map(|s| s.trim().to_owned())
}

fn shown(dom: &str, id: &str) -> String {
    text_by_id(dom, id).unwrap_or_else(|| panic!("no element `{id}` on the page:\n{dom}"))
}

/// The API's optional milliseconds as the page shows them.
fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".to_owned(), |x| format!("{x:.1}"))
}

/// A Chromium left running with a DevTools port, killed (its whole process group) on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn open(browser: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(browser)
            .args(HEADLESS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--remote-debugging-port=0", "--window-size=1280,1024", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&file).ok().and_then(|t| t.lines().next()?.trim().parse().ok())
            {
                break port;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "chromium wrote no DevToolsActivePort");
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser { child, _profile: profile, port }
    }

    /// A DevTools connection to the page showing `url`.
    fn page(&self, url: &str) -> Cdp {
        let start = Instant::now();
        loop {
            if let Some(ws) = http_get(self.port, "/json/list").and_then(|body| {
                let targets: Value = serde_json::from_str(&body).ok()?;
                targets.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                        .flatten()
                })
            }) {
                return Cdp::connect(&ws);
            }
            assert!(start.elapsed() < Duration::from_secs(60), "chromium has no page at {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// GET `path` on 127.0.0.1:`port`: the body (read to its `Content-Length`).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:"))?.trim().parse().ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// The smallest DevTools protocol client: one WebSocket (RFC 6455, client frames masked),
/// `Runtime.evaluate` only.
struct Cdp {
    stream: TcpStream,
    next_id: u64,
}

impl Cdp {
    fn connect(ws_url: &str) -> Cdp {
        let rest = ws_url.strip_prefix("ws://").expect("a ws:// url");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = TcpStream::connect(host).expect("connect to devtools");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("devtools handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "devtools refused the websocket: {head}");
        Cdp { stream, next_id: 0 }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mask = [0x5a, 0x17, 0xc3, 0x81];
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next text message (fragments joined; control frames skipped).
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).expect("devtools frame");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                len = u64::from_be_bytes(b);
            }
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 {
                self.stream.read_exact(&mut mask).unwrap();
            }
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).unwrap();
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            assert_ne!(opcode, 0x8, "devtools closed the connection");
            if opcode >= 0x8 {
                continue;
            }
            message.extend(payload);
            if fin {
                return String::from_utf8(message).unwrap();
            }
        }
    }

    /// The value of `expression` in the page.
    fn eval(&mut self, expression: &str) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true}});
        self.send(&call.to_string());
        loop {
            let answer: Value = serde_json::from_str(&self.receive()).unwrap();
            if answer["id"] == id {
                return answer["result"]["result"]["value"].clone();
            }
        }
    }

    /// Evaluate `expression` every 250 ms until `done` accepts its value (up to `within`).
    fn wait_for(&mut self, within: Duration, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expression);
            if done(&v) {
                return v;
            }
            assert!(start.elapsed() < within, "`{expression}` is still {v} after {within:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed(database_url: &str) {
    let out = Command::new(crate::support::rollout_bin())
        .args(["--database-url", database_url, "demo", "seed", "--repositories", "60", "--outcomes", "400"])
        .env_remove("HYBRID_ROLLOUT_PERCENTAGE")
        .env_remove("HYBRID_EMERGENCY_STOP")
        .output()
        .expect("run rollout demo seed");
    assert!(out.status.success(), "demo seed failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says_and_refreshes_live() {
    let Some(browser) = chromium() else { return };
    let db = TestDatabase::sqlite().await.unwrap();
    let url = db.url.clone();
    blocking(move || seed(&url)).await;
    let server = Server::start(&db.url, &[], &[]);
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/{F}{rest}"));
    let page = server.url("/");

    // decisions through the API, tallied by the rule each answer names
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for (i, job) in [json!({"trigger_source": "scheduled"}), json!({"time_range_days": 1}), json!({})]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
    {
        let repo = format!("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c{i:02}");
        let (s, v) = send(&c, Method::POST, &f("/route"), Some(json!({"repository_id": repo, "job": job}))).await;
        assert_eq!(s, 200, "{v}");
        *rules.entry(v["rule"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    // a queue backlog report, judged by a health check (the page shows the last one's)
    let backlog = json!({"processor": "github_actions", "depth": 17, "oldest_age_seconds": 42.5});
    let (s, v) = send(&c, Method::PUT, &f("/backlog"), Some(backlog)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&c, Method::POST, &f("/check-health"), Some(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    // the participation is counted in the background: wait for it
    let stats = e2e_support::poll(Duration::from_secs(300), || async {
        let (_, v) = get(&c, &f("/stats")).await;
        (v["participation_current"] == true).then_some(v)
    })
    .await
    .expect("the participation was never counted");
    let (_, status) = get(&c, &f("")).await;

    let (b, p) = (browser.clone(), page.clone());
    let dom = blocking(move || dump_dom(&b, &p)).await;
    let (_, status_after) = get(&c, &f("")).await;

    assert!(dom.contains(&format!("<h1>rollout <code>{F}</code></h1>")), "{dom}");
    assert!(dom.contains("name=\"viewport\""), "readable on a phone");
    assert!(dom.contains("rollout-reference"), "the policy version is shown");
    for chart in
        ["ramp-chart", "error-chart", "error-rate-chart", "p95-chart", "participation-chart", "decisions-chart"]
    {
        assert!(dom.contains(&format!("<svg id=\"{chart}\"")), "{chart} is on the page");
    }
    assert!(dom.contains("class=\"ramp\""), "the ramp has a line");
    // the page reloads itself only without scripts; with them, the script refreshes it
    assert_eq!(dom.matches("http-equiv=\"refresh\"").count(), 1, "{dom}");
    assert!(dom.contains("<noscript><meta http-equiv=\"refresh\""), "{dom}");

    // the same numbers as the API
    let pct = status["config"]["rollout_percentage"]["value"].as_u64().unwrap();
    assert_eq!(shown(&dom, "rollout-percentage"), pct.to_string());
    assert_eq!(shown(&dom, "total-jobs"), stats["total_jobs"].to_string());
    assert_eq!(shown(&dom, "error-count"), stats["error_count"].to_string());
    assert_eq!(shown(&dom, "error-rate"), format!("{:.2}", stats["error_rate"].as_f64().unwrap()));
    assert!(stats["total_jobs"].as_u64().unwrap() > 0, "the demo recorded outcomes: {stats}");
    let mut timed = 0;
    for (name, p) in stats["processors"].as_object().unwrap() {
        assert_eq!(shown(&dom, &format!("{name}-jobs")), p["total_jobs"].to_string(), "{name}");
        assert_eq!(shown(&dom, &format!("{name}-errors")), p["error_count"].to_string(), "{name}");
        let rate = format!("{:.2}", p["error_rate"].as_f64().unwrap());
        assert_eq!(shown(&dom, &format!("{name}-error-rate")), rate, "{name}");
        assert_eq!(shown(&dom, &format!("error-rate-chart-{name}")), format!("{rate} %"), "{name}");
        assert_eq!(shown(&dom, &format!("{name}-p95")), ms(&p["p95_processing_time_ms"]), "{name}");
        timed += usize::from(p["p95_processing_time_ms"].is_number());
    }
    assert!(timed > 0, "the demo's outcomes carry processing times: {stats}");
    let cost = &stats["cost"];
    assert!(cost.is_object(), "the demo sets prices: {stats}");
    assert_eq!(shown(&dom, "cost-window"), format!("{:.4}", cost["window_cost"].as_f64().unwrap()));
    assert_eq!(shown(&dom, "cost-all-inngest"), format!("{:.4}", cost["all_inngest_cost"].as_f64().unwrap()));
    assert_eq!(shown(&dom, "cost-savings"), format!("{:.4}", cost["savings"].as_f64().unwrap()));
    assert!(dom.contains(&format!("<th>{}</th>", stats["eligible_categorized_repositories"])), "participation");
    for (category, total) in stats["categories"].as_object().unwrap() {
        let label = shown(&dom, &format!("participation-chart-{category}"));
        assert!(label.ends_with(&format!(" of {total}")), "{category}: {label}");
    }
    for (rule, n) in &rules {
        assert_eq!(shown(&dom, &format!("decisions-chart-{rule}")), n.to_string(), "rule {rule}");
    }
    assert_eq!(shown(&dom, "decisions-total"), rules.values().sum::<u64>().to_string());
    // the backlog of the last health check
    let reported = &status["health"]["backlog"]["github_actions"];
    assert_eq!(shown(&dom, "github_actions-backlog-depth"), reported["depth"].to_string(), "{status}");
    assert_eq!(
        shown(&dom, "github_actions-backlog-age"),
        format!("{:.1}", reported["oldest_age_seconds"].as_f64().unwrap())
    );
    // an alert row exactly when the last health check is warning or critical
    let level = |s: &Value| s["health"]["level"].as_str().map(str::to_owned);
    if level(&status) == level(&status_after) {
        let unhealthy = matches!(level(&status).as_deref(), Some("warning" | "critical"));
        assert_eq!(dom.contains("class=\"alert\""), unhealthy, "{status}");
        assert_eq!(dom.contains("id=\"no-alerts\""), !unhealthy, "{status}");
    }

    // a phone-sized screenshot, kept as an artifact
    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (b, p, s) = (browser.clone(), page.clone(), shot.clone());
    blocking(move || {
        run_chromium(
            &b,
            &[
                "--window-size=390,844",
                "--hide-scrollbars",
                "--virtual-time-budget=2000",
                &format!("--screenshot={}", s.display()),
                &p,
            ],
        )
    })
    .await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{} is not a PNG", shot.display());
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // live refresh: the open page shows a new percentage without a reload
    let (b, p) = (browser.clone(), page.clone());
    let (open, mut cdp) = blocking(move || {
        let open = Browser::open(&b, &p);
        let mut cdp = open.page(&p);
        let first = cdp.wait_for(
            Duration::from_secs(60),
            "(document.getElementById('rollout-percentage') || {}).textContent",
            |v| v.is_string(),
        );
        assert_eq!(first, json!(pct.to_string()));
        assert_eq!(cdp.eval("window.__kept = 'this page'; window.__kept"), json!("this page"));
        (open, cdp)
    })
    .await;
    let (s, v) =
        send(&c, Method::PUT, &f("/percentage"), Some(json!({"percentage": 42, "reason": "browser test"}))).await;
    assert_eq!(s, 200, "{v}");
    let refreshed = blocking(move || {
        let v = cdp.wait_for(
            Duration::from_secs(90),
            "JSON.stringify([window.__kept || null, document.getElementById('rollout-percentage').textContent, \
             document.getElementById('history').textContent.includes('browser test')])",
            |v| v.as_str().is_some_and(|s| s.contains("\"42\"")),
        );
        drop(open);
        v
    })
    .await;
    let refreshed: Value = serde_json::from_str(refreshed.as_str().unwrap()).unwrap();
    assert_eq!(refreshed, json!(["this page", "42", true]), "the same page (no reload) shows the new value");
    assert!(Path::new(&shot).exists());
    drop(server);
    tokio::time::sleep(Duration::from_millis(10)).await;
    db.cleanup().await;
}
