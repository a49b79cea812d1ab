//! Plan and render time on the whole conformance corpus against `docker compose config`, in
//! one run: for every case both load, the median of `N` (env `N`, default 5) runs of each,
//! then the median and the worst file of each side and the ratio. homebase's figure is
//! load + plan + render in this process; `homebase --version`'s process start (of a release
//! build in target/release, when there is one) is measured apart, since the CLI pays it once
//! per command.
//!
//!   scripts/corpus && cargo build --release --bin homebase && N=5 cargo bench -p homebase-stack --bench corpus

#![allow(clippy::unwrap_used)] // a bench fails loudly

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cases, load, touch_env_files};
use homebase_stack::config::Config;
use homebase_stack::{Bytes, Plan};
use indexmap::IndexMap;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for case in cases(work.path()) {
        let mut env = case.env.clone();
        let Ok(project) = load(&case.files, &mut env, case.fill_required) else {
            continue;
        };
        touch_env_files(&project, &case.dir);
        let mut toml = String::from("[project]\nname = \"corpus\"\n");
        for name in project.services.keys() {
            toml.push_str(&format!("[services.\"{name}\"]\nmemory = \"256MiB\"\n"));
        }
        let config = Config::parse(Path::new("homebase.toml"), &toml, &IndexMap::new()).unwrap();
        let ours = median(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let mut e = env.clone();
                    let p = load(&case.files, &mut e, false).unwrap();
                    let plan = Plan::new(&config, &p, Bytes::gib(1024.0)).unwrap();
                    let _ = homebase_stack::render::render(&plan, &p, &config.render);
                    t.elapsed()
                })
                .collect(),
        );
        let compose = |case: &common::Case| {
            let t = Instant::now();
            let mut cmd = Command::new("docker");
            cmd.arg("compose");
            for f in &case.files {
                cmd.arg("-f").arg(f);
            }
            let ok = cmd
                .arg("config")
                .env_clear()
                .envs(env.iter())
                .current_dir(&case.dir)
                .output()
                .unwrap()
                .status
                .success();
            ok.then(|| t.elapsed())
        };
        let Some(first) = compose(&case) else {
            continue; // Compose refuses it: nothing to compare
        };
        let mut theirs = vec![first];
        theirs.extend((1..n).filter_map(|_| compose(&case)));
        rows.push((case.label.clone(), ours, median(theirs)));
    }
    // the CLI's process start, when a release build of it is here
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/homebase");
    let start = cli.is_file().then(|| {
        median(
            (0..20)
                .map(|_| {
                    let t = Instant::now();
                    Command::new(&cli).arg("--version").output().unwrap();
                    t.elapsed()
                })
                .collect(),
        )
    });
    let ours: Vec<Duration> = rows.iter().map(|r| r.1).collect();
    let theirs: Vec<Duration> = rows.iter().map(|r| r.2).collect();
    let worst_ours = rows.iter().max_by_key(|r| r.1).unwrap();
    let worst_theirs = rows.iter().max_by_key(|r| r.2).unwrap();
    let (mo, mt) = (median(ours.clone()), median(theirs.clone()));
    println!("{} files both load, N={n} runs each", rows.len());
    println!(
        "| | homebase load + plan + render (ms) | docker compose config (ms) | compose / homebase |"
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| median file | {:.2} | {:.1} | {:.0}× |",
        ms(mo),
        ms(mt),
        ms(mt) / ms(mo)
    );
    println!(
        "| worst file for homebase: {} | {:.2} | {:.1} | {:.0}× |",
        worst_ours.0,
        ms(worst_ours.1),
        ms(worst_ours.2),
        ms(worst_ours.2) / ms(worst_ours.1)
    );
    println!(
        "| worst file for compose: {} | {:.2} | {:.1} | {:.0}× |",
        worst_theirs.0,
        ms(worst_theirs.1),
        ms(worst_theirs.2),
        ms(worst_theirs.2) / ms(worst_theirs.1)
    );
    if let Some(start) = start {
        println!(
            "| `homebase --version` (the CLI's process start, paid once per command) | {:.2} | | |",
            ms(start)
        );
    }
    let total_o: Duration = ours.iter().sum();
    let total_t: Duration = theirs.iter().sum();
    println!(
        "| whole corpus (sum) | {:.1} | {:.1} | {:.0}× |",
        ms(total_o),
        ms(total_t),
        ms(total_t) / ms(total_o)
    );
}
