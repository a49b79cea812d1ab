//! A TCP proxy that delays each direction by a fixed time: a long link (250 ms round trip
//! from the far side of the world) on a machine whose kernel has no `tc netem`. Bytes keep
//! their order and arrive `delay` after they were read, so throughput is that of the path
//! and only latency changes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream`, each
/// direction delayed by `one_way`. Runs until the process ends.
pub fn start(upstream: impl ToSocketAddrs, one_way: Duration) -> std::io::Result<u16> {
    let upstream: Vec<_> = upstream.to_socket_addrs()?.collect();
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream[..]) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                pump(client, s2, one_way);
                pump(server, c2, one_way);
            }
        }
    });
    Ok(port)
}

/// Copies `from` to `to`, each chunk held back until `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // dropping tx ends the writer once everything queued has gone out
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
