//! The wire formats: awsJson 1.1 and the Java SDK's CBOR dialect.
//!
//! Requests in either format are decoded into one JSON-like tree
//! (`serde_json::Value`) in which blobs are base64 strings and timestamps are
//! epoch seconds, so every operation is written once. Responses go the other
//! way: for CBOR, `Data` becomes a byte string and the timestamp members
//! become tag 1 around integer epoch milliseconds, as the Java SDK expects.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub const CBOR_CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

/// Members that hold timestamps.
const TIMESTAMP_MEMBERS: &[&str] = &[
    "ApproximateArrivalTimestamp",
    "StreamCreationTimestamp",
    "ConsumerCreationTimestamp",
    "Timestamp",
];
/// Members that hold blobs.
const BLOB_MEMBERS: &[&str] = &["Data"];
/// Most arrays and maps nested in one another that a request may hold:
/// what serde_json accepts in JSON (its recursion limit of 128), so both
/// formats accept the same trees and whatever is decoded can be encoded to
/// either and read back.
pub const NESTING_MAX: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Cbor,
}

impl Format {
    pub fn from_content_type(ct: Option<&str>) -> Format {
        match ct {
            Some(ct) if ct.starts_with(CBOR_CONTENT_TYPE) => Format::Cbor,
            _ => Format::Json,
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Json => JSON_CONTENT_TYPE,
            Format::Cbor => CBOR_CONTENT_TYPE,
        }
    }
}

/// Decodes a request body. An empty body is an empty object.
pub fn decode(format: Format, body: &[u8]) -> Result<Value, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Map::new()));
    }
    let v = match format {
        Format::Json => serde_json::from_slice::<Value>(body).map_err(|e| format!("Malformed JSON: {e}"))?,
        Format::Cbor => {
            let c: ciborium::Value =
                ciborium::from_reader(body).map_err(|e| format!("Malformed CBOR: {e}"))?;
            cbor_to_json(c, 0)?
        }
    };
    if !v.is_object() {
        return Err("The request body must be an object.".into());
    }
    Ok(v)
}

fn cbor_to_json(c: ciborium::Value, depth: usize) -> Result<Value, String> {
    use ciborium::Value as C;
    if matches!(c, C::Array(_) | C::Map(_)) && depth >= NESTING_MAX {
        return Err("Malformed CBOR: nesting is too deep".into());
    }
    Ok(match c {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i: i128 = i.into();
            if let Ok(v) = i64::try_from(i) {
                Value::Number(v.into())
            } else if let Ok(v) = u64::try_from(i) {
                Value::Number(v.into())
            } else {
                return Err("CBOR integer out of range".into());
            }
        }
        C::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or("CBOR float is not finite")?,
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        C::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| cbor_to_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        C::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let C::Text(k) = k else {
                    return Err("CBOR map keys must be text".into());
                };
                out.insert(k, cbor_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        // Tag 1: epoch time. The Java SDK puts integer milliseconds inside
        // (against RFC 8949); a float is taken as seconds, as the RFC says.
        C::Tag(1, inner) => match *inner {
            C::Integer(i) => {
                let ms: i128 = i.into();
                Number::from_f64(ms as f64 / 1000.0)
                    .map(Value::Number)
                    .ok_or("bad timestamp")?
            }
            C::Float(f) => Number::from_f64(f).map(Value::Number).ok_or("bad timestamp")?,
            _ => return Err("CBOR tag 1 must hold a number".into()),
        },
        C::Tag(_, inner) => cbor_to_json(*inner, depth)?,
        _ => return Err("unsupported CBOR value".into()),
    })
}

/// Encodes a response body.
pub fn encode(format: Format, v: &Value) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(v).unwrap_or_default(),
        Format::Cbor => {
            let mut out = Vec::new();
            // Writing into a Vec cannot fail; an empty body is the fallback.
            let _ = ciborium::into_writer(&json_to_cbor(None, v), &mut out);
            out
        }
    }
}

fn json_to_cbor(key: Option<&str>, v: &Value) -> ciborium::Value {
    use ciborium::Value as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => {
            if key.is_some_and(|k| TIMESTAMP_MEMBERS.contains(&k)) {
                let ms = (n.as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
                return C::Tag(1, Box::new(C::Integer(ms.into())));
            }
            if let Some(i) = n.as_i64() {
                C::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                C::Integer(u.into())
            } else {
                C::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => {
            if key.is_some_and(|k| BLOB_MEMBERS.contains(&k)) {
                if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(s) {
                    return C::Bytes(b);
                }
            }
            C::Text(s.clone())
        }
        Value::Array(a) => C::Array(a.iter().map(|x| json_to_cbor(key, x)).collect()),
        Value::Object(m) => C::Map(
            m.iter()
                .map(|(k, x)| (C::Text(k.clone()), json_to_cbor(Some(k), x)))
                .collect(),
        ),
    }
}

/// Epoch seconds with millisecond fraction, as Kinesis sends timestamps.
pub fn timestamp(ms: i64) -> Value {
    Number::from_f64(ms as f64 / 1000.0)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn reference_cbor_put_record_request_decodes() {
        let body = hex("a3 6a 53 74 72 65 61 6d 4e 61 6d 65 61 73 64 44 61 74 61 45 68 65 6c 6c 6f 6c 50 61 72 74 69 74 69 6f 6e 4b 65 79 61 6b");
        let v = decode(Format::Cbor, &body).unwrap();
        assert_eq!(v["StreamName"], "s");
        assert_eq!(v["PartitionKey"], "k");
        assert_eq!(
            v["Data"],
            base64::engine::general_purpose::STANDARD.encode(b"hello")
        );
    }

    #[test]
    fn cbor_timestamps_are_tag_1_milliseconds_both_ways() {
        let ts = hex("c1 1b 00 00 01 8b cf e5 68 7b");
        let mut body = hex("a1 69"); // map of 1, text of 9: "Timestamp"
        body.extend_from_slice(b"Timestamp");
        body.extend_from_slice(&ts);
        let v = decode(Format::Cbor, &body).unwrap();
        assert_eq!(v["Timestamp"].as_f64(), Some(1_700_000_000.123));
        let out = encode(
            Format::Cbor,
            &serde_json::json!({"ApproximateArrivalTimestamp": timestamp(1_700_000_000_123)}),
        );
        assert!(out.windows(ts.len()).any(|w| w == ts.as_slice()), "{out:02x?}");
    }

    #[test]
    fn cbor_data_is_a_byte_string_in_responses() {
        let out = encode(Format::Cbor, &serde_json::json!({"Data": "aGVsbG8="}));
        let back: ciborium::Value = ciborium::from_reader(out.as_slice()).unwrap();
        let ciborium::Value::Map(m) = back else { panic!() };
        assert_eq!(m[0].1, ciborium::Value::Bytes(b"hello".to_vec()));
    }

    #[test]
    fn reference_cbor_error_encodes_byte_for_byte() {
        let v = serde_json::json!({"__type": "ResourceNotFoundException", "message": "Stream s under account 000000000000 not found."});
        let out = encode(Format::Cbor, &v);
        let prefix = hex("a2 66 5f 5f 74 79 70 65 78 19 52 65 73 6f 75 72 63 65 4e 6f 74 46 6f 75 6e 64 45 78 63 65 70 74 69 6f 6e 67 6d 65 73 73 61 67 65 78 2e");
        assert_eq!(&out[..prefix.len()], prefix.as_slice());
    }

    /// Found by the `request_cbor` fuzz target: CBOR nested deeper than
    /// JSON's limit decoded (ciborium allows 256 levels) although the same
    /// request in JSON is refused, so the two formats disagreed.
    #[test]
    fn cbor_nesting_is_limited_like_json() {
        let nested = |depth: usize| {
            let mut v = serde_json::json!(1);
            for _ in 1..depth {
                v = serde_json::json!([v]);
            }
            serde_json::json!({ "a": v })
        };
        let ok = nested(NESTING_MAX);
        let deep = nested(NESTING_MAX + 1);
        for format in [Format::Json, Format::Cbor] {
            assert_eq!(decode(format, &encode(format, &ok)), Ok(ok.clone()), "{format:?}");
            assert!(decode(format, &encode(format, &deep)).is_err(), "{format:?}");
        }
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert!(decode(Format::Json, b"{").is_err());
        assert!(decode(Format::Json, b"[1]").is_err());
        assert!(decode(Format::Cbor, &[0xff, 0x00]).is_err());
        assert!(decode(Format::Json, b"").unwrap().is_object());
    }

    /// serde_json's `raw_value` feature (axum's default "json" feature turns
    /// it on) gives one member name a meaning: an object whose first member
    /// is `$serde_json::private::RawValue` decodes as that member's string
    /// parsed as JSON, and one where it sorts first no longer decodes after
    /// encoding. Request bodies are plain JSON; the name is just a name.
    #[test]
    fn a_member_named_like_serde_jsons_raw_value_token_is_an_ordinary_member() {
        let token = "$serde_json::private::RawValue";
        let first = format!(r#"{{"{token}":"{{\"StreamName\":\"s\"}}"}}"#);
        let v = decode(Format::Json, first.as_bytes()).unwrap();
        assert_eq!(v[token], "{\"StreamName\":\"s\"}");
        assert!(v.get("StreamName").is_none());
        let later = format!(r#"{{"a":1,"{token}":"[[1"}}"#);
        let v = decode(Format::Json, later.as_bytes()).unwrap();
        let back = decode(Format::Json, &encode(Format::Json, &v)).unwrap();
        assert_eq!(back, v);
    }
}
