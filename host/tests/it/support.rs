//! Helpers every suite shares: the Postgres URL of the database-backed tests.

/// The Postgres URL for a test that needs one: `DATABASE_URL` when it names a Postgres
/// server. Without one: under `CI=true` the test fails; otherwise a loud `SKIPPED` line is
/// written past the test harness's capture (so it shows) and the caller returns.
pub fn pg_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but DATABASE_URL does not name a Postgres database: the Postgres half of `{test}` cannot run"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {test} on postgres (set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test)\n")
                    .as_bytes(),
            );
            None
        }
    }
}

/// The `rollout` binary the end-to-end tests run: this build's, unless `ROLLOUT_BIN` names
/// another (how a defect's test is shown to fail on an older build).
pub fn rollout_bin() -> String {
    std::env::var("ROLLOUT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rollout").to_owned())
}

/// What a run of the `rollout` binary gave.
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output as JSON (panics naming both outputs when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Run [`rollout_bin`] with `args`.
pub fn run_rollout(args: &[&str]) -> Run {
    let out = std::process::Command::new(rollout_bin()).args(args).output().expect("run rollout");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
