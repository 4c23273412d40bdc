//! Repository identifiers: UUIDs in canonical form, anything else as given.

use std::fmt;

/// A repository identifier.
///
/// SPEC §2.1: the hash input is the canonical lowercase hyphenated UUID text; an id that
/// is not a UUID is used as given. [`RepoId::parse`] is the one canonicalisation, used by
/// the host for requests and by the policy for the configuration's id lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepoId {
    /// A UUID as a 128-bit number.
    Uuid(u128),
    /// Any other identifier, as given.
    Text(String),
}

impl RepoId {
    /// Parse an id: a UUID in hyphenated (any case), braced or 32-digit form becomes
    /// [`RepoId::Uuid`]; any other string is kept as [`RepoId::Text`].
    pub fn parse(s: &str) -> RepoId {
        match parse_uuid(s) {
            Some(v) => RepoId::Uuid(v),
            None => RepoId::Text(s.to_owned()),
        }
    }

    /// Whether this id is a UUID.
    pub fn is_uuid(&self) -> bool {
        matches!(self, RepoId::Uuid(_))
    }

    /// Append the canonical text of this id to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            RepoId::Uuid(v) => out.extend_from_slice(&uuid_text(*v)),
            RepoId::Text(s) => out.extend_from_slice(s.as_bytes()),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoId::Uuid(v) => {
                let buf = uuid_text(*v);
                // The buffer holds only ASCII hex digits and hyphens.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
            RepoId::Text(s) => f.write_str(s),
        }
    }
}

/// The eight lowercase hex digits of `x`, most significant first.
///
/// Branch-free and table-free (SWAR): the nibbles are spread one per byte of a `u64`, then
/// turned into ASCII with one add, plus 39 for the nibbles above 9 (`'a' - '0' - 10`).
/// In wasm this is a handful of 64-bit operations; the byte-at-a-time table lookup it
/// replaced was 12 % of a `route-batch` decision in the component.
#[inline]
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
    v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // 1 in each byte whose nibble is 10..=15: adding 6 carries it into bit 4.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// `v` as lowercase hyphenated UUID text (8-4-4-4-12).
///
/// Works on the two 64-bit halves (wasm32 has no 128-bit arithmetic: a `u128` shift per
/// digit was a compiler-rt call each) and builds the array from constant indices, so no
/// bounds check or `memory.copy` remains.
pub(crate) fn uuid_text(v: u128) -> [u8; 36] {
    let (hi, lo) = ((v >> 64) as u64, v as u64);
    let [a0, a1, a2, a3, a4, a5, a6, a7] = hex8((hi >> 32) as u32);
    let [b0, b1, b2, b3, b4, b5, b6, b7] = hex8(hi as u32);
    let [c0, c1, c2, c3, c4, c5, c6, c7] = hex8((lo >> 32) as u32);
    let [d0, d1, d2, d3, d4, d5, d6, d7] = hex8(lo as u32);
    [
        a0, a1, a2, a3, a4, a5, a6, a7, b'-', b0, b1, b2, b3, b'-', b4, b5, b6, b7, b'-', c0, c1, c2, c3, b'-', c4, c5,
        c6, c7, d0, d1, d2, d3, d4, d5, d6, d7,
    ]
}

fn hex_value(c: u8) -> Option<u128> {
    match c {
        b'0'..=b'9' => Some(u128::from(c - b'0')),
        b'a'..=b'f' => Some(u128::from(c - b'a' + 10)),
        b'A'..=b'F' => Some(u128::from(c - b'A' + 10)),
        _ => None,
    }
}

/// Parse hyphenated (8-4-4-4-12), braced hyphenated, or 32-digit simple UUID text.
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let b = match b {
        [b'{', inner @ .., b'}'] => inner,
        _ => b,
    };
    let hyphenated = match b.len() {
        36 => true,
        32 => false,
        _ => return None,
    };
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if hyphenated && matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        v = (v << 4) | hex_value(c)?;
    }
    Some(v)
}

/// A set of repository ids with fast membership tests, built once per configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSet {
    uuids: Vec<u128>,
    texts: Vec<String>,
}

impl IdSet {
    /// Build a set from id strings (each canonicalised with [`RepoId::parse`]).
    pub fn from_strings<S: AsRef<str>>(ids: &[S]) -> IdSet {
        let mut set = IdSet::default();
        for id in ids {
            match RepoId::parse(id.as_ref()) {
                RepoId::Uuid(v) => set.uuids.push(v),
                RepoId::Text(t) => set.texts.push(t),
            }
        }
        set.uuids.sort_unstable();
        set.uuids.dedup();
        set.texts.sort_unstable();
        set.texts.dedup();
        set
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &RepoId) -> bool {
        match id {
            RepoId::Uuid(v) => self.uuids.binary_search(v).is_ok(),
            RepoId::Text(t) => self.texts.binary_search(t).is_ok(),
        }
    }

    /// Number of distinct ids.
    pub fn len(&self) -> usize {
        self.uuids.len() + self.texts.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_case_braces_and_simple_form() {
        let canonical = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";
        for form in [
            canonical,
            "6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11",
            "{6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11}",
            "6f1c9a3e0c4b4f5e9d412b7a8e6f0c11",
        ] {
            let id = RepoId::parse(form);
            assert!(id.is_uuid(), "{form}");
            assert_eq!(id.to_string(), canonical, "{form}");
        }
    }

    #[test]
    fn uuid_text_is_the_hex_of_the_number_with_hyphens() {
        let mut v: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for _ in 0..1000 {
            let hex = format!("{v:032x}");
            let expected = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
            assert_eq!(std::str::from_utf8(&uuid_text(v)).unwrap(), expected);
            v = v.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835).wrapping_add(1);
        }
        assert_eq!(&uuid_text(0), b"00000000-0000-0000-0000-000000000000");
        assert_eq!(&uuid_text(u128::MAX), b"ffffffff-ffff-ffff-ffff-ffffffffffff");
    }

    #[test]
    fn non_uuids_are_kept_as_given() {
        for form in [
            "owner/name",
            "",
            "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c1",
            "6f1c9a3e_0c4b-4f5e-9d41-2b7a8e6f0c11",
            "g f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11",
        ] {
            assert_eq!(RepoId::parse(form), RepoId::Text(form.to_owned()));
        }
    }

    #[test]
    fn set_matches_any_form_of_a_uuid() {
        let set = IdSet::from_strings(&["6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11", "x", "x"]);
        assert_eq!(set.len(), 2);
        assert!(set.contains(&RepoId::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11")));
        assert!(set.contains(&RepoId::parse("x")));
        assert!(!set.contains(&RepoId::parse("y")));
    }
}
