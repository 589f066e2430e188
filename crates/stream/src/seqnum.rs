//! Kinesis-style sequence numbers.
//!
//! Inside the engine a record's place in its shard is a plain `u64` position.
//! Outside, it is a 56-digit decimal string made of fixed-width decimal
//! fields, so text order equals numeric order (layout in docs/FORMAT.md):
//!
//! | digits | field |
//! |---|---|
//! | 2 | `49`, the format tag (AWS numbers also start `49`) |
//! | 10 | shard generation: 1 for a stream's first shards, 1 + the largest parent generation for children |
//! | 12 | shard index (as in `shardId-000000000042`) |
//! | 20 | position of the record in the shard (`u64`) |
//! | 12 | sub-sequence, reserved for aggregated records, 0 |
//!
//! Children's numbers are larger than their parents' because their
//! generation is; within a shard, numbers grow with the position.
//!
//! A shard's `StartingSequenceNumber` is the number one below its first
//! record's ([`SeqNum::encode_before`]): as at AWS it sorts before every
//! record of the shard, so `AT_SEQUENCE_NUMBER` and `AFTER_SEQUENCE_NUMBER`
//! with it both start at the first record. Its sub-sequence is all nines
//! (and, for position 0, its position field too), so it is never a
//! record's number.

use std::fmt::{self, Write};

use crate::text::SequenceNumber;

pub const SEQ_DIGITS: usize = 56;
pub const SEQ_TAG: &str = "49";
const GEN_DIGITS: usize = 10;
const SHARD_DIGITS: usize = 12;
const POS_DIGITS: usize = 20;
const SUB_DIGITS: usize = 12;
const _: () = assert!(2 + GEN_DIGITS + SHARD_DIGITS + POS_DIGITS + SUB_DIGITS == SEQ_DIGITS);

/// Longest text [`SeqNum::text`] can make: the tag, three fields of at most
/// a `u64`'s 20 digits each (wider than their widths only for numbers the
/// engine never issues) and the sub-sequence.
pub const SEQ_TEXT_BYTES_MAX: usize = SEQ_TAG.len() + 3 * crate::text::U64_DIGITS_MAX + SUB_DIGITS;
// The bound above counts each field at 20 digits: a width above that would
// make the general form longer.
const _: () = assert!(
    GEN_DIGITS <= crate::text::U64_DIGITS_MAX
        && SHARD_DIGITS <= crate::text::U64_DIGITS_MAX
        && POS_DIGITS <= crate::text::U64_DIGITS_MAX
);

/// Largest shard generation that fits its field.
pub const GENERATION_MAX: u64 = 9_999_999_999;
/// Largest shard index that fits its field.
pub const SHARD_INDEX_MAX: u64 = 999_999_999_999;

/// A decoded sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNum {
    pub generation: u64,
    pub shard_index: u64,
    pub position: u64,
}

impl SeqNum {
    pub fn encode(&self) -> String {
        self.text().into()
    }

    /// The number's text, held inline (no heap allocation): what a put
    /// answers for every record.
    pub fn text(&self) -> SequenceNumber {
        // The hot path (every acknowledged record gets one): digits written
        // straight into a fixed buffer. Fields too large for their width
        // (which the engine never issues) take the general formatter below.
        let mut buf = [b'0'; SEQ_DIGITS];
        buf[..SEQ_TAG.len()].copy_from_slice(SEQ_TAG.as_bytes());
        let mut at = SEQ_TAG.len();
        let mut fits = true;
        for (value, width) in [
            (self.generation, GEN_DIGITS),
            (self.shard_index, SHARD_DIGITS),
            (self.position, POS_DIGITS),
        ] {
            fits &= put_digits(&mut buf[at..at + width], value);
            at += width;
        }
        if fits {
            if let Some(text) = SequenceNumber::from_utf8(&buf) {
                return text;
            }
        }
        // At most SEQ_TEXT_BYTES_MAX digits, so the write cannot fail.
        let text = SequenceNumber::write_with(|s| {
            write!(
                s,
                "{SEQ_TAG}{:0gw$}{:0sw$}{:0pw$}{:0subw$}",
                self.generation,
                self.shard_index,
                self.position,
                0,
                gw = GEN_DIGITS,
                sw = SHARD_DIGITS,
                pw = POS_DIGITS,
                subw = SUB_DIGITS
            )
        });
        debug_assert!(text.is_some(), "a sequence number outgrew SEQ_TEXT_BYTES_MAX");
        text.unwrap_or_default()
    }

    /// Parses a sequence number this engine issued; `None` if it is not one.
    pub fn parse(s: &str) -> Option<SeqNum> {
        if s.len() != SEQ_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) || !s.starts_with(SEQ_TAG) {
            return None;
        }
        let mut at = SEQ_TAG.len();
        let mut field = |w: usize| {
            let v = s[at..at + w].parse::<u64>().ok();
            at += w;
            v
        };
        let generation = field(GEN_DIGITS)?;
        let shard_index = field(SHARD_DIGITS)?;
        let position = field(POS_DIGITS)?;
        let sub = field(SUB_DIGITS)?;
        if sub != 0 {
            return None;
        }
        Some(SeqNum {
            generation,
            shard_index,
            position,
        })
    }
}

/// Writes `value` right-aligned in decimal into `out` (already filled with
/// `'0'`); false if it has more digits than `out` holds.
fn put_digits(out: &mut [u8], mut value: u64) -> bool {
    for d in out.iter_mut().rev() {
        if value == 0 {
            return true;
        }
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
    value == 0
}

/// Sub-sequence value marking "before the first record of the shard" (only
/// with position 0): a ContinuationSequenceNumber for a subscriber that has
/// consumed nothing of a shard that starts at 0, which AFTER_SEQUENCE_NUMBER
/// resumes at position 0. Records always have sub-sequence 0.
const BEFORE_START_SUB: u64 = 1;

impl SeqNum {
    /// The decimal number one below this record's number: what sorts
    /// right before it and after every earlier number. For position 0 it is
    /// the shard's `StartingSequenceNumber`. Only for numbers that fit their
    /// fields (which the engine issues); `None` for the very first number of
    /// all, which has nothing below it in 56 digits.
    pub fn encode_before(&self) -> Option<String> {
        let mut digits = self.text().as_str().as_bytes().to_vec();
        if digits.len() != SEQ_DIGITS {
            return None;
        }
        // Borrow from the right: trailing zeros become nines.
        for d in digits.iter_mut().rev() {
            if *d == b'0' {
                *d = b'9';
            } else {
                *d -= 1;
                let s = String::from_utf8(digits).ok()?;
                return s.starts_with(SEQ_TAG).then_some(s);
            }
        }
        None
    }

    /// The record a number made by [`SeqNum::encode_before`] sits right
    /// before: the number plus one, when that is a record's number.
    pub fn parse_before(s: &str) -> Option<SeqNum> {
        if s.len() != SEQ_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits = s.as_bytes().to_vec();
        for d in digits.iter_mut().rev() {
            if *d == b'9' {
                *d = b'0';
            } else {
                *d += 1;
                return SeqNum::parse(std::str::from_utf8(&digits).ok()?);
            }
        }
        None
    }

    /// Where reading starts AT (`after` false) or AFTER (`after` true) the
    /// number `s`: at or after the record when `s` is a record's number, at
    /// the record either way when it is one below a record's (a shard's
    /// `StartingSequenceNumber`, or the marker of older builds), which is no
    /// record's number to step past. The shard is the returned number's; its
    /// position is the start.
    pub fn parse_start(s: &str, after: bool) -> Option<SeqNum> {
        if let Some(n) = SeqNum::parse(s) {
            return Some(SeqNum {
                position: if after {
                    n.position.saturating_add(1)
                } else {
                    n.position
                },
                ..n
            });
        }
        SeqNum::parse_before(s).or_else(|| SeqNum::parse_before_start(s))
    }

    /// Where reading resumes after a reader has kept `s` as "read up to
    /// here" (a checkpoint): as AFTER it ([`SeqNum::parse_start`]).
    pub fn parse_resume_point(s: &str) -> Option<SeqNum> {
        SeqNum::parse_start(s, true)
    }

    /// The "before the first record" marker of this number's shard that
    /// builds before 2026-11-29 gave as a ContinuationSequenceNumber (now
    /// [`SeqNum::encode_before`] of position 0); still understood, since a
    /// consumer may have checkpointed one.
    pub fn encode_before_start(&self) -> String {
        let mut s = SeqNum { position: 0, ..*self }.encode();
        let at = s.len() - SUB_DIGITS;
        s.replace_range(at.., &format!("{BEFORE_START_SUB:0SUB_DIGITS$}"));
        s
    }

    /// Parses a "before the first record" marker of the old form.
    pub fn parse_before_start(s: &str) -> Option<SeqNum> {
        if s.len() != SEQ_DIGITS || !s.ends_with(&format!("{BEFORE_START_SUB:0SUB_DIGITS$}")) {
            return None;
        }
        let mut zeroed = s.to_string();
        zeroed.replace_range(SEQ_DIGITS - SUB_DIGITS.., &"0".repeat(SUB_DIGITS));
        SeqNum::parse(&zeroed).filter(|n| n.position == 0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Whether a string has the shape Kinesis allows for sequence numbers.
pub fn is_valid_sequence_number_syntax(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 129
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sequence_numbers_round_trip_and_sort_as_text(
            g in 0u64..=GENERATION_MAX, i in 0u64..=SHARD_INDEX_MAX, p in any::<u64>(),
            g2 in 0u64..=GENERATION_MAX, p2 in any::<u64>(),
        ) {
            let a = SeqNum { generation: g, shard_index: i, position: p };
            let b = SeqNum { generation: g2, shard_index: i, position: p2 };
            let (ea, eb) = (a.encode(), b.encode());
            prop_assert_eq!(ea.len(), SEQ_DIGITS);
            prop_assert_eq!(SeqNum::parse(&ea), Some(a));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert!(is_valid_sequence_number_syntax(&ea));
        }
    }

    proptest! {
        #[test]
        fn the_fast_encoder_writes_what_the_formatter_writes(
            g in any::<u64>(), i in any::<u64>(), p in any::<u64>(),
        ) {
            let n = SeqNum { generation: g, shard_index: i, position: p };
            let general = format!("{SEQ_TAG}{g:0GEN_DIGITS$}{i:0SHARD_DIGITS$}{p:0POS_DIGITS$}{:0SUB_DIGITS$}", 0);
            prop_assert_eq!(n.encode(), general.clone());
            prop_assert_eq!(n.text(), general);
        }
    }

    #[test]
    fn the_longest_sequence_number_text_fits_its_capacity() {
        let n = SeqNum {
            generation: u64::MAX,
            shard_index: u64::MAX,
            position: u64::MAX,
        };
        assert_eq!(n.text().len(), SEQ_TEXT_BYTES_MAX);
    }

    proptest! {
        #[test]
        fn the_number_before_a_record_sorts_right_below_it_and_is_no_record(
            g in 1u64..=GENERATION_MAX, i in 0u64..=SHARD_INDEX_MAX, p in 0u64..=u64::MAX,
            g2 in 1u64..=GENERATION_MAX, i2 in 0u64..=SHARD_INDEX_MAX, p2 in 0u64..=u64::MAX,
        ) {
            let a = SeqNum { generation: g, shard_index: i, position: p };
            let other = SeqNum { generation: g2, shard_index: i2, position: p2 };
            let before = a.encode_before().expect("a number below");
            prop_assert_eq!(before.len(), SEQ_DIGITS);
            prop_assert!(is_valid_sequence_number_syntax(&before));
            prop_assert!(before < a.encode());
            prop_assert_eq!(SeqNum::parse(&before), None);
            prop_assert_eq!(SeqNum::parse_before(&before), Some(a));
            // Nothing lies between: every other record sorts on one side.
            let o = other.encode();
            prop_assert_eq!(o < before, other < a);
            // A record's own number is not a "before" number of another.
            prop_assert_eq!(SeqNum::parse_before(&a.encode()), None);
        }
    }

    #[test]
    fn a_checkpoint_resumes_after_a_record_and_at_the_record_a_number_sits_below() {
        let n = SeqNum {
            generation: 3,
            shard_index: 4,
            position: 9,
        };
        assert_eq!(
            SeqNum::parse_resume_point(&n.encode()),
            Some(SeqNum { position: 10, ..n })
        );
        assert_eq!(SeqNum::parse_resume_point(&n.encode_before().unwrap()), Some(n));
        let zero = SeqNum { position: 0, ..n };
        assert_eq!(
            SeqNum::parse_resume_point(&zero.encode_before_start()),
            Some(zero)
        );
        assert_eq!(SeqNum::parse_resume_point("12"), None);
    }

    #[test]
    fn a_shards_starting_number_is_one_below_its_first_record() {
        let first = SeqNum {
            generation: 1,
            shard_index: 0,
            position: 0,
        };
        assert_eq!(
            first.encode(),
            "49000000000100000000000000000000000000000000000000000000"
        );
        assert_eq!(
            first.encode_before().unwrap(),
            "49000000000099999999999999999999999999999999999999999999"
        );
        let fifth = SeqNum {
            generation: 2,
            shard_index: 7,
            position: 5,
        };
        assert_eq!(
            fifth.encode_before().unwrap(),
            "49000000000200000000000700000000000000000004999999999999"
        );
        assert_eq!(
            SeqNum {
                generation: 0,
                shard_index: 0,
                position: 0
            }
            .encode_before(),
            None
        );
    }

    #[test]
    fn garbage_is_not_a_sequence_number() {
        assert_eq!(SeqNum::parse("123"), None);
        assert_eq!(SeqNum::parse(&"1".repeat(56)), None);
        assert!(!is_valid_sequence_number_syntax("01"));
        assert!(is_valid_sequence_number_syntax("0"));
    }
}
