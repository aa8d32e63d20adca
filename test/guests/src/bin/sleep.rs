//! Prints `sleeping`, sleeps for the number of seconds in its first argument (default
//! 3600) with `std::thread::sleep` (a WASI `poll_oneoff` / `wasi:clocks` call), then
//! prints `woke`. Tests use it for a task that stays running while blocked in a host
//! call: kill, pause, exec and stats while running.

use std::io::Write;
use std::time::Duration;

fn main() {
    let secs = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>().expect("seconds must be an integer"))
        .unwrap_or(3600);
    println!("sleeping");
    std::io::stdout().flush().expect("flush stdout");
    std::thread::sleep(Duration::from_secs(secs));
    println!("woke");
}
