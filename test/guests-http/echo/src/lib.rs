//! Echoes the request back: status 200, body
//! `METHOD PATH_WITH_QUERY\n`, one `name: value\n` line per request header (in the order
//! received), an empty line, then the request body. Environment: for a request header
//! `x-env: NAME`, the response carries `x-env-value: VALUE` (NAME's value in the guest's
//! environment, empty when unset) — tests check that env vars reach the handler.
//! Writes `echo: METHOD PATH_WITH_QUERY` to stdout per request.

use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};

struct Echo;

wasip2::http::proxy::export!(Echo);

fn method_name(method: Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other,
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let line = format!(
            "{} {}",
            method_name(request.method()),
            request.path_with_query().unwrap_or_default()
        );
        println!("echo: {line}");
        let mut text = format!("{line}\n").into_bytes();
        let mut env_value = None;
        for (name, value) in request.headers().entries() {
            if name == "x-env" {
                let var = String::from_utf8_lossy(&value).into_owned();
                env_value = Some(std::env::var(var).unwrap_or_default());
            }
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(&value);
            text.push(b'\n');
        }
        text.push(b'\n');

        let incoming = request.consume().expect("request body");
        {
            let mut stream = incoming.stream().expect("request body stream");
            stream.read_to_end(&mut text).expect("read request body");
        }
        let _ = IncomingBody::finish(incoming);

        let mut fields = vec![(
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )];
        if let Some(value) = env_value {
            fields.push(("x-env-value".to_owned(), value.into_bytes()));
        }
        let response = OutgoingResponse::new(Fields::from_list(&fields).expect("valid headers"));
        let body = response.body().expect("response body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("body stream");
        stream.write_all(&text).expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
