//! Answers every request with 200 `hello from wasi:http\n` and writes one line,
//! `hello: METHOD PATH`, to stderr per request (the benchmark's handler: output kept).

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

wasip2::http::proxy::export!(Hello);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Post => "POST".to_owned(),
            other => format!("{other:?}"),
        };
        let path = request.path_with_query().unwrap_or_default();
        eprintln!("hello: {method} {path}");

        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("body stream");
        stream
            .write_all(b"hello from wasi:http\n")
            .expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
