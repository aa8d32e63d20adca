//! Writes `trap: about to panic` to stderr, then panics (a Wasm `unreachable` trap) on
//! every request, before any response is set. The server must answer 500 for that request
//! only and keep serving.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Trap;

wasip2::http::proxy::export!(Trap);

impl wasip2::exports::http::incoming_handler::Guest for Trap {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        eprintln!("trap: about to panic");
        panic!("trap fixture: deliberate panic");
    }
}
