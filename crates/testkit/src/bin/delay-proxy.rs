//! `delay-proxy HOST:PORT ONE_WAY_MS`: prints the local port, then forwards 127.0.0.1:that
//! port to HOST:PORT with each direction delayed (see `homebase_testkit::delay`). For the
//! benchmarks of bench/latency.sh; runs until killed.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), Some(ms)) = (args.next(), args.next()) else {
        eprintln!("usage: delay-proxy HOST:PORT ONE_WAY_MS");
        std::process::exit(2);
    };
    let Ok(ms) = ms.parse::<u64>() else {
        eprintln!("delay-proxy: `{ms}` is not a number of milliseconds");
        std::process::exit(2);
    };
    match homebase_testkit::delay::start(upstream.as_str(), std::time::Duration::from_millis(ms)) {
        Ok(port) => {
            println!("{port}");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("delay-proxy: cannot forward to {upstream}: {e}");
            std::process::exit(1);
        }
    }
}
