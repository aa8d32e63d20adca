//! Exits with the status given as its first argument (default 42) through
//! `std::process::exit`, i.e. WASI `proc_exit` / `wasi:cli/exit`. Tests use it to check
//! that the guest's exit status becomes the task's exit status.

fn main() {
    let code = std::env::args()
        .nth(1)
        .map(|s| s.parse::<i32>().expect("exit code must be an integer"))
        .unwrap_or(42);
    std::process::exit(code);
}
