//! A TCP proxy that delays each direction by a fixed time: a long link (250 ms round trip
//! from the far side of the world) on a machine whose kernel has no `tc netem`. Bytes keep
//! their order and arrive `delay` after they were read; with a rate ([`Link::rate`]) each
//! direction also goes no faster than that (a hotel uplink), and the proxy counts the bytes
//! each way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// A link's shape: latency each way, and a rate cap (bits per second) each way.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub one_way: Duration,
    pub rate: Option<u64>,
}

/// Bytes that crossed the proxy: laptop → host (`up`) and host → laptop (`down`).
#[derive(Debug, Default)]
pub struct Counters {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream`, each
/// direction delayed by `one_way`. Runs until the process ends.
pub fn start(upstream: impl ToSocketAddrs, one_way: Duration) -> std::io::Result<u16> {
    start_link(
        upstream,
        Link {
            one_way,
            rate: None,
        },
        Arc::new(Counters::default()),
    )
}

/// [`start`] with a rate cap, counting bytes into `counters`.
pub fn start_link(
    upstream: impl ToSocketAddrs,
    link: Link,
    counters: Arc<Counters>,
) -> std::io::Result<u16> {
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
                let (up, down) = (counters.clone(), counters.clone());
                pump(client, s2, link, move |n| {
                    up.up.fetch_add(n, Ordering::Relaxed);
                });
                pump(server, c2, link, move |n| {
                    down.down.fetch_add(n, Ordering::Relaxed);
                });
            }
        }
    });
    Ok(port)
}

/// Copies `from` to `to`, each chunk held back until `delay` after it was read and, with a
/// rate, until the link has carried the chunks before it.
fn pump(mut from: TcpStream, mut to: TcpStream, link: Link, count: impl Fn(u64) + Send + 'static) {
    let delay = link.one_way;
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
        let mut free = Instant::now();
        for (due, chunk) in rx {
            let mut due = due;
            if let Some(rate) = link.rate.filter(|r| *r > 0) {
                // the chunk leaves once the link is free, and takes its size ÷ rate
                let send = Duration::from_secs_f64(chunk.len() as f64 * 8.0 / rate as f64);
                due = due.max(free + send);
                free = due;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            count(chunk.len() as u64);
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
