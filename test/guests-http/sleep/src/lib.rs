//! Waits, then answers 200 `slept MS ms\n`. The query says how: `?ms=N` sleeps N
//! milliseconds in a host call (`wasi:clocks` pollable, the guest is suspended);
//! `?spin=N` busy-loops for N milliseconds in Wasm (checking the monotonic clock), so only
//! epoch interruption can stop it. Before waiting it writes `sleep: start MS` to stderr
//! (tests watch for it to know the request is in flight), and `sleep: done MS` after.

use std::io::Write as _;

use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Sleep;

wasip2::http::proxy::export!(Sleep);

/// The value of `key` in `path?key=value&...`.
fn query_value(path: &str, key: &str) -> Option<u64> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

impl wasip2::exports::http::incoming_handler::Guest for Sleep {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let spin = query_value(&path, "spin");
        let ms = spin.or_else(|| query_value(&path, "ms")).unwrap_or(0);
        eprintln!("sleep: start {ms}");
        match spin {
            Some(ms) => {
                let until = monotonic_clock::now() + ms * 1_000_000;
                let mut spins = 0u64;
                while monotonic_clock::now() < until {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            None => std::thread::sleep(std::time::Duration::from_millis(ms)),
        }
        eprintln!("sleep: done {ms}");

        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("response body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("body stream");
        writeln!(stream, "slept {ms} ms").expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
