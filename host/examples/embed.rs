//! Embedding the rollout runtime in another Rust program: load the bundled reference
//! policy and route one job (`cargo run -p rollout --example embed`).

use rollout::engine::{ConfigSnapshot, Policy};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout_policy::{Config, Job, Repository, Strategy, TriggerSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let loaded = runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
    let config = ConfigSnapshot::new(Config {
        is_active: true,
        rollout_percentage: 100,
        rollout_strategy: Strategy::Percentage,
        ..Config::default()
    });
    let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
    let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
    let decision = runtime.route(&config, &repo, &job)?;
    println!("{} {}: {} ({})", loaded.version.name, loaded.version.version, decision.processor, decision.rule);
    Ok(())
}
