//! A mock Twitch chat server over real TCP on 127.0.0.1, speaking the Twitch IRC dialect the
//! `twitch-irc` client expects: `CAP REQ` (ACKed), `PASS`/`NICK` (recorded; welcome lines),
//! `JOIN` (echoed, or a `msg_channel_suspended` NOTICE for channels marked bad), `PART`
//! (echoed), `PING` (answered). Tests push tagged PRIVMSG/USERNOTICE/CLEARCHAT lines to the
//! connections joined to a channel, send `RECONNECT`, or cut connections abruptly. Every
//! JOIN is recorded server-side with the time it arrived, for rate-limit checks.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One JOIN as the server saw it.
#[derive(Debug, Clone)]
pub struct JoinSeen {
    pub at: Instant,
    pub conn: u64,
    pub channel: String,
}

struct Conn {
    id: u64,
    stream: TcpStream,
    nick: String,
    channels: BTreeSet<String>,
    alive: bool,
}

#[derive(Default)]
struct State {
    conns: Vec<Conn>,
    joins: Vec<JoinSeen>,
    parts: Vec<(u64, String)>,
    passwords: Vec<String>,
    nicks: Vec<String>,
    pongs: usize,
    bad: HashSet<String>,
    next_id: u64,
}

/// The server; runs until the test process ends (threads block in accept/read).
#[derive(Clone)]
pub struct MockTwitch {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl MockTwitch {
    /// Starts listening on a free port of 127.0.0.1.
    pub fn start() -> MockTwitch {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock twitch");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(s, stream));
            }
        });
        MockTwitch { port, state }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// JOINs of `channel` answer with a `msg_channel_suspended` NOTICE instead of an echo.
    pub fn mark_bad(&self, channel: &str) {
        self.state.lock().unwrap().bad.insert(channel.to_owned());
    }

    pub fn joins(&self) -> Vec<JoinSeen> {
        self.state.lock().unwrap().joins.clone()
    }

    pub fn parts(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap().parts.clone()
    }

    pub fn passwords(&self) -> Vec<String> {
        self.state.lock().unwrap().passwords.clone()
    }

    /// PONGs received (answers to [`MockTwitch::ping_all`]).
    pub fn pongs(&self) -> usize {
        self.state.lock().unwrap().pongs
    }

    pub fn nicks(&self) -> Vec<String> {
        self.state.lock().unwrap().nicks.clone()
    }

    /// Channels joined on open connections (server-side view).
    pub fn joined(&self) -> BTreeSet<String> {
        let st = self.state.lock().unwrap();
        st.conns
            .iter()
            .filter(|c| c.alive)
            .flat_map(|c| c.channels.iter().cloned())
            .collect()
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .conns
            .iter()
            .filter(|c| c.alive)
            .count()
    }

    /// Sends `line` to every open connection joined to `channel`; returns how many got it.
    pub fn send_to_channel(&self, channel: &str, line: &str) -> usize {
        let mut st = self.state.lock().unwrap();
        let mut n = 0;
        for c in st
            .conns
            .iter_mut()
            .filter(|c| c.alive && c.channels.contains(channel))
        {
            if c.stream.write_all(format!("{line}\r\n").as_bytes()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends each `(channel, line)` to the open connections joined to its channel, one
    /// write per connection (for load: `send_to_channel` looks every channel up alone).
    /// Returns how many lines were written.
    pub fn send_many(&self, items: &[(String, String)]) -> usize {
        self.send_many_each(items).iter().sum()
    }

    /// [`MockTwitch::send_many`], returning for each item how many connections it was
    /// written to (0: no open connection had its channel joined, or the write failed).
    pub fn send_many_each(&self, items: &[(String, String)]) -> Vec<usize> {
        let st = self.state.lock().unwrap();
        let mut by_channel: std::collections::HashMap<&str, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, c) in st.conns.iter().enumerate().filter(|(_, c)| c.alive) {
            for ch in &c.channels {
                by_channel.entry(ch.as_str()).or_default().push(i);
            }
        }
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); st.conns.len()];
        // Which items each connection's buffer carries.
        let mut carried: Vec<Vec<usize>> = vec![Vec::new(); st.conns.len()];
        let mut n = vec![0usize; items.len()];
        for (k, (channel, line)) in items.iter().enumerate() {
            for &i in by_channel
                .get(channel.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                bufs[i].extend_from_slice(line.as_bytes());
                bufs[i].extend_from_slice(b"\r\n");
                carried[i].push(k);
                n[k] += 1;
            }
        }
        drop(by_channel);
        // Written outside the lock: a slow reader must not stall the server's other
        // connections (their PINGs and JOINs).
        let targets: Vec<(TcpStream, Vec<u8>, Vec<usize>)> = bufs
            .into_iter()
            .zip(carried)
            .enumerate()
            .filter(|(_, (b, _))| !b.is_empty())
            .filter_map(|(i, (b, c))| st.conns[i].stream.try_clone().ok().map(|s| (s, b, c)))
            .collect();
        drop(st);
        for (mut stream, b, c) in targets {
            if stream.write_all(&b).is_err() {
                for k in c {
                    n[k] -= 1;
                }
            }
        }
        n
    }

    /// Sends `RECONNECT` on every open connection, then closes them (as Twitch does).
    pub fn reconnect_all(&self) {
        let mut st = self.state.lock().unwrap();
        for c in st.conns.iter_mut().filter(|c| c.alive) {
            let _ = c.stream.write_all(b":tmi.twitch.tv RECONNECT\r\n");
            std::thread::sleep(Duration::from_millis(20));
            let _ = c.stream.shutdown(Shutdown::Both);
            c.alive = false;
        }
    }

    /// Cuts every open connection without a word.
    pub fn drop_all(&self) {
        let mut st = self.state.lock().unwrap();
        for c in st.conns.iter_mut().filter(|c| c.alive) {
            let _ = c.stream.shutdown(Shutdown::Both);
            c.alive = false;
        }
    }

    /// Sends a server PING to every open connection.
    pub fn ping_all(&self) {
        let mut st = self.state.lock().unwrap();
        for c in st.conns.iter_mut().filter(|c| c.alive) {
            let _ = c.stream.write_all(b"PING :tmi.twitch.tv\r\n");
        }
    }
}

fn serve(state: Arc<Mutex<State>>, stream: TcpStream) {
    let id = {
        let mut st = state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.conns.push(Conn {
            id,
            stream: stream.try_clone().expect("clone stream"),
            nick: String::new(),
            channels: BTreeSet::new(),
            alive: true,
        });
        id
    };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r').to_owned();
        let mut st = state.lock().unwrap();
        let st = &mut *st;
        let Some(conn) = st.conns.iter_mut().find(|c| c.id == id) else {
            break;
        };
        if !conn.alive {
            break;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let mut reply = String::new();
        match cmd {
            "CAP" => {
                reply.push_str(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands\r\n")
            }
            "PASS" => st.passwords.push(rest.to_owned()),
            "NICK" => {
                conn.nick = rest.to_owned();
                st.nicks.push(rest.to_owned());
                let n = &conn.nick;
                for (code, text) in [
                    ("001", "Welcome, GLHF!"),
                    ("002", "Your host is tmi.twitch.tv"),
                    ("003", "This server is rather new"),
                    ("004", "-"),
                    ("375", "-"),
                    ("372", "You are in a maze of twisty passages, all alike."),
                    ("376", ">"),
                ] {
                    reply.push_str(&format!(":tmi.twitch.tv {code} {n} :{text}\r\n"));
                }
            }
            "JOIN" => {
                for ch in rest.split(',').map(|c| c.trim().trim_start_matches('#')) {
                    st.joins.push(JoinSeen {
                        at: Instant::now(),
                        conn: id,
                        channel: ch.to_owned(),
                    });
                    if st.bad.contains(ch) {
                        reply.push_str(&format!(
                            "@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #{ch} :This channel does not exist or has been suspended.\r\n"
                        ));
                    } else {
                        conn.channels.insert(ch.to_owned());
                        let n = &conn.nick;
                        reply.push_str(&format!(
                            ":{n}!{n}@{n}.tmi.twitch.tv JOIN #{ch}\r\n:{n}.tmi.twitch.tv 353 {n} = #{ch} :{n}\r\n:{n}.tmi.twitch.tv 366 {n} #{ch} :End of /NAMES list\r\n"
                        ));
                    }
                }
            }
            "PART" => {
                for ch in rest.split(',').map(|c| c.trim().trim_start_matches('#')) {
                    st.parts.push((id, ch.to_owned()));
                    if conn.channels.remove(ch) {
                        let n = &conn.nick;
                        reply.push_str(&format!(":{n}!{n}@{n}.tmi.twitch.tv PART #{ch}\r\n"));
                    }
                }
            }
            "PONG" => st.pongs += 1,
            "PING" => {
                let arg = rest.trim_start_matches(':');
                reply.push_str(&format!(":tmi.twitch.tv PONG tmi.twitch.tv :{arg}\r\n"));
            }
            _ => {}
        }
        if !reply.is_empty() && conn.stream.write_all(reply.as_bytes()).is_err() {
            conn.alive = false;
            break;
        }
    }
    if let Some(c) = state.lock().unwrap().conns.iter_mut().find(|c| c.id == id) {
        c.alive = false;
    }
}

/// A tagged PRIVMSG as Twitch sends it.
pub fn privmsg(channel: &str, id: &str, text: &str, ts_ms: i64) -> String {
    format!(
        "@badge-info=;badges=;color=#1E90FF;display-name=Viewer;emotes=;first-msg=0;flags=;id={id};mod=0;returning-chatter=0;room-id=4242;subscriber=0;tmi-sent-ts={ts_ms};turbo=0;user-id=777;user-type= :viewer!viewer@viewer.tmi.twitch.tv PRIVMSG #{channel} :{text}"
    )
}

/// A WebSocket front for the mock (Twitch's `irc-ws` flavour): accepts `ws://` connections
/// on its own port and relays each one to a fresh TCP connection of `mock`, one IRC line per
/// text frame from the server, any number of lines per frame from the client.
pub fn websocket_front(mock: &MockTwitch) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ws front");
    let port = listener.local_addr().unwrap().port();
    let backend = mock.addr();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = rt
            .block_on(async { tokio::net::TcpListener::from_std(listener) })
            .unwrap();
        rt.block_on(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let backend = backend.clone();
                tokio::spawn(async move {
                    use futures_util::StreamExt;
                    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
                    let Ok(ws) = async_tungstenite::tokio::accept_async(sock).await else {
                        return;
                    };
                    let Ok(tcp) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let (r, mut w) = tcp.into_split();
                    let (mut ws_tx, mut ws_rx) = ws.split();
                    let up = async move {
                        while let Some(Ok(m)) = ws_rx.next().await {
                            if let async_tungstenite::tungstenite::Message::Text(t) = m {
                                for l in t.as_str().lines() {
                                    if w.write_all(format!("{l}\r\n").as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    };
                    let down = async move {
                        let mut lines = tokio::io::BufReader::new(r).lines();
                        while let Ok(Some(l)) = lines.next_line().await {
                            let frame = async_tungstenite::tungstenite::Message::text(l);
                            if ws_tx.send(frame).await.is_err() {
                                return;
                            }
                        }
                        let _ = ws_tx.close(None).await;
                    };
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
    });
    port
}
