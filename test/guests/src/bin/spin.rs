//! Prints `spinning`, then loops forever without making any host call. Tests use it to
//! check that a guest stuck in pure computation can still be killed (the runtime must
//! interrupt it, e.g. by epoch interruption, since there is no host call to cancel).

use std::io::Write;

fn main() {
    println!("spinning");
    std::io::stdout().flush().expect("flush stdout");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
