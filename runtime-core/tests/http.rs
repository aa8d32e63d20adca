//! Serves the wasi:http fixtures on loopback ports, as an ordinary user: responses of each
//! handler, traps, malformed requests, timeouts, the concurrency limit, drain on interrupt,
//! and the guest's stderr reaching the container's stderr file.
//!
//! The client is a few lines over `std::net::TcpStream`, so what goes over the wire is
//! exactly what the test wrote. Time bounds are only generous "did not hang" limits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;
use wasmpod_fixtures::{http, p2};
use wasmpod_runtime_core::http::exports_incoming_handler;
use wasmpod_runtime_core::{
    EngineSettings, Error, ExitStatus, HttpConfig, Interrupter, Prepared, Runtime, WasiConfig,
    WasmSource,
};

/// Longest anything may take before a test calls it a hang.
const HANG: Duration = Duration::from_secs(20);

/// A handler served on a loopback port by a thread running `Prepared::run`.
struct Server {
    port: u16,
    interrupter: Interrupter,
    run: Option<JoinHandle<Result<ExitStatus, Error>>>,
    stdout: NamedTempFile,
    stderr: NamedTempFile,
}

/// Test defaults: loopback, a free port, a small pool.
fn http_config() -> HttpConfig {
    HttpConfig {
        address: Ipv4Addr::LOCALHOST.into(),
        port: free_port(),
        max_concurrency: 4,
        ..HttpConfig::default()
    }
}

/// A [`Server`] of the `sleep` handler with [`http_config`] changed by `adjust`.
fn sleep_server(adjust: impl FnOnce(&mut HttpConfig)) -> Server {
    let mut config = http_config();
    adjust(&mut config);
    Server::start(http::SLEEP, config)
}

/// `http::HELLO` prepared to serve with `config`, without a [`Server`] around it.
fn prepare_hello(config: HttpConfig) -> (Runtime, Prepared) {
    let source = WasmSource::from_bytes("/handler.wasm", http::HELLO.to_vec()).unwrap();
    let settings = EngineSettings::for_source(&source, None, &config);
    let runtime = Runtime::new(&settings).expect("engine");
    let prepared = runtime.prepare(&source).unwrap().with_http(config);
    (runtime, prepared)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("pick a free port")
        .port()
}

impl Server {
    fn start(bytes: &[u8], http: HttpConfig) -> Server {
        Server::start_with(bytes, http, WasiConfig::default())
    }

    fn start_with(bytes: &[u8], http: HttpConfig, mut config: WasiConfig) -> Server {
        let source = WasmSource::from_bytes("/handler.wasm", bytes.to_vec()).unwrap();
        let settings = EngineSettings::for_source(&source, config.memory_limit, &http);
        assert!(
            settings.pool.is_some(),
            "an HTTP server gets a pooling engine"
        );
        let runtime = Runtime::new(&settings).expect("engine");
        let port = http.port;
        let mut prepared = runtime.prepare(&source).expect("prepare").with_http(http);
        assert!(prepared.is_http_server());
        // As the runner does during Create.
        prepared.bind_http().expect("bind");
        let stdout = NamedTempFile::new().unwrap();
        let stderr = NamedTempFile::new().unwrap();
        config.stdout = Some(stdout.reopen().unwrap());
        config.stderr = Some(stderr.reopen().unwrap());
        if config.args.is_empty() {
            config.args = vec!["/handler.wasm".into()];
        }
        let interrupter = runtime.interrupter();
        let run = std::thread::spawn({
            let interrupter = interrupter.clone();
            move || prepared.run(config, &interrupter)
        });
        let server = Server {
            port,
            interrupter,
            run: Some(run),
            stdout,
            stderr,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&self) {
        let started = Instant::now();
        while TcpStream::connect(self.addr()).is_err() {
            let finished = self.run.as_ref().is_some_and(|run| run.is_finished());
            assert!(!finished, "the server ended before listening");
            assert!(started.elapsed() < HANG, "server never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut reader = connect(self.addr());
        send(reader.get_mut(), method, path, headers, body, true);
        read_reply(&mut reader)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }

    /// Waits until the container's stderr holds `line`.
    fn wait_for_stderr(&self, line: &str) {
        let started = Instant::now();
        while !self.stderr().lines().any(|l| l == line) {
            assert!(
                started.elapsed() < HANG,
                "stderr never showed {line:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `Prepared::run` to return.
    fn finish(&mut self) -> ExitStatus {
        let run = self.run.take().expect("not finished yet");
        let started = Instant::now();
        while !run.is_finished() {
            assert!(started.elapsed() < HANG, "the server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        run.join().expect("server thread").expect("serve")
    }

    /// Interrupts like SIGTERM and waits for the end.
    fn stop(&mut self) -> ExitStatus {
        self.interrupter.interrupt(15);
        self.finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.run.is_some() {
            // Two interrupts: stop now, whatever the test left running.
            self.interrupter.interrupt(15);
            self.interrupter.interrupt(15);
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A new connection to `addr` that gives up reading after [`HANG`].
fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(HANG)).unwrap();
    BufReader::new(stream)
}

/// Sends `GET path` (`connection: close`) on a new connection to `addr` and reads until
/// the server closes it; returns what came back.
fn get_until_closed(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut reader = connect(addr);
    send(reader.get_mut(), "GET", path, &[], b"", true);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    rest
}

/// Sends `raw` bytes (not necessarily HTTP) on a new connection to `addr` and reads the
/// reply.
fn send_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut reader = connect(addr);
    reader.get_mut().write_all(raw).unwrap();
    read_reply(&mut reader)
}

fn send(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read response line");
    line.trim_end_matches(['\r', '\n']).to_owned()
}

/// Reads one response: status line, headers, then a content-length, chunked or
/// until-close body.
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
        reader.read_to_end(&mut reply.body).unwrap();
    }
    reply
}

#[test]
fn handlers_are_detected_without_compiling() {
    for (name, bytes) in http::ALL {
        assert!(exports_incoming_handler(bytes), "http::{name}");
    }
    assert!(!exports_incoming_handler(p2::HELLO));
    assert!(!exports_incoming_handler(p2::SLEEP));
    let source = WasmSource::from_bytes("/cmd.wasm", p2::HELLO.to_vec()).unwrap();
    let settings = EngineSettings::for_source(&source, None, &HttpConfig::default());
    assert!(
        settings.pool.is_none(),
        "a command keeps the on-demand allocator"
    );
    let prepared = Runtime::new(&settings).unwrap().prepare(&source).unwrap();
    assert!(!prepared.is_http_server());
}

#[test]
fn hello_answers_and_writes_one_stderr_line_per_request() {
    let mut server = Server::start(http::HELLO, http_config());
    for path in ["/", "/a", "/b?x=1"] {
        let reply = server.get(path);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello from wasi:http\n");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    assert_eq!(
        server.stderr(),
        "hello: GET /\nhello: GET /a\nhello: GET /b?x=1\n"
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let mut server = Server::start(http::HELLO, http_config());
    let mut reader = connect(server.addr());
    for _ in 0..3 {
        send(reader.get_mut(), "GET", "/", &[], b"", false);
        let reply = read_reply(&mut reader);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello from wasi:http\n");
    }
    drop(reader);
    assert_eq!(server.stop(), ExitStatus::Exited(0));
}

#[test]
fn echo_returns_method_path_headers_body_and_env() {
    let config = WasiConfig {
        env: WasiConfig::parse_env(["GREETING=hi there"]),
        ..WasiConfig::default()
    };
    let mut server = Server::start_with(http::ECHO, http_config(), config);
    let reply = server.request(
        "POST",
        "/a/b?x=1",
        &[("x-test", "yes"), ("x-env", "GREETING")],
        b"the body",
    );
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let (head, body) = text.split_once("\n\n").expect("blank line before the body");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("POST /a/b?x=1"));
    let headers: Vec<&str> = lines.collect();
    assert!(headers.contains(&"x-test: yes"), "{headers:?}");
    assert!(headers.contains(&"content-length: 8"), "{headers:?}");
    assert_eq!(body, "the body");
    assert_eq!(reply.header("x-env-value"), Some("hi there"));
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    let stdout = std::fs::read_to_string(server.stdout.path()).unwrap();
    assert_eq!(
        stdout, "echo: POST /a/b?x=1\n",
        "guest stdout reaches the stdout file"
    );
}

/// A one-shot upstream for the outgoing handler: answers `upstream says hi` to each request.
fn start_upstream() -> (u16, JoinHandle<String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let request_line = read_line(&mut reader);
        while !read_line(&mut reader).is_empty() {}
        let body = "upstream says hi";
        let response = format!(
            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes()).unwrap();
        let _ = reader.get_mut().shutdown(Shutdown::Write);
        request_line
    });
    (port, thread)
}

#[test]
fn outgoing_requests_reach_an_upstream() {
    let server = Server::start(http::OUTGOING, http_config());
    let (port, upstream) = start_upstream();
    let url = format!("http://127.0.0.1:{port}/from-guest?q=1");
    let reply = server.request("GET", "/", &[("x-url", &url)], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "201\nupstream says hi");
    assert_eq!(upstream.join().unwrap(), "GET /from-guest?q=1 HTTP/1.1");

    let (port, upstream) = start_upstream();
    let reply = server.get(&format!("/?url=http://127.0.0.1:{port}/by-query"));
    assert_eq!(reply.text(), "201\nupstream says hi");
    assert_eq!(upstream.join().unwrap(), "GET /by-query HTTP/1.1");
}

#[test]
fn a_trap_answers_500_for_that_request_only() {
    let mut server = Server::start(http::TRAP, http_config());
    for _ in 0..2 {
        let reply = server.get("/");
        assert_eq!(reply.status, 500);
    }
    // Still serving: a malformed request gets hyper's 400.
    let reply = send_raw(server.addr(), b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(reply.status, 400);
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    let stderr = server.stderr();
    assert_eq!(
        stderr.matches("trap: about to panic").count(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("deliberate panic"), "{stderr}");
    assert_eq!(
        stderr
            .matches("wasmpod: /handler.wasm: request trapped")
            .count(),
        2,
        "{stderr}"
    );
}

#[test]
fn malformed_requests_get_400_without_reaching_the_guest() {
    let mut server = Server::start(http::HELLO, http_config());
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ] {
        let reply = send_raw(server.addr(), garbage);
        assert_eq!(reply.status, 400);
    }
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    assert_eq!(server.stderr(), "", "the guest never ran");
}

#[test]
fn requests_past_the_timeout_get_504_even_in_a_tight_loop() {
    let mut server = sleep_server(|http| http.request_timeout = Duration::from_millis(300));
    for path in ["/?ms=60000", "/?spin=60000"] {
        let started = Instant::now();
        let reply = server.get(path);
        assert_eq!(reply.status, 504, "{path}: {}", reply.text());
        assert!(started.elapsed() < HANG, "{path} hung");
    }
    let reply = server.get("/?ms=1");
    assert_eq!(reply.status, 200, "still serving after timeouts");
    assert_eq!(reply.text(), "slept 1 ms\n");
    assert_eq!(server.stop(), ExitStatus::Exited(0));
    let stderr = server.stderr();
    assert_eq!(stderr.matches("request timed out").count(), 2, "{stderr}");
}

#[test]
fn concurrency_limit_makes_requests_wait_for_a_slot() {
    let server = sleep_server(|http| http.max_concurrency = 1);
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| server.get("/?ms=1000"));
        server.wait_for_stderr("sleep: start 1000");
        let quick = scope.spawn(|| server.get("/?ms=0"));
        assert_eq!(slow.join().unwrap().text(), "slept 1000 ms\n");
        assert_eq!(quick.join().unwrap().text(), "slept 0 ms\n");
    });
    // With one slot the second request only started once the first was done.
    assert_eq!(
        server.stderr(),
        "sleep: start 1000\nsleep: done 1000\nsleep: start 0\nsleep: done 0\n"
    );
}

#[test]
fn interrupt_drains_in_flight_requests_and_refuses_new_connections() {
    let mut server = Server::start(http::SLEEP, http_config());
    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| done_tx.send(server.get("/?ms=1500")).unwrap());
        server.wait_for_stderr("sleep: start 1500");
        server.interrupter.interrupt(15);
        let started = Instant::now();
        while TcpStream::connect(server.addr()).is_ok() {
            assert!(
                started.elapsed() < HANG,
                "still accepting after the interrupt"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let reply = done.recv_timeout(HANG).expect("in-flight request finished");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "slept 1500 ms\n");
    });
    assert_eq!(server.finish(), ExitStatus::Exited(0));
}

#[test]
fn a_second_interrupt_stops_at_once() {
    let mut server = sleep_server(|http| http.drain_timeout = Duration::from_secs(600));
    let (done_tx, done) = mpsc::channel();
    let addr = server.addr();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            done_tx
                .send(get_until_closed(addr, "/?spin=600000"))
                .unwrap()
        });
        server.wait_for_stderr("sleep: start 600000");
        server.interrupter.interrupt(15);
        server.interrupter.interrupt(15);
        assert_eq!(server.finish(), ExitStatus::Interrupted { signal: 15 });
        done.recv_timeout(HANG).expect("the client was let go");
    });
}

#[test]
fn a_drain_out_of_time_stops_the_rest() {
    let mut server = sleep_server(|http| http.drain_timeout = Duration::from_millis(200));
    let addr = server.addr();
    std::thread::scope(|scope| {
        scope.spawn(move || get_until_closed(addr, "/?ms=600000"));
        server.wait_for_stderr("sleep: start 600000");
        assert_eq!(server.stop(), ExitStatus::Interrupted { signal: 15 });
    });
    assert!(
        server.stderr().contains("drain timeout"),
        "{}",
        server.stderr()
    );
}

#[test]
fn idle_server_stops_at_once_and_an_early_interrupt_is_not_lost() {
    let mut server = Server::start(http::HELLO, http_config());
    assert_eq!(server.stop(), ExitStatus::Exited(0));

    // Interrupted before `run`: the server drains nothing and ends.
    let (runtime, prepared) = prepare_hello(http_config());
    let interrupter = runtime.interrupter();
    interrupter.interrupt(15);
    let status = prepared.run(WasiConfig::default(), &interrupter).unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
}

#[test]
fn a_port_in_use_fails_at_bind_and_at_run() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let config = HttpConfig {
        port: taken.local_addr().unwrap().port(),
        ..http_config()
    };
    // At prepare time (the runner binds during Create).
    let (_runtime, mut prepared) = prepare_hello(config.clone());
    let err = prepared.bind_http().unwrap_err();
    assert!(matches!(err, Error::HttpBind { .. }), "{err}");
    assert!(err.to_string().contains(&config.port.to_string()), "{err}");
    // Unbound, `run` binds itself and fails the same way.
    let (runtime, prepared) = prepare_hello(config);
    let err = prepared
        .run(WasiConfig::default(), &runtime.interrupter())
        .unwrap_err();
    assert!(matches!(err, Error::HttpBind { .. }), "{err}");
}

#[test]
fn the_socket_is_bound_at_prepare_and_served_at_run() {
    let config = http_config();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let (runtime, mut prepared) = prepare_hello(config);
    prepared.bind_http().unwrap();
    // Listening before run: a request sent now waits in the queue and is answered at run.
    let mut early = connect(addr);
    send(early.get_mut(), "GET", "/", &[], b"", true);
    let interrupter = runtime.interrupter();
    let run = std::thread::spawn({
        let interrupter = interrupter.clone();
        move || prepared.run(WasiConfig::default(), &interrupter)
    });
    let reply = read_reply(&mut early);
    interrupter.interrupt(15);
    assert_eq!(run.join().unwrap().unwrap(), ExitStatus::Exited(0));
    assert_eq!(reply.status, 200);
}
