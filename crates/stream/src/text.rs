//! Ids the engine hands out with every record (sequence numbers, shard ids)
//! as text held inline.
//!
//! A put answers each record with its shard id and sequence number. Held as
//! `String`s they cost two heap allocations and two frees per record, which
//! a profile of 16 embedded writers put at about a tenth of the process's
//! CPU; these ids have a known longest length, so they live in a
//! fixed-capacity buffer instead and read as `&str` through `Deref`.

use std::fmt;
use std::ops::Deref;

use arrayvec::ArrayString;

/// Text of at most `N` bytes, held inline. It reads as a `str`
/// (`Deref`, `Display`, comparisons with `str` and `String`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InlineText<const N: usize>(ArrayString<N>);

/// A sequence number as the API spells it (see [`crate::seqnum`]).
pub type SequenceNumber = InlineText<{ crate::seqnum::SEQ_TEXT_BYTES_MAX }>;

/// A shard id as the API spells it (`shardId-000000000042`).
pub type ShardId = InlineText<SHARD_ID_BYTES_MAX>;

/// Longest shard id: `shardId-` and a `u64` in decimal (20 digits). The
/// engine's own ids have 12 digits; the bound covers every index.
pub const SHARD_ID_BYTES_MAX: usize = SHARD_ID_PREFIX.len() + U64_DIGITS_MAX;

/// The text before a shard's index in its id.
pub const SHARD_ID_PREFIX: &str = "shardId-";

/// Digits of `u64::MAX` in decimal: no `u64` has more.
pub(crate) const U64_DIGITS_MAX: usize = 20;
const _: () = assert!(u64::MAX.ilog10() + 1 == U64_DIGITS_MAX as u32);

impl<const N: usize> InlineText<N> {
    /// Text written by `f`, which must fit `N` bytes: every caller in this
    /// crate writes a bounded number of digits whose bound is `N`. Should a
    /// caller break that rule, `None` rather than a cut-off id.
    pub(crate) fn write_with(f: impl FnOnce(&mut ArrayString<N>) -> fmt::Result) -> Option<Self> {
        let mut s = ArrayString::new();
        f(&mut s).ok().map(|()| InlineText(s))
    }

    /// Text from UTF-8 bytes that fit `N`; `None` otherwise.
    pub(crate) fn from_utf8(bytes: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        Self::new(s)
    }

    /// `s` held inline; `None` if it is longer than `N` bytes (as an
    /// embedder's mock of a put's answer might need).
    pub fn new(s: &str) -> Option<Self> {
        ArrayString::from(s).ok().map(InlineText)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> Deref for InlineText<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> AsRef<str> for InlineText<N> {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> std::borrow::Borrow<str> for InlineText<N> {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> fmt::Display for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl<const N: usize> fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl<const N: usize> PartialEq<str> for InlineText<N> {
    fn eq(&self, other: &str) -> bool {
        self.0.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for InlineText<N> {
    fn eq(&self, other: &&str) -> bool {
        self.0.as_str() == *other
    }
}

impl<const N: usize> PartialEq<String> for InlineText<N> {
    fn eq(&self, other: &String) -> bool {
        self.0.as_str() == other.as_str()
    }
}

impl<const N: usize> PartialEq<InlineText<N>> for String {
    fn eq(&self, other: &InlineText<N>) -> bool {
        self.as_str() == other.0.as_str()
    }
}

impl<const N: usize> PartialEq<InlineText<N>> for str {
    fn eq(&self, other: &InlineText<N>) -> bool {
        self == other.0.as_str()
    }
}

impl<const N: usize> PartialEq<InlineText<N>> for &str {
    fn eq(&self, other: &InlineText<N>) -> bool {
        *self == other.0.as_str()
    }
}

impl<'a, const N: usize> TryFrom<&'a str> for InlineText<N> {
    type Error = &'a str;
    /// `s` held inline, or `s` back if it is longer than `N` bytes.
    fn try_from(s: &'a str) -> Result<Self, &'a str> {
        Self::new(s).ok_or(s)
    }
}

impl<const N: usize> From<InlineText<N>> for String {
    fn from(t: InlineText<N>) -> String {
        t.0.as_str().to_owned()
    }
}

impl<const N: usize> serde::Serialize for InlineText<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// The id of shard `index`, without a heap allocation.
pub fn shard_id_text(index: u64) -> ShardId {
    use std::fmt::Write;
    // `shardId-` and at most 20 digits always fit SHARD_ID_BYTES_MAX.
    let text = ShardId::write_with(|s| write!(s, "{SHARD_ID_PREFIX}{index:012}"));
    debug_assert!(text.is_some(), "a shard id outgrew SHARD_ID_BYTES_MAX");
    text.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_shard_id_text_spells_what_the_formatter_spells(index in any::<u64>()) {
            let text = shard_id_text(index);
            prop_assert_eq!(text.as_str(), format!("shardId-{index:012}"));
            prop_assert_eq!(crate::engine::parse_shard_id(&text), (index <= 999_999_999_999).then_some(index));
        }
    }

    #[test]
    fn inline_text_compares_and_prints_as_its_str() {
        let t = shard_id_text(42);
        assert_eq!(t, "shardId-000000000042");
        assert_eq!(t, String::from("shardId-000000000042"));
        assert_eq!(String::from("shardId-000000000042"), t);
        assert_eq!(format!("{t}"), "shardId-000000000042");
        assert_eq!(format!("{t:?}"), "\"shardId-000000000042\"");
        assert_eq!(
            serde_json::to_string(&t).ok().as_deref(),
            Some("\"shardId-000000000042\"")
        );
        assert!(shard_id_text(u64::MAX).len() == SHARD_ID_BYTES_MAX);
    }

    #[test]
    fn text_longer_than_its_capacity_is_refused_not_cut() {
        assert_eq!(InlineText::<4>::from_utf8(b"12345"), None);
        assert_eq!(InlineText::<4>::from_utf8(b"1234").map(|t| t.len()), Some(4));
        assert_eq!(InlineText::<4>::try_from("12345"), Err("12345"));
        assert_eq!(
            InlineText::<4>::try_from("abc").map(String::from),
            Ok("abc".to_string())
        );
        use std::fmt::Write;
        assert_eq!(InlineText::<4>::write_with(|s| write!(s, "{}", 12345)), None);
    }
}
