//! `containerd-shim-wasmpod-v1 --self-check`: proves this binary works on this node, the
//! way a container start would use it, without containerd.
//!
//! The installer runs it on the host after copying the shim and before labelling the node:
//! a binary that cannot start there (missing glibc symbols, wrong architecture, a `noexec`
//! mount) never gets this far, and one that starts but cannot build the engine (no virtual
//! address space for the pooling allocator, a CPU Cranelift cannot target) fails here with
//! the stage that broke.
//!
//! The stages: build the command engine with [`EngineSettings::commands`] (what the runner
//! uses for modules and command components), compile and run an embedded WASI preview 1
//! module that computes 40 + 2 and exits with it through `proc_exit` (so compilation,
//! linking against WASI and running generated code are all checked), then build the
//! pooling engine a wasi:http server gets ([`EngineSettings::http_server`], default
//! concurrency, no memory limit). Nothing is written: the module is compiled in memory, not
//! through the node's compile cache.
//!
//! On success one line on stdout and exit 0; on failure one line on stderr naming the stage
//! and exit 1.

use std::io::Write as _;
use std::time::{Duration, Instant};

use wasmpod_runtime_core::{
    EngineSettings, ExitStatus, HttpConfig, Runtime, WasiConfig, WasmSource,
};

use crate::version;

/// The flag that runs the check.
pub const FLAG: &str = "--self-check";

/// The exit code the probe module ends with.
const PROBE_EXIT: i32 = 42;

/// The probe module, assembled from (no `$names`, so no name section):
///
/// ```wat
/// (module
///   (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
///   (memory (export "memory") 1)
///   (func (export "_start")
///     i32.const 40
///     i32.const 2
///     i32.add
///     call 0))
/// ```
#[rustfmt::skip]
const PROBE_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    // types: (i32) -> (), () -> ()
    0x01, 0x08, 0x02, 0x60, 0x01, 0x7f, 0x00, 0x60, 0x00, 0x00,
    // import "wasi_snapshot_preview1" "proc_exit" (func type 0)
    0x02, 0x24, 0x01, 0x16, b'w', b'a', b's', b'i', b'_', b's', b'n', b'a', b'p', b's', b'h',
    b'o', b't', b'_', b'p', b'r', b'e', b'v', b'i', b'e', b'w', b'1', 0x09, b'p', b'r', b'o',
    b'c', b'_', b'e', b'x', b'i', b't', 0x00, 0x00,
    // one function of type 1; one memory of 1 page
    0x03, 0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01,
    // exports: "memory" (memory 0), "_start" (func 1)
    0x07, 0x13, 0x02, 0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, 0x06, b'_', b's',
    b't', b'a', b'r', b't', 0x00, 0x01,
    // code: i32.const 40, i32.const 2, i32.add, call 0, end
    0x0a, 0x0b, 0x01, 0x09, 0x00, 0x41, 0x28, 0x41, 0x02, 0x6a, 0x10, 0x00, 0x0b,
];

/// A failed stage.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct Failure {
    /// What was being done.
    pub stage: &'static str,
    /// Why it failed.
    pub message: String,
}

impl Failure {
    fn new(stage: &'static str, message: impl ToString) -> Self {
        Self {
            stage,
            message: message.to_string(),
        }
    }
}

/// How long each stage took.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Building the command engine.
    pub engine: Duration,
    /// Compiling and linking the probe module.
    pub compile: Duration,
    /// Running it.
    pub run: Duration,
    /// Building the wasi:http pooling engine.
    pub pooling: Duration,
}

/// Run every stage.
pub fn check() -> Result<Timings, Failure> {
    check_module(PROBE_WASM, PROBE_EXIT)
}

/// Run every stage with `wasm` as the probe, which must exit with `expected`.
fn check_module(wasm: &[u8], expected: i32) -> Result<Timings, Failure> {
    let start = Instant::now();
    let runtime = Runtime::new(&EngineSettings::commands())
        .map_err(|e| Failure::new("building the engine", e))?;
    let engine = start.elapsed();

    let start = Instant::now();
    let source = WasmSource::from_bytes("self-check.wasm", wasm.to_vec())
        .map_err(|e| Failure::new("reading the probe module", e))?;
    let prepared = runtime
        .prepare(&source)
        .map_err(|e| Failure::new("compiling the probe module", e))?;
    let compile = start.elapsed();

    let start = Instant::now();
    let status = prepared
        .run(WasiConfig::default(), &runtime.interrupter())
        .map_err(|e| Failure::new("running the probe module", e))?;
    if status != ExitStatus::Exited(expected) {
        return Err(Failure::new(
            "running the probe module",
            format!("ended with {status:?}, expected exit code {expected}"),
        ));
    }
    let run = start.elapsed();

    let start = Instant::now();
    EngineSettings::http_server(None, &HttpConfig::default())
        .build_engine()
        .map_err(|e| Failure::new("building the wasi:http pooling engine", e))?;
    let pooling = start.elapsed();
    Ok(Timings {
        engine,
        compile,
        run,
        pooling,
    })
}

/// The success line.
pub fn ok_line(t: &Timings) -> String {
    let ms = |d: Duration| d.as_millis();
    format!(
        "self-check: ok (wasmtime {}, {}, engine {} ms, compile {} ms, run {} ms, pooling engine {} ms)\n",
        version::WASMTIME,
        version::TARGET,
        ms(t.engine),
        ms(t.compile),
        ms(t.run),
        ms(t.pooling),
    )
}

/// Run the check and report it; the process exit code.
pub fn main() -> i32 {
    match check() {
        Ok(timings) => match std::io::stdout()
            .lock()
            .write_all(ok_line(&timings).as_bytes())
        {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(failure) => {
            let _ = writeln!(
                std::io::stderr(),
                "self-check: failed ({} {}, {}): {failure}",
                version::BINARY,
                version::VERSION,
                version::TARGET
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_WAT: &str = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          i32.const 40
          i32.const 2
          i32.add
          call 0))"#;

    #[test]
    fn embedded_probe_is_the_documented_module() {
        assert_eq!(wat::parse_str(PROBE_WAT).unwrap(), PROBE_WASM);
    }

    #[test]
    fn check_compiles_and_runs_the_probe() {
        let timings = check().unwrap();
        let line = ok_line(&timings);
        assert!(
            line.starts_with(&format!(
                "self-check: ok (wasmtime {}, {}, engine ",
                version::WASMTIME,
                version::TARGET
            )),
            "{line}"
        );
    }

    #[test]
    fn a_wrong_result_or_a_bad_module_fails_at_its_stage() {
        let zero = wat::parse_str(PROBE_WAT.replace("i32.const 40", "i32.const -2")).unwrap();
        let err = check_module(&zero, PROBE_EXIT).unwrap_err();
        assert_eq!(err.stage, "running the probe module");
        assert!(err.message.contains("Exited(0)"), "{err}");
        let mut truncated = PROBE_WASM.to_vec();
        truncated.truncate(PROBE_WASM.len() - 3);
        let err = check_module(&truncated, PROBE_EXIT).unwrap_err();
        assert_eq!(err.stage, "compiling the probe module", "{err}");
    }
}
