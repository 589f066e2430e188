//! Shard iterators: opaque tokens that carry a read position.
//!
//! Layout before base64 (standard alphabet), all little-endian:
//! version `u8` (1) | stream id `u64` | stream creation ms `i64` | shard index
//! `u64` | position `u64` | issue time ms `i64` | nonce `u32` (so that every
//! token differs, as AWS's do, even at the same position and millisecond) |
//! CRC-32 of the engine's
//! iterator key followed by the preceding bytes (`u32`). The key is random per
//! data directory and stored in ENGINE.json, so tokens survive restarts, and
//! a token altered or made for another data directory is rejected.

use base64::Engine as _;

use crate::error::{Error, Result};

pub const ITERATOR_VERSION: u8 = 1;
const BODY_BYTES: usize = 1 + 8 * 5 + 4;
const TOKEN_BYTES: usize = BODY_BYTES + 4;
/// Iterators expire five minutes after they were issued, as on AWS.
pub const ITERATOR_TTL_MS: i64 = 300_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IteratorToken {
    pub stream_id: u64,
    pub stream_created_ms: i64,
    pub shard_index: u64,
    pub position: u64,
    pub issued_ms: i64,
    pub nonce: u32,
}

fn mac(key: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(body);
    h.finalize()
}

impl IteratorToken {
    pub fn encode(&self, key: &[u8]) -> String {
        let mut b = Vec::with_capacity(TOKEN_BYTES);
        b.push(ITERATOR_VERSION);
        b.extend_from_slice(&self.stream_id.to_le_bytes());
        b.extend_from_slice(&self.stream_created_ms.to_le_bytes());
        b.extend_from_slice(&self.shard_index.to_le_bytes());
        b.extend_from_slice(&self.position.to_le_bytes());
        b.extend_from_slice(&self.issued_ms.to_le_bytes());
        b.extend_from_slice(&self.nonce.to_le_bytes());
        let m = mac(key, &b);
        b.extend_from_slice(&m.to_le_bytes());
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    /// Decodes and authenticates a token and checks its age against `now_ms`.
    pub fn decode(token: &str, key: &[u8], now_ms: i64) -> Result<IteratorToken> {
        // Some clients send the token wrapped in double quotes; AWS accepts it.
        let token = token.trim_matches('"');
        let invalid = || Error::InvalidArgument("Invalid ShardIterator.".into());
        let b = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| invalid())?;
        if b.len() != TOKEN_BYTES || b[0] != ITERATOR_VERSION {
            return Err(invalid());
        }
        let stored = u32::from_le_bytes([
            b[BODY_BYTES],
            b[BODY_BYTES + 1],
            b[BODY_BYTES + 2],
            b[BODY_BYTES + 3],
        ]);
        if mac(key, &b[..BODY_BYTES]) != stored {
            return Err(invalid());
        }
        let field = |i: usize| {
            let at = 1 + i * 8;
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            a
        };
        let t = IteratorToken {
            stream_id: u64::from_le_bytes(field(0)),
            stream_created_ms: i64::from_le_bytes(field(1)),
            shard_index: u64::from_le_bytes(field(2)),
            position: u64::from_le_bytes(field(3)),
            issued_ms: i64::from_le_bytes(field(4)),
            nonce: u32::from_le_bytes([b[41], b[42], b[43], b[44]]),
        };
        if now_ms.saturating_sub(t.issued_ms) > ITERATOR_TTL_MS {
            return Err(Error::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {} milliseconds.",
                t.issued_ms, now_ms, ITERATOR_TTL_MS
            )));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> IteratorToken {
        IteratorToken {
            stream_id: 3,
            stream_created_ms: 1_000,
            shard_index: 7,
            position: 42,
            issued_ms: 10_000,
            nonce: 9,
        }
    }

    #[test]
    fn iterator_round_trips_and_fits_kinesis_length() {
        let s = token().encode(b"key");
        assert!(s.len() <= 512);
        assert_eq!(IteratorToken::decode(&s, b"key", 10_001).unwrap(), token());
        assert_eq!(
            IteratorToken::decode(&format!("\"{s}\""), b"key", 10_001).unwrap(),
            token()
        );
    }

    #[test]
    fn tampered_or_foreign_iterators_are_invalid() {
        let s = token().encode(b"key");
        assert!(matches!(
            IteratorToken::decode(&s, b"other", 10_001),
            Err(Error::InvalidArgument(_))
        ));
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&s).unwrap();
        raw[20] ^= 1;
        let t = base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(matches!(
            IteratorToken::decode(&t, b"key", 10_001),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            IteratorToken::decode("garbage!", b"key", 0),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn iterators_expire_after_five_minutes() {
        let s = token().encode(b"key");
        assert!(IteratorToken::decode(&s, b"key", 10_000 + ITERATOR_TTL_MS).is_ok());
        let e = IteratorToken::decode(&s, b"key", 10_001 + ITERATOR_TTL_MS).unwrap_err();
        assert!(matches!(e, Error::ExpiredIterator(_)));
        assert_eq!(e.kinesis_name(), "ExpiredIteratorException");
    }
}
