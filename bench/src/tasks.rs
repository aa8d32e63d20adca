//! Figures 3 and 6 through containerd's gRPC API: task throughput and kill latency.
//!
//! [`throughput`] times the task lifecycle only — Create, Start, Wait, Delete of a task —
//! with `parallel` workers pulling from one queue of `count` containers. The container
//! records and snapshots are made before the clock starts and removed after it stops: they
//! are the same containerd metadata work whatever the runtime, and the figure compares
//! runtimes. Each phase's latency is kept for the breakdown.
//!
//! [`kill_latency`] starts a guest spinning in a tight loop, issues Wait, then times from the
//! Kill request to Wait's return (containerd answers Wait when the shim's TaskExit arrives).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::{Client, Template, Variant};
use crate::stats::Summary;

/// Latencies of each lifecycle phase, milliseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Phases {
    pub create: Vec<Duration>,
    pub start: Vec<Duration>,
    pub wait: Vec<Duration>,
    pub delete: Vec<Duration>,
}

impl Phases {
    fn extend(&mut self, other: Phases) {
        self.create.extend(other.create);
        self.start.extend(other.start);
        self.wait.extend(other.wait);
        self.delete.extend(other.delete);
    }

    /// Median of each phase, ms: create, start, wait, delete.
    pub fn medians(&self) -> [f64; 4] {
        [&self.create, &self.start, &self.wait, &self.delete].map(|d| Summary::millis(d).median)
    }
}

/// Result of one throughput run.
#[derive(Debug, Default, Clone)]
pub struct Throughput {
    pub tasks: usize,
    pub elapsed: Duration,
    pub phases: Phases,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds a later round of the same runtime.
    pub fn add(&mut self, other: Throughput) {
        self.tasks += other.tasks;
        self.elapsed += other.elapsed;
        self.phases.extend(other.phases);
    }
}

/// Runs `ids.len()` task lifecycles of copies of `template`, `parallel` at a time.
pub async fn throughput(
    client: &Client,
    template: &Template,
    ids: Vec<String>,
    parallel: usize,
) -> anyhow::Result<Throughput> {
    let mut mounts = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(parallel.max(1)) {
        let mut set = JoinSet::new();
        for id in chunk {
            let (client, template, id) = (client.clone(), template.clone(), id.clone());
            set.spawn(async move {
                let m = client
                    .create_container(&template, &id, &Variant::default())
                    .await;
                (id, m)
            });
        }
        for (id, m) in set.join_all().await {
            mounts.push((id, m?));
        }
    }
    let queue = Arc::new(mounts);
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..parallel.max(1) {
        let (client, queue, next) = (client.clone(), queue.clone(), next.clone());
        set.spawn(async move {
            let mut phases = Phases::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, mounts)) = queue.get(i) else {
                    return Ok::<_, anyhow::Error>(phases);
                };
                let t = Instant::now();
                client.create_task(id, mounts.clone()).await?;
                phases.create.push(t.elapsed());
                let t = Instant::now();
                client.start(id).await?;
                phases.start.push(t.elapsed());
                let t = Instant::now();
                let status = client.wait(id).await?;
                phases.wait.push(t.elapsed());
                if status != 0 {
                    bail!("task {id} exited with {status}");
                }
                let t = Instant::now();
                client.delete_task(id).await?;
                phases.delete.push(t.elapsed());
            }
        });
    }
    let mut result = Throughput {
        tasks: queue.len(),
        ..Throughput::default()
    };
    for phases in set.join_all().await {
        result.phases.extend(phases?);
    }
    result.elapsed = began.elapsed();
    for chunk in queue.chunks(parallel.max(1)) {
        let mut set = JoinSet::new();
        for (id, _) in chunk {
            let (client, id) = (client.clone(), id.clone());
            set.spawn(async move { client.remove_container(&id).await });
        }
        for removed in set.join_all().await {
            removed?;
        }
    }
    Ok(result)
}

/// Time from Kill(`signal`) to Wait returning, for `runs` spinning guests (ids
/// `<prefix>-<n>`); checks the exit status is `128 + signal`.
pub async fn kill_latency(
    client: &Client,
    template: &Template,
    prefix: &str,
    signal: u32,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(runs);
    for n in 0..runs {
        let id = format!("{prefix}-{n}");
        let mounts = client
            .create_container(template, &id, &Variant::default())
            .await?;
        client.create_task(&id, mounts).await?;
        client.start(&id).await?;
        let waiter = {
            let (client, id) = (client.clone(), id.clone());
            tokio::spawn(async move { (client.wait(&id).await, Instant::now()) })
        };
        // Let the guest reach its loop and the Wait reach the shim.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed = Instant::now();
        client.kill(&id, signal).await?;
        let (status, exited) = waiter.await.context("wait task panicked")?;
        let status = status?;
        times.push(exited.duration_since(killed));
        client.delete_task(&id).await?;
        client.remove_container(&id).await?;
        if status != 128 + signal {
            bail!("task {id} exited with {status} after signal {signal}");
        }
    }
    Ok(times)
}
