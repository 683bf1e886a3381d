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
//! At most `relp_window` frames (default [`DEFAULT_WINDOW`]) are
//! unanswered at a time (a sliding window), which bounds what is in flight
//! and what a broken connection makes us send twice. What was acknowledged
//! is reported even when the connection then breaks, so a retry sends only
//! the rest.
//!
//! Throughput comes from doing per round trip, not per message, what
//! costs a system call: frames leave in one write per half window, and
//! answers are read in batches (see [`RelpConnection::send_all`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frames in flight before their answers are awaited. librelp's own
/// client uses 128; with answers read in [`GATHER`] pauses, 1,024 keeps
/// a receiver taking 100–150 k/s (rsyslog on a small machine) busy
/// through a pause.
pub const DEFAULT_WINDOW: usize = 1024;
/// How long answers gather before they are read while the window is
/// more than half full. Shorter than any receiver's turnaround for half a
/// window, and longer than the few microseconds between its answers.
const GATHER: Duration = Duration::from_millis(1);
/// Fewer frames in flight than this are not worth a pause.
const MIN_GATHERED: usize = 32;
/// The largest window a configuration may ask for.
pub const MAX_WINDOW: u32 = 16_384;
/// Largest answer frame accepted.
const MAX_ANSWER: usize = 64 * 1024;
/// Longest transaction number and data length (RELP: at most 9 digits).
const MAX_DIGITS: usize = 9;
/// Longest command name accepted from the receiver.
const MAX_COMMAND: usize = 32;

pub struct RelpConnection {
    stream: TcpStream,
    /// Bytes read from the receiver and not yet parsed.
    input: Vec<u8>,
    next_txnr: u64,
    timeout: Duration,
    window: usize,
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

/// One frame from the receiver, borrowed from the input buffer: one
/// arrives per message sent, so it should not allocate.
#[derive(Debug, PartialEq)]
struct Answer<'a> {
    txnr: u64,
    command: Cow<'a, str>,
    /// The first line of the data: the status of a `rsp`.
    status: Cow<'a, str>,
}

impl RelpConnection {
    /// Opens the session (`open` command and its `200 OK`).
    pub async fn open(
        stream: TcpStream,
        timeout: Duration,
        window: usize,
    ) -> Result<RelpConnection, String> {
        let mut c = RelpConnection {
            stream,
            input: Vec::with_capacity(4096),
            next_txnr: 1,
            timeout,
            window: window.max(1),
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
        &mut self.stream
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
        let r = tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("could not write within {:?}", self.timeout)),
        }
    }

    /// Sends `messages` as `syslog` transactions; `Ok` when every one was
    /// answered `200`. A sliding window, refilled only once half of it was
    /// answered, so frames leave in large writes. While more than half is
    /// in flight, answers are read after a [`GATHER`] pause: rsyslog
    /// answers each frame with its own small send, and reading each as it
    /// comes cost a wake-up, a read and an acknowledgement per handful of
    /// answers (most of the CPU RELP cost us). A small window never waits,
    /// so a short batch is answered as soon as the receiver allows.
    pub async fn send_all(&mut self, messages: &[&[u8]]) -> Result<(), RelpError> {
        let mut acked = 0;
        let mut next = 0;
        let window = self.window;
        let mut in_flight = VecDeque::with_capacity(window);
        while acked < messages.len() {
            if in_flight.len() <= window / 2 {
                while next < messages.len() && in_flight.len() < window {
                    in_flight.push_back(self.frame("syslog", messages[next]));
                    next += 1;
                }
            }
            if !self.out.is_empty() {
                self.flush()
                    .await
                    .map_err(|reason| RelpError { acked, reason })?;
            }
            if in_flight.len() > window / 2 && in_flight.len() >= MIN_GATHERED {
                tokio::time::sleep(GATHER).await;
            }
            self.fill()
                .await
                .map_err(|reason| RelpError { acked, reason })?;
            let mut parsed = 0;
            let mut failure = None;
            while let Some((answer, used)) =
                parse_answer(&self.input[parsed..]).map_err(|reason| RelpError { acked, reason })?
            {
                parsed += used;
                if let Err(reason) = check_ack(&answer, in_flight.pop_front()) {
                    failure = Some(reason);
                    break;
                }
                acked += 1;
            }
            self.input.drain(..parsed);
            if let Some(reason) = failure {
                return Err(RelpError { acked, reason });
            }
        }
        Ok(())
    }

    /// Reads what the receiver has sent (at least one byte) into `input`.
    async fn fill(&mut self) -> Result<(), String> {
        if self.input.len() > MAX_ANSWER + 64 {
            return Err(format!(
                "answer frame longer than {MAX_ANSWER} bytes from the receiver"
            ));
        }
        self.input.reserve(16 * 1024);
        let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.input))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the receiver closed the connection".into());
        }
        // librelp writes each answer on its own without TCP_NODELAY, so
        // Nagle holds the next answer until the last one is acknowledged.
        // Our acknowledgement rides on the next frames, but at the end of
        // a batch there are none, and a delayed one stalls for 40 ms.
        // Linux leaves quick-ack mode by itself, hence once per read.
        #[cfg(target_os = "linux")]
        let _ = self.stream.set_quickack(true);
        Ok(())
    }

    /// The next frame, which must be a `rsp`: its transaction number and
    /// status line.
    async fn answer(&mut self) -> Result<(u64, String), String> {
        loop {
            if let Some((a, used)) = parse_answer(&self.input)? {
                let answer = match a.command.as_ref() {
                    "rsp" => Ok((a.txnr, a.status.into_owned())),
                    "serverclose" => Err("the receiver closed the session".into()),
                    other => Err(format!("unexpected command {other:?} from the receiver")),
                };
                self.input.drain(..used);
                return answer;
            }
            self.fill().await?;
        }
    }

    /// Ends the session politely; a failure does not matter any more.
    pub async fn close(mut self) {
        self.frame("close", b"");
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.answer()).await;
        }
        let _ = self.stream.shutdown().await;
    }
}

/// An answer to the oldest frame in flight must be its `200`.
fn check_ack(answer: &Answer, expected: Option<u64>) -> Result<(), String> {
    match answer.command.as_ref() {
        "rsp" => {}
        "serverclose" => return Err("the receiver closed the session".into()),
        other => return Err(format!("unexpected command {other:?} from the receiver")),
    }
    let Some(expected) = expected else {
        return Err(format!(
            "answer for transaction {} while none is in flight",
            answer.txnr
        ));
    };
    if answer.txnr != expected {
        return Err(format!(
            "answer for transaction {}, expected {expected}",
            answer.txnr
        ));
    }
    if !answer.status.starts_with("200") {
        return Err(format!("the receiver answered {:?}", answer.status));
    }
    Ok(())
}

/// Parses one frame from the start of `input`: the frame and the bytes it
/// used, `None` while it is incomplete. Every field is bounded, so a
/// hostile receiver cannot make us buffer more than [`MAX_ANSWER`].
fn parse_answer(input: &[u8]) -> Result<Option<(Answer<'_>, usize)>, String> {
    let mut at = 0;
    let Some((txnr, _)) = token(input, &mut at, MAX_DIGITS)? else {
        return Ok(None);
    };
    let txnr: u64 = std::str::from_utf8(txnr)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad transaction number {:?} from the receiver", lossy(txnr)))?;
    let Some((command, _)) = token(input, &mut at, MAX_COMMAND)? else {
        return Ok(None);
    };
    let command = String::from_utf8_lossy(command);
    let Some((len, sep)) = token(input, &mut at, MAX_DIGITS)? else {
        return Ok(None);
    };
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad data length {:?} from the receiver", lossy(len)))?;
    if len > MAX_ANSWER {
        return Err(format!("answer of {len} bytes exceeds {MAX_ANSWER}"));
    }
    if sep == b'\n' {
        if len > 0 {
            return Err("malformed RELP frame from the receiver".into());
        }
        let status = Cow::Borrowed("");
        return Ok(Some((
            Answer {
                txnr,
                command,
                status,
            },
            at,
        )));
    }
    // `len` bytes of data, then the trailer.
    let Some(&trailer) = input.get(at + len) else {
        return Ok(None);
    };
    if trailer != b'\n' {
        return Err("RELP frame without its trailer".into());
    }
    let data = &input[at..at + len];
    let status = String::from_utf8_lossy(data.split(|&b| b == b'\n').next().unwrap_or(b""));
    Ok(Some((
        Answer {
            txnr,
            command,
            status,
        },
        at + len + 1,
    )))
}

/// The bytes up to the next space or newline, and that separator.
fn token<'a>(
    input: &'a [u8],
    at: &mut usize,
    max: usize,
) -> Result<Option<(&'a [u8], u8)>, String> {
    let rest = &input[*at..];
    let end = rest.len().min(max + 1);
    match rest[..end].iter().position(|&b| b == b' ' || b == b'\n') {
        Some(i) => {
            *at += i + 1;
            Ok(Some((&rest[..i], rest[i])))
        }
        None if rest.len() > max => Err("malformed RELP frame from the receiver".into()),
        None => Ok(None),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Answer<'_>, usize)>, String> {
        parse_answer(s.as_bytes())
    }

    #[test]
    fn answers_are_parsed_whole_and_waited_for_when_partial() {
        let (a, used) = parse("2 rsp 6 200 OK\n3 rsp").unwrap().unwrap();
        assert_eq!(a.txnr, 2);
        assert_eq!(a.command, "rsp");
        assert_eq!(a.status, "200 OK");
        assert_eq!(used, "2 rsp 6 200 OK\n".len());
        for partial in [
            "",
            "2",
            "2 rsp",
            "2 rsp 6",
            "2 rsp 6 200 O",
            "2 rsp 6 200 OK",
        ] {
            assert_eq!(parse(partial).unwrap(), None, "{partial:?}");
        }
        let data = "200 OK\nrelp_version=0\ncommands=syslog";
        let frame = format!("1 rsp {} {data}\n", data.len());
        let (a, used) = parse(&frame).unwrap().unwrap();
        assert_eq!((a.status.as_ref(), used), ("200 OK", frame.len()));
    }

    #[test]
    fn empty_data_is_accepted_with_or_without_the_space() {
        let (a, used) = parse("0 serverclose 0\nx").unwrap().unwrap();
        assert_eq!((a.txnr, a.command.as_ref(), used), (0, "serverclose", 16));
        let (a, used) = parse("9 rsp 0 \n").unwrap().unwrap();
        assert_eq!((a.txnr, used), (9, 9));
    }

    #[test]
    fn hostile_frames_are_refused_by_their_limits() {
        let long_number = format!("{} rsp 6 200 OK\n", "1".repeat(10));
        assert!(parse(&long_number).unwrap_err().contains("malformed"));
        assert!(parse("1 rsp 9999999 ").unwrap_err().contains("exceeds"));
        assert!(parse("x rsp 6 200 OK\n")
            .unwrap_err()
            .contains("transaction"));
        assert!(parse("1 rsp 2 200 OK\n").unwrap_err().contains("trailer"));
        assert!(parse("1 rsp 3\n").unwrap_err().contains("malformed"));
        let long_command = format!("1 {} 0\n", "c".repeat(40));
        assert!(parse(&long_command).is_err());
    }

    /// A receiver that answers only when the sender stops writing (as a
    /// slow one would): the sender never has more than its window
    /// unanswered, every message is acknowledged in order, and a refusal
    /// mid-stream reports exactly the messages acknowledged before it.
    #[tokio::test]
    async fn the_window_bounds_what_is_unanswered() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut input = Vec::new();
            let mut unanswered = Vec::new();
            let mut most_unanswered = 0;
            loop {
                let mut buf = [0u8; 4096];
                match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return most_unanswered,
                    Ok(Ok(n)) => input.extend_from_slice(&buf[..n]),
                    Err(_) => {
                        most_unanswered = most_unanswered.max(unanswered.len());
                        let mut out = Vec::new();
                        for txnr in unanswered.drain(..) {
                            let status = if txnr == 42 { "500 no" } else { "200 OK" };
                            out.extend_from_slice(
                                format!("{txnr} rsp {} {status}\n", status.len()).as_bytes(),
                            );
                        }
                        s.write_all(&out).await.unwrap();
                    }
                }
                while let Some((frame, used)) = parse_answer(&input).unwrap() {
                    unanswered.push(frame.txnr);
                    input.drain(..used);
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut c = RelpConnection::open(stream, Duration::from_secs(5), 8)
            .await
            .unwrap();
        let messages: Vec<Vec<u8>> = (0..30).map(|i| format!("m{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        c.send_all(&refs).await.unwrap();
        // `open` was transaction 1 and the first batch 2..=31, so 42 is
        // the 11th message of the second batch.
        let err = c.send_all(&refs).await.unwrap_err();
        assert_eq!(err.acked, 10, "{err}");
        assert!(err.reason.contains("500"), "{err}");
        drop(c);
        let most = receiver.await.unwrap();
        assert!(
            (1..=8).contains(&most),
            "{most} frames were unanswered at once"
        );
    }

    #[test]
    fn acknowledgements_must_follow_the_window_in_order() {
        let ok = |txnr, status: &'static str| Answer {
            txnr,
            command: "rsp".into(),
            status: status.into(),
        };
        assert!(check_ack(&ok(4, "200 OK"), Some(4)).is_ok());
        assert!(check_ack(&ok(5, "200 OK"), Some(4))
            .unwrap_err()
            .contains("expected 4"));
        assert!(check_ack(&ok(4, "500 error"), Some(4))
            .unwrap_err()
            .contains("500"));
        assert!(check_ack(&ok(4, "200 OK"), None).is_err());
        let close = Answer {
            txnr: 0,
            command: "serverclose".into(),
            status: "".into(),
        };
        assert!(check_ack(&close, Some(4)).unwrap_err().contains("closed"));
    }
}
