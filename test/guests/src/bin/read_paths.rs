//! Tries to read files a guest should or should not reach.
//!
//! `read_paths PATH...` reads each PATH and prints one line per path:
//! `PATH: read N bytes: <first line>` when it could be read, `PATH: refused: <error>`
//! otherwise; a directory is listed instead (`PATH: listed: a,b,c`). Always exits 0, so a
//! test asserts on the lines. Tests use it to check that no path (absolute, `..` walks,
//! `/proc/...`, a symlink in a volume pointing at `/`) leads out to the host's files.

use std::fs;

fn main() {
    for path in std::env::args().skip(1) {
        let line = match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => match fs::read_dir(&path) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    format!("listed: {}", names.join(","))
                }
                Err(e) => format!("refused: {e}"),
            },
            _ => match fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let first = text.lines().next().unwrap_or("");
                    format!("read {} bytes: {first}", bytes.len())
                }
                Err(e) => format!("refused: {e}"),
            },
        };
        println!("{path}: {line}");
    }
}
