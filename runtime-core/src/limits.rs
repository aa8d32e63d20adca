//! The memory bound of a guest: the container's memory limit caps linear memory and tables
//! (wasmtime's `StoreLimits`), and a refused growth is remembered so that a guest which then
//! traps (Rust's allocator aborts on a failed `memory.grow`) is reported as out of memory,
//! the way a Linux container killed by the OOM killer is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// A store limiter that records refused memory growth.
pub struct GuestLimits {
    limits: StoreLimits,
    memory_refused: Arc<AtomicBool>,
}

impl GuestLimits {
    /// Limits for a guest with this memory limit (bytes); `None` means unbounded.
    pub fn new(memory_limit: Option<usize>) -> Self {
        let mut builder = StoreLimitsBuilder::new();
        if let Some(bytes) = memory_limit {
            builder = builder.memory_size(bytes);
        }
        GuestLimits {
            limits: builder.build(),
            memory_refused: Arc::default(),
        }
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
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
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
    fn refused_growth_is_recorded() {
        let mut limits = GuestLimits::new(Some(2 << 16));
        let refused = limits.memory_refused();
        assert!(limits.memory_growing(0, 1 << 16, None).unwrap());
        assert!(!refused.load(Ordering::SeqCst));
        assert!(!limits.memory_growing(1 << 16, 4 << 16, None).unwrap());
        assert!(refused.load(Ordering::SeqCst));
    }
}
