//! One file per command of `rollout` (the `policy` subcommands are in `policy_cmd`).

pub mod alerts;
pub mod auto_rollback;
pub mod backlog;
pub mod categorize;
pub mod check_health;
pub mod decision_log;
pub mod decisions;
pub mod demo;
pub mod emergency_stop;
pub mod explain;
pub mod feature;
pub mod history;
pub mod lists;
pub mod migrate;
pub mod record;
pub mod replay;
pub mod resume;
pub mod route;
pub mod serve;
pub mod set_percentage;
pub mod stats;
pub mod status;
