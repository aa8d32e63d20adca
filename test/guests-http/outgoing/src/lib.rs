//! Fetches a URL with `wasi:http/outgoing-handler` and answers 200 with
//! `STATUS\nBODY` (the upstream's status code, a newline, its body). The URL comes from
//! the `x-url` request header, else from the query (`/?url=http://host:port/path`).
//! A failed fetch answers 502 with the error code. Only `http://` and `https://` URLs.

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct Outgoing;

wasip2::http::proxy::export!(Outgoing);

/// The URL to fetch: header `x-url`, else `url=` in the query.
fn target_url(request: &IncomingRequest) -> Option<String> {
    let header = request.headers().get("x-url");
    if let Some(value) = header.first() {
        return Some(String::from_utf8_lossy(value).into_owned());
    }
    let path = request.path_with_query()?;
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("url="))
        .map(str::to_owned)
}

/// Fetches `url`; returns the upstream status and body.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("unsupported URL {url:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "path")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("response not ready")?
        .map_err(|()| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "response body")?;
    let mut body = Vec::new();
    {
        let mut stream = incoming.stream().map_err(|()| "response body stream")?;
        stream.read_to_end(&mut body).map_err(|e| e.to_string())?;
    }
    let _ = IncomingBody::finish(incoming);
    Ok((status, body))
}

impl wasip2::exports::http::incoming_handler::Guest for Outgoing {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match target_url(&request).ok_or("no x-url header or url= query") {
            Ok(url) => match fetch(&url) {
                Ok((status, body)) => {
                    let mut text = format!("{status}\n").into_bytes();
                    text.extend_from_slice(&body);
                    (200, text)
                }
                Err(e) => (502, format!("fetching {url}: {e}\n").into_bytes()),
            },
            Err(e) => (400, format!("{e}\n").into_bytes()),
        };
        eprintln!("outgoing: answered {status}");
        let response = OutgoingResponse::new(Fields::new());
        response.set_status_code(status).expect("valid status");
        let body = response.body().expect("response body");
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().expect("body stream");
        stream.write_all(&text).expect("write body");
        stream.flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
