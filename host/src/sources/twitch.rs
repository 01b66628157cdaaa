//! The `twitch` source: live chat through the real `twitch-irc` client.
//!
//! `twitch-irc` owns the protocol work (CAP REQ, PASS/NICK, PING/PONG, RECONNECT, its
//! connection pool and rejoining a lost connection's channels). What it does not do, this
//! module adds around it:
//!
//! - **A configurable server.** The crate's transports hard-code `irc.chat.twitch.tv`, and
//!   its `Transport::new()` takes no arguments. [`Link`] is our own [`Transport`] (TLS, secure
//!   WebSocket, or plain TCP/WebSocket to loopback for tests). Its settings reach `new()`
//!   through a thread-local set on the dedicated thread the client runs on: one client, one
//!   thread, one current-thread runtime, so every task the crate spawns sees that client's
//!   settings and nothing global is shared between two sources in one process.
//! - **The JOIN rate limit.** The crate sends JOINs as soon as asked, and after a reconnect
//!   it re-sends every channel of the lost connection at once (90 per connection), so a
//!   limiter in front of `join()` alone cannot keep Twitch's limit. Every JOIN therefore
//!   passes [`JoinLimiter`] in [`Link`]'s writer: one limiter per client (per account),
//!   shared by all its connections. Other commands (PONG above all) are never held behind
//!   queued JOINs. The writer also drops a JOIN for a channel already joined or queued on
//!   that connection (the crate repeats `join()` for unconfirmed channels), and a PART
//!   cancels a JOIN still waiting, so no channel is joined twice.
//! - **Jittered backoff.** The crate reconnects at a fixed pace (one connection per 2 s);
//!   [`Link::new`] waits `d/2 + rand(d/2)` first, `d = reconnect_min * 2^(n-1)` capped at
//!   `reconnect_max`, `n` the consecutive failures (reset by a connection that stayed up 30s).
//! - **Gaps.** Each connection knows the channels whose JOIN the server confirmed on it and
//!   when it last received a line. When it dies (EOF, error, RECONNECT, ping timeout) those
//!   channels get an open gap from that last line; the JOIN echo on the new connection closes
//!   it. A closed gap travels through the transport as an event of kind [`GAP_KIND`] with the
//!   chat messages (so it survives any transport, including a future Kafka one); the sink
//!   stores it in its `gaps` table. Gaps still open at shutdown are recorded too, ending at
//!   the shutdown.
//! - **Exact raw lines.** [`Link`] hands every chat line it reads to this source, which
//!   normalises it with [`irc::parse_line`] (the replay source's code); the crate's own
//!   message stream is not used, so the stored `raw` field is the line as Twitch sent it.
//!
//! Sharding: [`Shard`] assigns each channel to one of N instances by FNV-1a-64 of its login.

use crate::metrics::PipelineStats;
use crate::pipeline::config::{TwitchConfig, TwitchConnection};
use crate::sources::irc;
use crate::transport::memory::MemorySender;
use async_trait::async_trait;
use either::Either;
use futures_util::{Sink, Stream, StreamExt, stream::FusedStream};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use streamtap_plugin_sdk::{ChatMessage, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use twitch_irc::message::{AsRawIRC, IRCMessage, IRCParseError};
use twitch_irc::transport::Transport;

use super::spool::{Spool, SpoolError, SpoolLevel};
use twitch_irc::{ClientConfig, TwitchIRCClient, login::StaticLoginCredentials};

/// Kind of the event recording a gap in collection (see the module docs).
pub const GAP_KIND: &str = "gap";

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How long a stopping source keeps handing on chat it read but the pipeline had not
/// taken yet; what is left then is recorded as gaps.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Time to open a TCP/TLS/WebSocket connection, on top of any backoff wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors that stop the source.
#[derive(Debug, thiserror::Error)]
pub enum TwitchError {
    #[error("source.twitch: token: {0}")]
    Token(String),
    #[error("source.twitch: invalid channel {0:?}")]
    Channel(String),
    #[error("source.twitch: cannot start the client thread: {0}")]
    Thread(std::io::Error),
    #[error("source.twitch: TLS setup: {0}")]
    Tls(String),
    #[error("source.twitch: client thread panicked")]
    Panicked,
    #[error("source.twitch: cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("source.twitch: chat buffer: {0} (set spill_dir, or spill_max_mb = 0 to not spill)")]
    Spool(#[from] SpoolError),
}

/// Why a connection failed; what [`Link`] reports to `twitch-irc`.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting to {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("TLS with {server}: {source}")]
    Tls {
        server: String,
        source: std::io::Error,
    },
    #[error("WebSocket with {server}: {source}")]
    WebSocket {
        server: String,
        source: Box<async_tungstenite::tungstenite::Error>,
    },
    #[error("connection: {0}")]
    Io(std::io::Error),
    #[error("connection: {0}")]
    Ws(Box<async_tungstenite::tungstenite::Error>),
    #[error("connection closed")]
    Closed,
    #[error("no twitch source settings on this thread (a Link was created outside the source)")]
    NoContext,
}

// ---------------------------------------------------------------------------------------------
// Sharding

/// `--shard I/N`: this instance reads the channels whose hash is `I` modulo `N` (`I` from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether this instance reads `channel` (a normalised login).
    pub fn owns(&self, channel: &str) -> bool {
        shard_of(channel, self.count) == self.index
    }
}

/// The shard of a channel among `count`: FNV-1a (64-bit) of the lowercase login's bytes,
/// modulo `count`. Stable across versions, platforms and processes (unlike `std`'s hasher),
/// so N instances started with the same file agree on who reads what.
pub fn shard_of(channel: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

// ---------------------------------------------------------------------------------------------
// JOIN rate limit

/// Spacing added to the window, so JOINs sent at the limit's edge cannot arrive bunched at
/// the server when the network delays the earlier ones: 1/20 of the window.
const WINDOW_MARGIN_DIV: u32 = 20;

/// At most `limit` JOINs in any `window` (plus [`WINDOW_MARGIN_DIV`] margin): a sliding log
/// of the last `limit` send times.
#[derive(Debug)]
pub struct JoinLimiter {
    limit: usize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl JoinLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        JoinLimiter {
            limit: limit.max(1) as usize,
            window: window + window / WINDOW_MARGIN_DIV,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// When the next JOIN may be sent given the last send times (oldest first, at most
    /// `limit` kept): `None` for now.
    pub fn next_slot(&self, sent: &VecDeque<Instant>, now: Instant) -> Option<Instant> {
        if sent.len() < self.limit {
            return None;
        }
        let oldest = sent[sent.len() - self.limit];
        let free = oldest + self.window;
        (free > now).then_some(free)
    }

    /// Records a JOIN sent at `now`.
    fn record(&self, sent: &mut VecDeque<Instant>, now: Instant) {
        sent.push_back(now);
        while sent.len() > self.limit {
            sent.pop_front();
        }
    }

    /// Waits for a free slot and takes it. Cancel-safe: the slot is taken only when the
    /// future completes.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut sent = self.sent.lock().expect("join limiter lock");
                let now = Instant::now();
                match self.next_slot(&sent, now) {
                    None => {
                        self.record(&mut sent, now);
                        return;
                    }
                    Some(at) => at,
                }
            };
            tokio::time::sleep_until(wait.into()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reconnect backoff

/// Consecutive connection failures and the delay before the next attempt.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delay before the next connection attempt: none before the first failure, then
    /// `d/2 + rand(0..=d/2)` with `d = min * 2^(failures-1)` capped at `max` ("equal
    /// jitter": never zero, so a flapping server is not hammered, and spread so a fleet of
    /// collectors does not reconnect in lockstep).
    fn next_delay(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let exp = self.failures.saturating_sub(1).min(20);
        let d = self.min.saturating_mul(1 << exp).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    fn lost(&mut self, lived: Duration) {
        if lived >= STABLE_AFTER {
            self.failures = 0;
        }
        self.failed();
    }
}

// ---------------------------------------------------------------------------------------------
// The transport

/// What connections report to the source, in the order they saw it.
#[derive(Debug)]
enum LinkEvent {
    /// A chat line (PRIVMSG, USERNOTICE, CLEARCHAT, CLEARMSG) as received (these come
    /// through the `lines` spool).
    Line(String),
    /// The server confirmed our JOIN of `channel` on connection `conn`.
    Joined {
        conn: u64,
        channel: String,
        at_ms: i64,
    },
    /// Connection `conn` ended; it was joined to `channels` and last received a line at
    /// `last_rx_ms`.
    Lost {
        conn: u64,
        channels: Vec<String>,
        last_rx_ms: i64,
        reason: String,
    },
    /// A NOTICE (e.g. `msg_channel_suspended` after a JOIN of a bad channel).
    Notice(String),
    /// The spill file failed (the directory is unusable, the disk failed): the source
    /// stops with the error rather than read lines it cannot keep.
    SpoolFailed(SpoolError),
}

/// Most channels that get their own `channel` label on per-channel series; the rest share
/// [`OTHER_CHANNELS`], so a 10,000-channel collector does not export 10,000 series.
pub const CHANNEL_LABELS_MAX: usize = 1000;
/// The label value of channels beyond [`CHANNEL_LABELS_MAX`].
pub const OTHER_CHANNELS: &str = "_other";

/// Gives channels their own label value, up to [`CHANNEL_LABELS_MAX`] of them, first come
/// first served.
#[derive(Debug, Default)]
pub struct ChannelLabels(Mutex<HashSet<String>>);

impl ChannelLabels {
    /// The label value to use for `channel`.
    pub fn label<'a>(&self, channel: &'a str) -> &'a str {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(channel) {
            return channel;
        }
        if set.len() < CHANNEL_LABELS_MAX {
            set.insert(channel.to_owned());
            return channel;
        }
        OTHER_CHANNELS
    }
}

/// Counters of the source, registered on the run's registry.
pub struct TwitchStats {
    joins_sent: prometheus::IntCounter,
    parts_sent: prometheus::IntCounter,
    connections: prometheus::IntCounter,
    connections_lost: prometheus::IntCounter,
    gaps: prometheus::IntCounter,
    notices: prometheus::IntCounter,
    /// Chat events received per channel (capped labels, see [`ChannelLabels`]).
    channel_messages: prometheus::IntCounterVec,
    labels: ChannelLabels,
}

impl TwitchStats {
    fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let c = |name: &str, help: &str| -> Result<prometheus::IntCounter, prometheus::Error> {
            let c = prometheus::IntCounter::with_opts(
                prometheus::Opts::new(name, help).namespace("streamtap"),
            )?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(TwitchStats {
            joins_sent: c("twitch_joins_sent_total", "JOIN commands sent to Twitch.")?,
            parts_sent: c(
                "twitch_parts_sent_total",
                "PART commands sent to Twitch (channels removed from the list).",
            )?,
            connections: c("twitch_connections_total", "Chat connections opened.")?,
            connections_lost: c(
                "twitch_connections_lost_total",
                "Chat connections that ended (RECONNECT, EOF, error, ping timeout).",
            )?,
            gaps: c(
                "twitch_gaps_total",
                "Collection gaps recorded (channel, from, to).",
            )?,
            notices: c("twitch_notices_total", "NOTICE lines received from Twitch.")?,
            channel_messages: {
                let v = prometheus::IntCounterVec::new(
                    prometheus::Opts::new(
                        "twitch_channel_messages_total",
                        "Chat events received per channel (the first 1000 channels by name; the rest as channel=\"_other\").",
                    )
                    .namespace("streamtap"),
                    &["channel"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
            labels: ChannelLabels::default(),
        })
    }
}

/// How much chat is waiting, read when scraped: in memory and in the spill file.
fn register_spool_gauges(
    registry: &prometheus::Registry,
    spool: &Arc<Spool>,
) -> Result<(), prometheus::Error> {
    type Read = fn(&SpoolLevel) -> u64;
    let gauges: [(&str, &str, Read); 3] = [
        (
            "twitch_buffered_lines",
            "Chat lines read and waiting in memory for the pipeline.",
            |l| l.memory_lines as u64,
        ),
        (
            "twitch_spilled_lines",
            "Chat lines read and waiting in the spill file (the pipeline is behind chat).",
            |l| l.disk_lines,
        ),
        (
            "twitch_spilled_bytes",
            "Bytes of chat waiting in the spill file (at most spill_max_mb).",
            |l| l.disk_bytes,
        ),
    ];
    for (name, help, read) in gauges {
        // Weak: the registry outlives the source, and must not keep its spill files open.
        let s = Arc::downgrade(spool);
        registry.register(Box::new(crate::metrics::SampledGauge::new(
            name,
            help,
            move || {
                s.upgrade()
                    .map_or(0, |s| i64::try_from(read(&s.level())).unwrap_or(i64::MAX))
            },
        )))?;
    }
    Ok(())
}

/// Per-client settings [`Link::new`] reads (see the module docs for why a thread-local).
struct LinkContext {
    connection: TwitchConnection,
    server: String,
    host: String,
    tls: tokio_rustls::TlsConnector,
    joins: JoinLimiter,
    backoff: Mutex<Backoff>,
    events: mpsc::UnboundedSender<LinkEvent>,
    /// Chat lines (memory, then a spill file; see [`Spool`]); control events stay on
    /// `events`.
    lines: Arc<Spool>,
    next_conn: AtomicU64,
    nick: String,
    stats: Arc<TwitchStats>,
}

thread_local! {
    static LINK: RefCell<Option<Arc<LinkContext>>> = const { RefCell::new(None) };
}

/// One connection's shared state, for the reader, the writer and the incoming stream.
struct ConnState {
    id: u64,
    ctx: Arc<LinkContext>,
    joined: Mutex<BTreeSet<String>>,
    last_rx_ms: AtomicI64,
    opened: Instant,
    lost: AtomicBool,
    stop: CancellationToken,
}

impl ConnState {
    /// Reports the connection's end once, whatever ended it.
    fn lost(&self, reason: &str) {
        if self.lost.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop.cancel();
        self.ctx
            .backoff
            .lock()
            .expect("backoff lock")
            .lost(self.opened.elapsed());
        self.ctx.stats.connections_lost.inc();
        let channels: Vec<String> = std::mem::take(&mut *self.joined.lock().expect("joined"))
            .into_iter()
            .collect();
        tracing::warn!(
            conn = self.id,
            channels = channels.len(),
            reason,
            "twitch connection lost"
        );
        let _ = self.ctx.events.send(LinkEvent::Lost {
            conn: self.id,
            channels,
            last_rx_ms: self.last_rx_ms.load(Ordering::SeqCst),
            reason: reason.to_owned(),
        });
    }
}

trait Socket: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Socket for T {}
type BoxSocket = Box<dyn Socket>;
type WsAdapter = async_tungstenite::tokio::TokioAdapter<BoxSocket>;

enum Reader {
    Lines(tokio::io::Lines<BufReader<tokio::io::ReadHalf<BoxSocket>>>),
    Ws(
        async_tungstenite::WebSocketReceiver<WsAdapter>,
        VecDeque<String>,
    ),
}

impl Reader {
    async fn next_line(&mut self) -> Result<Option<String>, LinkError> {
        match self {
            Reader::Lines(l) => l.next_line().await.map_err(LinkError::Io),
            Reader::Ws(s, pending) => loop {
                if let Some(l) = pending.pop_front() {
                    return Ok(Some(l));
                }
                use async_tungstenite::tungstenite::Message;
                match s.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Err(e)) => return Err(LinkError::Ws(Box::new(e))),
                    // One frame may carry several lines.
                    Some(Ok(Message::Text(t))) => {
                        pending.extend(t.as_str().lines().map(str::to_owned))
                    }
                    Some(Ok(_)) => {}
                }
            },
        }
    }
}

enum Writer {
    Plain(tokio::io::WriteHalf<BoxSocket>),
    Ws(async_tungstenite::WebSocketSender<WsAdapter>),
}

impl Writer {
    async fn write_line(&mut self, line: &str) -> Result<(), LinkError> {
        match self {
            Writer::Plain(w) => {
                let mut buf = Vec::with_capacity(line.len() + 2);
                buf.extend_from_slice(line.as_bytes());
                buf.extend_from_slice(b"\r\n");
                w.write_all(&buf).await.map_err(LinkError::Io)?;
                w.flush().await.map_err(LinkError::Io)
            }
            Writer::Ws(w) => w
                .send(async_tungstenite::tungstenite::Message::text(line))
                .await
                .map_err(|e| LinkError::Ws(Box::new(e))),
        }
    }
}

type IncomingItem = Result<IRCMessage, Either<LinkError, IRCParseError>>;

/// The transport `twitch-irc` drives: see the module docs.
pub struct Link {
    incoming: LinkIncoming,
    outgoing: LinkOutgoing,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("conn", &self.incoming.conn.id)
            .finish()
    }
}

/// Lines for the crate; the connection counts as lost when the crate drops it.
pub struct LinkIncoming {
    rx: mpsc::UnboundedReceiver<IncomingItem>,
    conn: Arc<ConnState>,
    done: bool,
}

impl Stream for LinkIncoming {
    type Item = IncomingItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingItem>> {
        if self.done {
            return Poll::Ready(None);
        }
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(None) = r {
            self.done = true;
        }
        r
    }
}

impl FusedStream for LinkIncoming {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for LinkIncoming {
    fn drop(&mut self) {
        // The crate closing the connection (RECONNECT, ping timeout, shutdown) ends here.
        self.conn.lost("closed by the client");
    }
}

/// Commands from the crate, handed to the connection's writer task.
pub struct LinkOutgoing {
    tx: mpsc::UnboundedSender<IRCMessage>,
}

impl Sink<IRCMessage> for LinkOutgoing {
    type Error = LinkError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: IRCMessage) -> Result<(), LinkError> {
        self.tx.send(item).map_err(|_| LinkError::Closed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        Poll::Ready(Ok(()))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `#a,#b` → `["a", "b"]`.
fn channels_of(param: Option<&String>) -> Vec<String> {
    param
        .map(|p| {
            p.split(',')
                .map(|c| c.trim_start_matches('#').to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

async fn open_socket(ctx: &LinkContext) -> Result<BoxSocket, LinkError> {
    let tcp = tokio::net::TcpStream::connect(ctx.server.as_str())
        .await
        .map_err(|source| LinkError::Connect {
            server: ctx.server.clone(),
            source,
        })?;
    // Chat lines are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    if !ctx.connection.is_secure() {
        return Ok(Box::new(tcp));
    }
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(ctx.host.clone()).map_err(|e| {
            LinkError::Tls {
                server: ctx.server.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
    let tls = ctx
        .tls
        .connect(name, tcp)
        .await
        .map_err(|source| LinkError::Tls {
            server: ctx.server.clone(),
            source,
        })?;
    Ok(Box::new(tls))
}

#[async_trait]
impl Transport for Link {
    type ConnectError = LinkError;
    type IncomingError = LinkError;
    type OutgoingError = LinkError;
    type Incoming = LinkIncoming;
    type Outgoing = LinkOutgoing;

    async fn new() -> Result<Link, LinkError> {
        let ctx = LINK
            .with(|l| l.borrow().clone())
            .ok_or(LinkError::NoContext)?;
        let delay = ctx.backoff.lock().expect("backoff lock").next_delay();
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "twitch: waiting before reconnecting"
            );
            tokio::time::sleep(delay).await;
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let sock = open_socket(&ctx).await?;
            match ctx.connection {
                TwitchConnection::Tls | TwitchConnection::Tcp => {
                    let (r, w) = tokio::io::split(sock);
                    Ok((Reader::Lines(BufReader::new(r).lines()), Writer::Plain(w)))
                }
                TwitchConnection::Wss | TwitchConnection::Ws => {
                    let scheme = if ctx.connection.is_secure() {
                        "wss"
                    } else {
                        "ws"
                    };
                    let url = format!("{scheme}://{}", ctx.server);
                    let (ws, _) = async_tungstenite::tokio::client_async(url, sock)
                        .await
                        .map_err(|e| LinkError::WebSocket {
                            server: ctx.server.clone(),
                            source: Box::new(e),
                        })?;
                    let (w, r) = ws.split();
                    Ok((Reader::Ws(r, VecDeque::new()), Writer::Ws(w)))
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(LinkError::Connect {
                server: ctx.server.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
            })
        });
        let (reader, writer) = match connected {
            Ok(rw) => rw,
            Err(e) => {
                ctx.backoff.lock().expect("backoff lock").failed();
                tracing::warn!(server = %ctx.server, error = %e, "twitch: connection attempt failed");
                return Err(e);
            }
        };
        let conn = Arc::new(ConnState {
            id: ctx.next_conn.fetch_add(1, Ordering::SeqCst),
            ctx: ctx.clone(),
            joined: Mutex::new(BTreeSet::new()),
            last_rx_ms: AtomicI64::new(now_ms()),
            opened: Instant::now(),
            lost: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        ctx.stats.connections.inc();
        tracing::info!(conn = conn.id, server = %ctx.server, connection = ?ctx.connection, "twitch connection open");
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        // Both tasks live on the client's own runtime and end with the connection: the
        // reader on EOF/error or `stop`, the writer when the crate drops the sink or `stop`.
        tokio::spawn(read_loop(conn.clone(), reader, in_tx));
        tokio::spawn(write_loop(conn.clone(), writer, out_rx));
        Ok(Link {
            incoming: LinkIncoming {
                rx: in_rx,
                conn,
                done: false,
            },
            outgoing: LinkOutgoing { tx: out_tx },
        })
    }

    fn split(self) -> (LinkIncoming, LinkOutgoing) {
        (self.incoming, self.outgoing)
    }
}

async fn read_loop(
    conn: Arc<ConnState>,
    mut reader: Reader,
    tx: mpsc::UnboundedSender<IncomingItem>,
) {
    let ctx = conn.ctx.clone();
    loop {
        let next = tokio::select! {
            _ = conn.stop.cancelled() => return,
            r = reader.next_line() => r,
        };
        let line = match next {
            Ok(Some(l)) => l,
            Ok(None) => {
                conn.lost("server closed the connection");
                return;
            }
            Err(e) => {
                conn.lost(&e.to_string());
                let _ = tx.send(Err(Either::Left(e)));
                return;
            }
        };
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let now = now_ms();
        conn.last_rx_ms.store(now, Ordering::SeqCst);
        // Chat goes to the source through the spool: memory, then a spill file, so this
        // connection keeps being read (and answering PINGs) while the pipeline is behind;
        // only a full spill file makes it wait. The crate is not given chat lines (it
        // would only convert and discard them: its message stream is not used), and they
        // are routed by their command word alone, so the source's `irc::parse_line` is the
        // only parse a chat line gets.
        if irc::command_of(line).is_some_and(|c| {
            irc::EVENT_COMMANDS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(c))
        }) {
            let pushed = tokio::select! {
                _ = conn.stop.cancelled() => return,
                r = ctx.lines.push(line.to_owned()) => r,
            };
            if let Err(e) = pushed {
                // The spill file failed: stop reading and end the source with the error.
                // `Lost` goes first, so this connection's channels get their gap.
                conn.lost("the chat spill file failed");
                let _ = ctx.events.send(LinkEvent::SpoolFailed(e));
                return;
            }
            continue;
        }
        let parsed = IRCMessage::parse(line);
        if let Ok(m) = &parsed {
            let ours = m
                .prefix
                .as_ref()
                .map(|p| match p {
                    twitch_irc::message::IRCPrefix::Full { nick, .. } => nick.as_str(),
                    twitch_irc::message::IRCPrefix::HostOnly { host } => host.as_str(),
                })
                .is_some_and(|n| n.eq_ignore_ascii_case(&ctx.nick));
            match m.command.as_str() {
                "JOIN" if ours => {
                    for channel in channels_of(m.params.first()) {
                        conn.joined.lock().expect("joined").insert(channel.clone());
                        let _ = ctx.events.send(LinkEvent::Joined {
                            conn: conn.id,
                            channel,
                            at_ms: now,
                        });
                    }
                }
                "PART" if ours => {
                    for channel in channels_of(m.params.first()) {
                        conn.joined.lock().expect("joined").remove(&channel);
                    }
                }
                "NOTICE" => {
                    let _ = ctx.events.send(LinkEvent::Notice(line.to_owned()));
                }
                // Twitch is about to close this connection: the gap starts now.
                "RECONNECT" => conn.lost("server sent RECONNECT"),
                _ => {}
            }
        }
        if tx.send(parsed.map_err(Either::Right)).is_err() {
            return;
        }
    }
}

async fn write_loop(
    conn: Arc<ConnState>,
    mut writer: Writer,
    mut rx: mpsc::UnboundedReceiver<IRCMessage>,
) {
    let ctx = conn.ctx.clone();
    // Channels waiting for a JOIN slot, and channels whose JOIN went out on this connection.
    let mut queued: VecDeque<String> = VecDeque::new();
    let mut sent: HashSet<String> = HashSet::new();
    loop {
        let res = tokio::select! {
            biased;
            _ = conn.stop.cancelled() => return,
            m = rx.recv() => match m {
                None => return,
                Some(m) => match m.command.as_str() {
                    "JOIN" => {
                        for c in channels_of(m.params.first()) {
                            if !sent.contains(&c) && !queued.contains(&c) {
                                queued.push_back(c);
                            }
                        }
                        Ok(())
                    }
                    "PART" => {
                        let mut res = Ok(());
                        for c in channels_of(m.params.first()) {
                            if let Some(i) = queued.iter().position(|q| *q == c) {
                                queued.remove(i);
                            } else if sent.remove(&c) {
                                let wrote = writer.write_line(&format!("PART #{c}")).await;
                                if wrote.is_ok() {
                                    ctx.stats.parts_sent.inc();
                                }
                                res = res.and(wrote);
                            }
                        }
                        res
                    }
                    // Never logged: PASS carries the token.
                    _ => writer.write_line(&m.as_raw_irc()).await,
                },
            },
            _ = ctx.joins.acquire(), if !queued.is_empty() => {
                let c = queued.pop_front().expect("queue not empty");
                ctx.stats.joins_sent.inc();
                tracing::debug!(conn = conn.id, channel = %c, "JOIN");
                let r = writer.write_line(&format!("JOIN #{c}")).await;
                sent.insert(c);
                r
            }
        };
        if let Err(e) = res {
            conn.lost(&e.to_string());
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The source

/// Open and closed gaps per channel.
#[derive(Default)]
struct Gaps {
    /// The connection each channel is joined on.
    on: HashMap<String, u64>,
    /// Channels whose connection was lost: since when, and why.
    open: HashMap<String, (i64, String)>,
}

/// A recorded gap: nothing was collected for `channel` between `from_ms` and `to_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub channel: String,
    pub channel_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

impl Gap {
    /// The gap as an event travelling with the messages (kind [`GAP_KIND`]).
    pub fn to_message(&self) -> ChatMessage {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("gap_from_ms".to_owned(), Value::Int(self.from_ms));
        fields.insert("gap_to_ms".to_owned(), Value::Int(self.to_ms));
        fields.insert("reason".to_owned(), Value::Str(self.reason.clone()));
        ChatMessage {
            id: format!("gap:{}:{}", self.channel, self.from_ms),
            kind: GAP_KIND.into(),
            channel: self.channel.clone(),
            channel_id: self.channel_id.clone(),
            user: String::new(),
            user_id: String::new(),
            display_name: String::new(),
            text: self.reason.clone(),
            ts_ms: self.to_ms,
            badges: Vec::new(),
            emotes: Vec::new(),
            fields,
        }
    }
}

/// Reads a gap event back (the sink's view).
pub fn gap_of(m: &ChatMessage) -> Option<Gap> {
    if m.kind != GAP_KIND {
        return None;
    }
    let int = |k: &str| match m.fields.get(k) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    };
    Some(Gap {
        channel: m.channel.clone(),
        channel_id: m.channel_id.clone(),
        from_ms: int("gap_from_ms")?,
        to_ms: int("gap_to_ms")?,
        reason: m.text.clone(),
    })
}

/// Everything the source needs besides the config.
pub struct TwitchSource {
    pub config: TwitchConfig,
    /// The OAuth token, when configured (already read from env/file).
    pub token: Option<String>,
    pub shard: Shard,
    pub tx: MemorySender,
    pub stats: Arc<PipelineStats>,
    /// Channel lists from hot reload (the full list; the shard filter applies here).
    pub channels: watch::Receiver<Vec<String>>,
    pub registry: prometheus::Registry,
    /// Where the chat spill file goes (`spill_dir` resolved, or the temporary directory).
    pub spill_dir: std::path::PathBuf,
}

/// Runs the source until `cancel` fires. The client lives on its own thread (see the module
/// docs); this waits for that thread to finish.
pub async fn run(src: TwitchSource, cancel: CancellationToken) -> Result<(), TwitchError> {
    let stats = Arc::new(TwitchStats::new(&src.registry)?);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("twitch-irc".into())
        .spawn(move || {
            let res = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(TwitchError::Thread)
                .and_then(|rt| rt.block_on(client_main(src, stats, cancel)));
            LINK.with(|l| l.borrow_mut().take());
            let _ = done_tx.send(());
            res
        })
        .map_err(TwitchError::Thread)?;
    // Wait without blocking the pipeline's runtime, then join (immediate by then).
    let _ = done_rx.await;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|_| TwitchError::Panicked)?
        .map_err(|_| TwitchError::Panicked)?
}

/// The next control event, or else the next chat line (control first: a `Lost` must not
/// wait behind a backlog of chat).
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<LinkEvent>,
    lines: &Spool,
) -> Option<LinkEvent> {
    tokio::select! {
        biased;
        ev = events.recv() => ev,
        line = lines.pop() => Some(match line {
            Ok(l) => LinkEvent::Line(l),
            Err(e) => LinkEvent::SpoolFailed(e),
        }),
    }
}

fn anonymous_login() -> String {
    // Twitch accepts any `justinfan` + digits as an anonymous read-only login.
    format!("justinfan{}", fastrand::u32(10_000..99_999_999))
}

async fn client_main(
    src: TwitchSource,
    stats: Arc<TwitchStats>,
    cancel: CancellationToken,
) -> Result<(), TwitchError> {
    let cfg = &src.config;
    let (login, token) = match (&cfg.login, &src.token) {
        (Some(l), Some(t)) => (
            l.to_ascii_lowercase(),
            Some(t.trim().trim_start_matches("oauth:").to_owned()),
        ),
        _ => (anonymous_login(), None),
    };
    if token.as_ref().is_some_and(|t| t.is_empty()) {
        return Err(TwitchError::Token("the token is empty".into()));
    }
    let server = cfg.server_addr();
    let host = server
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .unwrap_or_else(|| server.clone());
    let roots = tokio_rustls::rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TwitchError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (ev_tx, mut events) = mpsc::unbounded_channel();
    let lines = Arc::new(Spool::new(
        cfg.buffer_lines,
        cfg.spill_max_mb.saturating_mul(1 << 20),
        &src.spill_dir,
    ));
    lines.probe()?;
    register_spool_gauges(&src.registry, &lines)?;
    let ctx = Arc::new(LinkContext {
        connection: cfg.connection,
        server: server.clone(),
        host,
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        joins: JoinLimiter::new(cfg.join_limit, cfg.join_window.0),
        backoff: Mutex::new(Backoff {
            min: cfg.reconnect_min.0,
            max: cfg.reconnect_max.0,
            failures: 0,
        }),
        events: ev_tx,
        lines: lines.clone(),
        next_conn: AtomicU64::new(0),
        nick: login.clone(),
        stats: stats.clone(),
    });
    LINK.with(|l| *l.borrow_mut() = Some(ctx.clone()));

    let mut config = ClientConfig::new_simple(StaticLoginCredentials::new(login.clone(), token));
    // The backoff wait happens inside the crate's connect timeout.
    config.connect_timeout = cfg.reconnect_max.0 + CONNECT_TIMEOUT * 2;
    config.tracing_identifier = Some(format!("twitch:{}", src.shard.index).into());
    // The crate's own message stream is not used (see the module docs): dropping its
    // receiver makes the crate discard what it would have queued there.
    let (crate_rx, client) = TwitchIRCClient::<Link, StaticLoginCredentials>::new(config);
    drop(crate_rx);

    let shard = src.shard;
    let mine = |all: &[String]| -> BTreeSet<String> {
        all.iter().filter(|c| shard.owns(c)).cloned().collect()
    };
    let mut channels_rx = src.channels;
    let mut wanted = mine(&channels_rx.borrow_and_update());
    tracing::info!(
        server = %server,
        login = %login,
        shard = %format!("{}/{}", shard.index, shard.count),
        channels = wanted.len(),
        "twitch source starting"
    );
    // Every followed channel has its message series from the start (at 0), so "live but
    // silent" can be told from "not followed".
    let touch = |chans: &mut dyn Iterator<Item = &String>| {
        for c in chans {
            stats
                .channel_messages
                .with_label_values(&[stats.labels.label(c)]);
        }
    };
    touch(&mut wanted.iter());
    for c in &wanted {
        client
            .join(c.clone())
            .map_err(|_| TwitchError::Channel(c.clone()))?;
    }
    let mut edits_open = true;
    let mut gaps = Gaps::default();
    let mut failed: Option<SpoolError> = None;
    // A message taken from the spool and waiting for room when the source was stopped.
    let mut held: Option<ChatMessage> = None;
    let mut room_ids: HashMap<String, String> = HashMap::new();
    let emit = |g: Gap| -> ChatMessage {
        stats.gaps.inc();
        tracing::warn!(channel = %g.channel, from_ms = g.from_ms, to_ms = g.to_ms, reason = %g.reason, "twitch: gap in collection recorded");
        g.to_message()
    };
    loop {
        let out: Option<ChatMessage> = tokio::select! {
            _ = cancel.cancelled() => break,
            changed = channels_rx.changed(), if edits_open => {
                if changed.is_err() {
                    edits_open = false;
                    continue;
                }
                let new = mine(&channels_rx.borrow_and_update());
                let joins: Vec<_> = new.difference(&wanted).cloned().collect();
                let parts: Vec<_> = wanted.difference(&new).cloned().collect();
                for c in &parts {
                    client.part(c.clone());
                    gaps.open.remove(c);
                    gaps.on.remove(c);
                }
                touch(&mut joins.iter());
                for c in &joins {
                    client.join(c.clone()).map_err(|_| TwitchError::Channel(c.clone()))?;
                }
                tracing::info!(?joins, ?parts, "twitch: channel list changed");
                wanted = new;
                None
            }
            ev = next_event(&mut events, &lines) => match ev {
                // The context holds a sender for as long as this loop runs.
                None => break,
                Some(LinkEvent::Line(line)) => match irc::parse_line(&line) {
                    Ok(m) => {
                        stats
                            .channel_messages
                            .with_label_values(&[stats.labels.label(&m.channel)])
                            .inc();
                        if !m.channel_id.is_empty() && !room_ids.contains_key(&m.channel) {
                            room_ids.insert(m.channel.clone(), m.channel_id.clone());
                        }
                        Some(m)
                    }
                    Err(irc::IrcError::NotChat(_)) => None,
                    Err(e) => {
                        src.stats.malformed.inc();
                        tracing::warn!(error = %e, "twitch: malformed chat line");
                        None
                    }
                },
                Some(LinkEvent::Joined { conn, channel, at_ms }) => {
                    tracing::debug!(conn, channel = %channel, "twitch: joined");
                    gaps.on.insert(channel.clone(), conn);
                    gaps.open.remove(&channel).map(|(from_ms, reason)| {
                        emit(Gap {
                            channel_id: room_ids.get(&channel).cloned().unwrap_or_default(),
                            channel,
                            from_ms,
                            to_ms: at_ms,
                            reason,
                        })
                    })
                }
                Some(LinkEvent::Lost { conn, channels, last_rx_ms, reason }) => {
                    for c in channels {
                        if gaps.on.get(&c) == Some(&conn) && wanted.contains(&c) {
                            gaps.on.remove(&c);
                            gaps.open.entry(c).or_insert((last_rx_ms, reason.clone()));
                        }
                    }
                    None
                }
                Some(LinkEvent::SpoolFailed(e)) => {
                    failed = Some(e);
                    break;
                }
                Some(LinkEvent::Notice(line)) => {
                    stats.notices.inc();
                    let (msg_id, channel, text) = IRCMessage::parse(&line)
                        .map(|m| (
                            m.tags.0.get("msg-id").cloned().unwrap_or_default(),
                            m.params.first().cloned().unwrap_or_default(),
                            m.params.get(1).cloned().unwrap_or_default(),
                        ))
                        .unwrap_or_default();
                    tracing::warn!(%msg_id, %channel, %text, "twitch: NOTICE");
                    None
                }
            },
        };
        if let Some(m) = out {
            let permit = tokio::select! {
                _ = cancel.cancelled() => {
                    held = Some(m);
                    break;
                }
                p = src.tx.reserve() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            permit.send(m);
            src.stats.received.inc();
        }
    }
    // Chat read but not yet handed on (the pipeline was behind): hand it on within a
    // bound; what is left is recorded as a gap on every channel, from when the oldest
    // waiting line arrived, so a stop never loses chat silently.
    // A line taken out but not handed on (the bound passed) counts as left too.
    let mut unsent = 0;
    let until = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
    let mut next = held.take().map(Ok);
    if failed.is_none() && next.is_none() {
        next = lines.try_pop().ok().flatten().map(|l| irc::parse_line(&l));
    }
    while let Some(parsed) = next {
        if let Ok(m) = parsed {
            match tokio::time::timeout_at(until, src.tx.send(m)).await {
                Ok(Ok(())) => src.stats.received.inc(),
                _ => {
                    unsent = 1;
                    break;
                }
            }
        }
        next = match failed {
            None => lines.try_pop().ok().flatten().map(|l| irc::parse_line(&l)),
            Some(_) => None,
        };
    }
    let left = lines.level();
    let left_lines = left.memory_lines as u64 + left.disk_lines + unsent;
    if left_lines > 0 {
        let since = lines.waiting_since_ms().unwrap_or_else(now_ms);
        tracing::warn!(
            lines = left_lines,
            since_ms = since,
            "twitch: stopping with chat read but not processed; recorded as gaps"
        );
        for channel in wanted.iter().chain(gaps.on.keys()).collect::<BTreeSet<_>>() {
            gaps.open.entry(channel.clone()).or_insert((
                since,
                format!("stopped with {left_lines} chat lines read but not processed"),
            ));
        }
    }
    // Gaps still open were never closed by a rejoin: record them up to now.
    let now = now_ms();
    let open: Vec<_> = gaps.open.drain().collect();
    for (channel, (from_ms, reason)) in open {
        let m = emit(Gap {
            channel_id: room_ids.get(&channel).cloned().unwrap_or_default(),
            channel,
            from_ms,
            to_ms: now,
            reason: format!("{reason}; not rejoined before shutdown"),
        });
        if src.tx.send(m).await.is_err() {
            break;
        }
        src.stats.received.inc();
    }
    drop(client);
    LINK.with(|l| l.borrow_mut().take());
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_join_limit_math() {
        // Twitch's default: 20 JOINs per 10 s. The 21st waits for the first to leave the
        // window (plus the 5% margin); the 41st for the 21st.
        let l = JoinLimiter::new(20, Duration::from_secs(10));
        let t0 = Instant::now();
        let mut sent = VecDeque::new();
        let mut times = Vec::new();
        let mut now = t0;
        for _ in 0..60 {
            if let Some(at) = l.next_slot(&sent, now) {
                now = at;
            }
            l.record(&mut sent, now);
            times.push(now - t0);
        }
        assert!(times[..20].iter().all(|t| t.is_zero()));
        assert_eq!(times[20], Duration::from_millis(10_500));
        assert_eq!(times[40], Duration::from_millis(21_000));
        // No window of 10 s (or 10.5 s) holds more than 20.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_millis(10_500))
                .count();
            assert!(
                in_window <= 20,
                "{in_window} JOINs in the window from {t:?}"
            );
        }
    }

    #[test]
    fn shards_are_stable_and_cover() {
        // FNV-1a 64 known value: "a" → 0xaf63dc4c8601ec8c.
        assert_eq!(
            shard_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(shard_of("XQC", 3), shard_of("xqc", 3));
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for c in ["xqc", "kaicenat", "shroud", "pokimane", "a", "b_c"] {
            assert_eq!(shards.iter().filter(|s| s.owns(c)).count(), 1, "{c}");
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let mut b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            failures: 0,
        };
        assert_eq!(b.next_delay(), Duration::ZERO);
        for n in 1..=12u32 {
            b.failed();
            let d = Duration::from_secs(1 << (n - 1).min(20)).min(Duration::from_secs(60));
            for _ in 0..20 {
                let x = b.next_delay();
                assert!(
                    x >= d / 2 && x <= d,
                    "failure {n}: {x:?} outside {:?}..={d:?}",
                    d / 2
                );
            }
        }
        b.lost(STABLE_AFTER);
        assert_eq!(b.failures, 1);
    }

    #[test]
    fn gap_round_trips_through_a_message() {
        let g = Gap {
            channel: "chan".into(),
            channel_id: "1".into(),
            from_ms: 10,
            to_ms: 20,
            reason: "server sent RECONNECT".into(),
        };
        assert_eq!(gap_of(&g.to_message()), Some(g));
    }
}
