//! Hostile policy components for the host runtime's tests.
//!
//! Built only by `make fixtures` (one build per feature, each wrapped into a component in
//! `target/wasm/hostile-*.wasm`). The default build is the reference policy with input
//! triggers — a repository id or feature name of [`TRIGGER_LOOP`], [`TRIGGER_BOMB`] or
//! [`TRIGGER_TRAP`] makes the call spin forever, allocate without bound, or trap — so it
//! passes the safety contract and misbehaves only when a test asks it to. The features
//! build variants that break one property of the contract each, which validation must
//! refuse. Natively this crate is only these constants and [`Behaviour`].
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "wit-bindgen's generated export glue")]
mod component;

/// Id or feature name that makes a call loop forever.
pub const TRIGGER_LOOP: &str = "hostile:loop";
/// Id or feature name that makes a call allocate until memory runs out.
pub const TRIGGER_BOMB: &str = "hostile:bomb";
/// Id or feature name that makes a call trap.
pub const TRIGGER_TRAP: &str = "hostile:trap";
/// `categorize` traps for this star count.
pub const TRAP_STARS: u32 = 0xDEAD;

/// What a trigger does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Spin forever.
    Loop,
    /// Allocate until memory runs out.
    Bomb,
    /// Trap at once.
    Trap,
}

impl Behaviour {
    /// The behaviour `text` (an id or a feature name) triggers, if any.
    pub fn of(text: &str) -> Option<Behaviour> {
        match text {
            TRIGGER_LOOP => Some(Behaviour::Loop),
            TRIGGER_BOMB => Some(Behaviour::Bomb),
            TRIGGER_TRAP => Some(Behaviour::Trap),
            _ => None,
        }
    }
}

/// Name reported by `info()` for this build.
pub const POLICY_NAME: &str = if cfg!(feature = "nonmonotonic") {
    "hostile-nonmonotonic"
} else if cfg!(feature = "ignores-stop") {
    "hostile-ignores-stop"
} else if cfg!(feature = "routes-ineligible") {
    "hostile-routes-ineligible"
} else if cfg!(feature = "loop-info") {
    "hostile-loop-info"
} else if cfg!(feature = "stop-at-37") {
    "hostile-stop-at-37"
} else if cfg!(feature = "unicode-zero") {
    "hostile-unicode-zero"
} else if cfg!(feature = "partial-categorize") {
    "hostile-partial-categorize"
} else if cfg!(feature = "panicky-health") {
    "hostile-panicky-health"
} else {
    "hostile-triggers"
};
