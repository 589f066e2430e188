//! Encryption at rest for streams under `StartStreamEncryption`.
//!
//! A record written while its stream is encrypted is stored as an *envelope*
//! in the frame's data, with the frame flag `FRAME_FLAG_TRANSFORMED` set and a
//! placeholder partition key, so neither the partition key nor the data is on
//! disk in the clear. Layout (little-endian, documented in `docs/FORMAT.md`):
//!
//! ```text
//! 0      1        3                27
//! | ver  | slot   | nonce (24 B)   | ciphertext of [key_len u16][key][data] | tag (16 B) |
//! ```
//!
//! The cipher is XChaCha20-Poly1305 with a fresh random 192-bit nonce per
//! record: with nonces that long, random choice never repeats in practice
//! (the collision chance after 2^64 records under one key is about 2^-64),
//! and no counter has to survive a crash to stay unique. The associated
//! data binds each envelope to its stream and shard, so a record copied
//! into another shard fails authentication instead of being served.
//!
//! `slot` indexes the stream's list of key ids (in STREAM.json): records keep
//! naming the key they were sealed with after the stream moves to another key
//! or stops encrypting.
//!
//! Keys come from a [`Keyring`] (a local key file standing in for KMS) or, for
//! `alias/aws/kinesis`, from a key generated once per data directory (the
//! "AWS managed key"; it lives next to the data, so it guards against little
//! more than a casual look at the files: name a key from a key file kept
//! elsewhere for real protection).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Version byte of the envelope layout.
pub const ENVELOPE_VERSION: u8 = 1;
pub const ENVELOPE_VERSION_OFFSET: usize = 0;
pub const ENVELOPE_SLOT_OFFSET: usize = 1;
pub const ENVELOPE_NONCE_OFFSET: usize = 3;
pub const ENVELOPE_NONCE_BYTES: usize = 24;
/// Bytes before the ciphertext.
pub const ENVELOPE_HEADER_BYTES: usize = ENVELOPE_NONCE_OFFSET + ENVELOPE_NONCE_BYTES;
pub const ENVELOPE_TAG_BYTES: usize = 16;
/// Bytes an envelope adds to a record's partition key plus data.
pub const ENVELOPE_OVERHEAD_BYTES: usize = ENVELOPE_HEADER_BYTES + 2 + ENVELOPE_TAG_BYTES;
/// Partition key stored in the frame of an encrypted record (the real one is
/// inside the envelope; the segment format needs at least one byte).
pub const SEALED_PARTITION_KEY: &str = "*";
/// Key material length (256-bit keys).
pub const KEY_BYTES: usize = 32;
/// The alias of the per-data-directory managed key.
pub const MANAGED_KEY_ALIAS: &str = "alias/aws/kinesis";
/// Canonical id recorded for the managed key (keyring ids cannot contain
/// `:`, so it never clashes with one).
pub const MANAGED_KEY_ID: &str = "managed:aws/kinesis";
/// Key ids a stream may accumulate (each StartStreamEncryption with a new
/// key adds one); the slot is a u16.
pub const STREAM_KEYS_MAX: usize = 1024;
/// Keys a key file may hold.
pub const KEYRING_KEYS_MAX: usize = 10_000;

const AAD_DOMAIN: &[u8] = b"shardlog-sse-v1";

const _: () = assert!(ENVELOPE_OVERHEAD_BYTES == 45);
const _: () = assert!(STREAM_KEYS_MAX <= u16::MAX as usize);
const _: () = assert!(
    shardlog_segment::format::RECORD_DATA_BYTES_LIMIT >= 10 * 1024 * 1024 + ENVELOPE_OVERHEAD_BYTES,
    "the segment format must hold the largest record sealed in an envelope"
);

/// The state of a key, as KMS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum KeyState {
    #[default]
    Enabled,
    Disabled,
    PendingDeletion,
}

/// One key of a key file, as written there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// The key id (as in `arn:aws:kms:…:key/<id>`).
    pub id: String,
    /// Aliases, each `alias/<name>`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// 32 bytes of key material, base64.
    pub material: String,
    #[serde(default)]
    pub state: KeyState,
}

/// A key ready for use.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub aliases: Vec<String>,
    pub state: KeyState,
    material: [u8; KEY_BYTES],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("aliases", &self.aliases)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Key {
    pub(crate) fn new(id: &str, material: [u8; KEY_BYTES]) -> Key {
        Key {
            id: id.to_string(),
            aliases: Vec::new(),
            state: KeyState::Enabled,
            material,
        }
    }

    /// Whether `key_ref` (a key id, key ARN, alias or alias ARN) names this key.
    fn is_named_by(&self, key_ref: &str) -> bool {
        let short = strip_kms_arn(key_ref);
        short == self.id || self.aliases.iter().any(|a| a == short)
    }

    /// Refuses keys that KMS would refuse to use.
    pub fn usable(&self) -> Result<&Key> {
        match self.state {
            KeyState::Enabled => Ok(self),
            KeyState::Disabled => Err(Error::Kms {
                kind: "KMSDisabledException",
                message: format!("The KMS key {} is disabled; enable it in the key file.", self.id),
            }),
            KeyState::PendingDeletion => Err(Error::Kms {
                kind: "KMSInvalidStateException",
                message: format!("The KMS key {} is pending deletion.", self.id),
            }),
        }
    }
}

/// `arn:aws:kms:<region>:<account>:key/<id>` → `<id>`;
/// `arn:aws:kms:<region>:<account>:alias/<name>` → `alias/<name>`.
pub(crate) fn strip_kms_arn(key_ref: &str) -> &str {
    if key_ref.starts_with("arn:") {
        let mut parts = key_ref.splitn(6, ':');
        if let Some(resource) = parts.nth(5) {
            return resource.strip_prefix("key/").unwrap_or(resource);
        }
    }
    key_ref
}

/// Keys the engine may encrypt with: a local key file standing in for KMS.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// Builds a keyring, checking every key: ids unique, aliases of the form
    /// `alias/<name>` and unique, material exactly 32 bytes of base64.
    pub fn from_specs(specs: Vec<KeySpec>) -> std::result::Result<Keyring, String> {
        if specs.len() > KEYRING_KEYS_MAX {
            return Err(format!("a key file holds at most {KEYRING_KEYS_MAX} keys"));
        }
        let mut keys: Vec<Key> = Vec::with_capacity(specs.len());
        for s in specs {
            if s.id.is_empty() || s.id.starts_with("alias/") || s.id.contains(':') {
                return Err(format!(
                    "key id {:?} must be a plain id (no alias/ prefix, no ARN)",
                    s.id
                ));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(s.material.trim())
                .map_err(|e| format!("key {}: material is not base64: {e}", s.id))?;
            let material: [u8; KEY_BYTES] = raw.try_into().map_err(|v: Vec<u8>| {
                format!(
                    "key {}: material must be {KEY_BYTES} bytes, found {}",
                    s.id,
                    v.len()
                )
            })?;
            for a in &s.aliases {
                if !a.starts_with("alias/") || a.len() <= "alias/".len() {
                    return Err(format!("key {}: alias {a:?} must look like alias/<name>", s.id));
                }
            }
            let clash = keys
                .iter()
                .any(|k| k.id == s.id || k.aliases.iter().any(|a| s.aliases.contains(a)));
            if clash {
                return Err(format!("key {} repeats an id or alias of an earlier key", s.id));
            }
            keys.push(Key {
                id: s.id,
                aliases: s.aliases,
                state: s.state,
                material,
            });
        }
        Ok(Keyring { keys })
    }

    /// The key `key_ref` names, if this keyring holds it.
    pub fn resolve(&self, key_ref: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.is_named_by(key_ref))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The error KMS gives for a key it does not know.
pub fn key_not_found(key_ref: &str) -> Error {
    Error::Kms {
        kind: "KMSNotFoundException",
        message: format!(
            "Key '{key_ref}' does not exist. Define it in the key file given to the server with --kms-key-file, or use {MANAGED_KEY_ALIAS}."
        ),
    }
}

fn aad(stream_id: u64, shard_index: u64, header: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_DOMAIN.len() + 16 + header.len());
    a.extend_from_slice(AAD_DOMAIN);
    a.extend_from_slice(&stream_id.to_le_bytes());
    a.extend_from_slice(&shard_index.to_le_bytes());
    a.extend_from_slice(header);
    a
}

/// Seals a record (partition key and data) into an envelope.
pub fn seal(
    key: &Key,
    slot: u16,
    stream_id: u64,
    shard_index: u64,
    partition_key: &str,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut header = [0u8; ENVELOPE_HEADER_BYTES];
    header[ENVELOPE_VERSION_OFFSET] = ENVELOPE_VERSION;
    header[ENVELOPE_SLOT_OFFSET..ENVELOPE_NONCE_OFFSET].copy_from_slice(&slot.to_le_bytes());
    getrandom::fill(&mut header[ENVELOPE_NONCE_OFFSET..])
        .map_err(|e| Error::InvalidArgument(format!("no randomness for an encryption nonce: {e}")))?;
    let key_len = u16::try_from(partition_key.len())
        .map_err(|_| Error::InvalidArgument("partition key too long to seal".into()))?;
    let mut plain = Vec::with_capacity(2 + partition_key.len() + data.len());
    plain.extend_from_slice(&key_len.to_le_bytes());
    plain.extend_from_slice(partition_key.as_bytes());
    plain.extend_from_slice(data);
    let cipher = XChaCha20Poly1305::new((&key.material).into());
    let nonce = XNonce::from_slice(&header[ENVELOPE_NONCE_OFFSET..]);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: &plain,
                aad: &aad(stream_id, shard_index, &header),
            },
        )
        .map_err(|_| Error::InvalidArgument("record too large to seal".into()))?;
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_BYTES + sealed.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key slot an envelope names; `None` if it is not a known envelope.
pub fn slot_of(envelope: &[u8]) -> Option<u16> {
    if envelope.len() < ENVELOPE_OVERHEAD_BYTES || envelope[ENVELOPE_VERSION_OFFSET] != ENVELOPE_VERSION {
        return None;
    }
    Some(u16::from_le_bytes([
        envelope[ENVELOPE_SLOT_OFFSET],
        envelope[ENVELOPE_SLOT_OFFSET + 1],
    ]))
}

/// Opens an envelope: the partition key and data, or why it cannot be
/// trusted (the caller reports that as corruption with file and offset).
pub fn open(
    key: &Key,
    stream_id: u64,
    shard_index: u64,
    envelope: &[u8],
) -> std::result::Result<(String, Vec<u8>), &'static str> {
    if slot_of(envelope).is_none() {
        return Err("not an encryption envelope of a known version");
    }
    let (header, sealed) = envelope.split_at(ENVELOPE_HEADER_BYTES);
    let cipher = XChaCha20Poly1305::new((&key.material).into());
    let nonce = XNonce::from_slice(&header[ENVELOPE_NONCE_OFFSET..]);
    let plain = cipher
        .decrypt(
            nonce,
            Payload {
                msg: sealed,
                aad: &aad(stream_id, shard_index, header),
            },
        )
        .map_err(|_| "encrypted record fails authentication (wrong key, or damaged or moved bytes)")?;
    if plain.len() < 2 {
        return Err("sealed record too short");
    }
    let key_len = u16::from_le_bytes([plain[0], plain[1]]) as usize;
    if plain.len() < 2 + key_len {
        return Err("sealed partition key runs past the record");
    }
    let pk = std::str::from_utf8(&plain[2..2 + key_len])
        .map_err(|_| "sealed partition key is not UTF-8")?
        .to_string();
    Ok((pk, plain[2 + key_len..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> Key {
        Key::new("k", [b; KEY_BYTES])
    }

    #[test]
    fn sealed_records_open_only_with_their_key_stream_and_shard() {
        let env = seal(&key(1), 3, 7, 9, "pk", b"hello").unwrap();
        assert_eq!(env.len(), b"pkhello".len() + ENVELOPE_OVERHEAD_BYTES);
        assert_eq!(slot_of(&env), Some(3));
        assert_eq!(
            open(&key(1), 7, 9, &env).unwrap(),
            ("pk".to_string(), b"hello".to_vec())
        );
        assert!(open(&key(2), 7, 9, &env).is_err());
        assert!(open(&key(1), 8, 9, &env).is_err());
        assert!(open(&key(1), 7, 10, &env).is_err());
        assert!(
            !env.windows(5).any(|w| w == b"hello"),
            "plaintext must not appear"
        );
    }

    #[test]
    fn nonces_differ_between_records() {
        let a = seal(&key(1), 0, 1, 1, "k", b"same").unwrap();
        let b = seal(&key(1), 0, 1, 1, "k", b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn key_refs_resolve_by_id_arn_alias_and_alias_arn() {
        let ring = Keyring::from_specs(vec![KeySpec {
            id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            aliases: vec!["alias/orders".into()],
            material: base64::engine::general_purpose::STANDARD.encode([5u8; 32]),
            state: KeyState::Enabled,
        }])
        .unwrap();
        for r in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/orders",
            "arn:aws:kms:us-east-1:111122223333:alias/orders",
        ] {
            assert!(ring.resolve(r).is_some(), "{r}");
        }
        assert!(ring.resolve("alias/other").is_none());
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        let spec = |id: &str, material: &str| KeySpec {
            id: id.into(),
            aliases: vec![],
            material: material.into(),
            state: KeyState::Enabled,
        };
        let good = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(Keyring::from_specs(vec![spec("a", "AAAA")])
            .unwrap_err()
            .contains("32 bytes"));
        assert!(Keyring::from_specs(vec![spec("a", "!!")])
            .unwrap_err()
            .contains("base64"));
        assert!(Keyring::from_specs(vec![spec("a", &good), spec("a", &good)])
            .unwrap_err()
            .contains("repeats"));
        assert!(Keyring::from_specs(vec![spec("alias/x", &good)]).is_err());
    }

    proptest! {
        #[test]
        fn any_record_round_trips_and_any_damage_is_detected(
            pk in "[a-zA-Z0-9]{1,64}",
            data in proptest::collection::vec(any::<u8>(), 0..512),
            flip in any::<prop::sample::Index>(),
        ) {
            let env = seal(&key(9), 1, 2, 3, &pk, &data).unwrap();
            prop_assert_eq!(open(&key(9), 2, 3, &env).unwrap(), (pk, data));
            let mut bad = env.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x01;
            prop_assert!(open(&key(9), 2, 3, &bad).is_err());
        }

        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = open(&key(0), 0, 0, &bytes);
        }
    }
}
