//! The wasi:http server out of descriptors (issue 10): with every descriptor of the
//! process taken, a new client makes `accept` fail with EMFILE; the server does not end,
//! it closes the connection that has waited longest for its head, backs off, accepts the
//! client and answers it. Once descriptors are free again it serves the guest as before.
//!
//! Its own test binary (one process, one test): it lowers the process's soft
//! `RLIMIT_NOFILE` and fills the descriptor table, which would disturb other tests.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use wasmpod_fixtures::http;
use wasmpod_runtime_core::{
    EngineSettings, ExitStatus, HttpConfig, Runtime, WasiConfig, WasmSource,
};

const HANG: Duration = Duration::from_secs(20);
/// The soft open-files limit the test runs under (containerd's default spec has 1024).
const NOFILE: u64 = 256;

fn set_soft_nofile(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, alive for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Whether the server closed `stream` (EOF or reset), without blocking.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server answered a half-sent request"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("reading a slow connection: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Sends a whole `GET path` on `stream` and returns the status line and body.
fn get_on(stream: TcpStream, path: &str) -> (String, String) {
    stream.set_read_timeout(Some(HANG)).unwrap();
    let mut reader = BufReader::new(stream);
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status.trim_end().to_owned(), body)
}

#[test]
fn out_of_descriptors_the_server_makes_room_and_keeps_answering() {
    set_soft_nofile(NOFILE);
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let http = HttpConfig {
        address: Ipv4Addr::LOCALHOST.into(),
        port,
        max_concurrency: 4,
        header_read_timeout: Duration::from_secs(600),
        ..HttpConfig::default()
    };
    let source = WasmSource::from_bytes("/handler.wasm", http::HELLO.to_vec()).unwrap();
    let runtime = Runtime::new(&EngineSettings::for_source(&source, None, &http)).unwrap();
    let mut prepared = runtime.prepare(&source).unwrap().with_http(http);
    prepared.bind_http().unwrap();
    let interrupter = runtime.interrupter();
    let run = std::thread::spawn({
        let interrupter = interrupter.clone();
        move || prepared.run(WasiConfig::default(), &interrupter)
    });
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(started.elapsed() < HANG, "the server never listened");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Slow clients, then every descriptor left taken.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut filler: Vec<File> = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => filler.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("filling the descriptor table: {e}"),
        }
    }
    assert!((filler.len() as u64) < NOFILE, "the limit did not apply");
    // One descriptor for the client: the server has none left for its accept.
    filler.pop();
    let client = TcpStream::connect(addr).expect("connect with the last descriptor");
    // Accepted and answered: with no descriptor at all left the guest's per-request
    // context cannot be built (500), but the server lives and speaks HTTP.
    let (status, _) = get_on(client, "/while-out-of-descriptors");
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    assert!(
        closed_by_server(&mut slow[0]),
        "the oldest slow client was not closed to make room"
    );
    // Oldest first: a retried accept may free one or two more, never the newest ones.
    assert!(slow[10..].iter_mut().all(|s| !closed_by_server(s)));

    // Descriptors back: the server serves as before.
    drop(filler);
    let (status, _) = get_on(TcpStream::connect(addr).unwrap(), "/after");
    assert_eq!(status, "HTTP/1.1 200 OK");
    drop(slow);
    interrupter.interrupt(15);
    assert_eq!(run.join().unwrap().unwrap(), ExitStatus::Exited(0));
}
