//! Filesystem access through WASI preopens.
//!
//! `files DIR` writes `DIR/out.txt` containing `written by wasm`, reads it back and
//! prints `read: written by wasm`. Tests use it to check that the rootfs or a mount is
//! preopened read-write.
//!
//! `files DIR read-only-check` instead tries to create `DIR/denied.txt`: it prints
//! `write refused: <error>` and exits 0 if the write is refused, and exits 1 if it
//! succeeded. Tests use it to check that read-only mounts are enforced.

use std::path::Path;
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: files DIR [read-only-check]");
        exit(2);
    };
    let dir = Path::new(dir);

    if args.get(2).map(String::as_str) == Some("read-only-check") {
        match std::fs::write(dir.join("denied.txt"), "should not be written") {
            Ok(()) => {
                eprintln!("write to a read-only directory succeeded");
                exit(1);
            }
            Err(e) => {
                println!("write refused: {e}");
                exit(0);
            }
        }
    }

    let path = dir.join("out.txt");
    if let Err(e) = std::fs::write(&path, "written by wasm") {
        eprintln!("write {}: {e}", path.display());
        exit(1);
    }
    match std::fs::read_to_string(&path) {
        Ok(content) => println!("read: {content}"),
        Err(e) => {
            eprintln!("read {}: {e}", path.display());
            exit(1);
        }
    }
}
