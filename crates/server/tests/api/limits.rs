//! TLS and the server's limits, as clients meet them: HTTPS with HTTP/2 by
//! ALPN to a client that trusts a self-signed certificate, and each limit
//! refusing with its error and showing in `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use shardlog_server::{Limits, ServeOptions};

use super::{run_python, Server};

/// A self-signed certificate for `localhost`, written as PEM files.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.pem())
}

fn limits_server(dir: &std::path::Path, limits: Limits) -> Server {
    Server::start_with(
        dir,
        ServeOptions {
            limits,
            ..ServeOptions::default()
        },
    )
}

/// Sends raw bytes on a fresh connection and reads until the server
/// closes it or `wait` passes; returns what came back.
fn raw_exchange(server: &Server, send: &[u8], wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(send).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

fn list_streams_request() -> Vec<u8> {
    let body = "{}";
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn metric(server: &Server, limit: &str) -> u64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.endpoint()))
        .unwrap()
        .text()
        .unwrap();
    let needle = format!("shardlog_limit_rejections_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("no {needle} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn https_negotiates_http2_by_alpn_and_serves_http1_to_clients_that_trust_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let tls = shardlog_server::load_tls(&cert, &key).unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        ServeOptions {
            tls: Some(tls),
            ..ServeOptions::default()
        },
    );
    let url = format!("https://localhost:{}/", server.addr.port());
    let root = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let call = |client: &reqwest::blocking::Client, op: &str, body: serde_json::Value| {
        client
            .post(&url)
            .header("X-Amz-Target", format!("Kinesis_20131202.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let h2 = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root.clone())
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    let r = call(&h2, "CreateStream", json!({"StreamName": "tls", "ShardCount": 1}));
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks HTTP/2");
    assert_eq!(r.status(), 200);
    let h1 = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve("localhost", server.addr)
        .http1_only()
        .build()
        .unwrap();
    let r = call(&h1, "ListStreams", json!({}));
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["StreamNames"], json!(["tls"]));
    // A client that does not trust the certificate is refused by its own
    // TLS stack; one speaking plain HTTP to the TLS port gets nothing.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .resolve("localhost", server.addr)
        .build()
        .unwrap();
    assert!(untrusting.post(&url).send().is_err());
    let (answer, _) = raw_exchange(&server, &list_streams_request(), Duration::from_secs(5));
    assert!(
        !answer.contains("StreamNames"),
        "plain HTTP must not be served on the TLS port: {answer}"
    );
    // boto3 over HTTPS (HTTP/1.1), verifying against the test's certificate.
    let endpoint = format!("https://localhost:{}", server.addr.port());
    run_python(
        "boto3_tls.py",
        &server,
        &[&endpoint, cert.to_str().unwrap()],
        "boto3 over TLS",
    );
}

#[test]
fn tls_files_that_are_missing_or_not_pem_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let missing = dir.path().join("nope.pem");
    let err = shardlog_server::load_tls(&missing, &key).unwrap_err().to_string();
    assert!(
        err.contains("certificate file") && err.contains("nope.pem"),
        "{err}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").unwrap();
    let err = shardlog_server::load_tls(&garbage, &key).unwrap_err().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
    let err = shardlog_server::load_tls(&cert, &garbage)
        .unwrap_err()
        .to_string();
    assert!(err.contains("private key file"), "{err}");
    // A key that is not the certificate's.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_key, _) = self_signed(&other);
    assert!(shardlog_server::load_tls(&cert, &other_key).is_err());
}

#[test]
fn connections_beyond_the_limit_are_answered_503_and_counted_and_freed_slots_serve_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = limits_server(
        dir.path(),
        Limits {
            connections_max: 2,
            ..Limits::default()
        },
    );
    let hold: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    // Give the accept loop time to take both slots.
    std::thread::sleep(Duration::from_millis(200));
    let (answer, _) = raw_exchange(&server, &list_streams_request(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("ServiceUnavailable") && answer.contains("connections_max"),
        "{answer}"
    );
    drop(hold);
    std::thread::sleep(Duration::from_millis(200));
    let (answer, _) = raw_exchange(&server, &list_streams_request(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(metric(&server, "connections_max") >= 1);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = limits_server(
        dir.path(),
        Limits {
            header_read_timeout_ms: 500,
            ..Limits::default()
        },
    );
    let slow = std::thread::spawn({
        let addr = server.addr;
        move || {
            let started = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            // Trickle a byte now and then, as slowloris does.
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(150));
                if s.write_all(b"a").is_err() {
                    break;
                }
            }
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            started.elapsed()
        }
    });
    let (answer, _) = raw_exchange(&server, &list_streams_request(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let held = slow.join().unwrap();
    assert!(held < Duration::from_secs(3), "the slow client was held {held:?}");
    assert!(metric(&server, "header_read_timeout_ms") >= 1);
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = limits_server(
        dir.path(),
        Limits {
            body_read_timeout_ms: 300,
            ..Limits::default()
        },
    );
    let head = "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n{\"Li";
    let (answer, took) = raw_exchange(&server, head.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeoutException"), "{answer}");
    assert!(took < Duration::from_secs(3));
    assert!(metric(&server, "body_read_timeout_ms") >= 1);
}

#[test]
fn oversized_bodies_and_headers_are_refused_with_their_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = limits_server(
        dir.path(),
        Limits {
            header_bytes_max: 8192,
            ..Limits::default()
        },
    );
    let client = reqwest::blocking::Client::new();
    let big = vec![b'x'; shardlog_server::REQUEST_BODY_BYTES_MAX + 1];
    let r = client
        .post(server.endpoint())
        .header("X-Amz-Target", "Kinesis_20131202.PutRecord")
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["__type"], "SerializationException");
    assert!(
        v["Message"].as_str().unwrap().contains("request_body_bytes_max"),
        "{v}"
    );
    let huge_header = "y".repeat(20_000);
    let request = format!("POST / HTTP/1.1\r\nHost: x\r\nX-Big: {huge_header}\r\nContent-Length: 0\r\n\r\n");
    let (answer, _) = raw_exchange(&server, request.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(metric(&server, "request_body_bytes_max") >= 1);
    assert!(metric(&server, "header_bytes_max") >= 1);
    // The server still answers.
    let (answer, _) = raw_exchange(&server, &list_streams_request(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn silent_connections_are_closed_after_the_idle_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = limits_server(
        dir.path(),
        Limits {
            idle_timeout_ms: 300,
            ..Limits::default()
        },
    );
    // An HTTP/2 connection that sends its preface and then nothing: no
    // header timeout applies to it, only the idle limit.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let (_, took) = raw_exchange(&server, preface, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "the idle connection was held {took:?}"
    );
    assert!(metric(&server, "idle_timeout_ms") >= 1);
}

#[test]
fn limits_that_would_refuse_valid_requests_are_rejected() {
    let ok = Limits::default();
    assert!(ok.validate().is_ok());
    let small_body = Limits {
        request_body_bytes_max: 1024,
        ..Limits::default()
    };
    assert!(small_body
        .validate()
        .unwrap_err()
        .contains("request_body_bytes_max"));
    let zero = Limits {
        connections_max: 0,
        ..Limits::default()
    };
    assert!(zero.validate().unwrap_err().contains("connections_max"));
    let idle = Limits {
        idle_timeout_ms: 1000,
        ..Limits::default()
    };
    assert!(idle.validate().unwrap_err().contains("heartbeat"));
}
