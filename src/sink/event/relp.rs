//! The client side of RELP, the Reliable Event Logging Protocol of
//! rsyslog (librelp's `doc/relp.html`): every message is a numbered
//! transaction the receiver answers, so a message counts as delivered only
//! once the receiver said `200 OK` for it.
//!
//! ```text
//! frame = TXNR SP COMMAND SP DATALEN [SP DATA] LF
//! → 1 open 52 relp_version=0\nrelp_software=spillway\ncommands=syslog
//! ← 1 rsp 92 200 OK\nrelp_version=0\n...
//! → 2 syslog 61 <190>1 2024-...
//! ← 2 rsp 6 200 OK
//! → 9 close 0
//! ← 9 rsp 0 / 0 serverclose 0
//! ```
//!
//! At most [`WINDOW`] frames are unanswered at a time (a sliding window),
//! which bounds what is in flight. What was acknowledged is reported even
//! when the connection then breaks, so a retry sends only the rest.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Frames in flight before their answers are awaited (librelp's default window).
pub const WINDOW: usize = 128;
/// Largest answer frame accepted.
const MAX_ANSWER: usize = 64 * 1024;

pub struct RelpConnection {
    stream: BufReader<TcpStream>,
    next_txnr: u64,
    timeout: Duration,
    out: Vec<u8>,
}

/// Why a send stopped, with how many leading messages were acknowledged.
#[derive(Debug)]
pub struct RelpError {
    pub acked: usize,
    pub reason: String,
}

impl std::fmt::Display for RelpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RELP: {} (after {} acknowledged messages)",
            self.reason, self.acked
        )
    }
}

impl RelpConnection {
    /// Opens the session (`open` command and its `200 OK`).
    pub async fn open(stream: TcpStream, timeout: Duration) -> Result<RelpConnection, String> {
        let mut c = RelpConnection {
            stream: BufReader::new(stream),
            next_txnr: 1,
            timeout,
            out: Vec::new(),
        };
        let offers = format!(
            "relp_version=0\nrelp_software=spillway,{},\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        let txnr = c.frame("open", offers.as_bytes());
        c.flush().await?;
        let (got, status) = c.answer().await?;
        if got != txnr || !status.starts_with("200") {
            return Err(format!("the receiver refused the session: {status}"));
        }
        Ok(c)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.stream.get_mut()
    }

    fn frame(&mut self, command: &str, data: &[u8]) -> u64 {
        let txnr = self.next_txnr;
        self.next_txnr = if txnr >= 999_999_999 { 1 } else { txnr + 1 };
        use std::io::Write;
        let _ = write!(self.out, "{txnr} {command} {}", data.len());
        if !data.is_empty() {
            self.out.push(b' ');
            self.out.extend_from_slice(data);
        }
        self.out.push(b'\n');
        txnr
    }

    async fn flush(&mut self) -> Result<(), String> {
        let out = std::mem::take(&mut self.out);
        let w = self.stream.get_mut();
        let r = tokio::time::timeout(self.timeout, async {
            w.write_all(&out).await?;
            w.flush().await
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("could not write within {:?}", self.timeout)),
        }
    }

    /// Sends `messages` as `syslog` transactions; `Ok` when every one was
    /// answered `200`. A sliding window: each answer read lets one more
    /// frame go, and frames are written whenever no answer is waiting, so
    /// the stream never stalls on delayed acknowledgements.
    pub async fn send_all(&mut self, messages: &[&[u8]]) -> Result<(), RelpError> {
        let mut acked = 0;
        let mut next = 0;
        let mut in_flight = std::collections::VecDeque::with_capacity(WINDOW);
        while next < messages.len() && in_flight.len() < WINDOW {
            in_flight.push_back(self.frame("syslog", messages[next]));
            next += 1;
        }
        while let Some(txnr) = in_flight.pop_front() {
            if !self.out.is_empty() && self.stream.buffer().is_empty() {
                self.flush()
                    .await
                    .map_err(|reason| RelpError { acked, reason })?;
            }
            let (got, status) = self
                .answer()
                .await
                .map_err(|reason| RelpError { acked, reason })?;
            if got != txnr {
                return Err(RelpError {
                    acked,
                    reason: format!("answer for transaction {got}, expected {txnr}"),
                });
            }
            if !status.starts_with("200") {
                return Err(RelpError {
                    acked,
                    reason: format!("the receiver answered {status:?}"),
                });
            }
            acked += 1;
            if next < messages.len() {
                in_flight.push_back(self.frame("syslog", messages[next]));
                next += 1;
            }
        }
        Ok(())
    }

    /// Reads the next frame, which must be a `rsp`: its transaction number
    /// and status line. `serverclose` is an error (the receiver is going away).
    async fn answer(&mut self) -> Result<(u64, String), String> {
        let (txnr, command, data) =
            tokio::time::timeout(self.timeout, read_frame(&mut self.stream))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        match command.as_str() {
            "rsp" => {
                let text = String::from_utf8_lossy(&data);
                Ok((txnr, text.lines().next().unwrap_or("").to_string()))
            }
            "serverclose" => Err("the receiver closed the session".into()),
            other => Err(format!("unexpected command {other:?} from the receiver")),
        }
    }

    /// Ends the session politely; a failure does not matter any more.
    pub async fn close(mut self) {
        self.frame("close", b"");
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.answer()).await;
        }
        let _ = self.stream.get_mut().shutdown().await;
    }
}

async fn read_token(r: &mut BufReader<TcpStream>, max: usize) -> Result<(String, u8), String> {
    let mut s = String::new();
    loop {
        let b = r.read_u8().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the receiver closed the connection".to_string(),
            _ => e.to_string(),
        })?;
        if b == b' ' || b == b'\n' {
            return Ok((s, b));
        }
        if s.len() >= max {
            return Err("malformed RELP frame from the receiver".into());
        }
        s.push(b as char);
    }
}

async fn read_frame(r: &mut BufReader<TcpStream>) -> Result<(u64, String, Vec<u8>), String> {
    let (txnr, _) = read_token(r, 9).await?;
    let txnr: u64 = txnr
        .parse()
        .map_err(|_| format!("bad transaction number {txnr:?} from the receiver"))?;
    let (command, _) = read_token(r, 32).await?;
    let (len, sep) = read_token(r, 9).await?;
    let len: usize = len
        .parse()
        .map_err(|_| format!("bad data length {len:?} from the receiver"))?;
    if len > MAX_ANSWER {
        return Err(format!("answer of {len} bytes exceeds {MAX_ANSWER}"));
    }
    let mut data = vec![0; len];
    if len > 0 {
        if sep != b' ' {
            return Err("malformed RELP frame from the receiver".into());
        }
        r.read_exact(&mut data).await.map_err(|e| e.to_string())?;
        let trailer = r.read_u8().await.map_err(|e| e.to_string())?;
        if trailer != b'\n' {
            return Err("RELP frame without its trailer".into());
        }
    } else if sep == b' ' {
        let trailer = r.read_u8().await.map_err(|e| e.to_string())?;
        if trailer != b'\n' {
            return Err("RELP frame without its trailer".into());
        }
    }
    Ok((txnr, command, data))
}
