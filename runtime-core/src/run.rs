//! Compiling a payload into something runnable, and running it to an exit status.
//!
//! [`Runtime::prepare`] does all the work that can fail because of the payload (validate,
//! compile, resolve imports, find the entrypoint) so the shim can report a bad image at
//! container create. [`Prepared::run`] then only builds the WASI context and calls the
//! entrypoint: `_start` for a core module, `wasi:cli/run` for a command component; a
//! component exporting `wasi:http/incoming-handler` is served instead (see [`crate::http`]).

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{InstancePre, Linker, Module, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cache::{CompileJob, Compiled};
use crate::http::{self, HttpConfig, HttpHost};
use crate::interrupt::InterruptedBySignal;
use crate::limits::GuestLimits;
use crate::{
    EngineSettings, Error, ExitStatus, Interrupter, ModuleCache, PayloadKind, Result, WasiConfig,
    WasmSource,
};

/// The interface a command component must export.
const CLI_RUN_INTERFACE: &str = "wasi:cli/run";

/// One engine and what comes with it; create one per process and prepare payloads on it.
pub struct Runtime {
    engine: wasmtime::Engine,
    interrupter: Interrupter,
    cache: Option<Arc<ModuleCache>>,
    compile_timeout: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// A payload compiled, linked against WASI and checked for its entrypoint.
pub struct Prepared {
    name: String,
    engine: wasmtime::Engine,
    entry: Entry,
    http: HttpConfig,
    /// A wasi:http server's socket, once [`Prepared::bind_http`] made it.
    listener: Option<std::net::TcpListener>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

enum Entry {
    Module(InstancePre<ModuleHost>),
    Command(CommandPre<ComponentHost>),
    Http(ProxyPre<HttpHost>),
}

/// Store data of a WASI preview 1 module.
struct ModuleHost {
    wasi: WasiP1Ctx,
    limits: GuestLimits,
}

/// Store data of a WASI preview 2 component.
struct ComponentHost {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: GuestLimits,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Runtime {
    /// Builds the engine for `settings`.
    pub fn new(settings: &EngineSettings) -> Result<Self> {
        let engine = settings.build_engine()?;
        let interrupter = Interrupter::new(engine.clone());
        Ok(Runtime {
            engine,
            interrupter,
            cache: None,
            compile_timeout: crate::bounds::DEFAULT_COMPILE_TIMEOUT,
        })
    }

    /// Loads compiled code from `cache` (and stores what it compiles there).
    pub fn with_cache(mut self, cache: ModuleCache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// Bounds the time [`Runtime::prepare`] may spend getting compiled code (waiting for
    /// another start compiling the same module, then compiling): default
    /// [`crate::bounds::DEFAULT_COMPILE_TIMEOUT`].
    pub fn with_compile_timeout(mut self, timeout: Duration) -> Self {
        self.compile_timeout = timeout;
        self
    }

    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_deref()
    }

    /// Compiled code for `source`: an authentic cached copy at once, else compiled (and
    /// stored) on a thread that is given up on at the deadline. Cranelift cannot be
    /// interrupted: the thread is left to finish or die with the process, which is what a
    /// runner does next after a failed Create; the job stores nothing once abandoned.
    fn compile(&self, source: &WasmSource) -> Result<Compiled> {
        if let Some(compiled) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, source))
        {
            return Ok(compiled);
        }
        let job = Arc::new(CompileJob::new(self.compile_timeout));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (engine, cache, worker_job) = (self.engine.clone(), self.cache.clone(), job.clone());
        let worker_source = source.clone();
        let worker = std::thread::Builder::new()
            .name("wasmpod-compile".to_owned())
            .spawn(move || {
                let compiled = on_joined_pool(|| match &cache {
                    Some(cache) => cache.load_or_compile(&engine, &worker_source, &worker_job),
                    None => compile_in_memory(&engine, &worker_source),
                });
                let _ = tx.send(compiled);
            })
            .map_err(|e| Error::Compile {
                name: source.name().to_owned(),
                message: format!("starting the compile thread: {e}"),
            })?;
        match rx.recv_timeout(self.compile_timeout) {
            Ok(compiled) => {
                // It has sent its result and its pool is joined: wait for it to end, so a
                // caller that confines the process next finds no other thread.
                let _ = worker.join();
                compiled
            }
            Err(_) => {
                job.abandon();
                Err(job.timed_out(source.name(), "compiling"))
            }
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// The handle that stops guests run on this runtime.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }

    /// Compiles `source` and checks that it can run as a WASI command or be served as a
    /// wasi:http server ([`Prepared::is_http_server`]).
    pub fn prepare(&self, source: &WasmSource) -> Result<Prepared> {
        let name = source.name().to_owned();
        let entry = match self.compile(source)? {
            Compiled::Module(module) => Entry::Module(self.prepare_module(source, module)?),
            Compiled::Component(component) => self.prepare_component(source, component)?,
        };
        Ok(Prepared {
            name,
            engine: self.engine.clone(),
            entry,
            http: HttpConfig::default(),
            listener: None,
        })
    }

    fn prepare_module(
        &self,
        source: &WasmSource,
        module: Module,
    ) -> Result<InstancePre<ModuleHost>> {
        let name = source.name();
        let has_start = module
            .get_export("_start")
            .is_some_and(|export| export.func().is_some());
        if !has_start {
            return Err(Error::MissingStart {
                name: name.to_owned(),
            });
        }
        let mut linker: Linker<ModuleHost> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host| &mut host.wasi)
            .map_err(|e| link_error(name, e))?;
        linker
            .instantiate_pre(&module)
            .map_err(|e| link_error(name, e))
    }

    fn prepare_component(&self, source: &WasmSource, component: Component) -> Result<Entry> {
        let name = source.name();
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(export, _)| export.to_owned())
            .collect();
        if exports.iter().any(|e| http::is_incoming_handler(e)) {
            let pre = http::prepare(&self.engine, &component).map_err(|e| link_error(name, e))?;
            return Ok(Entry::Http(pre));
        }
        if !exports.iter().any(|e| e.starts_with(CLI_RUN_INTERFACE)) {
            return Err(Error::MissingCliRun {
                name: name.to_owned(),
                exports: if exports.is_empty() {
                    "none".to_owned()
                } else {
                    exports.join(", ")
                },
            });
        }
        let mut linker = wasmtime::component::Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| link_error(name, e))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(name, e))?;
        CommandPre::new(pre)
            .map(Entry::Command)
            .map_err(|e| link_error(name, e))
    }
}

fn compile_in_memory(engine: &wasmtime::Engine, source: &WasmSource) -> Result<Compiled> {
    let compile_error = |e: wasmtime::Error| Error::Compile {
        name: source.name().to_owned(),
        message: format!("{e:#}"),
    };
    Ok(match source.kind() {
        PayloadKind::CoreModule => {
            Compiled::Module(Module::new(engine, source.bytes()).map_err(compile_error)?)
        }
        PayloadKind::Component => {
            Compiled::Component(Component::new(engine, source.bytes()).map_err(compile_error)?)
        }
    })
}

fn link_error(name: &str, e: wasmtime::Error) -> Error {
    Error::Link {
        name: name.to_owned(),
        message: format!("{e:#}"),
    }
}

impl Prepared {
    /// The payload's name, as given to [`WasmSource`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this payload is a wasi:http server: [`Prepared::run`] then serves it until
    /// interrupted, and the first interrupt drains rather than stops (see [`crate::http`]).
    pub fn is_http_server(&self) -> bool {
        matches!(self.entry, Entry::Http(_))
    }

    /// Where and how a wasi:http server listens (default: [`HttpConfig::default`]);
    /// ignored by commands.
    pub fn with_http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// Makes a wasi:http server's listening socket now, in the caller's network namespace,
    /// so a port in use fails the container's preparation (Create) instead of its run;
    /// [`Prepared::run`] then serves on it. Commands have nothing to bind.
    pub fn bind_http(&mut self) -> Result<()> {
        if matches!(self.entry, Entry::Http(_)) && self.listener.is_none() {
            self.listener = Some(http::bind(&self.http)?);
        }
        Ok(())
    }

    /// Runs the guest to completion (or until interrupted) with the WASI surface of `config`.
    /// A wasi:http server is served until interrupted: the first interrupt drains and ends
    /// as `Exited(0)`, a second one (or a drain out of time) ends as `Interrupted`.
    pub fn run(self, mut config: WasiConfig, interrupter: &Interrupter) -> Result<ExitStatus> {
        let memory_refused;
        let outcome = match self.entry {
            Entry::Module(pre) => {
                let limits = GuestLimits::new(config.memory_limit)
                    .following(config.memory_limit_now.clone());
                memory_refused = limits.memory_refused();
                let host = ModuleHost {
                    limits,
                    wasi: config.builder()?.build_p1(),
                };
                let mut store = Store::new(&self.engine, host);
                store.limiter(|host| &mut host.limits);
                arm_interrupts(&mut store, interrupter);
                pre.instantiate(&mut store)
                    .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                    .and_then(|start| start.call(&mut store, ()))
                    .map(|()| 0)
            }
            Entry::Command(pre) => {
                let limits = GuestLimits::new(config.memory_limit)
                    .following(config.memory_limit_now.clone());
                memory_refused = limits.memory_refused();
                let host = ComponentHost {
                    limits,
                    ctx: config.builder()?.build(),
                    table: ResourceTable::new(),
                };
                let mut store = Store::new(&self.engine, host);
                store.limiter(|host| &mut host.limits);
                arm_interrupts(&mut store, interrupter);
                pre.instantiate(&mut store)
                    .and_then(|command| command.wasi_cli_run().call_run(&mut store))
                    .map(|result| if result.is_ok() { 0 } else { 1 })
            }
            Entry::Http(pre) => {
                let listener = match self.listener {
                    Some(listener) => listener,
                    None => http::bind(&self.http)?,
                };
                return http::serve(
                    &self.name,
                    &self.engine,
                    pre,
                    listener,
                    config,
                    &self.http,
                    interrupter,
                );
            }
        };
        let status = classify(outcome, interrupter);
        Ok(match status {
            ExitStatus::Trapped { message } if memory_refused.load(Ordering::SeqCst) => {
                ExitStatus::OutOfMemory { message }
            }
            other => other,
        })
    }
}

/// Every store checks the interrupt flag at each epoch change; only interrupts move it.
fn arm_interrupts<T: 'static>(store: &mut Store<T>, interrupter: &Interrupter) {
    let interrupter = interrupter.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match interrupter.requested() {
        Some(signal) => Err(InterruptedBySignal(signal).into()),
        None => Ok(UpdateDeadline::Continue(1)),
    });
}

/// Turns wasmtime's outcome into an exit status: exit codes, interrupts, traps.
fn classify(outcome: wasmtime::Result<i32>, interrupter: &Interrupter) -> ExitStatus {
    match outcome {
        Ok(code) => ExitStatus::Exited(code),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                ExitStatus::Exited(exit.0)
            } else if let Some(InterruptedBySignal(signal)) = e.downcast_ref() {
                ExitStatus::Interrupted { signal: *signal }
            } else if let Some(signal) = interrupter.requested() {
                ExitStatus::Interrupted { signal }
            } else {
                ExitStatus::Trapped {
                    message: format!("{e:?}"),
                }
            }
        }
    }
}

/// Runs `f` (a compile) with wasmtime's parallel compilation on a rayon pool of its own,
/// whose threads are joined before this returns. rayon's global pool would keep its threads
/// for the life of the process: in a runner they would keep every privilege the process had
/// while it prepared, beside the confined guest.
fn on_joined_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut f = Some(f);
    let pooled = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("compile-{i}"))
        .build_scoped(
            |thread| thread.run(),
            |pool| pool.install(|| f.take().map(|f| f())),
        );
    match pooled {
        Ok(Some(result)) => result,
        // No pool (threads refused): compile on this thread alone.
        _ => (f.take().expect("not run when the pool failed"))(),
    }
}
