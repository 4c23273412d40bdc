//! Environment overrides of the rollout configuration (SPEC §4).
//!
//! Read once at start ([`EnvOverrides::from_env`]); an invalid value is an error naming the
//! variable and its allowed values, and the start must stop. The overrides apply on top of
//! the database configuration ([`EnvOverrides::apply`]) — the database keeps its own values —
//! and the manager shows each active one as coming from the environment and writes them once
//! per start as an `env_override` history row.
//!
//! | variable | effect | allowed |
//! | --- | --- | --- |
//! | `HYBRID_EMERGENCY_STOP` | `true` forces the stop on; `false` leaves the database value | `true`, `false`, `1`, `0` |
//! | `HYBRID_ROLLOUT_PERCENTAGE` | replaces `rollout_percentage` | `0`..=`100` |
//! | `HYBRID_ROLLOUT_STRATEGY` | replaces `rollout_strategy` | `percentage`, `whitelist`, `repository_size` |
//! | `HYBRID_AUTO_ROLLBACK` | replaces `auto_rollback_enabled` | `true`, `false`, `1`, `0` |
//! | `HYBRID_MAX_ERROR_RATE` | replaces `max_error_rate` | a number from 0 to 100 |
//!
//! An unset or empty variable is no override.

use rollout_policy::{Config, Strategy};
use serde::Serialize;

/// `HYBRID_EMERGENCY_STOP`.
pub const EMERGENCY_STOP: &str = "HYBRID_EMERGENCY_STOP";
/// `HYBRID_ROLLOUT_PERCENTAGE`.
pub const ROLLOUT_PERCENTAGE: &str = "HYBRID_ROLLOUT_PERCENTAGE";
/// `HYBRID_ROLLOUT_STRATEGY`.
pub const ROLLOUT_STRATEGY: &str = "HYBRID_ROLLOUT_STRATEGY";
/// `HYBRID_AUTO_ROLLBACK`.
pub const AUTO_ROLLBACK: &str = "HYBRID_AUTO_ROLLBACK";
/// `HYBRID_MAX_ERROR_RATE`.
pub const MAX_ERROR_RATE: &str = "HYBRID_MAX_ERROR_RATE";

/// The five variables, in the order they are reported.
pub const VARIABLES: [&str; 5] = [EMERGENCY_STOP, ROLLOUT_PERCENTAGE, ROLLOUT_STRATEGY, AUTO_ROLLBACK, MAX_ERROR_RATE];

/// An environment variable with a value outside its allowed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}` for {variable}: allowed values are {allowed}")]
pub struct EnvError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What it may be.
    pub allowed: &'static str,
}

/// The overrides in force (`None`: the database value stands).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnvOverrides {
    /// `Some(true)` when `HYBRID_EMERGENCY_STOP` forces the stop on.
    pub emergency_stop: Option<bool>,
    /// `HYBRID_ROLLOUT_PERCENTAGE`.
    pub rollout_percentage: Option<u8>,
    /// `HYBRID_ROLLOUT_STRATEGY`.
    #[serde(serialize_with = "ser_strategy")]
    pub rollout_strategy: Option<Strategy>,
    /// `HYBRID_AUTO_ROLLBACK`.
    pub auto_rollback_enabled: Option<bool>,
    /// `HYBRID_MAX_ERROR_RATE`.
    pub max_error_rate: Option<f64>,
}

fn ser_strategy<S: serde::Serializer>(s: &Option<Strategy>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_some(s.as_str()),
        None => ser.serialize_none(),
    }
}

const BOOL_VALUES: &str = "true, false, 1, 0";

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, EnvError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(EnvError { variable, value: value.to_owned(), allowed: BOOL_VALUES }),
    }
}

/// One active override, for display and the history row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveOverride {
    /// The variable.
    pub variable: &'static str,
    /// The configuration field it overrides.
    pub field: &'static str,
    /// The value as given.
    pub value: String,
}

impl EnvOverrides {
    /// Read the five variables from the process environment.
    pub fn from_env() -> Result<EnvOverrides, EnvError> {
        EnvOverrides::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the five variables through `lookup` (for tests and other sources).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<EnvOverrides, EnvError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut out = EnvOverrides::default();
        if let Some(v) = get(EMERGENCY_STOP) {
            // `false` is no override: the environment may force the stop on, never off
            out.emergency_stop = parse_bool(EMERGENCY_STOP, &v)?.then_some(true);
        }
        if let Some(v) = get(ROLLOUT_PERCENTAGE) {
            let p = v.trim().parse::<u8>().ok().filter(|p| *p <= 100);
            out.rollout_percentage = Some(p.ok_or(EnvError {
                variable: ROLLOUT_PERCENTAGE,
                value: v.clone(),
                allowed: "an integer from 0 to 100",
            })?);
        }
        if let Some(v) = get(ROLLOUT_STRATEGY) {
            out.rollout_strategy = Some(Strategy::parse(v.trim()).map_err(|_| EnvError {
                variable: ROLLOUT_STRATEGY,
                value: v.clone(),
                allowed: "percentage, whitelist, repository_size",
            })?);
        }
        if let Some(v) = get(AUTO_ROLLBACK) {
            out.auto_rollback_enabled = Some(parse_bool(AUTO_ROLLBACK, &v)?);
        }
        if let Some(v) = get(MAX_ERROR_RATE) {
            let rate = v.trim().parse::<f64>().ok().filter(|r| r.is_finite() && (0.0..=100.0).contains(r));
            out.max_error_rate = Some(rate.ok_or(EnvError {
                variable: MAX_ERROR_RATE,
                value: v.clone(),
                allowed: "a number from 0 to 100",
            })?);
        }
        Ok(out)
    }

    /// The inverse of the `Serialize` of [`EnvOverrides`] (the form the decision log keeps in
    /// [`crate::store::DecisionRecord::overrides`]): an object of the five fields, each
    /// absent or `null` for no override, `rollout_strategy` as its text. A mistyped or
    /// out-of-range value, a key that is not one of the five, or a value that is not an object
    /// is an error naming the key and what it may be.
    pub fn from_json(value: &serde_json::Value) -> Result<EnvOverrides, EnvError> {
        const FIELDS: &str = "an object of emergency_stop, rollout_percentage, rollout_strategy, \
            auto_rollback_enabled, max_error_rate";
        let clip = |v: &serde_json::Value| v.to_string().chars().take(80).collect::<String>();
        let object =
            value.as_object().ok_or_else(|| EnvError { variable: "overrides", value: clip(value), allowed: FIELDS })?;
        let mut out = EnvOverrides::default();
        for (key, v) in object {
            if v.is_null() {
                continue;
            }
            let bad = |variable: &'static str, allowed: &'static str| EnvError { variable, value: clip(v), allowed };
            match key.as_str() {
                "emergency_stop" => {
                    out.emergency_stop = Some(v.as_bool().ok_or_else(|| bad("emergency_stop", "true, false"))?)
                }
                "rollout_percentage" => {
                    let p = v.as_u64().and_then(|p| u8::try_from(p).ok()).filter(|p| *p <= 100);
                    out.rollout_percentage =
                        Some(p.ok_or_else(|| bad("rollout_percentage", "an integer from 0 to 100"))?);
                }
                "rollout_strategy" => {
                    let s = v.as_str().and_then(|s| Strategy::parse(s).ok());
                    out.rollout_strategy =
                        Some(s.ok_or_else(|| bad("rollout_strategy", "percentage, whitelist, repository_size"))?);
                }
                "auto_rollback_enabled" => {
                    out.auto_rollback_enabled =
                        Some(v.as_bool().ok_or_else(|| bad("auto_rollback_enabled", "true, false"))?)
                }
                "max_error_rate" => {
                    let r = v.as_f64().filter(|r| r.is_finite() && (0.0..=100.0).contains(r));
                    out.max_error_rate = Some(r.ok_or_else(|| bad("max_error_rate", "a number from 0 to 100"))?);
                }
                _ => {
                    return Err(EnvError {
                        variable: "overrides",
                        value: key.chars().take(80).collect(),
                        allowed: "keys emergency_stop, rollout_percentage, rollout_strategy, auto_rollback_enabled, \
                            max_error_rate",
                    })
                }
            }
        }
        Ok(out)
    }

    /// Whether no override is in force.
    pub fn is_empty(&self) -> bool {
        self.active().is_empty()
    }

    /// The overrides in force.
    pub fn active(&self) -> Vec<ActiveOverride> {
        let mut out = Vec::new();
        if let Some(v) = self.emergency_stop {
            out.push(ActiveOverride { variable: EMERGENCY_STOP, field: "emergency_stop", value: v.to_string() });
        }
        if let Some(v) = self.rollout_percentage {
            out.push(ActiveOverride {
                variable: ROLLOUT_PERCENTAGE,
                field: "rollout_percentage",
                value: v.to_string(),
            });
        }
        if let Some(v) = self.rollout_strategy {
            out.push(ActiveOverride {
                variable: ROLLOUT_STRATEGY,
                field: "rollout_strategy",
                value: v.as_str().to_owned(),
            });
        }
        if let Some(v) = self.auto_rollback_enabled {
            out.push(ActiveOverride { variable: AUTO_ROLLBACK, field: "auto_rollback_enabled", value: v.to_string() });
        }
        if let Some(v) = self.max_error_rate {
            out.push(ActiveOverride { variable: MAX_ERROR_RATE, field: "max_error_rate", value: v.to_string() });
        }
        out
    }

    /// The configuration in force for the stored row: the overrides applied, except that
    /// after an automatic rollback (`rolled_back`) the percentage is the column's (0) whatever
    /// `HYBRID_ROLLOUT_PERCENTAGE` says, until an operator sets a percentage (SPEC §4: safety
    /// beats an override).
    pub fn apply_to(&self, stored: &crate::store::StoredConfig) -> Config {
        let mut c = self.apply(&stored.config);
        if stored.rolled_back {
            c.rollout_percentage = stored.config.rollout_percentage;
        }
        c
    }

    /// `config` with the overrides applied (no rollback in force: see [`EnvOverrides::apply_to`]).
    pub fn apply(&self, config: &Config) -> Config {
        let mut c = config.clone();
        if let Some(v) = self.emergency_stop {
            c.emergency_stop = v;
        }
        if let Some(v) = self.rollout_percentage {
            c.rollout_percentage = v;
        }
        if let Some(v) = self.rollout_strategy {
            c.rollout_strategy = v;
        }
        if let Some(v) = self.auto_rollback_enabled {
            c.auto_rollback_enabled = v;
        }
        if let Some(v) = self.max_error_rate {
            c.max_error_rate = v;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<EnvOverrides, EnvError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EnvOverrides::from_lookup(|k| map.get(k).cloned())
    }

    /// Bug 10: only the stop did anything.
    #[test]
    fn all_five_are_read_and_applied() {
        let o = parse(&[
            (EMERGENCY_STOP, "true"),
            (ROLLOUT_PERCENTAGE, "25"),
            (ROLLOUT_STRATEGY, "repository_size"),
            (AUTO_ROLLBACK, "false"),
            (MAX_ERROR_RATE, "7.5"),
        ])
        .unwrap();
        assert_eq!(o.active().len(), 5);
        let c = o.apply(&Config::default());
        assert!(c.emergency_stop);
        assert_eq!(c.rollout_percentage, 25);
        assert_eq!(c.rollout_strategy, Strategy::RepositorySize);
        assert!(!c.auto_rollback_enabled);
        assert_eq!(c.max_error_rate, 7.5);
    }

    #[test]
    fn from_json_is_the_inverse_of_serialize_for_every_field() {
        let full = EnvOverrides {
            emergency_stop: Some(true),
            rollout_percentage: Some(37),
            rollout_strategy: Some(Strategy::RepositorySize),
            auto_rollback_enabled: Some(false),
            max_error_rate: Some(7.25),
        };
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["rollout_strategy"], "repository_size");
        assert_eq!(EnvOverrides::from_json(&json).unwrap(), full);
        // each field alone, the others none
        let one_each = [
            EnvOverrides { emergency_stop: Some(false), ..EnvOverrides::default() },
            EnvOverrides { rollout_percentage: Some(0), ..EnvOverrides::default() },
            EnvOverrides { rollout_percentage: Some(100), ..EnvOverrides::default() },
            EnvOverrides { rollout_strategy: Some(Strategy::Whitelist), ..EnvOverrides::default() },
            EnvOverrides { rollout_strategy: Some(Strategy::Percentage), ..EnvOverrides::default() },
            EnvOverrides { auto_rollback_enabled: Some(true), ..EnvOverrides::default() },
            EnvOverrides { max_error_rate: Some(0.0), ..EnvOverrides::default() },
            EnvOverrides::default(),
        ];
        for o in one_each {
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(EnvOverrides::from_json(&json).unwrap(), o, "{json}");
        }
        assert_eq!(EnvOverrides::from_json(&serde_json::json!({})).unwrap(), EnvOverrides::default());
    }

    #[test]
    fn from_json_names_the_bad_key() {
        for (json, key) in [
            (serde_json::json!({"rollout_percentage": 101}), "rollout_percentage"),
            (serde_json::json!({"rollout_percentage": "5"}), "rollout_percentage"),
            (serde_json::json!({"rollout_strategy": "random"}), "rollout_strategy"),
            (serde_json::json!({"emergency_stop": 1}), "emergency_stop"),
            (serde_json::json!({"auto_rollback_enabled": "yes"}), "auto_rollback_enabled"),
            (serde_json::json!({"max_error_rate": 150.0}), "max_error_rate"),
            (serde_json::json!({"surprise": true}), "surprise"),
            (serde_json::json!([1]), "overrides"),
        ] {
            let msg = EnvOverrides::from_json(&json).unwrap_err().to_string();
            assert!(msg.contains(key), "{json}: {msg}");
        }
    }

    #[test]
    fn unset_empty_and_stop_false_are_no_override() {
        let o = parse(&[(EMERGENCY_STOP, "false"), (ROLLOUT_PERCENTAGE, "")]).unwrap();
        assert!(o.is_empty());
        let db = Config { emergency_stop: true, rollout_percentage: 40, ..Config::default() };
        assert_eq!(o.apply(&db), db, "the environment never switches a database stop off");
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_allowed_values() {
        for (var, value, allowed) in [
            (EMERGENCY_STOP, "yes please", "true, false"),
            (ROLLOUT_PERCENTAGE, "101", "0 to 100"),
            (ROLLOUT_PERCENTAGE, "-1", "0 to 100"),
            (ROLLOUT_STRATEGY, "random", "repository_size"),
            (AUTO_ROLLBACK, "maybe", "true, false"),
            (MAX_ERROR_RATE, "NaN", "0 to 100"),
            (MAX_ERROR_RATE, "150", "0 to 100"),
        ] {
            let err = parse(&[(var, value)]).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.variable, var);
            assert!(msg.contains(var) && msg.contains(value) && msg.contains(allowed), "{msg}");
        }
    }
}
