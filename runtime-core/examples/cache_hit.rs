//! What a compile-cache hit costs, for hello and for a big module: the authenticated load
//! ([`ModuleCache::load`]: open, tag HMAC, identity check, map the open file) against the
//! unauthenticated load wasmpod did before (map by path, touch) and against hashing the
//! whole compiled file on every start (what a full-file HMAC would add).
//!
//! `cargo run --release -p wasmpod-runtime-core --example cache_hit [ITERATIONS]`

// This example's output is its figures on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmpod_runtime_core::cache::{CompileJob, DEFAULT_MAX_BYTES};
use wasmpod_runtime_core::{EngineSettings, ModuleCache, WasmSource};

/// The bench's "big module": `functions` small distinct functions and `_start`.
fn big_module(functions: u32) -> Vec<u8> {
    let mut text = String::from("(module (type $t (func (param i32) (result i32)))\n");
    for i in 0..functions {
        let next = if i + 1 < functions {
            format!(
                "(if (i32.eqz (local.get 0)) (then (drop (call $f{} (i32.const 1)))))",
                i + 1
            )
        } else {
            String::new()
        };
        text.push_str(&format!(
            "(func $f{i} (type $t) {next} (i32.xor (i32.mul (i32.add (local.get 0) (i32.const {})) (i32.const {})) (i32.shr_u (local.get 0) (i32.const {}))))\n",
            i.wrapping_mul(2_654_435_761) & 0xf_ffff,
            i.wrapping_mul(40_503) & 0xffff | 1,
            i % 31 + 1
        ));
    }
    text.push_str("(func (export \"_start\") (drop (call $f0 (i32.const 1)))))\n");
    wat::parse_str(&text).expect("assemble")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(iterations: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..iterations)
            .map(|_| {
                let began = Instant::now();
                f();
                began.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = EngineSettings::commands().build_engine().expect("engine");
    let cache = ModuleCache::open(dir.path(), DEFAULT_MAX_BYTES).expect("cache");
    for (name, wasm) in [
        ("hello", wasmpod_fixtures::p1::HELLO.to_vec()),
        ("big (60k functions)", big_module(60_000)),
    ] {
        let source = WasmSource::from_bytes("/m.wasm", wasm).expect("wasm");
        cache
            .load_or_compile(&engine, &source, &CompileJob::new(Duration::from_secs(600)))
            .expect("compile");
        let key = ModuleCache::key(&engine, &source);
        let path = cache.path_of(&key);
        let size = std::fs::metadata(&path).expect("compiled file").len();
        let authenticated = time(iterations, || {
            cache.load(&engine, &source).expect("hit");
        });
        let unauthenticated = time(iterations, || {
            // SAFETY: the file was just written by this engine (measurement only).
            unsafe { wasmtime::Module::deserialize_file(&engine, &path) }.expect("load");
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(std::time::SystemTime::now()).unwrap();
        });
        let whole_file_hash = time(iterations, || {
            let bytes = std::fs::read(&path).unwrap();
            std::hint::black_box(Sha256::digest(&bytes));
        });
        let key_only = time(iterations, || {
            std::hint::black_box(ModuleCache::key(&engine, &source));
        });
        println!(
            "{name}: wasm {} bytes, compiled {size} bytes | hit: authenticated {authenticated:?}, unauthenticated (before) {unauthenticated:?} | sha256 of the whole compiled file {whole_file_hash:?} | cache key (sha256 of the wasm, paid by both) {key_only:?}",
            source.bytes().len()
        );
    }
}
