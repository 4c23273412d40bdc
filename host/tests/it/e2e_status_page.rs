//! The status page in a real browser: headless Chromium (Debian `chromium`) loads `/` from a
//! running `rollout serve`, and after a percentage change through the API the page shows the
//! new percentage. Without Chromium: fails under CI=true, SKIPPED otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

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

/// The DOM of `url` after Chromium loaded it.
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id="rollout-percentage"` in a DOM dump.
fn shown_percentage(dom: &str) -> Option<String> {
    let start = dom.find("id=\"rollout-percentage\"")?;
    let rest = dom.get(start..)?;
    let open_end = rest.find('>')?;
    let rest = rest.get(open_end + 1..)?;
    let close = rest.find('<')?;
    rest.get(..close).map(|s| s.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_new_percentage_after_a_change() {
    let Some(browser) = chromium() else { return };
    let db = TestDatabase::sqlite().await.unwrap();
    let server = Server::start(&db.url, &[], &[]);
    let c = client();
    let page = server.url("/");

    let b = browser.clone();
    let p = page.clone();
    let before = tokio::task::spawn_blocking(move || dump_dom(&b, &p)).await.unwrap();
    assert!(before.contains("<h1>rollout <code>hybrid_progressive_capture</code></h1>"), "{before}");
    assert_eq!(shown_percentage(&before).as_deref(), Some("0"), "{before}");
    assert!(before.contains("id=\"error-chart\""), "the chart is in the DOM");
    assert!(before.contains("rollout-reference"), "the policy version is shown");

    let (s, v) = send(
        &c,
        Method::PUT,
        &server.url("/v1/features/hybrid_progressive_capture/percentage"),
        Some(json!({"percentage": 42, "reason": "browser test"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let b = browser.clone();
    let after = tokio::task::spawn_blocking(move || dump_dom(&b, &page)).await.unwrap();
    assert_eq!(shown_percentage(&after).as_deref(), Some("42"), "{after}");
    assert!(after.contains("browser test"), "the change is in the recent history");
    drop(server);
    tokio::time::sleep(Duration::from_millis(10)).await;
    db.cleanup().await;
}
