//! The listener: accepts TCP connections, optionally wraps them in TLS
//! (rustls, with ALPN offering `h2` and `http/1.1`), and serves each with
//! hyper under the server's [`Limits`].
//!
//! Everything a client can make the server hold is bounded here or in the
//! request handler: connections (a semaphore; connections beyond it get a
//! `503 ServiceUnavailable` and are closed), header bytes and count, HTTP/2
//! streams per connection, the time to send a request's headers (which is
//! also the keep-alive idle limit of HTTP/1.1 connections), the time to send
//! a body, the TLS handshake's time, and the silence on any connection
//! (the idle limit, enforced by [`Watched`]). Every refusal is counted in
//! the `shardlog_limit_rejections_total` metric with the limit's name.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
// Plain TCP or TLS, as one type for hyper.
use tokio_util::either::Either;

use crate::metrics::{Limit, ServerMetrics};

/// The server's limits. Each has a safe default; all can be set in the
/// configuration file's `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections at once; more are answered 503 and closed.
    pub connections_max: usize,
    /// A request body's bytes (the largest valid request, a 10 MiB record
    /// in base64, fits in the default).
    pub request_body_bytes_max: usize,
    /// Bytes of a request's header block (HTTP/1.1 read buffer, HTTP/2
    /// header list).
    pub header_bytes_max: usize,
    /// Header fields of one HTTP/1.1 request.
    pub headers_count_max: usize,
    /// Requests in flight on one HTTP/2 connection.
    pub streams_per_connection_max: u32,
    /// Time to send a request's headers; also how long an HTTP/1.1
    /// keep-alive connection may wait for its next request.
    pub header_read_timeout_ms: u64,
    /// Time to send a request's body once its headers arrived.
    pub body_read_timeout_ms: u64,
    /// Silence (no byte read or written) after which any connection is
    /// closed. Subscriptions send an event every 5 s, so they never idle.
    pub idle_timeout_ms: u64,
    /// Time to finish a TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// SubscribeToShard subscriptions at once.
    pub subscriptions_max: usize,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace_ms: u64,
}

/// The smallest body limit that still accepts every valid request: a
/// 10 MiB record is 13.4 MiB in base64, plus the request's other members.
pub const REQUEST_BODY_BYTES_MIN: usize = 14 * 1024 * 1024;
/// hyper refuses read buffers smaller than this.
pub const HEADER_BYTES_MIN: usize = 8192;
/// Over-limit connections answered at once; beyond this they are closed
/// without an answer, so a flood cannot make refusing expensive.
pub const REFUSALS_CONCURRENT_MAX: usize = 64;
/// How long an over-limit connection gets to read its refusal.
pub const REFUSAL_MS: u64 = 2_000;
/// A pause after a failed accept (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
pub const ACCEPT_BACKOFF_MS: u64 = 50;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 4096,
            request_body_bytes_max: crate::REQUEST_BODY_BYTES_MAX,
            header_bytes_max: 64 * 1024,
            headers_count_max: 100,
            streams_per_connection_max: 256,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 120_000,
            tls_handshake_timeout_ms: 10_000,
            subscriptions_max: crate::subscribe::SUBSCRIPTIONS_MAX,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl Limits {
    /// Checks the limits against each other and against the API's needs.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("connections_max", self.connections_max as u64),
            ("headers_count_max", self.headers_count_max as u64),
            (
                "streams_per_connection_max",
                self.streams_per_connection_max as u64,
            ),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
            ("subscriptions_max", self.subscriptions_max as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be greater than 0"));
        }
        if self.request_body_bytes_max < REQUEST_BODY_BYTES_MIN {
            return Err(format!(
                "limits.request_body_bytes_max must be at least {REQUEST_BODY_BYTES_MIN} (a 10 MiB record in base64)"
            ));
        }
        if self.header_bytes_max < HEADER_BYTES_MIN {
            return Err(format!(
                "limits.header_bytes_max must be at least {HEADER_BYTES_MIN}"
            ));
        }
        if self.idle_timeout_ms <= crate::subscribe::HEARTBEAT_MS {
            return Err(format!(
                "limits.idle_timeout_ms must exceed the subscription heartbeat ({} ms)",
                crate::subscribe::HEARTBEAT_MS
            ));
        }
        Ok(())
    }
}

/// What `serve_with` serves besides the engine.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    /// TLS on every connection when set (see [`load_tls`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Verify every API request's SigV4 signature with these keys and
    /// enforce resource policies; without it nothing is checked.
    pub verifier: Option<Arc<crate::auth::Verifier>>,
    /// With a verifier, whether the web console may read (list, describe,
    /// browse records) without signing, in the default account. Writes
    /// always need a signature.
    pub console_unsigned_reads: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            limits: Limits::default(),
            tls: None,
            verifier: None,
            console_unsigned_reads: true,
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read the TLS certificate file {path}: {source}")]
    Certificate {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read the TLS private key file {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate file {0} holds no certificate")]
    NoCertificate(String),
    #[error("the TLS certificate and key do not make a valid server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from PEM files: the certificate chain (leaf
/// first) and its private key (PKCS#8, PKCS#1 or SEC1). ALPN offers HTTP/2
/// first, so clients that speak it (the Java SDK's async client, KCL) use
/// it, and HTTP/1.1 for the rest.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection's byte stream with an idle limit: when nothing has been
/// read or written for `idle`, reads fail with `TimedOut`, which ends the
/// connection. Reads are polled whenever hyper waits for the client, so
/// the limit holds for idle HTTP/2 connections and half-sent requests
/// alike; a connection busy writing a response is not idle.
struct Watched<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<ServerMetrics>,
}

impl<T> Watched<T> {
    fn new(inner: T, idle: Duration, metrics: Arc<ServerMetrics>) -> Self {
        let last = Instant::now();
        Watched {
            inner,
            idle,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
            metrics,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = this.last + this.idle;
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.metrics.limit_rejected(Limit::IdleTimeout);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle beyond limits.idle_timeout_ms",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The HTTP/1.1 and HTTP/2 settings that carry the limits.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_buf_size(limits.header_bytes_max.max(HEADER_BYTES_MIN))
        .max_headers(limits.headers_count_max);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.streams_per_connection_max)
        .max_header_list_size(u32::try_from(limits.header_bytes_max).unwrap_or(u32::MAX))
        // Pings find dead peers of long-lived connections (subscriptions).
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// The answer to a connection over `connections_max`.
fn refusal(limit: usize) -> Response<Body> {
    let body = serde_json::json!({
        "__type": "ServiceUnavailable",
        "message": format!("Too many connections: this server accepts at most {limit} at once (limits.connections_max). Retry later."),
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    h.insert("x-amzn-errortype", HeaderValue::from_static("ServiceUnavailable"));
    h.insert("connection", HeaderValue::from_static("close"));
    h.insert("retry-after", HeaderValue::from_static("1"));
    resp
}

/// Counts a connection's end by its cause (the limits that ended it).
fn note_connection_end(metrics: &ServerMetrics, err: &(dyn std::error::Error + 'static)) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                metrics.limit_rejected(Limit::HeaderTimeout);
                return;
            }
            if h.is_parse_too_large() {
                metrics.limit_rejected(Limit::HeaderBytes);
                return;
            }
        }
        cause = e.source();
    }
}

/// Serves `app` on `listener` under `options` until `shutdown` completes;
/// requests in flight then get `limits.shutdown_grace_ms` to finish.
pub(crate) async fn run(
    listener: TcpListener,
    app: axum::Router,
    metrics: Arc<ServerMetrics>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = options.limits;
    let builder = Arc::new(http_builder(&limits));
    let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let refusals = Arc::new(Semaphore::new(REFUSALS_CONCURRENT_MAX));
    let graceful = GracefulShutdown::new();
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let handshake = Duration::from_millis(limits.tls_handshake_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends pass; the loop must not spin or die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let permit = permits.clone().try_acquire_owned();
        let refusing = match &permit {
            Ok(_) => None,
            Err(_) => {
                metrics.limit_rejected(Limit::Connections);
                match refusals.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    // Too many refusals in progress: close at once.
                    Err(_) => continue,
                }
            }
        };
        let (builder, tls, metrics, app) = (builder.clone(), tls.clone(), metrics.clone(), app.clone());
        let watcher = graceful.watcher();
        let connections_max = limits.connections_max;
        tokio::spawn(async move {
            // A TLS handshake happens before anything else, limited in time.
            let io: Either<tokio::net::TcpStream, _> = match tls {
                None => Either::Left(tcp),
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => Either::Right(s),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        metrics.limit_rejected(Limit::TlsHandshake);
                        return;
                    }
                    Err(_) => {
                        metrics.limit_rejected(Limit::TlsHandshake);
                        return;
                    }
                },
            };
            let io = TokioIo::new(Watched::new(io, idle, metrics.clone()));
            if let Some(_refusing) = refusing {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(refusal(connections_max))
                    });
                let conn = builder.serve_connection(io, svc);
                let _ = tokio::time::timeout(Duration::from_millis(REFUSAL_MS), conn).await;
                return;
            }
            let _permit = permit;
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(io, svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                note_connection_end(&metrics, e.as_ref());
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_ms = limits.shutdown_grace_ms,
            "requests still in flight at the end of the shutdown grace"
        );
    }
    Ok(())
}
