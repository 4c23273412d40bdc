//! Validated values: each type is checked once, when it is made (from JSON, from a CLI
//! argument, or in code with `new`), so code that holds one never checks it again.
//!
//! Messages say what was given and what is allowed; the caller's decoder adds the field
//! ([`super::InputError`]).

use rollout_policy::RepoId;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

/// Longest processing time accepted for one job: 7 days, in milliseconds. Sums of any
/// number of these fit comfortably in the store's counters.
pub const MAX_PROCESSING_TIME_MS: u64 = 7 * 24 * 3600 * 1000;
/// Longest `reason` accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest `error_message` accepted, in characters (a longer one is refused; an accepted
/// one is kept to [`crate::store::MAX_ERROR_MESSAGE_CHARS`]).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 10_000;
/// Longest feature name, in characters (the column is `VARCHAR(100)`).
pub const MAX_FEATURE_CHARS: usize = 100;
/// Longest actor (`triggered_by`), in characters (the column is `VARCHAR(100)`).
pub const MAX_ACTOR_CHARS: usize = 100;
/// Longest `owner/name`, in characters.
pub const MAX_OWNER_NAME_CHARS: usize = 300;

/// An integer visitor: accepts JSON integers (and their text, for CLI arguments) within
/// `min..=max`, refusing anything else with `expecting` in the message.
struct UintVisitor {
    min: u64,
    max: u64,
    expecting: &'static str,
}

impl UintVisitor {
    fn check<E: de::Error>(&self, v: u64, shown: &dyn fmt::Display) -> Result<u64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format!("`{shown}` is not allowed: expected {}", self.expecting)))
        }
    }
}

impl<'de> Visitor<'de> for UintVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.check(v, &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(u) => self.check(u, &v),
            Err(_) => Err(E::custom(format!("`{v}` is not allowed: expected {}", self.expecting))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(format!("`{v}` is not allowed: expected {}", self.expecting)))
    }
}

fn parse_uint(s: &str, min: u64, max: u64, expecting: &'static str) -> Result<u64, String> {
    let t = s.trim();
    let v = UintVisitor { min, max, expecting };
    match t.parse::<u64>() {
        Ok(n) => v.check::<de::value::Error>(n, &t).map_err(|e| e.to_string()),
        Err(_) => Err(format!("`{}` is not allowed: expected {expecting}", super::clip(t))),
    }
}

macro_rules! bounded_uint {
    ($(#[$meta:meta])* $name:ident($t:ty), $min:expr, $max:expr, $expecting:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($t);

        impl $name {
            /// The smallest value allowed.
            pub const MIN: $t = $min;
            /// The largest value allowed.
            pub const MAX: $t = $max;
            /// What is allowed, in words.
            pub const EXPECTING: &'static str = $expecting;

            /// The value, when it is allowed.
            pub fn new(v: u64) -> Result<$name, String> {
                let n = UintVisitor { min: u64::from(Self::MIN), max: u64::from(Self::MAX), expecting: $expecting }
                    .check::<de::value::Error>(v, &v)
                    .map_err(|e| e.to_string())?;
                // within MIN..=MAX, so it fits
                Ok($name(n as $t))
            }

            /// The value.
            pub fn get(self) -> $t {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                parse_uint(s, u64::from(Self::MIN), u64::from(Self::MAX), $expecting).map(|n| $name(n as $t))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let v = d.deserialize_u64(UintVisitor {
                    min: u64::from(Self::MIN),
                    max: u64::from(Self::MAX),
                    expecting: $expecting,
                })?;
                Ok($name(v as $t))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
    };
}

bounded_uint!(
    /// A rollout percentage, 0..=100.
    Percentage(u8), 0, 100, "an integer from 0 to 100"
);
bounded_uint!(
    /// Fewest jobs in the window before a rollback may be decided (the column is a 32-bit
    /// signed integer).
    MinJobs(u32), 0, i32::MAX as u32, "an integer from 0 to 2147483647"
);
bounded_uint!(
    /// The health window, in hours: at least 1 (the column is a 32-bit signed integer).
    WindowHours(u32), 1, i32::MAX as u32, "an integer from 1 to 2147483647"
);
bounded_uint!(
    /// The processing time of one job, in milliseconds: at most [`MAX_PROCESSING_TIME_MS`]
    /// (7 days).
    ProcessingTimeMs(u64), 0, MAX_PROCESSING_TIME_MS, "an integer number of milliseconds from 0 to 604800000 (7 days)"
);
bounded_uint!(
    /// A count of days of data (`time_range_days`).
    Days(u32), 0, u32::MAX, "an integer from 0 to 4294967295"
);
bounded_uint!(
    /// A count of items (`max_items`).
    Items(u32), 0, u32::MAX, "an integer from 0 to 4294967295"
);
bounded_uint!(
    /// A pull request number.
    PrNumber(u64), 0, u64::MAX, "a PR number: an integer from 0 to 18446744073709551615"
);

/// An error rate in percent: a finite number from 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct ErrorRate(f64);

impl ErrorRate {
    /// What is allowed, in words.
    pub const EXPECTING: &'static str = "a number from 0 to 100";

    /// The rate, when allowed.
    pub fn new(v: f64) -> Result<ErrorRate, String> {
        if v.is_finite() && (0.0..=100.0).contains(&v) {
            Ok(ErrorRate(v))
        } else {
            Err(format!("`{v}` is not allowed: expected {}", Self::EXPECTING))
        }
    }

    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl std::str::FromStr for ErrorRate {
    type Err = String;

    fn from_str(s: &str) -> Result<ErrorRate, String> {
        match s.trim().parse::<f64>() {
            Ok(v) => ErrorRate::new(v),
            Err(_) => Err(format!("`{}` is not allowed: expected {}", super::clip(s.trim()), Self::EXPECTING)),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ErrorRate, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ErrorRate::EXPECTING)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
        }
        let v = d.deserialize_f64(V)?;
        ErrorRate::new(v).map_err(de::Error::custom)
    }
}

impl Serialize for ErrorRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Whether `s` holds a character that no text column can keep (NUL) or, when
/// `single_line`, any control character.
fn bad_char(s: &str, single_line: bool) -> Option<char> {
    s.chars().find(|c| *c == '\0' || (single_line && c.is_control()))
}

fn describe_char(c: char) -> String {
    if c == '\0' {
        "a NUL byte".to_owned()
    } else {
        format!("the control character U+{:04X}", u32::from(c))
    }
}

macro_rules! text_value {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The value, when allowed (normalised: see the type's description).
            pub fn new(s: &str) -> Result<$name, String> {
                let check: fn(&str) -> Result<String, String> = $check;
                check(s).map($name)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                $name::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&s).map_err(de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

text_value!(
    /// Why an operator made a change: trimmed, not empty, at most [`MAX_REASON_CHARS`]
    /// characters, no NUL byte.
    Reason,
    |s| {
        let t = s.trim();
        if t.is_empty() {
            return Err("the reason is empty: say why, in words".into());
        }
        if t.chars().count() > MAX_REASON_CHARS {
            return Err(format!("the reason is longer than {MAX_REASON_CHARS} characters"));
        }
        if let Some(c) = bad_char(t, false) {
            return Err(format!("the reason contains {}: allowed is text without it", describe_char(c)));
        }
        Ok(t.to_owned())
    }
);

text_value!(
    /// A feature name: 1 to [`MAX_FEATURE_CHARS`] characters, no control characters.
    FeatureName,
    |s| {
        if s.is_empty() || s.chars().count() > MAX_FEATURE_CHARS {
            return Err(format!(
                "`{}` is not a feature name: a feature name has 1 to {MAX_FEATURE_CHARS} characters",
                super::clip(s)
            ));
        }
        if let Some(c) = bad_char(s, true) {
            return Err(format!("the feature name contains {}: allowed are printable characters", describe_char(c)));
        }
        Ok(s.to_owned())
    }
);

text_value!(
    /// Who made a change (`triggered_by`): trimmed, 1 to [`MAX_ACTOR_CHARS`] characters, no
    /// control characters.
    Actor,
    |s| {
        let t = s.trim();
        if t.is_empty() || t.chars().count() > MAX_ACTOR_CHARS {
            return Err(format!("an actor has 1 to {MAX_ACTOR_CHARS} characters"));
        }
        if let Some(c) = bad_char(t, true) {
            return Err(format!("the actor contains {}: allowed are printable characters", describe_char(c)));
        }
        Ok(t.to_owned())
    }
);

text_value!(
    /// The error message of a failed job: at most [`MAX_ERROR_MESSAGE_CHARS`] characters, no
    /// NUL byte; kept cut to [`crate::store::MAX_ERROR_MESSAGE_CHARS`] characters from the
    /// moment it is accepted (the store keeps no more).
    ErrorMessage,
    |s| {
        if s.chars().count() > MAX_ERROR_MESSAGE_CHARS {
            return Err(format!("the error message is longer than {MAX_ERROR_MESSAGE_CHARS} characters"));
        }
        if let Some(c) = bad_char(s, false) {
            return Err(format!("the error message contains {}: allowed is text without it", describe_char(c)));
        }
        let kept = match s.char_indices().nth(crate::store::MAX_ERROR_MESSAGE_CHARS) {
            Some((i, _)) => s.get(..i).unwrap_or(s),
            None => s,
        };
        Ok(kept.to_owned())
    }
);

text_value!(
    /// The sha256 of a policy component: 64 hexadecimal digits, kept lowercase.
    Sha256,
    |s| {
        let t = s.trim().to_ascii_lowercase();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(t)
        } else {
            Err(format!("`{}` is not a sha256: expected 64 hexadecimal digits", super::clip(s)))
        }
    }
);

text_value!(
    /// A repository named by a person or a program: a UUID (hyphenated in any case, braced,
    /// or 32 hex digits; kept canonical) or `owner/name` (resolved through `repositories`
    /// when used).
    RepositoryRef,
    |s| {
        let t = s.trim();
        match RepoId::parse(t) {
            RepoId::Uuid(v) => Ok(Uuid::from_u128(v).to_string()),
            RepoId::Text(_)
                if crate::store::split_owner_name(t).is_some()
                    && t.chars().count() <= MAX_OWNER_NAME_CHARS
                    && bad_char(t, true).is_none() =>
            {
                Ok(t.to_owned())
            }
            RepoId::Text(_) => {
                Err(format!("`{}` is not a repository id: expected a UUID or owner/name", super::clip(s)))
            }
        }
    }
);

/// A repository id in a decision request: a UUID (hyphenated in any case, braced, or 32
/// hex digits). Decisions read memory only, so they take the id itself, not `owner/name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RepositoryUuid(Uuid);

impl RepositoryUuid {
    /// The id, when `s` is a UUID.
    pub fn new(s: &str) -> Result<RepositoryUuid, String> {
        match RepoId::parse(s.trim()) {
            RepoId::Uuid(v) => Ok(RepositoryUuid(Uuid::from_u128(v))),
            RepoId::Text(_) => Err(format!(
                "`{}` is not a UUID: expected the repository's id, e.g. 6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11",
                super::clip(s)
            )),
        }
    }

    /// The UUID.
    pub fn get(self) -> Uuid {
        self.0
    }

    /// The id as the policy takes it.
    pub fn repo_id(self) -> RepoId {
        RepoId::Uuid(self.0.as_u128())
    }
}

impl<'de> Deserialize<'de> for RepositoryUuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RepositoryUuid, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RepositoryUuid::new(&s).map_err(de::Error::custom)
    }
}

impl fmt::Display for RepositoryUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A strict JSON boolean, named in errors as "true or false".
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }
    d.deserialize_bool(V)
}

/// [`boolean`] for an optional field (`null` or absent is `None`).
pub fn opt_boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    struct B(#[serde(deserialize_with = "boolean")] bool);
    Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
}

/// `n` units of time in seconds, for the duration forms the service and the CLI accept
/// (`30s`, `10m`, `1h`, `1d`): `unit` is `s`, `m`, `h` or `d`. `None` for another unit or
/// an overflow.
pub fn unit_seconds(n: u64, unit: char) -> Option<u64> {
    match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(Percentage::new(100).unwrap().get(), 100);
        assert!(Percentage::new(101).unwrap_err().contains("0 to 100"));
        assert!("-1".parse::<Percentage>().unwrap_err().contains("0 to 100"));
        assert!("abc".parse::<Percentage>().unwrap_err().contains("`abc`"));
        assert_eq!(" 7 ".parse::<Percentage>().unwrap().get(), 7);
        let e = serde_json::from_str::<Percentage>("-1").unwrap_err().to_string();
        assert!(e.contains("0 to 100"), "{e}");
        let e = serde_json::from_str::<Percentage>("\"50\"").unwrap_err().to_string();
        assert!(e.contains("integer"), "{e}");
        let e = serde_json::from_str::<Percentage>("1.5").unwrap_err().to_string();
        assert!(e.contains("integer"), "{e}");
    }

    #[test]
    fn bounds_of_the_other_numbers() {
        assert!(MinJobs::new(u64::from(u32::MAX)).is_err(), "beyond the i32 column");
        assert!(WindowHours::new(0).is_err());
        assert!(ProcessingTimeMs::new(MAX_PROCESSING_TIME_MS).is_ok());
        assert!(ProcessingTimeMs::new(MAX_PROCESSING_TIME_MS + 1).unwrap_err().contains("7 days"));
        assert!(ErrorRate::new(f64::NAN).is_err());
        assert!(ErrorRate::new(100.5).is_err());
        assert_eq!(ErrorRate::new(2.5).unwrap().get(), 2.5);
        assert!(serde_json::from_str::<ErrorRate>("\"x\"").is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(Reason::new("  why ").unwrap().as_str(), "why");
        assert!(Reason::new(" ").unwrap_err().contains("empty"));
        assert!(Reason::new("a\0b").unwrap_err().contains("NUL"));
        assert!(Reason::new(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
        assert!(FeatureName::new(&"f".repeat(101)).unwrap_err().contains("1 to 100"));
        assert!(FeatureName::new("a\nb").unwrap_err().contains("U+000A"));
        assert!(FeatureName::new("").is_err());
        assert!(Actor::new("cli:alice").is_ok());
        let long = "é".repeat(crate::store::MAX_ERROR_MESSAGE_CHARS + 5);
        assert_eq!(ErrorMessage::new(&long).unwrap().as_str().chars().count(), crate::store::MAX_ERROR_MESSAGE_CHARS);
        assert!(ErrorMessage::new("a\0").is_err());
        assert!(ErrorMessage::new(&"x".repeat(MAX_ERROR_MESSAGE_CHARS + 1)).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(
            RepositoryRef::new("6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11").unwrap().as_str(),
            "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11"
        );
        assert_eq!(RepositoryRef::new(" octo/cat ").unwrap().as_str(), "octo/cat");
        assert!(RepositoryRef::new("zzz").unwrap_err().contains("UUID or owner/name"));
        assert!(RepositoryUuid::new("octo/cat").unwrap_err().contains("not a UUID"));
        assert!(Sha256::new("xyz").unwrap_err().contains("64 hexadecimal"));
        assert_eq!(Sha256::new(&"A".repeat(64)).unwrap().as_str(), "a".repeat(64));
    }
}
