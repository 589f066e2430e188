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

/// Decodes the frame starting at `buf[pos]`. `buf` is the whole segment (or
/// its visible prefix); `pos` is the frame's file offset.
pub fn decode(buf: &[u8], pos: usize, file_id: u64) -> Decoded<'_> {
    let rest = match buf.get(pos..) {
        Some(r) => r,
        None => return Decoded::Invalid("position past the end of the file"),
    };
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest.len() < FRAME_HEADER_BYTES {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("truncated frame header")
        };
    }
    let h = &rest[..FRAME_HEADER_BYTES];
    if h.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let total = Endian::read_u32(&h[FRAME_LEN_OFFSET..]) as usize;
    let key_len = Endian::read_u16(&h[FRAME_KEY_LEN_OFFSET..]) as usize;
    let data_len = Endian::read_u32(&h[FRAME_DATA_LEN_OFFSET..]) as usize;
    if !(PARTITION_KEY_BYTES_MIN..=PARTITION_KEY_BYTES_MAX).contains(&key_len)
        || data_len > RECORD_DATA_BYTES_LIMIT
        || total != frame_len(key_len, data_len)
    {
        return Decoded::Invalid("frame lengths are inconsistent");
    }
    if total > rest.len() {
        return Decoded::Invalid("frame extends past the end of the file");
    }
    let stored_crc = Endian::read_u32(&h[FRAME_CRC_OFFSET..]);
    if checksum(file_id, &rest[FRAME_LEN_OFFSET..total]) != stored_crc {
        return Decoded::Invalid("frame checksum mismatch");
    }
    let flags = Endian::read_u16(&h[FRAME_FLAGS_OFFSET..]);
    if flags & !FRAME_FLAGS_KNOWN != 0 || Endian::read_u32(&h[FRAME_RESERVED_OFFSET..]) != 0 {
        return Decoded::Invalid("unknown frame flags");
    }
    let key_start = FRAME_HEADER_BYTES;
    let Ok(partition_key) = std::str::from_utf8(&rest[key_start..key_start + key_len]) else {
        return Decoded::Invalid("partition key is not UTF-8");
    };
    Decoded::Record(Record {
        seq: Endian::read_u64(&h[FRAME_SEQ_OFFSET..]),
        arrival_ms: Endian::read_i64(&h[FRAME_ARRIVAL_MS_OFFSET..]),
        partition_key,
        data: &rest[key_start + key_len..total],
        flags,
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
        }
    }
}
