//! Hash bucketing (SPEC §2.1).

use crate::RepoId;
use xxhash_rust::xxh3::xxh3_64;

/// Longest hash input kept on the stack; longer feature names use the heap.
const STACK_INPUT: usize = 192;

/// The repository's bucket for a feature: `xxh3_64(feature + ":" + id) mod 100`.
///
/// The id is hashed in canonical form (lowercase hyphenated for UUIDs). The hash is
/// unsigned, so every bucket is in `0..100` — the original's signed hash put half of all
/// repositories in negative buckets, which were always "in" (SPEC §7.1).
pub fn bucket(feature_name: &str, id: &RepoId) -> u8 {
    let prefix = feature_name.as_bytes();
    let hash = match id {
        RepoId::Uuid(v) if prefix.len() + 37 <= STACK_INPUT => {
            let mut buf = [0u8; STACK_INPUT];
            let n = prefix.len() + 37;
            if let Some(input) = buf.get_mut(..n) {
                let (head, tail) = input.split_at_mut(prefix.len());
                head.copy_from_slice(prefix);
                if let Some((colon, text)) = tail.split_first_mut() {
                    *colon = b':';
                    text.copy_from_slice(&crate::id::uuid_text(*v));
                }
            }
            xxh3_64(buf.get(..n).unwrap_or_default())
        }
        _ => {
            let mut input = Vec::with_capacity(prefix.len() + 1 + 36);
            input.extend_from_slice(prefix);
            input.push(b':');
            id.write_canonical(&mut input);
            xxh3_64(&input)
        }
    };
    // `hash % 100` is below 100, so the cast cannot truncate.
    (hash % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_from_independent_xxh3() {
        // xxh3_64(b"hybrid_progressive_capture:6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11") mod 100,
        // cross-checked against the Python `xxhash` package by tests/vectors/generate.py.
        let id = RepoId::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11");
        let direct = xxh3_64(b"hybrid_progressive_capture:6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11") % 100;
        assert_eq!(u64::from(bucket("hybrid_progressive_capture", &id)), direct);
    }

    #[test]
    fn uppercase_uuid_hashes_as_canonical_text() {
        let a = RepoId::parse("6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11");
        let b = RepoId::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11");
        assert_eq!(bucket("f", &a), bucket("f", &b));
    }

    #[test]
    fn long_feature_names_take_the_heap_path_with_the_same_result() {
        let long = "f".repeat(300);
        let id = RepoId::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11");
        let expected = xxh3_64(format!("{long}:6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11").as_bytes()) % 100;
        assert_eq!(u64::from(bucket(&long, &id)), expected);
    }

    #[test]
    fn text_ids_hash_as_given() {
        let id = RepoId::parse("owner/name");
        assert_eq!(u64::from(bucket("f", &id)), xxh3_64(b"f:owner/name") % 100);
    }
}
