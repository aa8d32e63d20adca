//! `wasmpod-bench`: the figures of issue 4 against a running (private) containerd.
//!
//! ```text
//! wasmpod-bench gen-module --out FILE [--functions 60000]
//! wasmpod-bench run --socket SOCK --namespace NS --fifo-dir DIR --cache-dir DIR
//!                   --containerd-log FILE --out JSON [--runs 20] [--first-runs 3]
//!                   [--tasks 200] [--parallel 4] [--kill-runs 20] [--many 500] [--pod-size 10]
//! ```
//!
//! `bench/bench.sh` (`make bench`) builds everything, starts the containerd (with the shim's
//! compile cache in `--cache-dir`), imports the images named in [`images`] and calls `run`,
//! which measures in this order: first starts of the big module (cache cleared before
//! each), interleaved `ctr run --rm` rounds of hello / busybox `true` / big module, task
//! throughput of both runtimes, kill latency of a spinning guest, then idle memory of 5
//! sleeping containers in one pod and in five pods and of `--many` in pods of `--pod-size`.
//! It prints the table and writes the rows, raw samples and breakdowns to `--out`.
//!
//! Exit codes: 0 measured (whether or not targets are met), 1 a measurement failed, 2 bad
//! usage.

// The table is this binary's output.
#![allow(clippy::print_stdout)]

mod breakdown;
mod client;
mod density;
mod memory;
mod module;
mod report;
mod start;
mod stats;
mod tasks;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::json;

use breakdown::StartBreakdown;
use client::Client;
use report::{Bound, Row};
use start::{Ctr, Payload, WASMPOD};
use stats::Summary;

/// The images `bench/bench.sh` imports.
mod images {
    pub const HELLO: &str = "localhost/wasmpod/hello:latest";
    pub const BIG: &str = "localhost/wasmpod/big:latest";
    pub const SLEEP: &str = "localhost/wasmpod/sleep:latest";
    pub const SPIN: &str = "localhost/wasmpod/spin:latest";
    pub const BUSYBOX: &str = "localhost/busybox:latest";
}

const USAGE: &str = "usage:
  wasmpod-bench gen-module --out FILE [--functions 60000]
  wasmpod-bench run --socket SOCK --namespace NS --fifo-dir DIR --cache-dir DIR
                    --containerd-log FILE --out JSON [--runs 20] [--first-runs 3]
                    [--tasks 200] [--parallel 4] [--kill-runs 20] [--many 500] [--pod-size 10]";

/// `--flag value` pairs after the command.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument {flag:?}");
            };
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Flags(map))
    }

    fn required(&self, name: &str) -> anyhow::Result<String> {
        self.0
            .get(name)
            .cloned()
            .with_context(|| format!("--{name} is required"))
    }

    fn number(&self, name: &str, default: usize) -> anyhow::Result<usize> {
        self.0.get(name).map_or(Ok(default), |v| {
            v.parse()
                .with_context(|| format!("--{name} {v:?}: not a number"))
        })
    }
}

/// Options of `run`.
struct RunOptions {
    ctr: Ctr,
    cache_dir: PathBuf,
    containerd_log: PathBuf,
    out: PathBuf,
    runs: usize,
    first_runs: usize,
    tasks: usize,
    parallel: usize,
    kill_runs: usize,
    many: usize,
    pod_size: usize,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let flags = match Flags::parse(args) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("wasmpod-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command.as_str() {
        "gen-module" => gen_module(&flags),
        "run" => run_options(&flags).and_then(|o| run(&o)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmpod-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gen_module(flags: &Flags) -> anyhow::Result<()> {
    let out = flags.required("out")?;
    let functions = flags.number("functions", 60_000)?;
    let wasm = module::big_module(functions.try_into()?)?;
    std::fs::write(&out, &wasm).with_context(|| format!("writing {out}"))?;
    eprintln!("{out}: {} bytes, {functions} functions", wasm.len());
    Ok(())
}

fn run_options(flags: &Flags) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        ctr: Ctr {
            socket: flags.required("socket")?,
            namespace: flags.required("namespace")?,
            fifo_dir: flags.required("fifo-dir")?.into(),
        },
        cache_dir: flags.required("cache-dir")?.into(),
        containerd_log: flags.required("containerd-log")?.into(),
        out: flags.required("out")?.into(),
        runs: flags.number("runs", 20)?,
        first_runs: flags.number("first-runs", 3)?,
        tasks: flags.number("tasks", 200)?,
        parallel: flags.number("parallel", 4)?,
        kill_runs: flags.number("kill-runs", 20)?,
        many: flags.number("many", 500)?,
        pod_size: flags.number("pod-size", 10)?,
    })
}

fn payload(runtime: Option<&'static str>, image: &str, args: &[&str]) -> Payload {
    Payload {
        runtime,
        image: image.to_owned(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn run(o: &RunOptions) -> anyhow::Result<()> {
    let began = Instant::now();
    let hello = payload(Some(WASMPOD), images::HELLO, &[]);
    let big = payload(Some(WASMPOD), images::BIG, &[]);
    let sleep = payload(Some(WASMPOD), images::SLEEP, &[]);
    let spin = payload(Some(WASMPOD), images::SPIN, &[]);
    let truth = payload(None, images::BUSYBOX, &["/bin/true"]);
    let mut rows = Vec::new();

    // Figure 2a: first starts, each after clearing the compile cache.
    progress(&format!(
        "{} first starts of the big module (compiling)",
        o.first_runs
    ));
    let mut first = Vec::new();
    for round in 0..o.first_runs {
        start::clear_cache(&o.cache_dir)?;
        first.push(o.ctr.run_rm(&big, &format!("first-big-{round}"))?);
    }

    // Figures 1 and 2b: interleaved rounds after a warm-up (which also fills the cache).
    progress(&format!(
        "{} interleaved ctr run --rm rounds: hello, busybox true, big module",
        o.runs
    ));
    let set = [("hello", &hello), ("true", &truth), ("big", &big)];
    start::interleaved(&o.ctr, &set, "warm", 2)?;
    let times = start::interleaved(&o.ctr, &set, "s", o.runs)?;
    let [hello_t, true_t, big_t] = [0, 1, 2].map(|i| Summary::millis(&times[i]));
    let hello_ratio = hello_t.median / true_t.median;
    let big_ratio = big_t.median / hello_t.median;
    let first_t = Summary::millis(&first);
    rows.push(
        Row::info("ctr run --rm: wasmpod hello", "ms", hello_t.clone())
            .ratio(hello_ratio)
            .target("<= 0.8x runc true", hello_ratio, Bound::AtMost(0.8)),
    );
    rows.push(Row::info("ctr run --rm: runc busybox true", "ms", true_t).ratio(1.0));
    rows.push(
        Row::info(
            "ctr run --rm: big module, first (compile)",
            "ms",
            first_t.clone(),
        )
        .ratio(first_t.median / hello_t.median),
    );
    rows.push(
        Row::info("ctr run --rm: big module, cached", "ms", big_t)
            .ratio(big_ratio)
            .target("<= 1.3x hello", big_ratio, Bound::AtMost(1.3)),
    );
    let breakdown = |prefix: &str| StartBreakdown::from_log(&o.containerd_log, prefix);
    let breakdown_shim = json!({
        "note": "medians of the shim's debug timing (bench/src/breakdown.rs)",
        "hello": breakdown("s-hello-"),
        "big_cached": breakdown("s-big-"),
        "big_first": breakdown("first-big-"),
    });
    let hello_wall_ms = hello_t.median;

    // Exec (issue 12): `ctr task exec` of the running wasm container's own .wasm against
    // `runc exec` of /bin/true in a running busybox container, interleaved.
    progress(&format!(
        "{} interleaved ctr task exec rounds: wasmpod .wasm, runc true",
        o.runs
    ));
    let sleeper = payload(None, images::BUSYBOX, &["/bin/sleep", "3600"]);
    o.ctr.run_detached(&sleep, "exec-wasm")?;
    o.ctr.run_detached(&sleeper, "exec-runc")?;
    let targets: [(&str, &str, &[&str]); 2] = [
        ("wasm", "exec-wasm", &["/sleep.wasm", "0"]),
        ("runc", "exec-runc", &["/bin/true"]),
    ];
    start::interleaved_execs(&o.ctr, &targets, 2)?;
    let execs = start::interleaved_execs(&o.ctr, &targets, o.runs)?;
    for id in ["exec-wasm", "exec-runc"] {
        o.ctr.kill_and_remove(id)?;
    }
    let [exec_wasm_t, exec_runc_t] = [0, 1].map(|i| Summary::millis(&execs[i]));
    let exec_ratio = exec_wasm_t.median / exec_runc_t.median;
    rows.push(
        Row::info("ctr task exec: wasmpod .wasm (cached)", "ms", exec_wasm_t).ratio(exec_ratio),
    );
    rows.push(Row::info("ctr task exec: runc true", "ms", exec_runc_t).ratio(1.0));

    for (payload, id) in [
        (&hello, "tmpl-hello"),
        (&truth, "tmpl-true"),
        (&sleep, "tmpl-sleep"),
        (&spin, "tmpl-spin"),
    ] {
        o.ctr.create_container(payload, id)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let async_part = runtime.block_on(grpc_figures(o, &mut rows))?;

    let elapsed = began.elapsed();
    let table = report::table(&rows);
    println!("\n{table}");
    let ready = |key: &str| match breakdown_shim[key]["ready_ms"].as_f64() {
        Some(ms) => format!("{ms:.1} ms"),
        None => "n/a (containerd not at debug level)".to_owned(),
    };
    println!(
        "measured in {:.0} s; shim 'ready in' (create -> runner ready), median: hello {}, \
         big cached {}, big first {}",
        elapsed.as_secs_f64(),
        ready("hello"),
        ready("big_cached"),
        ready("big_first"),
    );
    if let Some(hello) = breakdown("s-hello-") {
        println!("\n{}", hello.table("hello", hello_wall_ms));
    }
    println!("{}", async_part.summary);
    let document = json!({
        "issue": 4,
        "measured_seconds": elapsed.as_secs_f64(),
        "options": {
            "runs": o.runs, "first_runs": o.first_runs, "tasks": o.tasks,
            "parallel": o.parallel, "kill_runs": o.kill_runs, "many": o.many,
            "pod_size": o.pod_size,
        },
        "rows": rows,
        "start_breakdown_shim": breakdown_shim,
        "task_phases_ms": async_part.phases,
        "density": async_part.density,
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("writing {}", o.out.display()))?;
    println!("JSON: {}", o.out.display());
    Ok(())
}

/// What the gRPC figures add besides rows.
struct GrpcExtras {
    phases: serde_json::Value,
    density: serde_json::Value,
    summary: String,
}

async fn grpc_figures(o: &RunOptions, rows: &mut Vec<Row>) -> anyhow::Result<GrpcExtras> {
    let client = Client::connect(&o.ctr.socket, &o.ctr.namespace).await?;
    let hello = client.template("tmpl-hello").await?;
    let truth = client.template("tmpl-true").await?;
    let sleep = client.template("tmpl-sleep").await?;
    let spin = client.template("tmpl-spin").await?;

    // Figure 3: two rounds per runtime, alternating.
    progress(&format!(
        "throughput: {} tasks per runtime, {} in parallel",
        o.tasks, o.parallel
    ));
    let mut wasm = tasks::Throughput::default();
    let mut runc = tasks::Throughput::default();
    let half = o.tasks.div_ceil(2);
    for round in 0..2 {
        let n = if round == 0 { half } else { o.tasks - half };
        let ids = |rt: &str| (0..n).map(|i| format!("tp-{rt}-{round}-{i}")).collect();
        wasm.add(tasks::throughput(&client, &hello, ids("wasm"), o.parallel).await?);
        runc.add(tasks::throughput(&client, &truth, ids("runc"), o.parallel).await?);
    }
    let ratio = wasm.per_second() / runc.per_second();
    rows.push(
        Row::info(
            format!(
                "tasks/s, create+start+wait+delete x{} (||{}): wasmpod",
                wasm.tasks, o.parallel
            ),
            "tasks/s",
            Summary::new(vec![wasm.per_second()]),
        )
        .ratio(ratio)
        .target(">= 2x runc", ratio, Bound::AtLeast(2.0)),
    );
    rows.push(
        Row::info(
            format!("tasks/s, same x{}: runc busybox true", runc.tasks),
            "tasks/s",
            Summary::new(vec![runc.per_second()]),
        )
        .ratio(1.0),
    );
    let phase_json = |t: &tasks::Throughput| {
        let [create, start, wait, delete] = t.phases.medians();
        json!({ "create": create, "start": start, "wait": wait, "delete": delete,
                "tasks": t.tasks, "seconds": t.elapsed.as_secs_f64() })
    };
    let phases = json!({ "wasmpod": phase_json(&wasm), "runc": phase_json(&runc) });

    // Figure 6.
    progress(&format!(
        "kill latency: {} runs each of SIGTERM and SIGKILL",
        o.kill_runs
    ));
    for (signal, name) in [(15, "SIGTERM"), (9, "SIGKILL")] {
        let times = tasks::kill_latency(
            &client,
            &spin,
            &format!("kill{signal}"),
            signal,
            o.kill_runs,
        )
        .await?;
        let s = Summary::millis(&times);
        let p99 = s.p99;
        rows.push(
            Row::info(
                format!("{name} to spinning guest -> exited (p99 checked)"),
                "ms",
                s,
            )
            .target("p99 <= 50 ms", p99, Bound::AtMost(50.0)),
        );
    }

    // Figures 4 and 5.
    // One sleeping container first, so the figures below see the module compiled (cached),
    // as every start after the first on a node does.
    density::sleeping(&client, &sleep, &o.ctr.socket, "warm-sleep", 1, 1, 1).await?;
    progress("idle memory: 5 sleeping containers in one pod, then in five pods");
    let one_pod =
        density::sleeping(&client, &sleep, &o.ctr.socket, "mem1", 5, 5, o.parallel).await?;
    let five_pods =
        density::sleeping(&client, &sleep, &o.ctr.socket, "mem5", 5, 1, o.parallel).await?;
    for (d, what) in [(&one_pod, "one pod"), (&five_pods, "five pods")] {
        let per = d.pss_per_container_mib();
        rows.push(
            Row::info(
                format!(
                    "idle PSS per container, 5 in {what} ({} running)",
                    d.running
                ),
                "MiB",
                Summary::new(vec![per]),
            )
            .target("<= 3 MiB", per, Bound::AtMost(3.0)),
        );
    }
    progress(&format!(
        "density: {} sleeping containers in pods of {}",
        o.many, o.pod_size
    ));
    let many = density::sleeping(
        &client,
        &sleep,
        &o.ctr.socket,
        "many",
        o.many,
        o.pod_size,
        o.parallel,
    )
    .await?;
    let total = many.pss_total_mib();
    rows.push(
        Row::info(
            format!(
                "{} sleeping containers, pods of {}: total PSS ({} running)",
                many.containers, many.pod_size, many.running
            ),
            "MiB",
            Summary::new(vec![total]),
        )
        .target(
            "all running, <= 1536 MiB",
            if many.running == many.containers {
                total
            } else {
                f64::INFINITY
            },
            Bound::AtMost(1536.0),
        ),
    );
    let summary = format!(
        "task phases, median ms (create/start/wait/delete): wasmpod {:?}, runc {:?}\n\
         density: {} containers started in {:.1} s; {} shims, {} processes, RSS {:.0} MiB",
        wasm.phases.medians().map(|x| (x * 10.0).round() / 10.0),
        runc.phases.medians().map(|x| (x * 10.0).round() / 10.0),
        many.containers,
        many.start_seconds,
        many.memory.shims,
        many.memory.processes,
        many.memory.rss_kib as f64 / 1024.0,
    );
    let density = json!({ "five_in_one_pod": one_pod, "five_pods": five_pods, "many": many });
    Ok(GrpcExtras {
        phases,
        density,
        summary,
    })
}
