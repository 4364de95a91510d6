//! A small HTTP/1.1 load generator for bench/run.sh: N keep-alive connections on loopback,
//! each sending requests back to back, with a fresh `Idempotency-Key` per request (first calls)
//! or a few keys per connection sent again and again (replays). General tools (`oha`, `wrk`)
//! cannot vary a header per request without a script per request; this one can, and it checks
//! every answer's status and replay header.
//!
//! ```text
//! loadgen --addr 127.0.0.1:3000 --path /idem --concurrency 16 --duration 5 --mode first \
//!         --body-bytes 100 [--warmup 1] [--requests N] [--keys 8] [--tag run1] \
//!         [--session /peer/session] [--session-every 100] [--body '{"amount":1}'] [--label x] \
//!         [--group 1]
//! ```
//!
//! `--group G` (first calls): connections in groups of G send the same keys in the same order,
//! so that duplicates arrive together. The lines `measuring` and `measured` on stderr mark the
//! measured window, for a caller that reads CPU times around it.
//!
//! Prints one JSON object: requests, seconds, rps, p50/p90/p99/max latency in microseconds,
//! counts by status, how many answers were replays, and connection errors. Runs are bounded
//! by `--duration` (and `--requests` when given); only loopback addresses are accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new key per request.
    First,
    /// `keys` keys per connection, each sent once before measuring, then cycled.
    Replay,
}

#[derive(Debug, Clone)]
struct Options {
    addr: SocketAddr,
    path: String,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    requests: u64,
    mode: Mode,
    keys: usize,
    body: Arc<Vec<u8>>,
    tag: String,
    session: Option<String>,
    session_every: u64,
    label: String,
    group: usize,
}

fn parse() -> Result<Options, Error> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let name = name
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --name value, got {name:?}"))?
            .to_owned();
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        args.insert(name, value);
    }
    let get = |name: &str| args.get(name).cloned();
    let num = |name: &str, default: f64| -> Result<f64, Error> {
        Ok(match get(name) {
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number"))?,
            None => default,
        })
    };
    let addr: SocketAddr = get("addr")
        .ok_or("--addr is required")?
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err("--addr must be a loopback address".into());
    }
    let body = match (get("body"), get("body-bytes")) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(n)) => padded_json(n.parse().map_err(|_| "--body-bytes: not a number")?),
        (None, None) => padded_json(100),
    };
    let mode = match get("mode").as_deref() {
        None | Some("first") => Mode::First,
        Some("replay") => Mode::Replay,
        Some(other) => return Err(format!("--mode must be first or replay, not {other}").into()),
    };
    let duration = Duration::from_secs_f64(num("duration", 5.0)?.clamp(0.1, 600.0));
    Ok(Options {
        addr,
        path: get("path").unwrap_or_else(|| "/".into()),
        concurrency: (num("concurrency", 1.0)? as usize).clamp(1, 1024),
        duration,
        warmup: Duration::from_secs_f64(num("warmup", 0.0)?.clamp(0.0, 60.0)),
        requests: num("requests", 0.0)? as u64,
        mode,
        keys: (num("keys", 8.0)? as usize).max(1),
        body: Arc::new(body),
        tag: get("tag").unwrap_or_else(|| format!("t{}", std::process::id())),
        session: get("session"),
        session_every: num("session-every", 100.0)? as u64,
        label: get("label").unwrap_or_default(),
        group: (num("group", 1.0)? as usize).max(1),
    })
}

/// A JSON object of `n` bytes (at least 8): `{"p":"xxx…"}`.
fn padded_json(n: usize) -> Vec<u8> {
    let mut body = b"{\"p\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'x', n.saturating_sub(8)));
    body.extend_from_slice(b"\"}");
    body
}

/// One parsed answer.
struct Answer {
    status: u16,
    replayed: bool,
    session: Option<String>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(128 * 1024),
        })
    }

    async fn send(&mut self, request: &[u8]) -> Result<Answer, Error> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(answer) = self.parse()? {
                return Ok(answer);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A whole answer, once the buffer holds one.
    fn parse(&self) -> Result<Option<Answer>, Error> {
        let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.buf[..end])?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("a malformed status line")?;
        let (mut length, mut replayed, mut session) = (None, false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("idempotent-replayed")
                || name.eq_ignore_ascii_case("idempotency-replayed")
            {
                replayed = value == "true";
            } else if name.eq_ignore_ascii_case("set-cookie") && value.starts_with("session=") {
                session = value.split(';').next().map(str::to_owned);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked answers are not supported".into());
            }
        }
        let length = length.ok_or("an answer without content-length")?;
        if self.buf.len() < end + 4 + length {
            return Ok(None);
        }
        Ok(Some(Answer {
            status,
            replayed,
            session,
        }))
    }
}

fn request(options: &Options, key: &str, cookie: Option<&str>, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nidempotency-key: {}\r\n",
        options.path,
        options.addr,
        options.body.len(),
        key
    );
    if let Some(cookie) = cookie {
        let _ = write!(out, "cookie: {cookie}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&options.body);
}

fn session_request(options: &Options, path: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n",
        options.addr
    )
    .into_bytes()
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    status: BTreeMap<u16, u64>,
    replayed: u64,
    errors: u64,
}

async fn new_session(conn: &mut Conn, options: &Options) -> Result<Option<String>, Error> {
    let Some(path) = &options.session else {
        return Ok(None);
    };
    let answer = conn.send(&session_request(options, path)).await?;
    answer
        .session
        .map(Some)
        .ok_or_else(|| "the session route set no session cookie".into())
}

async fn connection(
    id: usize,
    options: Arc<Options>,
    measure_from: Instant,
    end: Instant,
    sent: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    let mut cookie = None;
    let mut out = Vec::with_capacity(options.body.len() + 256);
    let mut n: u64 = 0;
    let mut since_session: u64 = 0;
    let mut primed = 0usize;
    while Instant::now() < end {
        if conn.is_none() {
            match Conn::open(options.addr).await {
                Ok(mut c) => {
                    cookie = match new_session(&mut c, &options).await {
                        Ok(cookie) => cookie,
                        Err(_) => {
                            tally.errors += 1;
                            continue;
                        }
                    };
                    since_session = 0;
                    conn = Some(c);
                }
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // First calls: a long-lived session collects every key; start a new one now and then,
        // as a real client's sessions would (the peer stores keys per session).
        if options.mode == Mode::First
            && options.session.is_some()
            && options.session_every > 0
            && since_session >= options.session_every
        {
            match new_session(c, &options).await {
                Ok(fresh) => cookie = fresh,
                Err(_) => {
                    tally.errors += 1;
                    conn = None;
                    continue;
                }
            }
            since_session = 0;
        }
        let key = match options.mode {
            Mode::First => format!("{}-{:03}-{n:08}", options.tag, id / options.group),
            Mode::Replay => format!("{}-{id:03}-r{:04}", options.tag, n % options.keys as u64),
        };
        let priming = options.mode == Mode::Replay && primed < options.keys;
        if !priming
            && options.requests > 0
            && sent.fetch_add(1, Ordering::Relaxed) >= options.requests
        {
            break;
        }
        request(&options, &key, cookie.as_deref(), &mut out);
        let started = Instant::now();
        match c.send(&out).await {
            Ok(answer) => {
                n += 1;
                since_session += 1;
                if priming {
                    primed += 1;
                    continue;
                }
                if started >= measure_from {
                    let us = started.elapsed().as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    *tally.status.entry(answer.status).or_default() += 1;
                    tally.replayed += u64::from(answer.replayed);
                }
            }
            Err(_) => {
                tally.errors += 1;
                conn = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<(), Error> {
    let options = Arc::new(parse()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tally, seconds) = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + options.warmup;
        let end = measure_from + options.duration;
        let sent = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            eprintln!("measuring");
        });
        let tasks: Vec<_> = (0..options.concurrency)
            .map(|id| {
                tokio::spawn(connection(
                    id,
                    options.clone(),
                    measure_from,
                    end,
                    sent.clone(),
                ))
            })
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.unwrap_or_default();
            all.latencies_us.extend(t.latencies_us);
            for (status, count) in t.status {
                *all.status.entry(status).or_default() += count;
            }
            all.replayed += t.replayed;
            all.errors += t.errors;
        }
        eprintln!("measured");
        let measured = Instant::now()
            .min(end)
            .saturating_duration_since(measure_from);
        (all, measured.as_secs_f64())
    });
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    let requests = lat.len() as u64;
    let status: serde_json::Map<String, serde_json::Value> = tally
        .status
        .iter()
        .map(|(s, n)| (s.to_string(), (*n).into()))
        .collect();
    let report = serde_json::json!({
        "label": options.label,
        "path": options.path,
        "mode": match options.mode { Mode::First => "first", Mode::Replay => "replay" },
        "concurrency": options.concurrency,
        "body_bytes": options.body.len(),
        "requests": requests,
        "seconds": seconds,
        "rps": if seconds > 0.0 { requests as f64 / seconds } else { 0.0 },
        "p50_us": percentile(&lat, 50.0),
        "p90_us": percentile(&lat, 90.0),
        "p99_us": percentile(&lat, 99.0),
        "max_us": lat.last().copied().unwrap_or(0),
        "status": status,
        "replayed": tally.replayed,
        "errors": tally.errors,
    });
    println!("{report}");
    Ok(())
}
