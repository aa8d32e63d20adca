//! The memory bound of a guest: the container's memory limit caps linear memory and tables
//! (wasmtime's `StoreLimits`), and a refused growth is remembered so that a guest which then
//! traps (Rust's allocator aborts on a failed `memory.grow`) is reported as out of memory,
//! the way a Linux container killed by the OOM killer is.
//!
//! The limit may rise while the guest runs (Kubernetes' in-place resize): a growth the
//! starting limit refuses is checked once more against [`MemoryLimitNow`], the limit in
//! force now, which the embedder reads from wherever it lives (the container's cgroup).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Reads the memory limit in force now, bytes (`None`: unknown, the starting limit stays).
#[derive(Clone)]
pub struct MemoryLimitNow(Arc<dyn Fn() -> Option<usize> + Send + Sync>);

impl MemoryLimitNow {
    pub fn new(read: impl Fn() -> Option<usize> + Send + Sync + 'static) -> Self {
        MemoryLimitNow(Arc::new(read))
    }

    fn read(&self) -> Option<usize> {
        (self.0)()
    }
}

impl std::fmt::Debug for MemoryLimitNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryLimitNow(..)")
    }
}

/// A store limiter that records refused memory growth.
pub struct GuestLimits {
    limits: StoreLimits,
    memory_refused: Arc<AtomicBool>,
    limit_now: Option<MemoryLimitNow>,
}

fn store_limits(memory_limit: Option<usize>) -> StoreLimits {
    let mut builder = StoreLimitsBuilder::new();
    if let Some(bytes) = memory_limit {
        builder = builder.memory_size(bytes);
    }
    builder.build()
}

impl GuestLimits {
    /// Limits for a guest with this memory limit (bytes); `None` means unbounded.
    pub fn new(memory_limit: Option<usize>) -> Self {
        GuestLimits {
            limits: store_limits(memory_limit),
            memory_refused: Arc::default(),
            limit_now: None,
        }
    }

    /// Lets a growth past the starting limit through when the limit in force now allows it.
    pub fn following(mut self, limit_now: Option<MemoryLimitNow>) -> Self {
        self.limit_now = limit_now;
        self
    }

    /// A flag that turns true once a memory growth was refused.
    pub fn memory_refused(&self) -> Arc<AtomicBool> {
        self.memory_refused.clone()
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let mut allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed
            && maximum.is_none_or(|max| desired <= max)
            && let Some(now) = self.limit_now.as_ref().and_then(MemoryLimitNow::read)
            && desired <= now
        {
            // The limit was raised since the guest started: follow it.
            self.limits = store_limits(Some(now));
            allowed = self.limits.memory_growing(current, desired, maximum)?;
        }
        if !allowed {
            self.memory_refused.store(true, Ordering::SeqCst);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_follows_a_raised_limit() {
        let now = Arc::new(std::sync::atomic::AtomicUsize::new(2 << 16));
        let read = now.clone();
        let mut limits =
            GuestLimits::new(Some(2 << 16)).following(Some(MemoryLimitNow::new(move || {
                Some(read.load(Ordering::SeqCst))
            })));
        assert!(
            !limits.memory_growing(0, 4 << 16, None).unwrap(),
            "limit not raised yet"
        );
        now.store(8 << 16, Ordering::SeqCst);
        assert!(
            limits.memory_growing(0, 4 << 16, None).unwrap(),
            "raised limit followed"
        );
        assert!(
            !limits.memory_growing(0, 16 << 16, None).unwrap(),
            "beyond the new limit"
        );
        assert!(
            !limits.memory_growing(0, 4 << 16, Some(3 << 16)).unwrap(),
            "module maximum holds"
        );
    }

    #[test]
    fn refused_growth_is_recorded() {
        let mut limits = GuestLimits::new(Some(2 << 16));
        let refused = limits.memory_refused();
        assert!(limits.memory_growing(0, 1 << 16, None).unwrap());
        assert!(!refused.load(Ordering::SeqCst));
        assert!(!limits.memory_growing(1 << 16, 4 << 16, None).unwrap());
        assert!(refused.load(Ordering::SeqCst));
    }
}
