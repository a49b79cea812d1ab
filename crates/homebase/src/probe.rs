//! Protocol-level probes through a tunnel: what the user cares about is not that a local
//! port accepts (ssh always accepts), but that the service behind it answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How to ask a service whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// PostgreSQL SSLRequest: the server answers `S` or `N`.
    Postgres,
    /// Neo4j Bolt handshake: the server answers the version it picked.
    Bolt,
    /// HTTP GET of a path: any status line counts as an answer.
    Http(String),
    /// TCP: the host side accepts and keeps the connection open.
    Tcp,
}

impl Probe {
    pub fn name(&self) -> String {
        match self {
            Probe::Postgres => "postgres".into(),
            Probe::Bolt => "bolt".into(),
            Probe::Http(p) => format!("http GET {p}"),
            Probe::Tcp => "tcp".into(),
        }
    }
}

/// The answer of one probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub ok: bool,
    pub rtt: Duration,
    pub detail: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Probes `127.0.0.1:port` `tries` times; returns the median round trip of the answers.
pub fn probe(port: u16, probe: &Probe, tries: usize) -> ProbeResult {
    let mut rtts = Vec::new();
    let mut last = ProbeResult {
        ok: false,
        rtt: Duration::ZERO,
        detail: "not probed".into(),
    };
    // up to `tries` samples, but no more once they took 300 ms: over a long link the first
    // already says the link is slow, and the check stays quick
    let start = Instant::now();
    for _ in 0..tries.max(1) {
        last = once(port, probe);
        if !last.ok {
            return last;
        }
        rtts.push(last.rtt);
        if start.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    rtts.sort();
    last.rtt = rtts[rtts.len() / 2];
    last
}

fn once(port: u16, probe: &Probe) -> ProbeResult {
    let start = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let fail = |detail: String| ProbeResult {
        ok: false,
        rtt: start.elapsed(),
        detail,
    };
    let mut s = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "cannot connect to 127.0.0.1:{port}: {e}; is the tunnel running?"
            ));
        }
    };
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_nodelay(true);
    let answer = |s: &mut TcpStream, req: &[u8], want: usize| -> std::io::Result<Vec<u8>> {
        s.write_all(req)?;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = s.read(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    };
    let closed = "the host closed the connection: nothing listens on the service's port there";
    let no_answer = |e: std::io::Error| -> String {
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        ) {
            closed.to_string()
        } else {
            format!("no answer: {e}")
        }
    };
    match probe {
        Probe::Postgres => match answer(&mut s, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], 1) {
            Ok(b) if b == b"S" || b == b"N" => {
                ok(start, "PostgreSQL answered the SSL request".into())
            }
            Ok(b) if b.is_empty() => fail(closed.into()),
            Ok(b) => fail(format!("not PostgreSQL: answered {b:?}")),
            Err(e) => fail(no_answer(e)),
        },
        Probe::Bolt => {
            let mut req = vec![0x60, 0x60, 0xB0, 0x17];
            for v in [[0, 0, 0, 5], [0, 0, 4, 4], [0, 0, 0, 4], [0, 0, 0, 3]] {
                req.extend_from_slice(&v);
            }
            match answer(&mut s, &req, 4) {
                Ok(b) if b.len() == 4 => ok(start, format!("Bolt {}.{}", b[3], b[2])),
                Ok(b) if b.is_empty() => fail(closed.into()),
                Ok(b) => fail(format!("not Bolt: answered {b:?}")),
                Err(e) => fail(no_answer(e)),
            }
        }
        Probe::Http(path) => {
            let req =
                format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: homebase\r\n\r\n");
            match answer(&mut s, req.as_bytes(), 12) {
                Ok(b) if b.starts_with(b"HTTP/") => {
                    let status = String::from_utf8_lossy(&b[9..b.len().min(12)]).to_string();
                    ok(start, format!("HTTP {status}"))
                }
                Ok(b) if b.is_empty() => fail(closed.into()),
                Ok(b) => fail(format!(
                    "not HTTP: answered {:?}",
                    String::from_utf8_lossy(&b)
                )),
                Err(e) => fail(no_answer(e)),
            }
        }
        Probe::Tcp => {
            // ssh accepts locally before it knows whether the host side connects; a refused
            // channel shows up as an immediate close.
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => fail(closed.into()),
                Ok(_) => ok(start, "open (it spoke first)".into()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    ProbeResult {
                        ok: true,
                        rtt: start.elapsed() - Duration::from_millis(300).min(start.elapsed()),
                        detail: "open".into(),
                    }
                }
                Err(e) => fail(no_answer(e)),
            }
        }
    }
}

fn ok(start: Instant, detail: String) -> ProbeResult {
    ProbeResult {
        ok: true,
        rtt: start.elapsed(),
        detail,
    }
}
