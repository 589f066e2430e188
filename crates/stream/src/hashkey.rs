//! The 128-bit hash-key space: MD5 routing and even division into shards.

use md5::{Digest, Md5};

/// An inclusive range of hash keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct HashRange {
    #[serde(with = "u128_string")]
    pub start: u128,
    #[serde(with = "u128_string")]
    pub end: u128,
}

impl HashRange {
    pub const FULL: HashRange = HashRange {
        start: 0,
        end: u128::MAX,
    };

    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }
}

/// The hash key of a partition key: MD5 of its UTF-8 bytes, read as a
/// big-endian unsigned 128-bit integer.
pub fn hash_key_of(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    u128::from_be_bytes(digest.into())
}

/// Parses an explicit hash key: a decimal number in [0, 2^128 − 1] without
/// leading zeros (Kinesis's pattern `0|([1-9]\d{0,38})`).
pub fn parse_explicit_hash_key(s: &str) -> Option<u128> {
    if s.is_empty()
        || s.len() > 39
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse::<u128>().ok()
}

/// Divides the key space into `n` ranges as Kinesis does: step =
/// floor(2^128 / n), shard i gets [i·step, (i+1)·step − 1], and the last one
/// ends at 2^128 − 1.
pub fn even_ranges(n: u32) -> Vec<HashRange> {
    match n {
        0 => return Vec::new(),
        // 2^128 itself does not fit in u128.
        1 => return vec![HashRange::FULL],
        _ => {}
    }
    let n = n as u128;
    // floor(2^128 / n) computed without overflowing u128.
    let step = u128::MAX / n + u128::from(u128::MAX % n == n - 1);
    (0..n)
        .map(|i| HashRange {
            start: i * step,
            end: if i == n - 1 { u128::MAX } else { (i + 1) * step - 1 },
        })
        .collect()
}

/// Serde adapter: u128 as a decimal string (JSON numbers cannot hold it).
pub mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_shard_covers_the_whole_space() {
        assert_eq!(even_ranges(1), vec![HashRange::FULL]);
    }

    #[test]
    fn two_shards_split_at_two_to_the_127() {
        let r = even_ranges(2);
        assert_eq!(r[0].end, (1u128 << 127) - 1);
        assert_eq!(r[1].start, 170141183460469231731687303715884105728);
        assert_eq!(r[1].end, u128::MAX);
    }

    #[test]
    fn md5_routing_matches_known_digests() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key_of(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key_of("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn explicit_hash_keys_are_validated() {
        assert_eq!(parse_explicit_hash_key("0"), Some(0));
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_explicit_hash_key("01"), None);
        assert_eq!(parse_explicit_hash_key("-1"), None);
        assert_eq!(parse_explicit_hash_key(""), None);
    }

    proptest! {
        #[test]
        fn even_ranges_cover_the_space_without_gaps(n in 1u32..2000) {
            let r = even_ranges(n);
            prop_assert_eq!(r.len(), n as usize);
            prop_assert_eq!(r[0].start, 0);
            prop_assert_eq!(r[r.len() - 1].end, u128::MAX);
            let step = if n == 1 { None } else { Some(r[0].end + 1) };
            for w in r.windows(2) {
                prop_assert_eq!(w[0].end + 1, w[1].start);
            }
            if let Some(step) = step {
                // step = floor(2^128 / n)
                // 2^128 − step·n must lie in [0, n).
                match step.checked_mul(n as u128) {
                    Some(v) => prop_assert!(u128::MAX - v < n as u128),
                    None => prop_assert!(n.is_power_of_two() && step == 1u128 << (128 - n.trailing_zeros())),
                }
                prop_assert_eq!(r[1].start, step);
            }
        }
    }
}
