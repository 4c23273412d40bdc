//! Input from people and programs, decoded once: validated value types ([`values`]), the
//! job of a routing request ([`JobInput`]), and JSON decoding whose errors name the field
//! ([`from_json`]).
//!
//! Every edge decodes into these types — the HTTP API's request bodies, the CLI's arguments
//! (the value types implement [`std::str::FromStr`] for clap), the case files — so a value
//! is checked in one place and an error reads the same wherever it came from: the field at
//! fault (`requests[3].job.trigger_source`) and what is allowed.
//!
//! ```
//! use rollout::input::{from_json, values::Percentage};
//!
//! #[derive(Debug, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Body { percentage: Percentage }
//!
//! let ok: Body = from_json(br#"{"percentage": 25}"#).unwrap();
//! assert_eq!(ok.percentage.get(), 25);
//! let e = from_json::<Body>(br#"{"percentage": 101}"#).unwrap_err();
//! assert_eq!(e.field, "percentage");
//! assert!(e.message.contains("0 to 100"));
//! ```

pub mod config;
mod job;
pub mod values;

pub use job::{job_to_json, JobInput, JobJson};

use serde::de::DeserializeOwned;

/// Input that is not what is allowed, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// The field at fault, as a path (`job.trigger_source`, `requests[2].repository_id`);
    /// empty for the whole input.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl InputError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> InputError {
        InputError { field: field.into(), message: message.into() }
    }

    /// The same error one level down: `outer.field` (or `outer` for a whole-input error).
    pub fn within(self, outer: &str) -> InputError {
        InputError { field: join(outer, &self.field), message: self.message }
    }
}

/// `outer.inner` (`outer` alone when `inner` is empty, `inner` alone when `outer` is); a list
/// index (`[3]`) is appended without a dot.
pub fn join(outer: &str, inner: &str) -> String {
    match (outer.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_owned(),
        (_, true) => outer.to_owned(),
        _ if inner.starts_with('[') => format!("{outer}{inner}"),
        _ => format!("{outer}.{inner}"),
    }
}

/// At most 80 characters of user input, for messages.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_owned(),
    }
}

/// Decode a JSON document into `T`; the error names the field (serde's path) and says what
/// is allowed. Unknown fields (`deny_unknown_fields`) name the fields that are allowed;
/// missing ones say they are required.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, InputError> {
    // The common case decodes without tracking the path; only a failure is decoded again
    // to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(path_error)?;
    de.end().map_err(|e| InputError::new("", format!("the input is not valid JSON: {}", without_location(&e))))?;
    Ok(value)
}

/// Decode an already parsed JSON value into `T`, errors as in [`from_json`].
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, InputError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = path_text(e.path());
        InputError::new(path, e.into_inner().to_string()).refine()
    })
}

fn path_text(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." {
        String::new()
    } else {
        p
    }
}

fn without_location(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text.get(..i).unwrap_or(&text).to_owned(),
        None => text,
    }
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let path = path_text(e.path());
    let inner = e.into_inner();
    if matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof) {
        return InputError::new("", format!("the input is not valid JSON: {}", without_location(&inner)));
    }
    InputError::new(path, without_location(&inner)).refine()
}

impl InputError {
    /// Turn serde's wording of unknown and missing fields into ours, naming the field.
    fn refine(self) -> InputError {
        let m = &self.message;
        if let Some(rest) = m.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let allowed: Vec<&str> = rest
                .split_once("expected")
                .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            let message = if allowed.is_empty() {
                format!("unknown field `{}`: no fields are allowed here", clip(name))
            } else {
                format!("unknown field `{}`: allowed fields are {}", clip(name), allowed.join(", "))
            };
            // the path already ends with the unknown field's name
            let field = if self.field == name || self.field.ends_with(&format!(".{name}")) {
                self.field.clone()
            } else {
                join(&self.field, name)
            };
            return InputError::new(field, message);
        }
        if let Some(rest) = m.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default();
            return InputError::new(join(&self.field, name), format!("`{name}` is required"));
        }
        if let Some(rest) = m.strip_prefix("invalid type: ") {
            // "invalid type: string \"50\", expected an integer from 0 to 100"
            let name = self.field.rsplit(['.', '[']).next().unwrap_or_default().trim_end_matches(']');
            let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
            let label = if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) {
                "the value".to_owned()
            } else {
                format!("`{name}`")
            };
            return InputError::new(self.field.clone(), format!("{label} is {got}: expected {expected}"));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "fields are read by the decoder only")]
    struct Inner {
        flag: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "fields are read by the decoder only")]
    struct Outer {
        items: Vec<Inner>,
        name: Option<String>,
    }

    #[test]
    fn errors_name_the_field_and_what_is_allowed() {
        let e = from_json::<Outer>(br#"{"items": [{"flag": true}, {"flag": 1}]}"#).unwrap_err();
        assert_eq!(e.field, "items[1].flag");
        assert!(e.message.contains("expected a boolean"), "{e}");
        let e = from_json::<Outer>(br#"{"items": [{"flag": true, "colour": 1}]}"#).unwrap_err();
        assert_eq!(e.field, "items[0].colour");
        assert_eq!(e.message, "unknown field `colour`: allowed fields are flag");
        let e = from_json::<Outer>(br#"{"items": [{}]}"#).unwrap_err();
        assert_eq!(e.field, "items[0].flag");
        assert_eq!(e.message, "`flag` is required");
        let e = from_json::<Outer>(br#"{"items": [], "nope": 1}"#).unwrap_err();
        assert_eq!(e.message, "unknown field `nope`: allowed fields are items, name");
        let e = from_json::<Outer>(b"{nope").unwrap_err();
        assert_eq!(e.field, "");
        assert!(e.message.starts_with("the input is not valid JSON"), "{e}");
        assert!(!e.message.contains("line 1"), "{e}");
        let e = from_json::<Outer>(br#"{"items": []} x"#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn paths_join() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(join("a", "[2]"), "a[2]");
        assert_eq!(InputError::new("x", "m").within("job").field, "job.x");
    }
}

/// Most items decoded into one [`Capped`] list: the decoder stops at the item past it, so a
/// large body never becomes a large list in memory.
pub const MAX_LIST_ITEMS: usize = 10_000;

/// A list of at most `MAX` items, refused while decoding the item past the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<T, const MAX: usize = MAX_LIST_ITEMS>(pub Vec<T>);

impl<'de, T: serde::Deserialize<'de>, const MAX: usize> serde::Deserialize<'de> for Capped<T, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for V<T, MAX> {
            type Value = Capped<T, MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {MAX} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(1024));
                while let Some(item) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(serde::de::Error::custom(format!("more than {MAX} items: allowed at most {MAX}")));
                    }
                    out.push(item);
                }
                Ok(Capped(out))
            }
        }
        d.deserialize_seq(V::<T, MAX>(std::marker::PhantomData))
    }
}
