//! The one place wasmtime engine settings are chosen.
//!
//! Every setting that changes generated code lives here, so the compiled-module cache key
//! (which includes [`wasmtime::Engine::precompile_compatibility_hash`]) covers all of them.
//! Command payloads (modules and components that run once) use the on-demand allocator:
//! a pooling reservation would only cost address space and start time for one instance.

use wasmtime::{Config, Engine, OptLevel};

use crate::{Error, Result};

/// Engine settings for one kind of workload.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Cranelift optimisation level for compiled guests.
    pub opt_level: OptLevel,
    /// Compile functions on several threads (helps large modules on a first start).
    pub parallel_compilation: bool,
}

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
        config
    }

    /// Builds the engine.
    pub fn build_engine(&self) -> Result<Engine> {
        Engine::new(&self.to_config()).map_err(|e| Error::Engine(format!("{e:#}")))
    }
}
