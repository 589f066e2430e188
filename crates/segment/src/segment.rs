//! Segment files: the header, names, and a scan of the frames in one file.

use byteorder::ByteOrder;

use crate::format::*;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub file_id: u64,
    pub base_seq: u64,
    pub created_ms: i64,
    /// For a recycled segment, the file id of the frames that follow its
    /// data (header flag `SEGMENT_FLAG_RECYCLED`); `None` for a new file.
    pub recycled_from: Option<u64>,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut h = [0u8; SEGMENT_HEADER_BYTES];
        h[HDR_MAGIC_OFFSET..HDR_MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
        Endian::write_u16(&mut h[HDR_VERSION_OFFSET..], SEGMENT_FORMAT_VERSION);
        Endian::write_u16(&mut h[HDR_HEADER_LEN_OFFSET..], SEGMENT_HEADER_BYTES as u16);
        let flags = if self.recycled_from.is_some() {
            SEGMENT_FLAG_RECYCLED
        } else {
            0
        };
        Endian::write_u32(&mut h[HDR_FLAGS_OFFSET..], flags);
        Endian::write_u64(
            &mut h[HDR_RECYCLED_FROM_OFFSET..],
            self.recycled_from.unwrap_or(0),
        );
        Endian::write_u64(&mut h[HDR_FILE_ID_OFFSET..], self.file_id);
        Endian::write_u64(&mut h[HDR_BASE_SEQ_OFFSET..], self.base_seq);
        Endian::write_i64(&mut h[HDR_CREATED_MS_OFFSET..], self.created_ms);
        let crc = crc32fast::hash(&h[..HDR_CRC_OFFSET]);
        Endian::write_u32(&mut h[HDR_CRC_OFFSET..], crc);
        h
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err("file is shorter than a segment header");
        }
        let h = &bytes[..SEGMENT_HEADER_BYTES];
        if h[HDR_MAGIC_OFFSET..HDR_MAGIC_OFFSET + 8] != SEGMENT_MAGIC {
            return Err("bad magic: not a shardlog segment");
        }
        if crc32fast::hash(&h[..HDR_CRC_OFFSET]) != Endian::read_u32(&h[HDR_CRC_OFFSET..]) {
            return Err("segment header checksum mismatch");
        }
        let version = Endian::read_u16(&h[HDR_VERSION_OFFSET..]);
        if version != SEGMENT_FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if Endian::read_u16(&h[HDR_HEADER_LEN_OFFSET..]) as usize != SEGMENT_HEADER_BYTES {
            return Err("unexpected segment header length");
        }
        let flags = Endian::read_u32(&h[HDR_FLAGS_OFFSET..]);
        if flags & !SEGMENT_FLAGS_KNOWN != 0 {
            return Err("segment header has unknown flags");
        }
        let recycled_from = Endian::read_u64(&h[HDR_RECYCLED_FROM_OFFSET..]);
        if flags & SEGMENT_FLAG_RECYCLED == 0 && recycled_from != 0 {
            return Err("segment header names a recycled file without the recycled flag");
        }
        Ok(SegmentHeader {
            file_id: Endian::read_u64(&h[HDR_FILE_ID_OFFSET..]),
            base_seq: Endian::read_u64(&h[HDR_BASE_SEQ_OFFSET..]),
            created_ms: Endian::read_i64(&h[HDR_CREATED_MS_OFFSET..]),
            recycled_from: (flags & SEGMENT_FLAG_RECYCLED != 0).then_some(recycled_from),
        })
    }
}

/// File name of the segment whose first sequence number is `base_seq`.
pub fn segment_file_name(base_seq: u64) -> String {
    format!(
        "{base_seq:0width$}{SEGMENT_FILE_SUFFIX}",
        width = SEGMENT_FILE_NAME_DIGITS
    )
}

/// Parses a segment file name back into its base sequence number.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, SEGMENT_FILE_SUFFIX)
}

/// Name under which retention keeps the sealed segment of base `base_seq`
/// for reuse.
pub fn recycled_file_name(base_seq: u64) -> String {
    format!(
        "{base_seq:0width$}{RECYCLED_FILE_SUFFIX}",
        width = SEGMENT_FILE_NAME_DIGITS
    )
}

/// Parses a recycled file's name back into the base it had.
pub fn parse_recycled_file_name(name: &str) -> Option<u64> {
    parse_numbered(name, RECYCLED_FILE_SUFFIX)
}

fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != SEGMENT_FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_sort_like_sequence_numbers() {
        let mut names: Vec<String> = [10u64, 9, 1_000_000, 0, u64::MAX]
            .iter()
            .map(|s| segment_file_name(*s))
            .collect();
        names.sort();
        let parsed: Vec<u64> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
        assert_eq!(parsed, vec![0, 9, 10, 1_000_000, u64::MAX]);
        assert_eq!(parse_segment_file_name("12.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.seg"), None);
    }

    proptest! {
        #[test]
        fn header_round_trips(file_id in any::<u64>(), base in any::<u64>(), created in any::<i64>()) {
            let h = SegmentHeader { file_id, base_seq: base, created_ms: created, recycled_from: None };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
            let h = SegmentHeader { recycled_from: Some(file_id.wrapping_sub(1)), ..h };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn header_bit_flips_are_detected(bit in 0usize..SEGMENT_HEADER_BYTES * 8) {
            let h = SegmentHeader { file_id: 3, base_seq: 4, created_ms: 5, recycled_from: Some(2) };
            let mut bytes = h.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SegmentHeader::decode(&bytes).is_err());
        }
    }
}
