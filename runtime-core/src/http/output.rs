//! A request's stdout/stderr: whole lines to the container's log.
//!
//! Every request of a wasi:http server writes to the same container stdout/stderr, many at
//! once. A guest's `eprintln!` reaches the host as several writes (the formatted pieces),
//! so writing each straight through interleaves pieces of concurrent requests and tears
//! lines in `kubectl logs` (38% of the lines in `bench/http.sh` before this). Each stream a
//! request opens keeps its own buffer and writes only complete lines, all of them in one
//! `write` (atomic on a pipe up to 4 KiB); a line longer than [`MAX_LINE`] is written in
//! pieces, and what is left goes out when the stream is flushed or dropped (request end).

use std::fs::File;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Longest line kept back waiting for its newline (a pipe's atomic write size).
pub(crate) const MAX_LINE: usize = 4096;

/// The container's stdout or stderr, shared by all requests; hands out line streams.
#[derive(Clone)]
pub(crate) struct LineOutput {
    file: Arc<File>,
}

impl LineOutput {
    pub(crate) fn new(file: File) -> Self {
        LineOutput {
            file: Arc::new(file),
        }
    }
}

impl IsTerminal for LineOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LineOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineStream {
            file: self.file.clone(),
            pending: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineStream {
            file: self.file.clone(),
            pending: Vec::new(),
        })
    }
}

/// One stream's unfinished line.
struct LineStream {
    file: Arc<File>,
    pending: Vec<u8>,
}

impl LineStream {
    /// Takes `bytes`; writes every complete line (and an over-long one) now.
    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        let complete = match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None if self.pending.len() >= MAX_LINE => self.pending.len(),
            None => return Ok(()),
        };
        let result = (&*self.file).write_all(&self.pending[..complete]);
        self.pending.drain(..complete);
        result
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (&*self.file).write_all(&self.pending);
        self.pending.clear();
        result
    }
}

impl Drop for LineStream {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

#[async_trait::async_trait]
impl Pollable for LineStream {
    async fn ready(&mut self) {}
}

fn stream_error(e: std::io::Error) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::format_err!(e))
}

impl OutputStream for LineStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes).map_err(stream_error)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // The guest's flush is not a line end: keep an unfinished line together.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

impl tokio::io::AsyncWrite for LineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().push(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().write_pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(output: &LineOutput) -> LineStream {
        LineStream {
            file: output.file.clone(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn interleaved_streams_write_whole_lines() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let output = LineOutput::new(file.reopen().unwrap());
        let mut streams = [stream(&output), stream(&output)];
        for (i, piece) in [
            (0, "hello: "),
            (1, "other: "),
            (0, "GET /a"),
            (1, "POST /b\nsecond "),
            (0, "\n"),
        ] {
            streams[i].push(piece.as_bytes()).unwrap();
        }
        let [a, b] = streams;
        drop(b);
        drop(a);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(text, "other: POST /b\nhello: GET /a\nsecond ");
    }

    #[test]
    fn an_over_long_line_is_not_held_back() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let output = LineOutput::new(file.reopen().unwrap());
        let mut s = stream(&output);
        s.push(&vec![b'x'; MAX_LINE]).unwrap();
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().len(),
            MAX_LINE as u64
        );
        assert!(s.pending.is_empty());
    }
}
