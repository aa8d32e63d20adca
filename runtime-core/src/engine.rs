//! The one place wasmtime engine settings are chosen.
//!
//! Every setting that changes generated code lives here, so the compiled-module cache key
//! (which includes [`wasmtime::Engine::precompile_compatibility_hash`]) covers all of them.
//! Two kinds of workload:
//! - **commands** (modules and components that run once) use the on-demand allocator:
//!   a pooling reservation would only cost address space and start time for one instance;
//! - **wasi:http servers** ([`EngineSettings::http_server`]) instantiate once per request,
//!   so they use the pooling allocator: slots for `max_concurrency` instances, reserved
//!   once, reused without `mmap`/`munmap` per request.
//!
//! Both share every code-generation setting (only the allocator differs), so one cached
//! compilation serves either engine.

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::http::{self, HttpConfig};
use crate::{Error, Result, WasmSource};

/// Engine settings for one kind of workload.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Cranelift optimisation level for compiled guests.
    pub opt_level: OptLevel,
    /// Compile functions on several threads (helps large modules on a first start).
    pub parallel_compilation: bool,
    /// Pooling allocator bounds; `None` allocates each instance on demand.
    pub pool: Option<PoolLimits>,
}

/// How many instances a pooling engine holds and how big they may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Component instances alive at once (one per in-flight request).
    pub instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory_bytes: usize,
}

/// Core instances, memories and tables one request's component may hold. A Rust
/// `wasm32-wasip2` component has about four core instances, one memory and two tables;
/// the bounds leave room for bigger toolchains' output.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
/// Largest 32-bit linear memory, the size when the container has no memory limit.
const MAX_32BIT_MEMORY: usize = 4 << 30;
/// Memory and table pages kept resident in a freed slot, so the next request on it does
/// not fault them back in.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

impl Default for EngineSettings {
    fn default() -> Self {
        Self::commands()
    }
}

impl EngineSettings {
    /// Settings for command payloads (WASI p1 modules, p2 command components).
    pub fn commands() -> Self {
        EngineSettings {
            opt_level: OptLevel::Speed,
            parallel_compilation: true,
            pool: None,
        }
    }

    /// Settings for a wasi:http server: a pool of `http.max_concurrency` instances, each
    /// memory capped by `memory_limit` (the container's) or 4 GiB.
    pub fn http_server(memory_limit: Option<usize>, http: &HttpConfig) -> Self {
        EngineSettings {
            pool: Some(PoolLimits {
                instances: http.max_concurrency.max(1),
                max_memory_bytes: memory_limit
                    .unwrap_or(MAX_32BIT_MEMORY)
                    .min(MAX_32BIT_MEMORY),
            }),
            ..Self::commands()
        }
    }

    /// [`EngineSettings::http_server`] when `source` is a component exporting
    /// `wasi:http/incoming-handler` (read without compiling it), else
    /// [`EngineSettings::commands`].
    pub fn for_source(source: &WasmSource, memory_limit: Option<usize>, http: &HttpConfig) -> Self {
        if http::exports_incoming_handler(source.bytes()) {
            Self::http_server(memory_limit, http)
        } else {
            Self::commands()
        }
    }

    /// The wasmtime `Config` these settings stand for.
    pub fn to_config(&self) -> Config {
        let mut config = Config::new();
        // Kill, SIGTERM and timeouts interrupt even a guest spinning in a loop.
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.cranelift_opt_level(self.opt_level);
        config.parallel_compilation(self.parallel_compilation);
        // No `.eh_frame` registered with the system unwinder: wasmtime's own backtraces and
        // traps do not use it, and a static (musl) build's unwinder (LLVM libunwind) takes
        // one FDE per call into a list, quadratic in a module's functions: a cached start of
        // a 60k-function module took 2.7 s there against 0.1 s with glibc's libgcc.
        config.native_unwind_info(false);
        if let Some(pool) = &self.pool {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.to_config()));
        }
        config
    }

    /// Builds the engine.
    pub fn build_engine(&self) -> Result<Engine> {
        Engine::new(&self.to_config()).map_err(|e| Error::Engine(format!("{e:#}")))
    }
}

impl PoolLimits {
    fn to_config(self) -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(self.instances)
            .total_core_instances(self.instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(self.instances.saturating_mul(MEMORIES_PER_COMPONENT))
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(self.instances.saturating_mul(TABLES_PER_COMPONENT))
            .max_tables_per_component(TABLES_PER_COMPONENT)
            // One fiber stack per request in flight.
            .total_stacks(self.instances)
            .max_memory_size(self.max_memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES)
            // Reset only the pages a request dirtied (Linux >= 6.7 PAGEMAP_SCAN) instead of
            // memset-ing the whole resident MiB after every request: the memset was the
            // largest item in the server's profile (16%); with the scan the hello handler
            // serves 2.16x wasmtime serve's requests/s instead of 1.15-1.3x (bench/http.sh).
            // `Auto` keeps the memset on kernels without it.
            .pagemap_scan(Enabled::Auto);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_pool_follows_concurrency_and_memory_limit() {
        let http = HttpConfig {
            max_concurrency: 8,
            ..HttpConfig::default()
        };
        let settings = EngineSettings::http_server(Some(64 << 20), &http);
        assert_eq!(
            settings.pool,
            Some(PoolLimits {
                instances: 8,
                max_memory_bytes: 64 << 20
            })
        );
        let unlimited = EngineSettings::http_server(None, &http);
        assert_eq!(unlimited.pool.unwrap().max_memory_bytes, 4 << 30);
        settings.build_engine().expect("pooling engine");
    }

    #[test]
    fn commands_and_http_engines_share_compiled_code() {
        let commands = EngineSettings::commands().build_engine().unwrap();
        let http = EngineSettings::http_server(None, &HttpConfig::default())
            .build_engine()
            .unwrap();
        let hash = |engine: &Engine| {
            use std::hash::{DefaultHasher, Hash, Hasher};
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        assert_eq!(hash(&commands), hash(&http));
    }
}
