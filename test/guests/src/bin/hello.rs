//! Smallest useful guest: prints `hello from wasm` to stdout and exits 0.
//! Tests use it to check that a task starts, its stdout reaches the container log and
//! it exits with status 0.

fn main() {
    println!("hello from wasm");
}
