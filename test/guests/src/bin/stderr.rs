//! Writes `to stderr` to stderr and `to stdout` to stdout, then exits 0. Tests use it to
//! check that the two streams are kept apart all the way to the container's log / FIFOs.

fn main() {
    eprintln!("to stderr");
    println!("to stdout");
}
