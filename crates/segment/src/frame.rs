//! Encoding and decoding of record frames (layout in [`crate::format`]).

use byteorder::ByteOrder;

use crate::error::{Error, Result};
use crate::format::*;

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct RecordIn<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
    /// Arrival time in ms since the epoch; the log makes these non-decreasing.
    pub arrival_ms: i64,
    /// Flag bits from [`FRAME_FLAGS_KNOWN`].
    pub flags: u16,
}

impl<'a> RecordIn<'a> {
    pub fn new(partition_key: &'a str, data: &'a [u8], arrival_ms: i64) -> RecordIn<'a> {
        RecordIn {
            partition_key,
            data,
            arrival_ms,
            flags: 0,
        }
    }
}

/// A record read from a segment: borrowed slices of the mapped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub arrival_ms: i64,
    pub partition_key: &'a str,
    pub data: &'a [u8],
    pub flags: u16,
    /// Byte offset of the frame within its segment file.
    pub offset: u64,
    /// Total length of the frame in bytes.
    pub frame_len: u32,
}

/// Size of the frame that holds a record.
pub fn frame_len(key_len: usize, data_len: usize) -> usize {
    FRAME_HEADER_BYTES + key_len + data_len
}

/// Checks a record against the limits before anything is written.
pub fn validate(record: &RecordIn<'_>, data_bytes_max: usize) -> Result<()> {
    let key_len = record.partition_key.len();
    if key_len < PARTITION_KEY_BYTES_MIN {
        return Err(Error::InvalidPartitionKey {
            reason: "it is empty".into(),
        });
    }
    if key_len > PARTITION_KEY_BYTES_MAX {
        return Err(Error::InvalidPartitionKey {
            reason: format!("it is {key_len} bytes long"),
        });
    }
    if record.data.len() > data_bytes_max {
        return Err(Error::DataTooLarge {
            len: record.data.len(),
            max: data_bytes_max,
        });
    }
    if record.flags & !FRAME_FLAGS_KNOWN != 0 {
        return Err(Error::InvalidArgument(format!(
            "unknown record flags {:#06x}",
            record.flags
        )));
    }
    Ok(())
}

fn checksum(file_id: u64, frame_after_crc: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut id = [0u8; 8];
    Endian::write_u64(&mut id, file_id);
    hasher.update(&id);
    hasher.update(frame_after_crc);
    hasher.finalize()
}

/// Appends the frame of `record` to `out`. The record must have passed
/// [`validate`].
pub fn encode(out: &mut Vec<u8>, file_id: u64, seq: u64, synced_upto: u32, record: &RecordIn<'_>) {
    let start = out.len();
    let key = record.partition_key.as_bytes();
    let total = frame_len(key.len(), record.data.len());
    out.resize(start + FRAME_HEADER_BYTES, 0);
    {
        let h = &mut out[start..start + FRAME_HEADER_BYTES];
        Endian::write_u32(&mut h[FRAME_LEN_OFFSET..], total as u32);
        Endian::write_u64(&mut h[FRAME_SEQ_OFFSET..], seq);
        Endian::write_i64(&mut h[FRAME_ARRIVAL_MS_OFFSET..], record.arrival_ms);
        Endian::write_u32(&mut h[FRAME_SYNCED_UPTO_OFFSET..], synced_upto);
        Endian::write_u16(&mut h[FRAME_KEY_LEN_OFFSET..], key.len() as u16);
        Endian::write_u16(&mut h[FRAME_FLAGS_OFFSET..], record.flags);
        Endian::write_u32(&mut h[FRAME_DATA_LEN_OFFSET..], record.data.len() as u32);
    }
    out.extend_from_slice(key);
    out.extend_from_slice(record.data);
    let crc = checksum(file_id, &out[start + FRAME_LEN_OFFSET..start + total]);
    Endian::write_u32(&mut out[start + FRAME_CRC_OFFSET..], crc);
}

/// What [`decode`] found at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame.
    Record(Record<'a>),
    /// The all-zero end-of-data marker (or the end of the bytes, exactly).
    End,
    /// Bytes that are not a valid frame.
    Invalid(&'static str),
}

/// The fixed fields of a frame whose header is well formed, read without
/// checking the frame's checksum (see [`decode_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub arrival_ms: i64,
    /// Byte offset of the frame within its segment file.
    pub offset: u64,
    /// Total length of the frame in bytes.
    pub frame_len: u32,
}

/// What [`decode_header`] found at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodedHeader {
    /// A header whose lengths, flags and reserved bytes are consistent and
    /// whose frame fits in the bytes.
    Header(Header),
    /// The all-zero end-of-data marker (or the end of the bytes, exactly).
    End,
    /// Bytes that are not a valid frame header.
    Invalid(&'static str),
}

/// Checks the lengths in the frame header at the start of `rest`: the
/// frame's total length, `None` at the end of data, or why it is not a frame.
fn check_header(rest: &[u8]) -> Result<Option<usize>, &'static str> {
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < FRAME_HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err("truncated frame header")
        };
    }
    let h = &rest[..FRAME_HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let total = Endian::read_u32(&h[FRAME_LEN_OFFSET..]) as usize;
    let key_len = Endian::read_u16(&h[FRAME_KEY_LEN_OFFSET..]) as usize;
    let data_len = Endian::read_u32(&h[FRAME_DATA_LEN_OFFSET..]) as usize;
    if !(PARTITION_KEY_BYTES_MIN..=PARTITION_KEY_BYTES_MAX).contains(&key_len)
        || data_len > RECORD_DATA_BYTES_LIMIT
        || total != frame_len(key_len, data_len)
    {
        return Err("frame lengths are inconsistent");
    }
    if total > rest.len() {
        return Err("frame extends past the end of the file");
    }
    Ok(Some(total))
}

fn flags_known(h: &[u8]) -> bool {
    Endian::read_u16(&h[FRAME_FLAGS_OFFSET..]) & !FRAME_FLAGS_KNOWN == 0
        && Endian::read_u32(&h[FRAME_RESERVED_OFFSET..]) == 0
}

/// Reads the header of the frame at `buf[pos]` with every check of
/// [`decode`] except the two that read the whole frame: its checksum and
/// the UTF-8 of its partition key. Recovery walks the prefix of an active
/// segment that a later valid frame proves was synced with it, and leaves
/// those checks to a pass after open; readers always use [`decode`].
pub fn decode_header(buf: &[u8], pos: usize) -> DecodedHeader {
    let Some(rest) = buf.get(pos..) else {
        return DecodedHeader::Invalid("position past the end of the file");
    };
    match check_header(rest) {
        Ok(None) => DecodedHeader::End,
        Err(reason) => DecodedHeader::Invalid(reason),
        Ok(Some(_)) if !flags_known(rest) => DecodedHeader::Invalid("unknown frame flags"),
        Ok(Some(total)) => DecodedHeader::Header(Header {
            seq: Endian::read_u64(&rest[FRAME_SEQ_OFFSET..]),
            arrival_ms: Endian::read_i64(&rest[FRAME_ARRIVAL_MS_OFFSET..]),
            offset: pos as u64,
            frame_len: total as u32,
        }),
    }
}

/// Decodes the frame starting at `buf[pos]`. `buf` is the whole segment (or
/// its visible prefix); `pos` is the frame's file offset.
pub fn decode(buf: &[u8], pos: usize, file_id: u64) -> Decoded<'_> {
    let Some(rest) = buf.get(pos..) else {
        return Decoded::Invalid("position past the end of the file");
    };
    let total = match check_header(rest) {
        Ok(None) => return Decoded::End,
        Err(reason) => return Decoded::Invalid(reason),
        Ok(Some(total)) => total,
    };
    let h = &rest[..FRAME_HEADER_BYTES];
    let stored_crc = Endian::read_u32(&h[FRAME_CRC_OFFSET..]);
    if checksum(file_id, &rest[FRAME_LEN_OFFSET..total]) != stored_crc {
        return Decoded::Invalid("frame checksum mismatch");
    }
    if !flags_known(h) {
        return Decoded::Invalid("unknown frame flags");
    }
    let key_len = Endian::read_u16(&h[FRAME_KEY_LEN_OFFSET..]) as usize;
    let key_start = FRAME_HEADER_BYTES;
    let Ok(partition_key) = std::str::from_utf8(&rest[key_start..key_start + key_len]) else {
        return Decoded::Invalid("partition key is not UTF-8");
    };
    Decoded::Record(Record {
        seq: Endian::read_u64(&h[FRAME_SEQ_OFFSET..]),
        arrival_ms: Endian::read_i64(&h[FRAME_ARRIVAL_MS_OFFSET..]),
        partition_key,
        data: &rest[key_start + key_len..total],
        flags: Endian::read_u16(&h[FRAME_FLAGS_OFFSET..]),
        offset: pos as u64,
        frame_len: total as u32,
    })
}

/// The `synced_upto` field of a frame already known to be valid.
pub(crate) fn synced_upto(buf: &[u8], pos: usize) -> u32 {
    Endian::read_u32(&buf[pos + FRAME_SYNCED_UPTO_OFFSET..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(key: &str, data: &[u8], seq: u64, ts: i64, file_id: u64) {
        let mut buf = vec![0u8; 7]; // frames need not start at offset 0
        let rec = RecordIn::new(key, data, ts);
        encode(&mut buf, file_id, seq, 99, &rec);
        assert_eq!(buf.len(), 7 + frame_len(key.len(), data.len()));
        match decode(&buf, 7, file_id) {
            Decoded::Record(r) => {
                assert_eq!(r.seq, seq);
                assert_eq!(r.arrival_ms, ts);
                assert_eq!(r.partition_key, key);
                assert_eq!(r.data, data);
                assert_eq!(r.offset, 7);
                assert_eq!(r.frame_len as usize, buf.len() - 7);
                assert_eq!(synced_upto(&buf, 7), 99);
            }
            other => panic!("expected a record, got {other:?}"),
        }
        assert_eq!(
            decode_header(&buf, 7),
            DecodedHeader::Header(Header {
                seq,
                arrival_ms: ts,
                offset: 7,
                frame_len: (buf.len() - 7) as u32,
            })
        );
    }

    /// What `decode_header` must say wherever `decode` has spoken: the same
    /// fields for a record, the end where it ends, and never a header where
    /// the header itself is what `decode` refused.
    fn header_agrees_with_decode(bytes: &[u8], pos: usize, file_id: u64) -> Result<(), String> {
        match (decode(bytes, pos, file_id), decode_header(bytes, pos)) {
            (Decoded::Record(r), DecodedHeader::Header(h)) => {
                if (h.seq, h.arrival_ms, h.offset, h.frame_len)
                    != (r.seq, r.arrival_ms, r.offset, r.frame_len)
                {
                    return Err(format!("{h:?} differs from {r:?}"));
                }
            }
            (Decoded::End, DecodedHeader::End) => {}
            (Decoded::Invalid(_), DecodedHeader::Invalid(_)) => {}
            // Only the checks left out may tell the two apart.
            (
                Decoded::Invalid("frame checksum mismatch" | "partition key is not UTF-8"),
                DecodedHeader::Header(_),
            ) => {}
            (d, h) => return Err(format!("decode says {d:?}, decode_header says {h:?}")),
        }
        Ok(())
    }

    #[test]
    fn frame_round_trips_with_empty_data() {
        roundtrip("k", b"", 0, 0, 1);
    }

    #[test]
    fn all_zero_header_is_end_of_data() {
        let buf = vec![0u8; 100];
        assert_eq!(decode(&buf, 10, 5), Decoded::End);
        assert_eq!(decode(&buf, 100, 5), Decoded::End);
        assert_eq!(decode(&buf, 90, 5), Decoded::End);
    }

    #[test]
    fn frame_from_another_file_id_fails_its_checksum() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, 0, &RecordIn::new("key", b"data", 5));
        assert_eq!(decode(&buf, 0, 2), Decoded::Invalid("frame checksum mismatch"));
    }

    #[test]
    fn truncated_frame_is_invalid() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, 0, &RecordIn::new("key", b"data", 5));
        for cut in 1..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], 0, 1), Decoded::Invalid(_)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn validate_rejects_bad_keys_and_large_data() {
        assert!(matches!(
            validate(&RecordIn::new("", b"", 0), 10),
            Err(Error::InvalidPartitionKey { .. })
        ));
        let long = "x".repeat(1025);
        assert!(matches!(
            validate(&RecordIn::new(&long, b"", 0), 10),
            Err(Error::InvalidPartitionKey { .. })
        ));
        assert!(matches!(
            validate(&RecordIn::new("k", &[0; 11], 0), 10),
            Err(Error::DataTooLarge { len: 11, max: 10 })
        ));
        let mut r = RecordIn::new("k", b"", 0);
        r.flags = 0x8000;
        assert!(matches!(validate(&r, 10), Err(Error::InvalidArgument(_))));
    }

    proptest! {
        #[test]
        fn any_record_round_trips(
            key in "\\PC{1,64}".prop_filter("key length", |k| !k.is_empty() && k.len() <= 256),
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            seq in any::<u64>(),
            ts in any::<i64>(),
            file_id in any::<u64>(),
        ) {
            roundtrip(&key, &data, seq, ts, file_id);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            bit in any::<usize>(),
        ) {
            let mut buf = Vec::new();
            encode(&mut buf, 42, 7, 0, &RecordIn::new("pk", &data, 1));
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!matches!(decode(&buf, 0, 42), Decoded::Record(_)));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            pos in 0usize..300,
        ) {
            let _ = decode(&bytes, pos, 0);
            let _ = decode_header(&bytes, pos);
        }

        #[test]
        fn header_decoding_agrees_with_full_decoding_on_damaged_frames(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            prefix in 0usize..8,
        ) {
            let mut buf = vec![0u8; prefix];
            encode(&mut buf, 9, 3, 0, &RecordIn::new("pk", &data, 1));
            encode(&mut buf, 9, 4, 0, &RecordIn::new("key-2", &data, 2));
            for (at, x) in &damage {
                let at = at % buf.len();
                buf[at] ^= x;
            }
            for pos in 0..buf.len() + 1 {
                if let Err(e) = header_agrees_with_decode(&buf, pos, 9) {
                    prop_assert!(false, "at {}: {}", pos, e);
                }
            }
        }
    }
}
