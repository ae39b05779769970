//! The HTTP side of `serve`, built to face a network: every exchange has a
//! deadline, connections are capped below the open-file limit, scrapes that
//! arrive together share one render, and a web configuration file can ask for
//! TLS and basic auth.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::web_config::{BasicAuth, WebConfig};

/// A client that has not sent its request headers by then is dropped (and
/// one that has not finished its TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that makes no progress for this long is abandoned: its client
/// stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long, and closed if it has not
/// a few seconds later: however slowly a client reads, it frees its place.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const CLOSING_GRACE: Duration = Duration::from_secs(5);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenMetrics,
    Text,
}

/// The format an `Accept` header prefers: its supported media range of the
/// highest quality; text 0.0.4 without one.
fn negotiate(accept: Option<&str>) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0f32, None);
        for p in parts {
            match p
                .split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"')))
            {
                Some((k, v)) if k == "q" => q = v.parse().unwrap_or(0.0),
                Some((k, v)) if k == "version" => version = Some(v.to_string()),
                _ => {}
            }
        }
        let format = match (mime.as_str(), version.as_deref()) {
            ("application/openmetrics-text", None | Some("1.0.0") | Some("0.0.1")) => {
                Format::OpenMetrics
            }
            ("text/plain", None | Some("0.0.4")) => Format::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Text, |(_, f)| f)
}

fn render(registry: &Registry, format: Format) -> Result<(String, &'static str), std::fmt::Error> {
    let mut body = String::with_capacity(16 * 1024);
    Ok(match format {
        Format::OpenMetrics => {
            text::encode(&mut body, registry)?;
            (body, OPENMETRICS)
        }
        Format::Text => {
            prometheus_text::encode(&mut body, registry)?;
            (body, prometheus_text::CONTENT_TYPE)
        }
    })
}

const INDEX: &str = "<html><head><title>udptrace</title></head><body><h1>udptrace</h1>\
    <p>UDP traffic and drops, counted in the kernel: <a href=\"/metrics\">/metrics</a></p>\
    </body></html>\n";

/// Renders of /metrics. Scrapes wait their turn, and one that finds a render
/// begun after it arrived takes that render's body: a thousand clients at
/// once cost two renders and share their bodies, however slowly they read.
struct Renders {
    registry: Arc<Registry>,
    last: tokio::sync::Mutex<Option<Rendered>>,
    /// Bytes of the rendered bodies alive (answers not yet written, the
    /// last render): past BODIES_BUDGET, a scrape that needs a new render
    /// gets 503 instead.
    alive: Arc<AtomicUsize>,
}

/// The most memory rendered bodies may hold at once.
const BODIES_BUDGET: usize = 64 << 20;

/// A rendered body, counted in `alive` until the last answer holding it is
/// written (or dropped) and a newer render replaced it.
struct CountedBody {
    text: String,
    alive: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for CountedBody {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.alive.fetch_sub(self.text.len(), Ordering::Relaxed);
    }
}

/// Why a scrape got no body.
enum NoBody {
    Busy,
    Failed,
}

struct Rendered {
    started: Instant,
    format: Format,
    body: Bytes,
    content_type: &'static str,
}

impl Renders {
    async fn metrics(
        &self,
        format: Format,
        arrived: Instant,
    ) -> Result<(Bytes, &'static str), NoBody> {
        let mut last = self.last.lock().await;
        if let Some(r) = last
            .as_ref()
            .filter(|r| r.started >= arrived && r.format == format)
        {
            return Ok((r.body.clone(), r.content_type));
        }
        // Bodies still held by clients that do not read (or not yet): no more.
        let held = last.as_ref().map_or(0, |r| r.body.len());
        if self.alive.load(Ordering::Relaxed).saturating_sub(held) > BODIES_BUDGET {
            return Err(NoBody::Busy);
        }
        let started = Instant::now();
        let registry = self.registry.clone();
        // Reading the kernel's tables blocks: off the thread that serves connections.
        let (text, content_type) = tokio::task::spawn_blocking(move || render(&registry, format))
            .await
            .map_err(|_| NoBody::Failed)?
            .map_err(|_| NoBody::Failed)?;
        self.alive.fetch_add(text.len(), Ordering::Relaxed);
        let body = Bytes::from_owner(CountedBody {
            text,
            alive: self.alive.clone(),
        });
        *last = Some(Rendered {
            started,
            format,
            body: body.clone(),
            content_type,
        });
        Ok((body, content_type))
    }
}

/// What every connection shares.
pub(super) struct Server {
    renders: Renders,
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
    places: Arc<Semaphore>,
    max_connections: usize,
    /// bcrypt checks allowed at once.
    checks: Arc<Semaphore>,
    /// The cap was hit and said so: said again only once it was not.
    full: AtomicBool,
}

impl Server {
    pub(super) fn new(registry: Registry, web: WebConfig, max_connections: usize) -> Arc<Self> {
        Arc::new(Server {
            renders: Renders {
                registry: Arc::new(registry),
                last: tokio::sync::Mutex::new(None),
                alive: Arc::new(AtomicUsize::new(0)),
            },
            tls: web.tls.map(TlsAcceptor::from),
            auth: web.auth,
            places: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            checks: Arc::new(Semaphore::new(2)),
            full: AtomicBool::new(false),
        })
    }

    pub(super) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves a new connection in a task of its own, or closes it at once
    /// when as many are open as the cap allows.
    pub(super) fn accepted(self: &Arc<Self>, stream: TcpStream) {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            if !self.full.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "udptrace: serve: {} connections open, the most it serves at once: \
                     closing new ones until some end",
                    self.max_connections
                );
            }
            return;
        };
        if self.places.available_permits() > self.max_connections / 2 {
            self.full.store(false, Ordering::Relaxed);
        }
        let server = self.clone();
        tokio::spawn(async move { server.serve(stream, place).await });
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, _place: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        match self.tls.clone() {
            None => self.exchange(stream).await,
            Some(tls) => {
                let handshake = async {
                    if speaks_plain_http(&stream).await {
                        // Its request read first: closing on unread bytes resets the connection.
                        let mut stream = stream;
                        let _ = stream.read(&mut [0u8; 4096]).await;
                        let _ = stream.write_all(PLAIN_HTTP_REFUSED).await;
                        let _ = stream.shutdown().await;
                        return None;
                    }
                    tls.accept(stream).await.ok()
                };
                if let Ok(Some(stream)) = tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
                    self.exchange(stream).await;
                }
            }
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self: Arc<Self>, io: S) {
        let server = self.clone();
        let service = service_fn(move |req| {
            let server = server.clone();
            async move { server.handle(req).await }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            // `nc -N` and the like shut their side down once the request is sent.
            .half_close(true)
            .serve_connection(TokioIo::new(WriteDeadline::new(io)), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSING_GRACE, conn).await;
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let arrived = Instant::now();
        let reply = |status, content_type: &str, body: Bytes| {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            if let Ok(v) = content_type.parse() {
                response.headers_mut().insert(CONTENT_TYPE, v);
            }
            response
        };
        if let Some(auth) = &self.auth {
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let allowed = match auth.remembers(given.as_deref()) {
                true => true,
                // A bcrypt check blocks for tens of milliseconds: two at
                // most at once, so that guessed passwords cannot take every
                // core (and the renders behind them); beyond, refused.
                false => match self.checks.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let auth = auth.clone();
                        tokio::task::spawn_blocking(move || {
                            let _permit = permit;
                            auth.allows(given.as_deref())
                        })
                        .await
                        .unwrap_or(false)
                    }
                    Err(_) => {
                        return Ok(reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            Bytes::from_static(b"too many password checks at once\n"),
                        ))
                    }
                },
            };
            if !allowed {
                let mut response = reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    Bytes::from_static(b"Unauthorized\n"),
                );
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    "Basic realm=\"udptrace\"".parse().unwrap(),
                );
                return Ok(response);
            }
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                Bytes::from_static(b"method not allowed\n"),
            ));
        }
        Ok(match req.uri().path() {
            "/" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX.as_bytes()),
            ),
            "/metrics" => {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                match self.renders.metrics(negotiate(accept), arrived).await {
                    Ok((body, content_type)) => reply(StatusCode::OK, content_type, body),
                    Err(NoBody::Busy) => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        Bytes::from_static(b"too many answers not yet read\n"),
                    ),
                    Err(NoBody::Failed) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        Bytes::from_static(b"encoding failed\n"),
                    ),
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"404 page not found\n"),
            ),
        })
    }
}

/// What a client speaking plain HTTP to the TLS port gets, as Go's servers answer it.
const PLAIN_HTTP_REFUSED: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Whether the client's first byte opens a plain HTTP request (a method's
/// letter) rather than a TLS handshake record (0x16).
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// A stream whose writes fail once one has made no progress for
/// WRITE_STALL: a client that stops reading frees its connection.
struct WriteDeadline<S> {
    inner: S,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S) -> Self {
        WriteDeadline {
            inner,
            stalled: None,
        }
    }

    /// `poll`'s result, or a timeout once writes have waited too long.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

/// Raises the soft limit of open files to the hard one (a systemd service
/// gets 1,024 soft by default) and returns the limit now in force.
pub(super) fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Connections served at once: what the open-file limit leaves beside the
/// files open now (the tracer's maps, programs and rings) and room for
/// reading cgroups while rendering; at least 16, at most 16,384.
pub(super) fn max_connections(open_files: u64) -> usize {
    let open_now = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count()) as u64;
    open_files.saturating_sub(open_now + 64).clamp(16, 16_384) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    /// Renders held by clients that never read stop at the bodies' budget:
    /// a scrape that needs a new render then gets 503, until they let go.
    #[test]
    fn bodies_held_unread_stop_at_the_budget() {
        let mut registry = Registry::default();
        // About 1 MB of text a render.
        for i in 0..8_000 {
            let gauge = Gauge::<i64>::default();
            registry.register(format!("g{i}_{}", "x".repeat(100)), "", gauge);
        }
        let renders = Renders {
            registry: Arc::new(registry),
            last: tokio::sync::Mutex::new(None),
            alive: Arc::new(AtomicUsize::new(0)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut held = Vec::new();
        let busy = runtime.block_on(async {
            for _ in 0..200 {
                match renders.metrics(Format::Text, Instant::now()).await {
                    Ok((body, _)) => held.push(body),
                    Err(NoBody::Busy) => return true,
                    Err(NoBody::Failed) => panic!("rendering failed"),
                }
            }
            false
        });
        let size = held[0].len();
        assert!(size > 500_000, "{size} bytes a render");
        assert!(busy, "200 renders of {size} bytes held");
        assert!(
            held.len() * size <= BODIES_BUDGET + 2 * size,
            "{} held",
            held.len()
        );
        held.clear();
        let again = runtime.block_on(renders.metrics(Format::Text, Instant::now()));
        assert!(again.is_ok());
    }

    #[test]
    fn negotiates_as_prometheus_asks() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
            version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Text
        );
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text; version=2.0.0")),
            Format::Text
        );
    }
}
