//! Figures 4 and 5: what sleeping wasm containers cost, and how many fit.
//!
//! [`sleeping`] creates and starts `count` copies of the sleep guest's template, grouped in
//! pods of `pod_size` through the `io.kubernetes.cri.sandbox-id` annotation (one shim per
//! pod), waits for them to settle, checks how many are running, sums the PSS of the shims
//! and their runners ([`crate::memory`]) and removes them all again.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::{Client, Template, Variant};
use crate::memory::{ShimMemory, shim_memory};

/// One density measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Density {
    pub containers: usize,
    pub pod_size: usize,
    pub running: usize,
    pub memory: ShimMemory,
    /// Wall time to create and start them all.
    pub start_seconds: f64,
}

impl Density {
    /// PSS per container, MiB.
    pub fn pss_per_container_mib(&self) -> f64 {
        self.memory.pss_kib as f64 / 1024.0 / self.containers.max(1) as f64
    }

    /// Total PSS, MiB.
    pub fn pss_total_mib(&self) -> f64 {
        self.memory.pss_kib as f64 / 1024.0
    }
}

/// Runs `count` sleeping containers in pods of `pod_size`, `parallel` creations at a time,
/// measures, and removes them.
pub async fn sleeping(
    client: &Client,
    template: &Template,
    socket: &str,
    prefix: &str,
    count: usize,
    pod_size: usize,
    parallel: usize,
) -> anyhow::Result<Density> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let began = Instant::now();
    let started = for_each(client, &ids, parallel, |client, i, id| {
        let template = template.clone();
        let variant = Variant {
            pod: Some(format!("{prefix}-pod-{}", i / pod_size.max(1))),
            args: None,
        };
        async move {
            let mounts = client.create_container(&template, &id, &variant).await?;
            client.create_task(&id, mounts).await?;
            client.start(&id).await
        }
    })
    .await;
    let start_seconds = began.elapsed().as_secs_f64();
    let measured = match started {
        Ok(()) => {
            // Let every guest reach its sleep and the runners settle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (running, _) = client.count_running(prefix).await?;
            Ok(Density {
                containers: count,
                pod_size,
                running,
                memory: shim_memory(socket),
                start_seconds,
            })
        }
        Err(e) => Err(e),
    };
    let removed = for_each(client, &ids, parallel * 2, |client, _, id| async move {
        client.destroy(&id).await
    })
    .await;
    let density = measured?;
    removed?;
    Ok(density)
}

/// Runs `f(client, index, id)` for every id, `parallel` at a time; the first error wins but
/// every id is still attempted.
async fn for_each<F, Fut>(
    client: &Client,
    ids: &[String],
    parallel: usize,
    f: F,
) -> anyhow::Result<()>
where
    F: Fn(Client, usize, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut first_error = None;
    let mut set = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        if set.len() >= parallel.max(1)
            && let Some(Err(e)) = set.join_next().await.transpose()?
        {
            first_error.get_or_insert(e);
        }
        set.spawn(f(client.clone(), i, id.clone()));
    }
    while let Some(done) = set.join_next().await {
        if let Err(e) = done? {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
