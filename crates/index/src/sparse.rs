//! The sparse index of one segment and its sidecar encoding.

use byteorder::ByteOrder;

use crate::format::*;

/// One index entry: the frame of `seq` starts at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub offset: u32,
    pub arrival_ms: i64,
}

/// Sparse index of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseIndex {
    pub base_seq: u64,
    /// One past the last record indexed.
    pub end_seq: u64,
    pub file_id: u64,
    /// Byte offset where indexed frames end.
    pub end_offset: u64,
    pub max_arrival_ms: i64,
    pub entries: Vec<Entry>,
}

impl SparseIndex {
    pub fn new(base_seq: u64) -> SparseIndex {
        SparseIndex {
            base_seq,
            end_seq: base_seq,
            file_id: 0,
            end_offset: 0,
            max_arrival_ms: i64::MIN,
            entries: Vec::new(),
        }
    }

    /// Bytes of memory this index holds.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<SparseIndex>() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Records that a frame of `frame_len` bytes for `seq` starts at `offset`.
    /// Records must be added in order.
    pub fn add(&mut self, seq: u64, offset: u64, arrival_ms: i64, frame_len: u32) {
        let due = match self.entries.last() {
            None => true,
            Some(last) => offset >= last.offset as u64 + INDEX_INTERVAL_BYTES,
        };
        if due {
            self.entries.push(Entry {
                seq,
                offset: offset as u32,
                arrival_ms,
            });
        }
        self.end_seq = seq + 1;
        self.end_offset = offset + frame_len as u64;
        self.max_arrival_ms = self.max_arrival_ms.max(arrival_ms);
    }

    /// The last entry at or before `seq` (O(log n)).
    pub fn floor_seq(&self, seq: u64) -> Option<Entry> {
        let i = self.entries.partition_point(|e| e.seq <= seq);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The entry from which a forward scan finds the first record with arrival
    /// at or after `ts`: the last entry whose arrival is before `ts`, or the
    /// first entry (O(log n); arrivals are non-decreasing).
    pub fn floor_time(&self, ts: i64) -> Option<Entry> {
        let i = self.entries.partition_point(|e| e.arrival_ms < ts);
        self.entries.get(i.saturating_sub(1)).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; IDX_HEADER_BYTES + self.entries.len() * IDX_ENTRY_BYTES + IDX_CRC_BYTES];
        out[IDX_MAGIC_OFFSET..IDX_MAGIC_OFFSET + 8].copy_from_slice(&INDEX_MAGIC);
        Endian::write_u16(&mut out[IDX_VERSION_OFFSET..], INDEX_FORMAT_VERSION);
        Endian::write_u16(&mut out[IDX_FLAGS_OFFSET..], 0);
        Endian::write_u32(&mut out[IDX_COUNT_OFFSET..], self.entries.len() as u32);
        Endian::write_u64(&mut out[IDX_BASE_SEQ_OFFSET..], self.base_seq);
        Endian::write_u64(&mut out[IDX_END_SEQ_OFFSET..], self.end_seq);
        Endian::write_u64(&mut out[IDX_FILE_ID_OFFSET..], self.file_id);
        Endian::write_u64(&mut out[IDX_END_OFFSET_OFFSET..], self.end_offset);
        Endian::write_i64(&mut out[IDX_MAX_ARRIVAL_OFFSET..], self.max_arrival_ms);
        for (i, e) in self.entries.iter().enumerate() {
            let at = IDX_HEADER_BYTES + i * IDX_ENTRY_BYTES;
            Endian::write_u32(
                &mut out[at + ENTRY_SEQ_DELTA_OFFSET..],
                (e.seq - self.base_seq) as u32,
            );
            Endian::write_u32(&mut out[at + ENTRY_FILE_OFFSET_OFFSET..], e.offset);
            Endian::write_i64(&mut out[at + ENTRY_ARRIVAL_OFFSET..], e.arrival_ms);
        }
        let crc_at = out.len() - IDX_CRC_BYTES;
        let crc = crc32fast::hash(&out[..crc_at]);
        Endian::write_u32(&mut out[crc_at..], crc);
        out
    }

    /// Decodes a sidecar file; the error says why it cannot be trusted.
    pub fn decode(bytes: &[u8]) -> Result<SparseIndex, &'static str> {
        if bytes.len() < IDX_HEADER_BYTES + IDX_CRC_BYTES {
            return Err("index file is truncated");
        }
        if bytes[IDX_MAGIC_OFFSET..IDX_MAGIC_OFFSET + 8] != INDEX_MAGIC {
            return Err("bad index magic");
        }
        let crc_at = bytes.len() - IDX_CRC_BYTES;
        if crc32fast::hash(&bytes[..crc_at]) != Endian::read_u32(&bytes[crc_at..]) {
            return Err("index checksum mismatch");
        }
        if Endian::read_u16(&bytes[IDX_VERSION_OFFSET..]) != INDEX_FORMAT_VERSION {
            return Err("unsupported index version");
        }
        let count = Endian::read_u32(&bytes[IDX_COUNT_OFFSET..]) as usize;
        if IDX_HEADER_BYTES + count * IDX_ENTRY_BYTES + IDX_CRC_BYTES != bytes.len() {
            return Err("index entry count does not match its length");
        }
        let base_seq = Endian::read_u64(&bytes[IDX_BASE_SEQ_OFFSET..]);
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = IDX_HEADER_BYTES + i * IDX_ENTRY_BYTES;
            let delta = Endian::read_u32(&bytes[at + ENTRY_SEQ_DELTA_OFFSET..]) as u64;
            let Some(seq) = base_seq.checked_add(delta) else {
                return Err("index entry sequence number overflows");
            };
            let e = Entry {
                seq,
                offset: Endian::read_u32(&bytes[at + ENTRY_FILE_OFFSET_OFFSET..]),
                arrival_ms: Endian::read_i64(&bytes[at + ENTRY_ARRIVAL_OFFSET..]),
            };
            if let Some(prev) = entries.last() {
                let prev: &Entry = prev;
                if e.seq <= prev.seq || e.offset <= prev.offset || e.arrival_ms < prev.arrival_ms {
                    return Err("index entries are not increasing");
                }
            }
            entries.push(e);
        }
        Ok(SparseIndex {
            base_seq,
            end_seq: Endian::read_u64(&bytes[IDX_END_SEQ_OFFSET..]),
            file_id: Endian::read_u64(&bytes[IDX_FILE_ID_OFFSET..]),
            end_offset: Endian::read_u64(&bytes[IDX_END_OFFSET_OFFSET..]),
            max_arrival_ms: Endian::read_i64(&bytes[IDX_MAX_ARRIVAL_OFFSET..]),
            entries,
        })
    }
}

/// File name of the index of the segment starting at `base_seq`.
/// The name of the checkpoint of the active segment `base_seq`.
pub fn checkpoint_file_name(base_seq: u64) -> String {
    format!(
        "{base_seq:0width$}{CHECKPOINT_FILE_SUFFIX}",
        width = shardlog_segment::format::SEGMENT_FILE_NAME_DIGITS
    )
}

pub fn index_file_name(base_seq: u64) -> String {
    format!(
        "{base_seq:0width$}{INDEX_FILE_SUFFIX}",
        width = shardlog_segment::format::SEGMENT_FILE_NAME_DIGITS
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_round_trips(
            base in 0u64..1_000_000,
            sizes in proptest::collection::vec(41u32..20_000, 0..300),
            ts0 in -1_000_000i64..1_000_000,
        ) {
            let mut idx = SparseIndex::new(base);
            idx.file_id = 77;
            let mut off = 64u64;
            for (i, len) in sizes.iter().enumerate() {
                idx.add(base + i as u64, off, ts0 + i as i64, *len);
                off += *len as u64;
            }
            let bytes = idx.encode();
            prop_assert_eq!(SparseIndex::decode(&bytes), Ok(idx));
        }

        #[test]
        fn any_corruption_of_an_index_file_is_detected(bit in 0usize..(56 + 3 * 16 + 4) * 8) {
            // Frames a little over the interval apart: three entries.
            let step = INDEX_INTERVAL_BYTES + 1000;
            let mut idx = SparseIndex::new(10);
            for i in 0..3 {
                idx.add(10 + i, 64 + i * step, 5, step as u32);
            }
            prop_assert_eq!(idx.entries.len(), 3);
            let mut bytes = idx.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SparseIndex::decode(&bytes).is_err());
        }
    }

    /// Found by the `index_sidecar` fuzz target: `base_seq + seq_delta`
    /// overflowed for a sidecar (with a valid CRC) whose base is near
    /// `u64::MAX`.
    #[test]
    fn index_entries_whose_sequence_number_overflows_are_rejected() {
        let mut idx = SparseIndex::new(u64::MAX - 1);
        idx.add(u64::MAX - 1, 64, 1, 100);
        let mut bytes = idx.encode();
        // Entry 0's delta becomes 2: base + 2 is past u64::MAX.
        let at = IDX_HEADER_BYTES + ENTRY_SEQ_DELTA_OFFSET;
        Endian::write_u32(&mut bytes[at..], 2);
        let crc_at = bytes.len() - IDX_CRC_BYTES;
        let crc = crc32fast::hash(&bytes[..crc_at]);
        Endian::write_u32(&mut bytes[crc_at..], crc);
        assert_eq!(
            SparseIndex::decode(&bytes),
            Err("index entry sequence number overflows")
        );
        // The largest delta that fits still decodes.
        Endian::write_u32(&mut bytes[at..], 1);
        let crc = crc32fast::hash(&bytes[..crc_at]);
        Endian::write_u32(&mut bytes[crc_at..], crc);
        assert_eq!(SparseIndex::decode(&bytes).unwrap().entries[0].seq, u64::MAX);
    }

    #[test]
    fn zero_filled_and_truncated_index_files_are_rejected() {
        let mut idx = SparseIndex::new(0);
        idx.add(0, 64, 1, 100);
        let bytes = idx.encode();
        assert!(SparseIndex::decode(&vec![0u8; bytes.len()]).is_err());
        for cut in 0..bytes.len() {
            assert!(SparseIndex::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn entries_are_sparse_by_interval() {
        let mut idx = SparseIndex::new(0);
        for i in 0..1000u64 {
            idx.add(i, 64 + i * 100, i as i64, 100);
        }
        // 100 KB of frames at one entry per INDEX_INTERVAL_BYTES.
        let expect = 100_000 / INDEX_INTERVAL_BYTES as usize;
        assert!(
            idx.entries.len() >= expect && idx.entries.len() <= expect + 2,
            "{}",
            idx.entries.len()
        );
        assert_eq!(idx.floor_seq(0).map(|e| e.seq), Some(0));
        assert_eq!(
            idx.floor_seq(999).map(|e| e.seq),
            idx.entries.last().map(|e| e.seq)
        );
        assert_eq!(idx.floor_time(-5).map(|e| e.seq), Some(0));
    }
}
