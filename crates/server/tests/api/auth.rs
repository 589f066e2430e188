//! A server with `--credentials-file`: the AWS SDK for Rust, raw requests
//! signed by the `aws-sigv4` crate (tampered, expired, presigned), the
//! credentials file's reload, cross-account access through resource
//! policies, and boto3.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as SigningCredentials;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
use aws_sigv4::sign::v4;

use super::*;

const REGION: &str = "us-east-1";
const A_KEY: &str = "AKIDACCOUNTA";
const A_SECRET: &str = "secret/of+account=a";
const A_ACCOUNT: &str = "111111111111";
const B_KEY: &str = "AKIDACCOUNTB";
const B_SECRET: &str = "secret-of-account-b";
const B_ACCOUNT: &str = "222222222222";

fn credentials_text(extra: &str) -> String {
    format!(
        "[a]\naws_access_key_id = {A_KEY}\naws_secret_access_key = {A_SECRET}\naccount_id = {A_ACCOUNT}\n\n\
         [b]\naws_access_key_id = {B_KEY}\naws_secret_access_key = {B_SECRET}\naccount_id = {B_ACCOUNT}\n{extra}"
    )
}

/// A server that verifies signatures, with the keys of accounts A and B.
struct AuthServer {
    server: Server,
    credentials: PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> AuthServer {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, credentials_text("")).unwrap();
    let verifier = shardlog_server::auth::Verifier::load(&credentials).unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        shardlog_server::ServeOptions {
            verifier: Some(Arc::new(verifier)),
            ..shardlog_server::ServeOptions::default()
        },
    );
    AuthServer {
        server,
        credentials,
        _dir: dir,
    }
}

fn client(server: &Server, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(key, secret, None, None, "static"))
        .endpoint_url(server.endpoint())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(conf)
}

/// The error code of a failed SDK call, and its message.
fn failure<E: ProvideErrorMetadata, R>(e: aws_sdk_kinesis::error::SdkError<E, R>) -> (String, String) {
    (
        e.code().unwrap_or("<none>").to_string(),
        e.message().unwrap_or("").to_string(),
    )
}

async fn create_active(k: &Client, name: &str) -> String {
    k.create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let s = k
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .unwrap();
    let s = s.stream_description_summary().unwrap();
    assert_eq!(s.stream_status().as_str(), "ACTIVE");
    s.stream_arn().to_string()
}

#[test]
fn sdk_calls_need_the_right_secret_of_a_known_key_and_unsigned_calls_are_refused() {
    let s = start();
    rt().block_on(async {
        let a = client(&s.server, A_KEY, A_SECRET);
        let arn = create_active(&a, "orders").await;
        assert_eq!(arn, format!("arn:aws:kinesis:{REGION}:{A_ACCOUNT}:stream/orders"));
        a.put_record()
            .stream_name("orders")
            .partition_key("k")
            .data(Blob::new("v"))
            .send()
            .await
            .unwrap();

        let wrong = client(&s.server, A_KEY, "not-the-secret");
        let (code, message) = failure(wrong.list_streams().send().await.unwrap_err());
        assert_eq!(code, "InvalidSignatureException");
        assert_eq!(message, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.");
        // Authentication comes before any lookup: a missing stream and an
        // existing one fail alike.
        for name in ["orders", "no-such-stream"] {
            let e = wrong.describe_stream_summary().stream_name(name).send().await.unwrap_err();
            assert_eq!(failure(e).0, "InvalidSignatureException");
        }

        let unknown = client(&s.server, "AKIDNOBODY", A_SECRET);
        let (code, message) = failure(unknown.list_streams().send().await.unwrap_err());
        assert_eq!(code, "UnrecognizedClientException");
        assert_eq!(message, "The security token included in the request is invalid.");

        // The same key id under B's account sees none of A's streams.
        let b = client(&s.server, B_KEY, B_SECRET);
        let listed = b.list_streams().send().await.unwrap();
        assert!(listed.stream_names().is_empty());

        let http = reqwest::Client::new();
        let (status, body) = json_call(&http, &s.server, "ListStreams", json!({})).await;
        assert_eq!(status, 403);
        assert_eq!(body["__type"], "MissingAuthenticationTokenException");
        assert_eq!(body["message"], "Missing Authentication Token");
        // A 12-digit key id no longer chooses the account by itself.
        let forged = client(&s.server, A_ACCOUNT, "anything");
        assert_eq!(failure(forged.list_streams().send().await.unwrap_err()).0, "UnrecognizedClientException");
    });
}

/// A ListStreams request signed by the `aws-sigv4` crate at `time`, in the
/// header or as a presigned URL.
fn signed(
    server: &Server,
    body: &[u8],
    time: SystemTime,
    location: SignatureLocation,
) -> http::Request<Vec<u8>> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/", server.endpoint()))
        .header("host", server.addr.to_string())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(body.to_vec())
        .unwrap();
    let identity = SigningCredentials::new(A_KEY, A_SECRET, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = location;
    settings.expires_in = Some(Duration::from_secs(600));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kinesis")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
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

async fn send(req: http::Request<Vec<u8>>) -> (u16, Value) {
    let (parts, body) = req.into_parts();
    let r = reqwest::Client::new()
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn raw_requests_signed_then_tampered_expired_or_presigned() {
    let s = start();
    rt().block_on(async {
        let body = br#"{"Limit":10}"#;
        let (status, out) = send(signed(
            &s.server,
            body,
            SystemTime::now(),
            SignatureLocation::Headers,
        ))
        .await;
        assert_eq!((status, out["StreamNames"].clone()), (200, json!([])), "{out}");

        let mut tampered = signed(&s.server, body, SystemTime::now(), SignatureLocation::Headers);
        *tampered.body_mut() = br#"{"Limit":11}"#.to_vec();
        let (status, out) = send(tampered).await;
        assert_eq!(
            (status, out["__type"].as_str()),
            (400, Some("InvalidSignatureException")),
            "{out}"
        );

        let twenty_minutes_ago = SystemTime::now() - Duration::from_secs(20 * 60);
        let (status, out) = send(signed(
            &s.server,
            body,
            twenty_minutes_ago,
            SignatureLocation::Headers,
        ))
        .await;
        assert_eq!(
            (status, out["__type"].as_str()),
            (400, Some("InvalidSignatureException"))
        );
        let message = out["message"].as_str().unwrap();
        assert!(message.starts_with("Signature expired: "), "{message}");
        assert!(message.ends_with(" - 5 min.)"), "{message}");

        let presigned = signed(&s.server, body, SystemTime::now(), SignatureLocation::QueryParams);
        assert!(!presigned.headers().contains_key("authorization"));
        assert!(presigned.uri().query().unwrap().contains("X-Amz-Signature="));
        let (status, out) = send(presigned).await;
        assert_eq!((status, out["StreamNames"].clone()), (200, json!([])), "{out}");

        let mut tampered = signed(&s.server, body, SystemTime::now(), SignatureLocation::QueryParams);
        *tampered.body_mut() = br#"{"Limit":11}"#.to_vec();
        let (status, out) = send(tampered).await;
        assert_eq!(
            (status, out["__type"].as_str()),
            (400, Some("InvalidSignatureException")),
            "{out}"
        );
    });
}

#[test]
fn a_key_added_to_the_credentials_file_works_within_two_seconds_without_a_restart() {
    let s = start();
    rt().block_on(async {
        let c = client(&s.server, "AKIDNEWKEY", "new-secret");
        let (code, _) = failure(c.list_streams().send().await.unwrap_err());
        assert_eq!(code, "UnrecognizedClientException");
        // Written aside and renamed over, as operators should, so the server
        // never reads half a file.
        let next = s.credentials.with_extension("next");
        std::fs::write(
            &next,
            credentials_text("\n[c]\naws_access_key_id = AKIDNEWKEY\naws_secret_access_key = new-secret\n"),
        )
        .unwrap();
        std::fs::rename(&next, &s.credentials).unwrap();
        let started = std::time::Instant::now();
        loop {
            match c.list_streams().send().await {
                Ok(_) => break,
                Err(e) => {
                    let (code, _) = failure(e);
                    assert_eq!(code, "UnrecognizedClientException");
                    assert!(
                        started.elapsed() < Duration::from_secs(2),
                        "the new key was not loaded in 2 s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // A broken file keeps the keys in service.
        std::fs::write(&s.credentials, "[broken\n").unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        c.list_streams().send().await.unwrap();
    });
}

fn policy(statements: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

#[test]
fn another_account_needs_a_policy_that_allows_it_and_a_deny_overrides() {
    let s = start();
    rt().block_on(async {
        let a = client(&s.server, A_KEY, A_SECRET);
        let b = client(&s.server, B_KEY, B_SECRET);
        let arn = create_active(&a, "shared").await;

        let e = b.describe_stream_summary().stream_arn(&arn).send().await.unwrap_err();
        let (code, message) = failure(e);
        assert_eq!(code, "AccessDeniedException");
        assert_eq!(
            message,
            format!("User: arn:aws:iam::{B_ACCOUNT}:root is not authorized to perform: kinesis:DescribeStreamSummary on resource: {arn} because no resource-based policy allows the kinesis:DescribeStreamSummary action")
        );
        // A stream that does not exist is refused the same way.
        let missing = format!("arn:aws:kinesis:{REGION}:{A_ACCOUNT}:stream/missing");
        let e = b.describe_stream_summary().stream_arn(&missing).send().await.unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");

        let e = a
            .put_resource_policy()
            .resource_arn(&arn)
            .policy(r#"{"Statement": [{"Effect": "Allow"}]}"#)
            .send()
            .await
            .unwrap_err();
        assert_eq!(failure(e).0, "InvalidArgumentException");

        let allow_b = json!({
            "Sid": "b-reads-and-writes",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{B_ACCOUNT}:root")},
            "Action": ["kinesis:DescribeStreamSummary", "kinesis:PutRecord", "kinesis:GetShardIterator", "kinesis:GetRecords"],
            "Resource": arn,
        });
        a.put_resource_policy()
            .resource_arn(&arn)
            .policy(policy(json!([allow_b])))
            .send()
            .await
            .unwrap();

        let summary = b.describe_stream_summary().stream_arn(&arn).send().await.unwrap();
        assert_eq!(summary.stream_description_summary().unwrap().stream_name(), "shared");
        let put = b
            .put_record()
            .stream_arn(&arn)
            .partition_key("pk")
            .data(Blob::new("from b"))
            .send()
            .await
            .unwrap();
        let it = b
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(put.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let got = b.get_records().stream_arn(&arn).shard_iterator(&it).send().await.unwrap();
        let data: Vec<&[u8]> = got.records().iter().map(|r| r.data().as_ref()).collect();
        assert_eq!(data, vec![b"from b".as_slice()]);
        // The iterator and its successor are the owner's: A reads with them.
        let next = got.next_shard_iterator().unwrap();
        let again = a.get_records().shard_iterator(next).send().await.unwrap();
        assert!(again.records().is_empty());
        // B's own account has no such stream, so the iterator is not B's
        // without the ARN that routes the read to A.
        let e = b.get_records().shard_iterator(&it).send().await.unwrap_err();
        assert_eq!(failure(e).0, "InvalidArgumentException");

        // Actions the policy does not name stay denied, and policies are
        // the owner's business only.
        let e = b.delete_stream().stream_arn(&arn).send().await.unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");
        let e = b.get_resource_policy().resource_arn(&arn).send().await.unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");

        // An explicit Deny wins over the Allow, and binds the owner too.
        let deny = json!({
            "Effect": "Deny",
            "Principal": {"AWS": [B_ACCOUNT, A_ACCOUNT]},
            "Action": "kinesis:Put*",
            "Resource": "arn:aws:kinesis:*:*:stream/shared",
        });
        a.put_resource_policy()
            .resource_arn(&arn)
            .policy(policy(json!([allow_b, deny])))
            .send()
            .await
            .unwrap();
        let e = b
            .put_record()
            .stream_arn(&arn)
            .partition_key("pk")
            .data(Blob::new("x"))
            .send()
            .await
            .unwrap_err();
        let (code, message) = failure(e);
        assert_eq!(code, "AccessDeniedException");
        assert!(message.ends_with("with an explicit deny in a resource-based policy"), "{message}");
        let e = a
            .put_record()
            .stream_name("shared")
            .partition_key("pk")
            .data(Blob::new("x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");
        // PutRecords by name (the server's fast path) is held by the same Deny.
        let entry = aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
            .partition_key("pk")
            .data(Blob::new("x"))
            .build()
            .unwrap();
        let e = a
            .put_records()
            .stream_name("shared")
            .records(entry)
            .send()
            .await
            .unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");
        b.describe_stream_summary().stream_arn(&arn).send().await.unwrap();

        // Without the policy B is out again; the owner is not.
        a.delete_resource_policy().resource_arn(&arn).send().await.unwrap();
        let e = b.describe_stream_summary().stream_arn(&arn).send().await.unwrap_err();
        assert_eq!(failure(e).0, "AccessDeniedException");
        a.put_record()
            .stream_name("shared")
            .partition_key("pk")
            .data(Blob::new("x"))
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn boto3_signs_right_and_wrong_secrets_and_reads_across_accounts_with_a_policy() {
    let s = start();
    run_python(
        "boto3_auth.py",
        &s.server,
        &[A_KEY, A_SECRET, A_ACCOUNT, B_KEY, B_SECRET, B_ACCOUNT],
        "boto3 auth",
    );
}

/// An unsigned call as the web console makes it.
fn console_call(server: &Server, op: &str, body: Value, console_header: bool) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new()
        .post(server.endpoint())
        .header("X-Amz-Target", format!("Kinesis_20131202.{op}"))
        .header("Content-Type", "application/x-amz-json-1.1");
    if console_header {
        req = req.header("X-Shardlog-Console", "1");
    }
    let r = req.body(body.to_string()).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn with_auth_on_the_console_reads_unsigned_but_cannot_change_anything() {
    let s = start();
    let (status, v) = console_call(&s.server, "ListStreams", json!({}), true);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["StreamNames"], json!([]));
    for (op, body) in [
        ("CreateStream", json!({"StreamName": "x", "ShardCount": 1})),
        (
            "PutRecords",
            json!({"StreamName": "x", "Records": [{"Data": "AA==", "PartitionKey": "k"}]}),
        ),
        (
            "GetResourcePolicy",
            json!({"ResourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/x"}),
        ),
    ] {
        let (status, v) = console_call(&s.server, op, body, true);
        assert_eq!(status, 403, "{op}: {v}");
        assert_eq!(v["__type"], "MissingAuthenticationTokenException", "{op}");
    }
    // Without the console's header, reads need a signature too.
    let (status, v) = console_call(&s.server, "ListStreams", json!({}), false);
    assert_eq!(status, 403);
    assert_eq!(v["__type"], "MissingAuthenticationTokenException");
    // And an operator can turn the console's unsigned reads off.
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(&credentials, credentials_text("")).unwrap();
    let strict = Server::start_with(
        &dir.path().join("data"),
        shardlog_server::ServeOptions {
            verifier: Some(Arc::new(
                shardlog_server::auth::Verifier::load(&credentials).unwrap(),
            )),
            console_unsigned_reads: false,
            ..shardlog_server::ServeOptions::default()
        },
    );
    let (status, _) = console_call(&strict, "ListStreams", json!({}), true);
    assert_eq!(status, 403);
}
