//! Helpers of the HTTP and end-to-end tests: `rollout serve` processes, a Postgres base URL
//! (SKIPPED loudly without one, failing under CI=true), a TCP proxy that can be cut, and the
//! example policy component.
#![allow(dead_code, reason = "each test crate uses a part")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The token the spawned servers use.
pub const TOKEN: &str = "e2e-test-token-of-enough-length";

/// The Postgres server to create test databases on: `DATABASE_URL` when it is a Postgres
/// URL. Without one: under CI=true the test fails, otherwise it prints SKIPPED and the
/// caller returns.
pub fn postgres_base(test: &str) -> Option<String> {
    crate::support::pg_url(test)
}

/// The example policy component (`make examples` builds it); `None` (SKIPPED) when absent
/// outside CI.
pub fn example_policy(test: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/size_aware_policy.wasm");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: cannot read {}: {e}; run `make examples`", path.display());
            }
            eprintln!("\n*** SKIPPED {test}: {} is missing; run `make examples` ***\n", path.display());
            None
        }
    }
}

/// A repository id the tests decide on.
pub const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

/// The value that removes a variable from a server's environment ([`Server::start`]).
pub const UNSET: &str = "\u{0}unset";

/// A `rollout serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    logs: Arc<Mutex<String>>,
}

impl Server {
    /// Start `rollout --database-url URL serve --listen 127.0.0.1:0 ARGS…` with the token and
    /// `envs` (a variable given the value [`UNSET`] is removed), and wait (up to 120 s) for
    /// the line naming its address.
    pub fn start(database_url: &str, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(crate::support::rollout_bin());
        cmd.args(["--database-url", database_url, "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("ROLLOUT_SERVICE_TOKEN", TOKEN)
            .env("RUST_LOG", "info,sqlx=warn")
            .env_remove("HYBRID_EMERGENCY_STOP")
            .env_remove("HYBRID_ROLLOUT_PERCENTAGE")
            .env_remove("HYBRID_ROLLOUT_STRATEGY")
            .env_remove("HYBRID_AUTO_ROLLBACK")
            .env_remove("HYBRID_MAX_ERROR_RATE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            if *v == UNSET {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("spawn rollout serve");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let out_sink = logs.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                out_sink.lock().unwrap().push_str(&line);
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let base = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(base);
                }
                line.clear();
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rollout serve did not start; its output:\n{}", logs.lock().unwrap());
            }
        };
        Server { child, base, logs }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Send SIGKILL: the process dies at once, nothing flushed, no destructor run.
    pub fn sigkill(&self) {
        let status = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -KILL failed");
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("rollout serve did not exit within {timeout:?}; its output:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- output of rollout serve at {} ---\n{}", self.base, self.logs());
        }
    }
}

/// A client with the service token.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Send `method path` with a JSON body and the token; the status and the JSON answer.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// GET `url`, JSON.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    send(client, reqwest::Method::GET, url, None).await
}

/// Poll `check` every 10 ms until it returns `Some` or `within` passes.
pub async fn poll<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of `upstream` that can be cut (every connection closed, new ones
/// closed at once) and restored.
pub struct Proxy {
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on a free port and forward to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (c, g) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (c, g) = (c.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while !c.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        Proxy { addr, cut, generation, task }
    }

    /// Close every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a Postgres URL's server listens.
pub fn postgres_addr(url: &str) -> std::net::SocketAddr {
    let opts: sqlx::postgres::PgConnectOptions = url.parse().expect("postgres url");
    let host = opts.get_host().to_owned();
    let host = if host == "localhost" { "127.0.0.1".to_owned() } else { host };
    format!("{host}:{}", opts.get_port()).parse().expect("a numeric postgres host")
}

/// `url` with its host and port replaced by `addr`.
pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{tail}")
}

/// Read all of a reader (for small child outputs).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A TCP proxy in front of a Postgres server that, once armed, lets the server commit the
/// next write and loses the reply: it holds each reply cycle of the server (up to its
/// `ReadyForQuery`), and when a cycle that completed an `INSERT`, `UPDATE` or `COMMIT`
/// ends outside a transaction (status `I`: it committed), it drops that cycle and closes
/// the connection instead of forwarding it. The client sees the connection fail after the
/// database committed — the ambiguous commit of an outage. Connect without TLS
/// (`sslmode=disable`): the proxy reads the protocol.
pub struct CommitCutter {
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: std::net::SocketAddr,
    armed: Arc<AtomicBool>,
    cuts: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CommitCutter {
    /// Listen on a free port and forward to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> CommitCutter {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (a, n) = (armed.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                let (armed, cuts) = (a.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream_copy = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut pending: Vec<u8> = Vec::new();
                    let mut cycle: Vec<u8> = Vec::new();
                    let mut wrote = false;
                    let mut chunk = vec![0u8; 64 * 1024];
                    'read: while let Ok(got) = server_read.read(&mut chunk).await {
                        if got == 0 {
                            break;
                        }
                        pending.extend_from_slice(&chunk[..got]);
                        // whole messages: type byte, then a 4-byte length that counts itself
                        while pending.len() >= 5 {
                            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
                            if pending.len() < 1 + len {
                                break;
                            }
                            let message: Vec<u8> = pending.drain(..1 + len).collect();
                            let kind = message[0];
                            // asynchronous messages (notifications, notices, parameter
                            // status) outside a cycle go through at once
                            if cycle.is_empty() && matches!(kind, b'A' | b'N' | b'S') {
                                if client_write.write_all(&message).await.is_err() {
                                    break 'read;
                                }
                                continue;
                            }
                            if kind == b'C' {
                                let tag = String::from_utf8_lossy(&message[5..]);
                                wrote |= ["INSERT", "UPDATE", "COMMIT"].iter().any(|t| tag.starts_with(t));
                            }
                            cycle.extend_from_slice(&message);
                            if kind == b'Z' {
                                let committed = wrote && message.get(5) == Some(&b'I');
                                if committed && armed.swap(false, Ordering::SeqCst) {
                                    cuts.fetch_add(1, Ordering::SeqCst);
                                    break 'read;
                                }
                                if client_write.write_all(&cycle).await.is_err() {
                                    break 'read;
                                }
                                cycle.clear();
                                wrote = false;
                            }
                        }
                    }
                    upstream_copy.abort();
                });
            }
        });
        CommitCutter { addr, armed, cuts, task }
    }

    /// Lose the reply of the next committed write.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Replies lost so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
