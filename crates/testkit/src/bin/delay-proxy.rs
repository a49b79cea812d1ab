//! `delay-proxy HOST:PORT ONE_WAY_MS [RATE_KBIT]`: prints the local port, then forwards
//! 127.0.0.1:that port to HOST:PORT with each direction delayed (and capped at RATE_KBIT
//! kbit/s) (see `homebase_testkit::delay`). With `DELAY_PROXY_STATS=FILE` it keeps FILE
//! holding the bytes carried so far, `UP DOWN` (laptop → host, host → laptop). For the
//! benchmarks; runs until killed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), Some(ms)) = (args.next(), args.next()) else {
        eprintln!("usage: delay-proxy HOST:PORT ONE_WAY_MS [RATE_KBIT]");
        std::process::exit(2);
    };
    let Ok(ms) = ms.parse::<u64>() else {
        eprintln!("delay-proxy: `{ms}` is not a number of milliseconds");
        std::process::exit(2);
    };
    let rate = match args.next().map(|r| r.parse::<u64>()) {
        None => None,
        Some(Ok(kbit)) => Some(kbit * 1000),
        Some(Err(_)) => {
            eprintln!("delay-proxy: the rate is a number of kbit/s");
            std::process::exit(2);
        }
    };
    let counters = Arc::new(homebase_testkit::delay::Counters::default());
    let link = homebase_testkit::delay::Link {
        one_way: std::time::Duration::from_millis(ms),
        rate,
    };
    match homebase_testkit::delay::start_link(upstream.as_str(), link, counters.clone()) {
        Ok(port) => {
            println!("{port}");
            let stats = std::env::var_os("DELAY_PROXY_STATS");
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if let Some(path) = &stats {
                    let line = format!(
                        "{} {}\n",
                        counters.up.load(Ordering::Relaxed),
                        counters.down.load(Ordering::Relaxed)
                    );
                    let tmp = std::path::Path::new(path).with_extension("tmp");
                    if std::fs::write(&tmp, line).is_ok() {
                        let _ = std::fs::rename(&tmp, path);
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("delay-proxy: cannot forward to {upstream}: {e}");
            std::process::exit(1);
        }
    }
}
