//! CRI container log files, what `kubectl logs` reads: lines
//! `<RFC3339Nano time> <stdout|stderr> <P|F> <message>`, partial (`P`) lines joined.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// One line of a CRI container log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The message, partial (`P`) lines joined with the full (`F`) line that ends them.
    pub message: String,
}

/// Parse a CRI log file: lines `<RFC3339Nano time> <stdout|stderr> <P|F> <message>`.
/// Malformed lines are kept whole as `stream` `?`.
pub fn parse_log(text: &str) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), message) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            out.push(LogLine {
                stream: "?".into(),
                message: line.to_owned(),
            });
            continue;
        };
        let message = message.unwrap_or("");
        let buf = partial.entry(stream.to_owned()).or_default();
        buf.push_str(message);
        if tag != "P" {
            out.push(LogLine {
                stream: stream.to_owned(),
                message: std::mem::take(buf),
            });
        }
    }
    out
}

/// Read and parse the CRI log file at `path` (empty if it does not exist yet).
pub fn read_log(path: impl AsRef<Path>) -> Vec<LogLine> {
    fs::read_to_string(path)
        .map(|t| parse_log(&t))
        .unwrap_or_default()
}

/// The stdout messages of the CRI log at `path`.
pub fn stdout_lines(path: impl AsRef<Path>) -> Vec<String> {
    read_log(path)
        .into_iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.message)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_parsed_and_partials_joined() {
        let text = "2024-01-01T00:00:00.000000001Z stdout F hello from wasm\n\
                    2024-01-01T00:00:00.000000002Z stderr P par\n\
                    2024-01-01T00:00:00.000000003Z stderr F tial\n\
                    2024-01-01T00:00:00.000000004Z stdout F \n\
                    garbage";
        let lines = parse_log(text);
        assert_eq!(
            lines,
            [
                LogLine {
                    stream: "stdout".into(),
                    message: "hello from wasm".into()
                },
                LogLine {
                    stream: "stderr".into(),
                    message: "partial".into()
                },
                LogLine {
                    stream: "stdout".into(),
                    message: String::new()
                },
                LogLine {
                    stream: "?".into(),
                    message: "garbage".into()
                },
            ]
        );
    }
}
