//! The wasi:http server under hostile clients (issue 10): a flood of half-sent request
//! heads is closed by the header-read timeout while a normal request is answered at once;
//! an idle keep-alive connection is closed after the idle timeout (not the header one);
//! heads and bodies over their caps get 431 and 413; the connection cap holds, evicting
//! the connection that has waited longest for its head, and healthy requests proceed.
//!
//! Plain `std::net` clients on loopback, as in `http.rs`. Time bounds are generous "did not
//! hang" limits, or lower bounds (the server must not close early); nothing measures speed.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;
use wasmpod_fixtures::http;
use wasmpod_runtime_core::{
    EngineSettings, Error, ExitStatus, HttpConfig, Interrupter, Runtime, WasiConfig, WasmSource,
};

/// Longest anything may take before a test calls it a hang.
const HANG: Duration = Duration::from_secs(20);
/// Half a request head: the request line and one header, then nothing.
const HALF_HEAD: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: ";

/// A handler served on a loopback port by a thread running `Prepared::run`.
struct Server {
    addr: SocketAddr,
    interrupter: Interrupter,
    run: Option<JoinHandle<Result<ExitStatus, Error>>>,
    stdout: NamedTempFile,
    stderr: NamedTempFile,
}

impl Server {
    /// Serves `bytes` on loopback with the defaults changed by `adjust`.
    fn start(bytes: &[u8], adjust: impl FnOnce(&mut HttpConfig)) -> Server {
        let mut http = HttpConfig {
            address: Ipv4Addr::LOCALHOST.into(),
            port: 0,
            max_concurrency: 4,
            ..HttpConfig::default()
        };
        adjust(&mut http);
        let source = WasmSource::from_bytes("/handler.wasm", bytes.to_vec()).unwrap();
        let settings = EngineSettings::for_source(&source, None, &http);
        let runtime = Runtime::new(&settings).expect("engine");
        // Port 0: the kernel picks; find out which from a bound listener is not exposed,
        // so pick a free port first, as http.rs does.
        http.port = free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, http.port));
        let mut prepared = runtime.prepare(&source).expect("prepare").with_http(http);
        prepared.bind_http().expect("bind");
        let stdout = NamedTempFile::new().unwrap();
        let stderr = NamedTempFile::new().unwrap();
        let config = WasiConfig {
            args: vec!["/handler.wasm".into()],
            stdout: Some(stdout.reopen().unwrap()),
            stderr: Some(stderr.reopen().unwrap()),
            ..WasiConfig::default()
        };
        let interrupter = runtime.interrupter();
        let run = std::thread::spawn({
            let interrupter = interrupter.clone();
            move || prepared.run(config, &interrupter)
        });
        Server {
            addr,
            interrupter,
            run: Some(run),
            stdout,
            stderr,
        }
    }

    /// `GET path` with `connection: close` on a new connection; the whole reply.
    fn get(&self, path: &str) -> Reply {
        let mut stream = connect(self.addr);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        read_reply(&mut BufReader::new(stream))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout.path()).unwrap()
    }

    /// Interrupts like SIGTERM and waits for the end.
    fn stop(&mut self) -> ExitStatus {
        self.interrupter.interrupt(15);
        let run = self.run.take().expect("running");
        let started = Instant::now();
        while !run.is_finished() {
            assert!(started.elapsed() < HANG, "the server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        run.join().expect("server thread").expect("serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.run.is_some() {
            self.interrupter.interrupt(15);
            self.interrupter.interrupt(15);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("pick a free port")
        .port()
}

/// A new connection that gives up reading after [`HANG`].
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(HANG)).unwrap();
    stream
}

/// A parsed response (content-length, chunked or until-close body).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a response line");
    line.trim_end_matches(['\r', '\n']).to_owned()
}

fn read_reply(reader: &mut impl BufRead) -> Reply {
    let status_line = read_line(reader);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header line");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = reply.header("content-length") {
        let mut body = vec![0; length.parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        reply.body = body;
    } else if reply.header("transfer-encoding") == Some("chunked") {
        loop {
            let size = usize::from_str_radix(&read_line(reader), 16).expect("chunk size");
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk).unwrap();
            read_line(reader);
            if size == 0 {
                break;
            }
            reply.body.extend_from_slice(&chunk);
        }
    } else {
        let _ = reader.read_to_end(&mut reply.body);
    }
    reply
}

/// Whether the server has closed `stream` (EOF or reset), without blocking.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent data on a half-sent request"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("reading a flood connection: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Raises this process's soft open-files limit to its hard limit; returns the new soft
/// limit.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, alive for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// Server-side connections of `port` in ESTABLISHED state (the server holds them open,
/// accepted or queued), from `/proc/net/tcp`.
fn established_server_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local_port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields
                .get(1)
                .is_some_and(|local| local.ends_with(&local_port))
                && fields.get(3) == Some(&"01")
        })
        .count()
}

/// Waits until `check` holds, or fails with `what` after [`HANG`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < HANG, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const FLOOD: usize = 1000;

#[test]
fn a_thousand_half_sent_heads_are_closed_by_the_header_timeout_while_a_request_is_answered() {
    // Two descriptors per flood connection (client and server side) in this process.
    let nofile = raise_nofile();
    assert!(
        nofile >= 2 * FLOOD as u64 + 500,
        "the hard open-files limit ({nofile}) is too low for {FLOOD} connections in one process"
    );
    let header_timeout = Duration::from_secs(3);
    let mut server = Server::start(http::HELLO, |http| {
        http.header_read_timeout = header_timeout;
        http.max_connections = 4 * FLOOD as u32;
    });
    wait_until("the server never listened", || {
        TcpStream::connect(server.addr).is_ok()
    });

    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut stream = connect(server.addr);
            stream.write_all(HALF_HEAD).unwrap();
            stream
        })
        .collect();
    let flooded = Instant::now();

    // A normal request during the flood is answered...
    let reply = server.get("/during-the-flood");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from wasi:http\n");
    // ...while every flood connection is still open: before the header timeout fired.
    let closed_early = flood
        .iter_mut()
        .map(closed_by_server)
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        closed_early, 0,
        "flood connections were closed before the normal request was answered"
    );

    // Then the header timeout closes every one of them.
    let bound = header_timeout + Duration::from_secs(10);
    let mut open: Vec<TcpStream> = flood;
    while !open.is_empty() {
        assert!(
            flooded.elapsed() < bound,
            "{} of {FLOOD} half-sent requests still open {:?} after the flood (header timeout {header_timeout:?})",
            open.len(),
            flooded.elapsed()
        );
        open.retain_mut(|stream| !closed_by_server(stream));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The server still answers, and the guest only ever saw the normal requests.
    assert_eq!(server.get("/after").status, 200);
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    assert_eq!(
        server.stderr(),
        "hello: GET /during-the-flood\nhello: GET /after\n"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_one() {
    let header_timeout = Duration::from_millis(500);
    let idle_timeout = Duration::from_secs(3);
    let mut server = Server::start(http::HELLO, |http| {
        http.header_read_timeout = header_timeout;
        http.idle_timeout = idle_timeout;
    });
    wait_until("the server never listened", || {
        TcpStream::connect(server.addr).is_ok()
    });
    let stream = connect(server.addr);
    let mut reader = BufReader::new(stream);
    for _ in 0..2 {
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut reader);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello from wasi:http\n");
    }
    let answered = Instant::now();
    std::thread::sleep(header_timeout * 3);
    assert!(
        !closed_by_server(reader.get_mut()),
        "an idle keep-alive connection was closed by the header timeout"
    );
    let mut rest = Vec::new();
    let read = reader.read_to_end(&mut rest);
    let idled = answered.elapsed();
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "expected EOF, got {read:?}"
    );
    assert!(
        idled + Duration::from_millis(200) >= idle_timeout,
        "closed after {idled:?}, before the idle timeout {idle_timeout:?}"
    );
    assert!(idled < idle_timeout + HANG, "closed only after {idled:?}");
    assert_eq!(server.stop(), ExitStatus::Exited(0));
}

#[test]
fn a_head_over_the_cap_gets_431_and_a_body_over_the_cap_413() {
    let mut server = Server::start(http::ECHO, |http| {
        http.max_header_size = 2048;
        http.max_body_size = 100;
    });
    wait_until("the server never listened", || {
        TcpStream::connect(server.addr).is_ok()
    });
    let request = |head_extra: &str, body: &[u8], chunked: bool| {
        let mut stream = connect(server.addr);
        let mut head =
            format!("POST /echo HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{head_extra}");
        if chunked {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
        } else {
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        }
        stream.write_all(head.as_bytes()).unwrap();
        if chunked {
            for chunk in body.chunks(40) {
                let _ = write!(stream, "{:x}\r\n", chunk.len());
                let _ = stream.write_all(chunk);
                let _ = stream.write_all(b"\r\n");
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        } else {
            // The server may answer and close before reading all of it.
            let _ = stream.write_all(body);
        }
        read_reply(&mut BufReader::new(stream))
    };

    let big_header = format!("x-big: {}\r\n", "a".repeat(4000));
    assert_eq!(request(&big_header, b"", false).status, 431);
    let fits = format!("x-fits: {}\r\n", "a".repeat(1500));
    assert_eq!(request(&fits, b"", false).status, 200);
    assert!(
        server.stdout().lines().count() == 1,
        "the 431 never reached the guest"
    );

    // Content-Length over the cap: refused before reading, the guest never runs.
    let reply = request("", &[b'x'; 101], false);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        server.stdout().lines().count(),
        1,
        "the guest ran for a 413"
    );
    let reply = request("", &[b'x'; 100], false);
    assert_eq!(reply.status, 200);
    assert!(reply.text().ends_with(&"x".repeat(100)));

    // Chunked: counted as the guest reads it.
    let reply = request("", &[b'y'; 150], true);
    assert_eq!(reply.status, 413, "{}", reply.text());
    let reply = request("", &[b'y'; 60], true);
    assert_eq!(reply.status, 200);
    assert!(reply.text().ends_with(&"y".repeat(60)));
    assert_eq!(server.stop(), ExitStatus::Exited(0));
}

#[test]
fn at_the_connection_cap_the_oldest_waiting_connection_makes_room_for_a_healthy_one() {
    const CAP: usize = 20;
    let mut server = Server::start(http::HELLO, |http| {
        http.max_connections = CAP as u32;
        // Nothing times out during the test: only the cap closes connections.
        http.header_read_timeout = Duration::from_secs(600);
    });
    wait_until("the server never listened", || {
        TcpStream::connect(server.addr).is_ok()
    });
    let port = server.addr.port();
    // 50 slow clients, one after the other (each accepted before the next).
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..50 {
        let mut stream = connect(server.addr);
        stream.write_all(HALF_HEAD).unwrap();
        slow.push(stream);
        wait_until("a slow client was never accepted", || {
            established_server_sockets(port) <= CAP
        });
    }
    // The server holds at most CAP of them: the oldest 30 were evicted.
    wait_until("the oldest slow clients were not evicted", || {
        slow[..30].iter_mut().all(closed_by_server)
    });
    assert!(
        slow[30..].iter_mut().all(|s| !closed_by_server(s)),
        "the newest slow clients must still be open"
    );
    assert_eq!(established_server_sockets(port), CAP);

    // A healthy request at the cap is answered; the oldest waiting slow client made room.
    let reply = server.get("/healthy");
    assert_eq!(reply.status, 200);
    assert!(closed_by_server(&mut slow[30]), "no room was made");
    assert!(slow[31..].iter_mut().all(|s| !closed_by_server(s)));
    drop(slow);
    assert_eq!(server.stop(), ExitStatus::Exited(0));
}

#[test]
fn at_the_cap_with_every_connection_busy_new_ones_wait_and_are_served() {
    let mut server = Server::start(http::SLEEP, |http| http.max_connections = 2);
    wait_until("the server never listened", || {
        TcpStream::connect(server.addr).is_ok()
    });
    std::thread::scope(|scope| {
        let busy: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| server.get("/?ms=1500")))
            .collect();
        wait_until("the two slow requests never started", || {
            server.stderr().matches("sleep: start 1500").count() == 2
        });
        // A third connection is not evicting a busy one: it waits for one to finish.
        let third = server.get("/?ms=0");
        assert_eq!(third.status, 200);
        assert_eq!(third.text(), "slept 0 ms\n");
        for request in busy {
            assert_eq!(request.join().unwrap().text(), "slept 1500 ms\n");
        }
    });
    let stderr = server.stderr();
    let third_started = stderr.find("sleep: start 0").expect("third ran");
    let first_done = stderr.find("sleep: done 1500").expect("slow ones ended");
    assert!(first_done < third_started, "{stderr}");
    assert_eq!(server.stop(), ExitStatus::Exited(0));
}
