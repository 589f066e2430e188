//! AWS Signature Version 4 verification against keys from an AWS
//! shared-credentials file.
//!
//! A [`Verifier`] holds the keys of one INI file (`[profile]` sections with
//! `aws_access_key_id`, `aws_secret_access_key` and an optional `account_id`)
//! and rereads the file when its modification time or length changes, at
//! most once a second, so keys can be added or rotated without a restart.
//! [`Verifier::verify`] checks a request signed in the `Authorization`
//! header or in a presigned URL's query string and answers the identity it
//! was signed by, or the error AWS would send.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::error::ApiError;

/// The only algorithm SigV4 signers use with access keys.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The signing name of the Kinesis API.
pub const SERVICE: &str = "kinesis";
/// How far a signature's time may be from the server's clock, as on AWS.
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(300);
/// The longest validity a presigned URL may ask for (seven days, as on AWS).
pub const PRESIGNED_EXPIRES_MAX_SECS: u64 = 604_800;
/// The account of keys whose profile names none.
pub const DEFAULT_ACCOUNT_ID: &str = shardlog_stream::engine::DEFAULT_ACCOUNT_ID;
/// How often, at most, the credentials file's metadata is looked at.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const TERMINATOR: &str = "aws4_request";
const SIGNATURE_EXPIRED_HINT: &str = "5 min.";

/// SigV4's URI encoding: everything but the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`) is percent-encoded with upper-case hex.
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

type HmacSha256 = Hmac<Sha256>;

/// Why a credentials file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read credentials file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("credentials file {path} is not valid INI: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("credentials file {path}: profile [{profile}] has {present} but no {missing}")]
    Incomplete {
        path: PathBuf,
        profile: String,
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "credentials file {path}: profile [{profile}] has account_id {account:?}, which is not 12 digits"
    )]
    BadAccount {
        path: PathBuf,
        profile: String,
        account: String,
    },
    #[error("credentials file {path}: access key id {key_id} is in both [{first}] and [{second}]")]
    DuplicateKey {
        path: PathBuf,
        key_id: String,
        first: String,
        second: String,
    },
    #[error("credentials file {path} has no profile with aws_access_key_id and aws_secret_access_key")]
    NoKeys { path: PathBuf },
}

/// One access key's secret and account. The secret never reaches `Debug`
/// output or logs.
#[derive(Clone)]
struct Key {
    secret: String,
    account: String,
    profile: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("account", &self.account)
            .field("profile", &self.profile)
            .field("secret", &"<redacted>")
            .finish()
    }
}

type Keys = Arc<HashMap<String, Key>>;

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a shared-credentials file's text into keys by access key id.
fn parse_credentials(path: &Path, text: &str) -> Result<HashMap<String, Key>, LoadError> {
    // The AWS CLI reads these files without backslash escapes; secrets are
    // base64-like and must come through byte for byte.
    let ini = ini::Ini::load_from_str_noescape(text).map_err(|e| LoadError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut keys: HashMap<String, Key> = HashMap::new();
    for (section, props) in &ini {
        let profile = section.unwrap_or("").trim().to_string();
        let id = props
            .get("aws_access_key_id")
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let secret = props
            .get("aws_secret_access_key")
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let (id, secret) = match (id, secret) {
            (Some(id), Some(secret)) => (id, secret),
            // Profiles that only set a region or output format are normal
            // in these files and carry no key.
            (None, None) => continue,
            (Some(_), None) => {
                return Err(LoadError::Incomplete {
                    path: path.to_path_buf(),
                    profile,
                    present: "aws_access_key_id",
                    missing: "aws_secret_access_key",
                })
            }
            (None, Some(_)) => {
                return Err(LoadError::Incomplete {
                    path: path.to_path_buf(),
                    profile,
                    present: "aws_secret_access_key",
                    missing: "aws_access_key_id",
                })
            }
        };
        let account = match props.get("account_id").map(str::trim) {
            None | Some("") => DEFAULT_ACCOUNT_ID.to_string(),
            Some(a) if is_account_id(a) => a.to_string(),
            Some(a) => {
                return Err(LoadError::BadAccount {
                    path: path.to_path_buf(),
                    profile,
                    account: a.to_string(),
                })
            }
        };
        if let Some(other) = keys.get(id) {
            return Err(LoadError::DuplicateKey {
                path: path.to_path_buf(),
                key_id: id.to_string(),
                first: other.profile.clone(),
                second: profile,
            });
        }
        keys.insert(
            id.to_string(),
            Key {
                secret: secret.to_string(),
                account,
                profile,
            },
        );
    }
    if keys.is_empty() {
        // An empty file is most likely one caught in the middle of being
        // rewritten; refusing it keeps the previous keys in service.
        return Err(LoadError::NoKeys {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

/// What identifies one version of the credentials file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp_of(path: &Path) -> std::io::Result<FileStamp> {
    let m = std::fs::metadata(path)?;
    Ok(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

fn load(path: &Path) -> Result<(HashMap<String, Key>, FileStamp), LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    // The stamp is taken before the read: a write racing the read changes
    // the stamp again, so the next check rereads the file.
    let stamp = stamp_of(path).map_err(read_err)?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    Ok((parse_credentials(path, &text)?, stamp))
}

#[derive(Debug)]
struct State {
    keys: Keys,
    /// The stamp of the file version last tried, loaded or not, so that a
    /// broken file is reported once rather than every second.
    seen: Option<FileStamp>,
    checked: Instant,
}

/// Verifies SigV4 signatures with the keys of a shared-credentials file.
#[derive(Debug)]
pub struct Verifier {
    path: PathBuf,
    state: Mutex<State>,
}

/// Who signed a verified request, and for which region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub access_key_id: String,
    pub account: String,
    pub region: String,
}

/// The parts of an HTTP request that SigV4 covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as it came on the wire (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The request's authority, for HTTP/2 requests that carry `:authority`
    /// instead of a `Host` header.
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

impl Verifier {
    /// Loads the credentials file; it must hold at least one key.
    pub fn load(path: impl Into<PathBuf>) -> Result<Verifier, LoadError> {
        let path = path.into();
        let (keys, stamp) = load(&path)?;
        Ok(Verifier {
            path,
            state: Mutex::new(State {
                keys: Arc::new(keys),
                seen: Some(stamp),
                checked: Instant::now(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many access keys are in service.
    pub fn key_count(&self) -> usize {
        self.keys().len()
    }

    /// Whether any key in service belongs to `account`.
    pub fn knows_account(&self, account: &str) -> bool {
        self.keys().values().any(|k| k.account == account)
    }

    /// The keys in service, rereading the file first when it changed and
    /// the last look is at least a second old.
    fn keys(&self) -> Keys {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            st.checked = Instant::now();
            self.reload_if_changed(&mut st);
        }
        st.keys.clone()
    }

    fn reload_if_changed(&self, st: &mut State) {
        let stamp = stamp_of(&self.path).ok();
        if stamp == st.seen {
            return;
        }
        st.seen = stamp;
        match load(&self.path) {
            Ok((keys, stamp)) => {
                st.seen = Some(stamp);
                st.keys = Arc::new(keys);
                tracing::info!(
                    path = %self.path.display(),
                    keys = st.keys.len(),
                    "credentials file reloaded"
                );
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    keys = st.keys.len(),
                    "credentials file not reloaded; the previous keys stay in service"
                );
            }
        }
    }

    /// Verifies a request's SigV4 signature at time `now`.
    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Identity, ApiError> {
        let auth = parse_auth(req)?;
        check_scope(&auth)?;
        let signed_at = parse_amz_date(&auth.amz_date)?;
        check_time(&auth, signed_at, now)?;
        if req.headers.contains_key("x-amz-security-token")
            || query_param(req.query, "X-Amz-Security-Token").is_some()
        {
            // This server issues no temporary credentials, so no session
            // token can be valid.
            return Err(unrecognized_client());
        }
        let keys = self.keys();
        let key = keys.get(&auth.key_id).ok_or_else(unrecognized_client)?;
        let provided = hex::decode(&auth.signature).map_err(|_| signature_mismatch())?;
        let mut matched = false;
        for candidate in expected_signatures(req, &auth, &key.secret)? {
            // Constant time, so response timing tells nothing about how
            // much of a forged signature was right.
            matched |= bool::from(candidate.signature.as_slice().ct_eq(provided.as_slice()));
        }
        if !matched {
            return Err(signature_mismatch());
        }
        Ok(Identity {
            access_key_id: auth.key_id,
            account: key.account.clone(),
            region: auth.region,
        })
    }
}

/// A request's SigV4 parameters, from the header or the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Auth {
    key_id: String,
    date: String,
    region: String,
    service: String,
    terminator: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    /// `X-Amz-Expires` of a presigned URL; `None` for the header form.
    presigned: Option<u64>,
}

impl Auth {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.date, self.region, self.service, self.terminator
        )
    }
}

fn missing_token() -> ApiError {
    ApiError {
        status: 403,
        ..ApiError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    }
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::new("IncompleteSignatureException", message)
}

fn invalid_signature(message: impl Into<String>) -> ApiError {
    ApiError::new("InvalidSignatureException", message)
}

fn signature_mismatch() -> ApiError {
    invalid_signature(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

fn unrecognized_client() -> ApiError {
    ApiError::new(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
}

/// The decoded value of the first query parameter named `name`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode_component(k) == name).then(|| decode_component(v))
    })
}

/// Decodes a query component as `application/x-www-form-urlencoded` does
/// (`+` is a space), which is how the AWS signers read query strings.
fn decode_component(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_decode(plus_as_space.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_auth(req: &SignedRequest<'_>) -> Result<Auth, ApiError> {
    if let Some(value) = req.headers.get("authorization") {
        let value = value
            .to_str()
            .map_err(|_| incomplete("Authorization header is not valid ASCII."))?;
        return parse_auth_header(value, req.headers);
    }
    let presigned = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"]
        .iter()
        .any(|p| query_param(req.query, p).is_some());
    if presigned {
        return parse_presigned(req.query);
    }
    Err(missing_token())
}

fn parse_credential(credential: &str) -> Result<(String, String, String, String, String), ApiError> {
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    }
    Ok((
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
        parts[4].to_string(),
    ))
}

fn signed_header_list(list: &str) -> Vec<String> {
    list.split(';').map(|h| h.trim().to_ascii_lowercase()).collect()
}

fn parse_auth_header(value: &str, headers: &HeaderMap) -> Result<Auth, ApiError> {
    let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Authorization={value}"
        )));
    }
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            if part.is_empty() {
                continue;
            }
            return Err(incomplete(format!(
                "Authorization header requires each component to be of the form name=value. Authorization={value}"
            )));
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let mut problems = String::new();
    for (name, got) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed),
    ] {
        if got.is_none_or(str::is_empty) {
            problems.push_str(&format!("Authorization header requires '{name}' parameter. "));
        }
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok());
    if amz_date.is_none() {
        problems.push_str("Authorization header requires existence of a 'X-Amz-Date' header. ");
    }
    if !problems.is_empty() {
        return Err(incomplete(format!("{problems}Authorization={value}")));
    }
    let (key_id, date, region, service, terminator) = parse_credential(credential.unwrap_or(""))?;
    Ok(Auth {
        key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed_header_list(signed.unwrap_or("")),
        signature: signature.unwrap_or("").to_string(),
        amz_date: amz_date.unwrap_or("").trim().to_string(),
        presigned: None,
    })
}

fn parse_presigned(query: Option<&str>) -> Result<Auth, ApiError> {
    const PARAMS: [&str; 6] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Date",
        "X-Amz-SignedHeaders",
        "X-Amz-Expires",
    ];
    let got: Vec<Option<String>> = PARAMS.iter().map(|p| query_param(query, p)).collect();
    let missing: Vec<String> = PARAMS
        .iter()
        .zip(&got)
        .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        .map(|(p, _)| format!("'{p}'"))
        .collect();
    if !missing.is_empty() {
        return Err(incomplete(format!(
            "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
            missing.join(", ")
        )));
    }
    let value = |i: usize| got[i].clone().unwrap_or_default();
    if value(0) != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Re-examine the query-string parameters.",
            value(0)
        )));
    }
    let expires: u64 = value(5).parse().map_err(|_| {
        incomplete(format!(
            "X-Amz-Expires must be a whole number of seconds, got '{}'.",
            value(5)
        ))
    })?;
    if expires > PRESIGNED_EXPIRES_MAX_SECS {
        return Err(incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is {PRESIGNED_EXPIRES_MAX_SECS}, got {expires}."
        )));
    }
    let (key_id, date, region, service, terminator) = parse_credential(&value(1))?;
    Ok(Auth {
        key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed_header_list(&value(4)),
        signature: value(2),
        amz_date: value(3),
        presigned: Some(expires),
    })
}

fn check_scope(auth: &Auth) -> Result<(), ApiError> {
    if auth.service != SERVICE {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{SERVICE}'. "
        )));
    }
    if auth.terminator != TERMINATOR {
        return Err(invalid_signature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'. ",
            auth.terminator
        )));
    }
    let region_ok = !auth.region.is_empty()
        && auth
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(invalid_signature(
            "Credential should be scoped to a valid region. ",
        ));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if auth.amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            auth.date,
            auth.amz_date.get(..8).unwrap_or(&auth.amz_date),
            auth.amz_date
        )));
    }
    Ok(())
}

const AMZ_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Parses an ISO-8601 basic timestamp (`20150830T123600Z`).
pub fn parse_amz_date(s: &str) -> Result<SystemTime, ApiError> {
    PrimitiveDateTime::parse(s, AMZ_DATE)
        .map(|t| SystemTime::from(t.assume_utc()))
        .map_err(|_| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{s}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ))
        })
}

/// Formats a time as an ISO-8601 basic timestamp (`20150830T123600Z`).
pub fn format_amz_date(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(AMZ_DATE)
        .unwrap_or_else(|_| "00000000T000000Z".to_string())
}

fn check_time(auth: &Auth, signed_at: SystemTime, now: SystemTime) -> Result<(), ApiError> {
    let earliest = now.checked_sub(CLOCK_SKEW_MAX).unwrap_or(SystemTime::UNIX_EPOCH);
    let latest = now + CLOCK_SKEW_MAX;
    let stamp = format_amz_date;
    match auth.presigned {
        None if signed_at < earliest => Err(invalid_signature(format!(
            "Signature expired: {} is now earlier than {} ({} - {SIGNATURE_EXPIRED_HINT})",
            auth.amz_date,
            stamp(earliest),
            stamp(now)
        ))),
        Some(expires) if signed_at + Duration::from_secs(expires) < now => Err(invalid_signature(format!(
            "Signature expired: {} is now earlier than {} ({} - {expires} sec.)",
            auth.amz_date,
            stamp(
                now.checked_sub(Duration::from_secs(expires))
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            ),
            stamp(now)
        ))),
        _ if signed_at > latest => Err(invalid_signature(format!(
            "Signature not yet current: {} is still later than {} ({} + {SIGNATURE_EXPIRED_HINT})",
            auth.amz_date,
            stamp(latest),
            stamp(now)
        ))),
        _ => Ok(()),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The payload hashes a signature may cover. The header form signs the
/// body's SHA-256, or the `x-amz-content-sha256` value, which must then be
/// the body's hash. A presigned URL may also sign `UNSIGNED-PAYLOAD`; the
/// server cannot tell which its signer chose, so both are tried.
fn payload_hashes(req: &SignedRequest<'_>, auth: &Auth) -> Result<Vec<String>, ApiError> {
    let body_hash = sha256_hex(req.body);
    let declared = req
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .or_else(|| query_param(req.query, "X-Amz-Content-Sha256"));
    match (declared, auth.presigned) {
        (Some(d), Some(_)) if d == UNSIGNED_PAYLOAD => Ok(vec![d]),
        (Some(d), None) if d == UNSIGNED_PAYLOAD => Err(invalid_signature(
            "UNSIGNED-PAYLOAD is accepted only in presigned URLs; sign the request body.",
        )),
        (Some(d), _) if d.eq_ignore_ascii_case(&body_hash) => Ok(vec![d]),
        (Some(_), _) => Err(invalid_signature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )),
        (None, Some(_)) => Ok(vec![body_hash, UNSIGNED_PAYLOAD.to_string()]),
        (None, None) => Ok(vec![body_hash]),
    }
}

/// The canonical URI: the wire path with `.` and `..` segments resolved and
/// empty segments dropped, each segment percent-encoded again (so `%3A`
/// becomes `%253A`), as every service but S3 signs it.
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return "/".to_string();
    }
    let mut out = String::new();
    for seg in &segments {
        out.push('/');
        out.extend(utf8_percent_encode(seg, SIGV4_ENCODE));
    }
    // A trailing slash is part of the resource's name and stays signed.
    if path.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string: every parameter decoded, re-encoded the
/// SigV4 way and sorted by name then value; a presigned URL's own
/// `X-Amz-Signature` is left out.
pub fn canonical_query(query: Option<&str>, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_component(k), decode_component(v))
        })
        .filter(|(k, _)| !(presigned && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, SIGV4_ENCODE).to_string(),
                utf8_percent_encode(&v, SIGV4_ENCODE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses runs of spaces and tabs to one space.
fn squash(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical headers block: `name:value\n` for every signed header,
/// in the order the signer listed them, repeated headers joined by commas.
fn canonical_headers(req: &SignedRequest<'_>, signed: &[String]) -> Result<String, ApiError> {
    let mut out = String::new();
    for name in signed {
        if name.is_empty() {
            return Err(incomplete("SignedHeaders must not contain an empty header name."));
        }
        let mut values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| squash(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() && name == "host" {
            if let Some(a) = req.authority {
                values.push(a.to_string());
            }
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// One way the request may have been signed: its canonical request, string
/// to sign and signature. Verification needs only the signature; the other
/// two are kept for the checks against AWS's test suite.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
struct Expected {
    canonical_request: String,
    string_to_sign: String,
    signature: Vec<u8>,
}

/// The signatures the request would carry if signed with `secret`: one,
/// or two for a presigned URL that may have left its payload unsigned.
fn expected_signatures(
    req: &SignedRequest<'_>,
    auth: &Auth,
    secret: &str,
) -> Result<Vec<Expected>, ApiError> {
    let headers = canonical_headers(req, &auth.signed_headers)?;
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let uri = canonical_uri(req.path);
    let query = canonical_query(req.query, auth.presigned.is_some());
    let mut out = Vec::new();
    for payload_hash in payload_hashes(req, auth)? {
        let canonical_request = canonical_request(
            req.method,
            &uri,
            &query,
            &headers,
            &auth.signed_headers.join(";"),
            &payload_hash,
        );
        let string_to_sign = string_to_sign(&auth.amz_date, &auth.scope(), &canonical_request);
        let signature = hmac_sha256(&key, string_to_sign.as_bytes());
        out.push(Expected {
            canonical_request,
            string_to_sign,
            signature,
        });
    }
    Ok(out)
}

fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n{uri}\n{query}\n{headers}\n{signed_headers}\n{payload_hash}")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail; an empty key is
    // the fallback that keeps the function total.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

#[cfg(test)]
mod tests;
