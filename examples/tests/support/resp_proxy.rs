//! A proxy between a `payments` process and Redis that makes completions fail at the server,
//! as the Postgres suite's trigger does: the first `n` completing scripts (an `EVALSHA` with
//! one key and five arguments, the only step with as many) are replaced, in their place in
//! the connection's stream, by a script that raises an error. Every other command passes
//! through untouched, in order.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy counts and refuses.
#[derive(Default)]
pub struct Plan {
    /// Completions still to fail.
    fail: AtomicU64,
    /// Completions seen since the last [`RespProxy::fail_next_completions`].
    attempts: AtomicU64,
}

/// A running proxy; it serves until the test ends.
pub struct RespProxy {
    /// Where the `payments` process connects: `redis://` this address.
    pub addr: SocketAddr,
    plan: Arc<Plan>,
}

/// The command a refused completion becomes.
const REFUSED: &[&[u8]] = &[
    b"EVAL",
    b"return redis.error_reply('ERR completion refused by the test')",
    b"0",
];

impl RespProxy {
    /// Starts a proxy to the Redis at `upstream`.
    pub async fn start(upstream: SocketAddr) -> RespProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let plan = Arc::new(Plan::default());
        let shared = plan.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let plan = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut commands = BufReader::new(client_read);
                    while let Some(command) = read_command(&mut commands).await {
                        let command = plan.judge(command);
                        if server_write.write_all(&encode(&command)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RespProxy { addr, plan }
    }

    /// `redis://` the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Fails the next `n` completions (and counts attempts from zero again).
    pub fn fail_next_completions(&self, n: u64) {
        self.plan.fail.store(n, Ordering::SeqCst);
        self.plan.attempts.store(0, Ordering::SeqCst);
    }

    /// Completions attempted since the last [`RespProxy::fail_next_completions`].
    pub fn completion_attempts(&self) -> u64 {
        self.plan.attempts.load(Ordering::SeqCst)
    }
}

impl Plan {
    /// The command to send on: `command`, or the refusal for a completion to fail.
    fn judge(&self, command: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let completion =
            command.len() == 9 && command[0].eq_ignore_ascii_case(b"EVALSHA") && command[2] == b"1";
        if !completion {
            return command;
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            REFUSED.iter().map(|part| part.to_vec()).collect()
        } else {
            command
        }
    }
}

/// Reads one command, an array of bulk strings as clients send them; `None` at the end.
async fn read_command(
    reader: &mut (impl AsyncRead + AsyncBufReadExt + Unpin),
) -> Option<Vec<Vec<u8>>> {
    let count = read_header(reader, b'*').await?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_header(reader, b'$').await?;
        let mut part = vec![0; len + 2];
        reader.read_exact(&mut part).await.ok()?;
        part.truncate(len);
        parts.push(part);
    }
    Some(parts)
}

/// Reads a `<kind><number>\r\n` line.
async fn read_header(reader: &mut (impl AsyncBufReadExt + Unpin), kind: u8) -> Option<usize> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await.ok()?;
    let text = std::str::from_utf8(line.strip_prefix(&[kind])?).ok()?;
    text.trim_end().parse().ok()
}

fn encode(command: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", command.len()).into_bytes();
    for part in command {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}
