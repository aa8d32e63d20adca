//! A TCP client: `tcp_client HOST:PORT [MESSAGE]` connects, sends `MESSAGE` (default
//! `ping`) and a newline, reads one reply line, prints
//! `received: <reply>` and exits 0; exits 1 with the error on stderr if connecting fails.
//! It retries connecting for up to 10 s (the server may still be starting). Tests use it
//! (as a wasip2 component: wasi:sockets) to check that a guest reaches a sidecar over the
//! pod's loopback. Under wasip1 there are no sockets and it always fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1) else {
        eprintln!("usage: tcp_client HOST:PORT [MESSAGE]");
        exit(2);
    };
    let message = args.get(2).map(String::as_str).unwrap_or("ping");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr.as_str()) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e} (retrying)");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                eprintln!("connect {addr}: {e}");
                exit(1);
            }
        }
    };
    if let Err(e) = writeln!(stream, "{message}") {
        eprintln!("send: {e}");
        exit(1);
    }
    // Read one line: a peer that answers without reading our message (`nc -e echo`) resets
    // the connection after its reply, so reading to the end would fail after the data.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 256];
    while !reply.contains(&b'\n') {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) => {
                eprintln!("receive: {e}");
                exit(1);
            }
        }
    }
    println!("received: {}", String::from_utf8_lossy(&reply).trim_end());
}
