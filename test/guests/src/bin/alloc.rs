//! Allocates memory until told to stop: `alloc MIB` grows a buffer in 1 MiB steps up to
//! `MIB` MiB (default 1024), writing to every page so the memory is really used, and
//! prints `allocated N MiB` after each step, then `done`. Tests use it to drive a guest
//! past its memory limit: with a limit below `MIB`, `memory.grow` fails and the Rust
//! allocator aborts (a trap), which the runtime must report as out-of-memory.
//! `alloc MIB SECS` first sleeps SECS seconds (a test changes the limit meanwhile).

use std::io::Write;

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MiB must be an integer"))
        .unwrap_or(1024);
    if let Some(secs) = std::env::args().nth(2) {
        let secs: u64 = secs.parse().expect("SECS must be an integer");
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut out = std::io::stdout();
    for n in 1..=target {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = n as u8;
        }
        chunks.push(std::hint::black_box(chunk));
        let _ = writeln!(out, "allocated {n} MiB");
        let _ = out.flush();
    }
    println!("done");
}
