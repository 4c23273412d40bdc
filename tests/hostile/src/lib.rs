//! Hostile policy components for the host runtime's tests.
//!
//! Built only by `make fixtures` (one build per feature, each wrapped into a component in
//! `target/wasm/hostile-*.wasm`). The default build is the reference policy with input
//! triggers — a repository id or feature name of [`TRIGGER_LOOP`], [`TRIGGER_BOMB`] or
//! [`TRIGGER_TRAP`] makes the call spin forever, allocate without bound, or trap — so it
//! passes the safety contract and misbehaves only when a test asks it to. The features
//! build variants that break one property of the contract each, which validation must
//! refuse (or, for `shadow-diff` and `trap-1pct`, pass with a known difference). Natively
//! this crate is only these constants, [`Behaviour`] and the predicates of those two builds
//! ([`shadow_differs`], [`trap_1pct`]), for the host's tests to compute what to expect.
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

/// `recent_data` holds up to this many days in the `shadow-diff` build (the reference: 1).
/// So for an eligible repository a job with `time_range_days` in `2..=SHADOW_RECENT_DAYS`
/// routes by `recent_data` to Inngest there, where the reference answers
/// `historical_range` (GitHub Actions) — or `small_pr_batch` / `manual_small_batch`
/// (Inngest) when one of those holds first; every other decision is the reference's.
pub const SHADOW_RECENT_DAYS: u32 = 7;

/// Whether the `shadow-diff` build's changed rule decides a job of an *eligible*
/// repository with this `time_range_days` differently from the reference (it then answers
/// `recent_data`, Inngest). A repository that is not eligible is never affected.
pub fn shadow_differs(time_range_days: Option<u32>) -> bool {
    matches!(time_range_days, Some(d) if d > 1 && d <= SHADOW_RECENT_DAYS)
}

/// A configuration whose feature name contains this arms the `trap-1pct` build's traps.
pub const TRAP_1PCT_MARKER: &str = "trap-1pct";

/// Whether the `trap-1pct` build traps for a configuration with this feature name.
pub fn trap_1pct_armed(feature_name: &str) -> bool {
    feature_name.contains(TRAP_1PCT_MARKER)
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Whether the `trap-1pct` build traps on repository `id` (when armed, see
/// [`trap_1pct_armed`]): the 32-bit FNV-1a of the id's canonical text (a UUID as
/// lowercase hyphenated text, any other id as given) is a multiple of 100 — about 1 % of
/// ids, the same on every call. `id` is parsed as the host parses request ids
/// ([`rollout_policy::RepoId::parse`]), so any UUID form gives the canonical answer.
pub fn trap_1pct(id: &str) -> bool {
    trap_1pct_id(&rollout_policy::RepoId::parse(id))
}

/// [`trap_1pct`] of an id as the policy receives it.
pub fn trap_1pct_id(id: &rollout_policy::RepoId) -> bool {
    let mut text = Vec::with_capacity(36);
    id.write_canonical(&mut text);
    fnv1a32(&text).is_multiple_of(100)
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
} else if cfg!(feature = "shadow-diff") {
    "hostile-shadow-diff"
} else if cfg!(feature = "trap-1pct") {
    "hostile-trap-1pct"
} else {
    "hostile-triggers"
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A UUID's canonical text from a 128-bit number.
    fn uuid(v: u128) -> String {
        rollout_policy::RepoId::Uuid(v).to_string()
    }

    #[test]
    fn trap_1pct_hits_about_one_percent_of_uuids() {
        // SplitMix64, two words per UUID.
        let mut state: u64 = 0x7AB_1BC7;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| {
                let id = uuid((u128::from(next()) << 64) | u128::from(next()));
                trap_1pct(&id)
            })
            .count();
        assert!((700..=1300).contains(&hits), "{hits} of {n} ids trap");
    }

    #[test]
    fn trap_1pct_takes_any_uuid_form_and_is_deterministic() {
        let hit =
            (0u128..).map(|i| uuid(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))).find(|id| trap_1pct(id));
        let hit = hit.unwrap_or_default();
        assert!(trap_1pct(&hit) && trap_1pct(&hit.to_uppercase()));
        assert!(trap_1pct(&format!("{{{hit}}}")));
        assert!(trap_1pct_id(&rollout_policy::RepoId::parse(&hit)));
    }

    #[test]
    fn the_contract_never_arms_the_traps() {
        assert!(!trap_1pct_armed(rollout_policy::DEFAULT_FEATURE));
        assert!(!trap_1pct_armed("safety-check/β"));
        assert!(trap_1pct_armed("canary-trap-1pct"));
    }

    #[test]
    fn shadow_slice() {
        assert!(!shadow_differs(None) && !shadow_differs(Some(0)) && !shadow_differs(Some(1)));
        assert!(shadow_differs(Some(2)) && shadow_differs(Some(7)));
        assert!(!shadow_differs(Some(8)) && !shadow_differs(Some(30)));
    }
}
