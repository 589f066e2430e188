//! The verifier against AWS's published SigV4 test vectors, against the
//! `aws-sigv4` signer (with property tests that every single-byte change is
//! caught), and the credentials file's loading and reloading.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

/// A request read from a test-suite file: method, path, query, headers and
/// body.
struct RawRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawRequest {
    fn parse(text: &str) -> RawRequest {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let first = lines.next().expect("request line");
        // The target may hold spaces (`get-space`): it runs from the first
        // space to the protocol.
        let (method, rest) = first.split_once(' ').expect("method");
        let method = method.to_string();
        let target = rest.rsplit_once(" HTTP/").expect("protocol").0;
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("header line");
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        RawRequest {
            method,
            path,
            query,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn signed(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            authority: None,
            body: &self.body,
        }
    }
}

const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn suite_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4-test-suite")
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// Checks one signed form (`header` or `query`) of a test-suite case: the
/// canonical request, string to sign and signature must be AWS's.
fn check_vector(dir: &Path, form: &str) {
    let req = RawRequest::parse(&read(dir, &format!("{form}-signed-request.txt")));
    let auth = parse_auth(&req.signed()).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
    assert_eq!(auth.presigned.is_some(), form == "query");
    let want_canonical = read(dir, &format!("{form}-canonical-request.txt"));
    let candidates = expected_signatures(&req.signed(), &auth, SUITE_SECRET).unwrap();
    let got = candidates
        .iter()
        .find(|c| c.canonical_request == want_canonical)
        .unwrap_or_else(|| {
            panic!(
                "{} ({form}): canonical request differs.\nwant:\n{want_canonical}\ngot:\n{}",
                dir.display(),
                candidates[0].canonical_request
            )
        });
    assert_eq!(
        got.string_to_sign,
        read(dir, &format!("{form}-string-to-sign.txt")),
        "{}",
        dir.display()
    );
    assert_eq!(
        hex::encode(&got.signature),
        read(dir, &format!("{form}-signature.txt")).trim(),
        "{}",
        dir.display()
    );
    assert_eq!(hex::encode(&got.signature), auth.signature);
}

#[test]
fn canonicalization_matches_every_aws_test_suite_vector() {
    let mut cases = 0;
    for entry in std::fs::read_dir(suite_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        check_vector(&dir, "header");
        check_vector(&dir, "query");
        cases += 1;
    }
    assert_eq!(cases, 27, "every kept vector was checked");
}

#[test]
fn paths_are_normalized_and_encoded_twice_as_non_s3_services_sign_them() {
    // The suite's `double-url-encode` case (a Lambda ARN in the path).
    assert_eq!(
        canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations"),
        "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations"
    );
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("//a/./b/../c//"), "/a/c/");
    assert_eq!(
        canonical_query(Some("b=2&a=1&X-Amz-Signature=ff"), true),
        "a=1&b=2"
    );
    assert_eq!(canonical_query(Some("a=x y&a=+"), false), "a=%20&a=x%20y");
}

fn credentials_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("credentials");
    std::fs::write(&path, text).unwrap();
    path
}

const KEY_ID: &str = "AKIDKINESISTEST";
const SECRET: &str = "kinesis/secret+key";
const ACCOUNT: &str = "111122223333";

fn verifier(dir: &Path) -> Verifier {
    let text = format!(
        "[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\naccount_id = {ACCOUNT}\n\n[other]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=other\nregion=eu-west-1\n"
    );
    Verifier::load(credentials_file(dir, &text)).unwrap()
}

/// An http request signed by the `aws-sigv4` crate at `time`, in the header
/// or as a presigned URL valid for five minutes.
fn aws_signed(
    body: &[u8],
    extra: &str,
    time: SystemTime,
    location: SignatureLocation,
) -> http::Request<Vec<u8>> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("http://127.0.0.1:4567/")
        .header("host", "127.0.0.1:4567")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.PutRecord")
        .header("x-extra", extra)
        .body(body.to_vec())
        .unwrap();
    let identity = Credentials::new(KEY_ID, SECRET, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = location;
    if location == SignatureLocation::QueryParams {
        settings.expires_in = Some(Duration::from_secs(300));
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-central-1")
        .name("kinesis")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        req.uri().to_string(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut req);
    req
}

fn verify(v: &Verifier, req: &http::Request<Vec<u8>>, now: SystemTime) -> Result<Identity, ApiError> {
    v.verify(
        &SignedRequest {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            authority: None,
            body: req.body(),
        },
        now,
    )
}

fn t0() -> SystemTime {
    parse_amz_date("20261126T011500Z").unwrap()
}

#[test]
fn requests_signed_by_aws_sigv4_verify_and_carry_the_keys_account_and_region() {
    let tmp = tempfile::tempdir().unwrap();
    let v = verifier(tmp.path());
    for location in [SignatureLocation::Headers, SignatureLocation::QueryParams] {
        let req = aws_signed(br#"{"StreamName":"s"}"#, "x", t0(), location);
        let id = verify(&v, &req, t0() + Duration::from_secs(60)).unwrap();
        assert_eq!(
            id,
            Identity {
                access_key_id: KEY_ID.into(),
                account: ACCOUNT.into(),
                region: "eu-central-1".into()
            }
        );
    }
}

#[test]
fn times_outside_the_skew_or_a_presigned_validity_are_refused_with_awss_wording() {
    let tmp = tempfile::tempdir().unwrap();
    let v = verifier(tmp.path());
    let signed_at = parse_amz_date("20261126T010203Z").unwrap();
    let req = aws_signed(b"{}", "x", signed_at, SignatureLocation::Headers);
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!(e.kind, "InvalidSignatureException");
    assert_eq!(
        e.message,
        "Signature expired: 20261126T010203Z is now earlier than 20261126T011000Z (20261126T011500Z - 5 min.)"
    );
    let e = verify(&v, &req, signed_at - Duration::from_secs(301)).unwrap_err();
    assert!(
        e.message
            .starts_with("Signature not yet current: 20261126T010203Z is still later than"),
        "{}",
        e.message
    );
    assert!(verify(&v, &req, signed_at + Duration::from_secs(299)).is_ok());
    let presigned = aws_signed(b"{}", "x", signed_at, SignatureLocation::QueryParams);
    assert!(verify(&v, &presigned, signed_at + Duration::from_secs(300)).is_ok());
    let e = verify(&v, &presigned, signed_at + Duration::from_secs(301)).unwrap_err();
    assert!(
        e.message.starts_with("Signature expired: 20261126T010203Z"),
        "{}",
        e.message
    );
}

#[test]
fn malformed_unknown_and_missing_authentication_get_awss_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let v = verifier(tmp.path());
    let mut req = aws_signed(b"{}", "x", t0(), SignatureLocation::Headers);
    let original = req.headers()["authorization"].to_str().unwrap().to_string();
    let with_auth = |req: &mut http::Request<Vec<u8>>, value: &str| {
        req.headers_mut()
            .insert("authorization", HeaderValue::from_str(value).unwrap());
    };

    let no_sig = original.split(", Signature=").next().unwrap().to_string();
    with_auth(&mut req, &no_sig);
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!((e.kind, e.status), ("IncompleteSignatureException", 400));
    assert!(e.message.starts_with(
        "Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential="
    ));

    with_auth(&mut req, &original.replace("/kinesis/", "/s3/"));
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!(e.kind, "InvalidSignatureException");
    assert_eq!(
        e.message,
        "Credential should be scoped to correct service: 'kinesis'. "
    );

    with_auth(&mut req, &original.replace("/20261126/", "/20261125/"));
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!(e.kind, "InvalidSignatureException");
    assert!(
        e.message.starts_with("Date in Credential scope does not match"),
        "{}",
        e.message
    );

    with_auth(&mut req, &original.replace(KEY_ID, "AKIDUNKNOWN"));
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!(e.kind, "UnrecognizedClientException");
    assert_eq!(
        e.message,
        "The security token included in the request is invalid."
    );

    with_auth(
        &mut req,
        &original
            .replace("SignedHeaders=", "SignedHeaders=x-extra;")
            .replace(";host;", ";"),
    );
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!(e.kind, "IncompleteSignatureException");

    req.headers_mut().remove("authorization");
    let e = verify(&v, &req, t0()).unwrap_err();
    assert_eq!((e.kind, e.status), ("MissingAuthenticationTokenException", 403));
    assert_eq!(e.message, "Missing Authentication Token");
}

#[test]
fn a_content_hash_header_must_be_the_bodys_and_unsigned_payload_is_only_for_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let v = verifier(tmp.path());
    let mut req = aws_signed(b"{}", "x", t0(), SignatureLocation::Headers);
    req.headers_mut().insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert_eq!(
        verify(&v, &req, t0()).unwrap_err().kind,
        "InvalidSignatureException"
    );
    req.headers_mut().insert(
        "x-amz-content-sha256",
        HeaderValue::from_str(&sha256_hex(b"{ }")).unwrap(),
    );
    let e = verify(&v, &req, t0()).unwrap_err();
    assert!(e.message.contains("x-amz-content-sha256"), "{}", e.message);
}

/// Flips one bit of byte `at` (modulo the length).
fn flip(bytes: &mut [u8], at: usize, bit: u8) {
    let i = at % bytes.len();
    bytes[i] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_single_byte_change_to_body_signed_header_or_signature_fails(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        extra in "[a-zA-Z0-9]{1,40}",
        at in any::<usize>(),
        bit in any::<u8>(),
        presigned in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let v = verifier(tmp.path());
        let location = if presigned { SignatureLocation::QueryParams } else { SignatureLocation::Headers };
        let req = aws_signed(&body, &extra, t0(), location);
        prop_assert!(verify(&v, &req, t0()).is_ok());

        let mut tampered = req.clone();
        flip(tampered.body_mut(), at, bit);
        prop_assert_eq!(verify(&v, &tampered, t0()).unwrap_err().kind, "InvalidSignatureException");

        // A changed signed header; bits that would make the value invalid
        // in HTTP are replaced by a letter change instead.
        let mut value = extra.clone().into_bytes();
        let i = at % value.len();
        value[i] = if value[i] == b'a' { b'b' } else { b'a' };
        let mut tampered = req.clone();
        tampered.headers_mut().insert("x-extra", HeaderValue::from_bytes(&value).unwrap());
        prop_assert_eq!(verify(&v, &tampered, t0()).unwrap_err().kind, "InvalidSignatureException");

        // One hex digit of the signature changed.
        let mut tampered = req.clone();
        if presigned {
            let uri = tampered.uri().to_string();
            let (head, sig) = uri.split_once("X-Amz-Signature=").unwrap();
            let mut sig = sig.as_bytes().to_vec();
            let j = at % 64;
            sig[j] = if sig[j] == b'0' { b'1' } else { b'0' };
            *tampered.uri_mut() = format!("{head}X-Amz-Signature={}", String::from_utf8(sig).unwrap()).parse().unwrap();
        } else {
            let auth = tampered.headers()["authorization"].to_str().unwrap().to_string();
            let (head, sig) = auth.split_once("Signature=").unwrap();
            let mut sig = sig.as_bytes().to_vec();
            let j = at % sig.len();
            sig[j] = if sig[j] == b'0' { b'1' } else { b'0' };
            let changed = format!("{head}Signature={}", String::from_utf8(sig).unwrap());
            tampered.headers_mut().insert("authorization", HeaderValue::from_str(&changed).unwrap());
        }
        prop_assert_eq!(verify(&v, &tampered, t0()).unwrap_err().kind, "InvalidSignatureException");
    }
}

#[test]
fn credentials_files_give_accounts_and_refuse_what_they_cannot_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let v = Verifier::load(credentials_file(
        tmp.path(),
        "[a]\naws_access_key_id=K1\naws_secret_access_key=s1\n[b]\naws_access_key_id=K2\naws_secret_access_key=s2\naccount_id=222222222222\n[c]\nregion=us-east-1\n",
    ))
    .unwrap();
    assert_eq!(v.key_count(), 2);
    assert!(v.knows_account(DEFAULT_ACCOUNT_ID));
    assert!(v.knows_account("222222222222"));
    assert!(!v.knows_account("333333333333"));
    let bad = [
        ("[a]\naws_access_key_id=K1\n", "no aws_secret_access_key"),
        ("[a]\naws_access_key_id=K1\naws_secret_access_key=s\naccount_id=12\n", "not 12 digits"),
        (
            "[a]\naws_access_key_id=K1\naws_secret_access_key=s\n[b]\naws_access_key_id=K1\naws_secret_access_key=t\n",
            "in both",
        ),
        ("[a]\nregion=x\n", "no profile"),
        ("[a\naws_access_key_id=K1\n", "not valid INI"),
    ];
    for (text, needle) in bad {
        let e = Verifier::load(credentials_file(tmp.path(), text))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    let e = Verifier::load(tmp.path().join("missing")).unwrap_err();
    assert!(matches!(e, LoadError::Read { .. }));
    // Secrets never reach Debug output (and so logs).
    assert!(!format!("{v:?}").contains("s2"));
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_previous_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let path = credentials_file(
        tmp.path(),
        "[a]\naws_access_key_id=K1\naws_secret_access_key=s1\n",
    );
    let v = Verifier::load(&path).unwrap();
    assert_eq!(v.key_count(), 1);
    std::fs::write(
        &path,
        "[a]\naws_access_key_id=K1\naws_secret_access_key=s1\n[b]\naws_access_key_id=K2\naws_secret_access_key=s2\n",
    )
    .unwrap();
    std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(v.key_count(), 2);
    std::fs::write(&path, "[a]\naws_access_key_id=K1\n").unwrap();
    std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(v.key_count(), 2, "a broken file keeps the previous keys");
    std::fs::write(&path, "[c]\naws_access_key_id=K3\naws_secret_access_key=s3\n").unwrap();
    std::thread::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(v.key_count(), 1);
    assert!(v.keys().contains_key("K3"));
}
