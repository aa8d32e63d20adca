//! How a wasi:http server listens and bounds its clients and requests: [`HttpConfig`], with
//! the documented defaults and the container env var / annotation overrides.
//!
//! Every override is range-checked when the config is built (the runner does it during
//! Create): a value out of range, zero, negative, in the wrong unit or not a number is an
//! [`Error::HttpSetting`] naming the setting, the value and the allowed range, never a
//! silent clamp, an overflow or a panic later in the server.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::{Error, Result};

/// Container env var naming the port (wins over the annotation: it is per container).
pub const PORT_ENV: &str = "WASMPOD_HTTP_PORT";
/// Pod annotation naming the port.
pub const PORT_ANNOTATION: &str = "wasmpod.dev/http-port";
/// Pod annotation: requests handled at once; more wait for a free slot.
pub const MAX_CONCURRENCY_ANNOTATION: &str = "wasmpod.dev/http-max-concurrency";
/// Pod annotation: how long one request may take (`30s`, `500ms`, `2m`; a bare number is seconds).
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "wasmpod.dev/http-request-timeout";
/// Pod annotation: how long in-flight requests may run on after SIGTERM.
pub const DRAIN_TIMEOUT_ANNOTATION: &str = "wasmpod.dev/http-drain-timeout";
/// Pod annotation: how long a client may take to send a request's head (line + headers).
pub const HEADER_READ_TIMEOUT_ANNOTATION: &str = "wasmpod.dev/http-header-read-timeout";
/// Pod annotation: how long a keep-alive connection may sit idle between requests.
pub const IDLE_TIMEOUT_ANNOTATION: &str = "wasmpod.dev/http-idle-timeout";
/// Pod annotation: connections open at once.
pub const MAX_CONNECTIONS_ANNOTATION: &str = "wasmpod.dev/http-max-connections";
/// Pod annotation: largest request head (request line + headers), in bytes (`16Ki`).
pub const MAX_HEADER_SIZE_ANNOTATION: &str = "wasmpod.dev/http-max-header-size";
/// Pod annotation: largest request body, in bytes (`10Mi`).
pub const MAX_BODY_SIZE_ANNOTATION: &str = "wasmpod.dev/http-max-body-size";

/// The port served when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8080;
/// Requests handled at once by default (also sizes the instance pool).
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
/// Default time one request may take, waiting for a slot included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default drain after SIGTERM: under Kubernetes' default 30 s grace period, so the
/// server ends by itself before the kubelet's SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default time to send a request head: ample for any real client, short enough that a
/// slow-headers flood (slowloris) lets go of its connections quickly.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default keep-alive idle time: nginx's, and above the 60 s upstream keep-alive of
/// common proxies (ingress-nginx, cloud load balancers), so the proxy closes first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default cap on open connections (lowered to fit the open-files limit, see
/// [`HttpConfig::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default cap on a request head: room for large cookies and tokens (Node.js allows
/// 16 KiB, nginx 4 × 8 KiB); over it the client gets 431.
pub const DEFAULT_MAX_HEADER_SIZE: u32 = 32 << 10;
/// Default cap on a request body (Cloud Run's limit for HTTP/1 requests); over it 413.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 32 << 20;

/// Allowed range of every timeout.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
/// Allowed range of the port.
const PORT_RANGE: (u64, u64) = (1, 65535);
/// Allowed range of the concurrency: each slot is a pooled instance reserving a few 4 GiB
/// memory regions of address space; past ~4,000 the pool no longer fits.
const MAX_CONCURRENCY_RANGE: (u64, u64) = (1, 1000);
/// Allowed range of the connection cap.
const MAX_CONNECTIONS_RANGE: (u64, u64) = (1, 1_000_000);
/// Allowed range of the head cap: a request line and `Host` fit in 1 KiB; hyper's own
/// read buffer (~400 KiB) stays above the upper end.
const MAX_HEADER_SIZE_RANGE: (u64, u64) = (1 << 10, 256 << 10);
/// Allowed range of the body cap.
const MAX_BODY_SIZE_RANGE: (u64, u64) = (1, 64 << 30);

/// Listening address, client bounds and per-request bounds of a wasi:http server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on: `0.0.0.0` (every interface of the current network namespace,
    /// i.e. the pod's) unless a test asks for loopback.
    pub address: IpAddr,
    /// TCP port; 0 picks a free one (tests).
    pub port: u16,
    /// Requests handled at once (each is one guest instance); the rest wait.
    pub max_concurrency: u32,
    /// Longest a request may take, from arrival to the guest returning; then 504.
    pub request_timeout: Duration,
    /// Longest in-flight requests may run after the first interrupt.
    pub drain_timeout: Duration,
    /// Longest a client may take to send a request head, from the accept (new connection)
    /// or from the first byte of the next request (keep-alive); then the connection closes.
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// Connections open at once. The server lowers it to fit the soft open-files limit
    /// (see `serve`'s connection cap); at the cap a new connection evicts the one that has
    /// waited longest for a request head.
    pub max_connections: u32,
    /// Largest request head (request line + headers) in bytes; over it 431.
    pub max_header_size: u32,
    /// Largest request body in bytes; over it 413.
    pub max_body_size: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

impl HttpConfig {
    /// The defaults overridden by the pod's annotations (`annotation(key)`) and, for the
    /// port, the container's environment (`env`, `KEY=VALUE` pairs as in
    /// [`crate::WasiConfig::env`]). A value that does not parse or is out of range is an
    /// [`Error::HttpSetting`] naming it.
    pub fn from_settings<'a>(
        annotation: impl Fn(&str) -> Option<&'a str>,
        env: &[(String, String)],
    ) -> Result<Self> {
        let mut config = HttpConfig::default();
        let env_port = env
            .iter()
            .rev()
            .find(|(key, _)| key == PORT_ENV)
            .map(|(_, value)| Setting::env(PORT_ENV, value));
        if let Some(setting) = env_port.or_else(|| {
            annotation(PORT_ANNOTATION).map(|v| Setting::annotation(PORT_ANNOTATION, v))
        }) {
            config.port = setting.number(PORT_RANGE)? as u16;
        }
        let get = |key: &'static str| annotation(key).map(|value| Setting::annotation(key, value));
        if let Some(setting) = get(MAX_CONCURRENCY_ANNOTATION) {
            config.max_concurrency = setting.number(MAX_CONCURRENCY_RANGE)? as u32;
        }
        if let Some(setting) = get(REQUEST_TIMEOUT_ANNOTATION) {
            config.request_timeout = setting.duration(TIMEOUT_RANGE)?;
        }
        if let Some(setting) = get(DRAIN_TIMEOUT_ANNOTATION) {
            config.drain_timeout = setting.duration(TIMEOUT_RANGE)?;
        }
        if let Some(setting) = get(HEADER_READ_TIMEOUT_ANNOTATION) {
            config.header_read_timeout = setting.duration(TIMEOUT_RANGE)?;
        }
        if let Some(setting) = get(IDLE_TIMEOUT_ANNOTATION) {
            config.idle_timeout = setting.duration(TIMEOUT_RANGE)?;
        }
        if let Some(setting) = get(MAX_CONNECTIONS_ANNOTATION) {
            config.max_connections = setting.number(MAX_CONNECTIONS_RANGE)? as u32;
        }
        if let Some(setting) = get(MAX_HEADER_SIZE_ANNOTATION) {
            config.max_header_size = setting.size(MAX_HEADER_SIZE_RANGE)? as u32;
        }
        if let Some(setting) = get(MAX_BODY_SIZE_ANNOTATION) {
            config.max_body_size = setting.size(MAX_BODY_SIZE_RANGE)?;
        }
        Ok(config)
    }
}

/// One value to parse, and where it came from (for the error).
struct Setting<'a> {
    origin: &'static str,
    key: &'static str,
    value: &'a str,
}

/// Why a value was refused.
enum Problem {
    /// Not of the setting's form; says what the form is.
    Form(&'static str),
    /// Well formed but outside the range.
    Range,
}

impl<'a> Setting<'a> {
    fn env(key: &'static str, value: &'a str) -> Self {
        Setting {
            origin: "env",
            key,
            value,
        }
    }

    fn annotation(key: &'static str, value: &'a str) -> Self {
        Setting {
            origin: "annotation",
            key,
            value,
        }
    }

    fn error(&self, problem: Problem, range: String) -> Error {
        let problem = match problem {
            Problem::Form(form) => format!("is not {form}"),
            Problem::Range => format!("is out of range ({range})"),
        };
        Error::HttpSetting {
            key: format!("{} {}", self.origin, self.key),
            value: self.value.to_owned(),
            problem,
        }
    }

    /// A plain count within `min..=max`.
    fn number(&self, (min, max): (u64, u64)) -> Result<u64> {
        let range = || format!("{min}..={max}");
        let n = digits(self.value.trim(), "a whole number")
            .map_err(|problem| self.error(problem, range()))?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.error(Problem::Range, range()))
        }
    }

    /// A duration (`500ms`, `30s`, `2m`, `1h`; a bare number is seconds) within `min..=max`.
    fn duration(&self, (min, max): (Duration, Duration)) -> Result<Duration> {
        const FORM: &str = "a duration (a whole number with ms, s, m or h: 500ms, 30s, 2m)";
        let range = || format!("{}..={}", show_duration(min), show_duration(max));
        let value = self.value.trim();
        let (number, unit) = split_unit(value);
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" | "" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(self.error(Problem::Form(FORM), range())),
        };
        let n = digits(number, FORM).map_err(|problem| self.error(problem, range()))?;
        let millis = u128::from(n) * millis_per_unit;
        if (min.as_millis()..=max.as_millis()).contains(&millis) {
            Ok(Duration::from_millis(millis as u64))
        } else {
            Err(self.error(Problem::Range, range()))
        }
    }

    /// A size in bytes (`4096`, `16Ki`, `10Mi`, `1Gi`) within `min..=max`.
    fn size(&self, (min, max): (u64, u64)) -> Result<u64> {
        const FORM: &str = "a size (a whole number of bytes, or with Ki, Mi or Gi: 16Ki, 10Mi)";
        let range = || format!("{}..={}", show_size(min), show_size(max));
        let value = self.value.trim();
        let (number, unit) = split_unit(value);
        let shift = match unit {
            "" => 0,
            "Ki" => 10,
            "Mi" => 20,
            "Gi" => 30,
            _ => return Err(self.error(Problem::Form(FORM), range())),
        };
        let n = digits(number, FORM).map_err(|problem| self.error(problem, range()))?;
        let bytes = u128::from(n) << shift;
        if (u128::from(min)..=u128::from(max)).contains(&bytes) {
            Ok(bytes as u64)
        } else {
            Err(self.error(Problem::Range, range()))
        }
    }
}

/// `"500ms"` → (`"500"`, `"ms"`): the leading digits and the rest.
fn split_unit(value: &str) -> (&str, &str) {
    let at = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    value.split_at(at)
}

/// A string of ASCII digits; more than a `u64` holds is out of range, anything else
/// (empty, a sign, a point) is not of the `form`.
fn digits(number: &str, form: &'static str) -> std::result::Result<u64, Problem> {
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::Form(form));
    }
    number.parse().map_err(|_| Problem::Range)
}

/// `1ms`, `30s`, `1h`: the largest unit that divides the duration.
fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis.is_multiple_of(per) {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

/// `1`, `1Ki`, `64Gi`: the largest binary unit that divides the size.
fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn with(key: &str, value: &str) -> Result<HttpConfig> {
        HttpConfig::from_settings(annotations(&[(key, value)]), &[])
    }

    /// The message of refusing `value` for `key`, checked to name the annotation.
    fn refused(key: &str, value: &str) -> String {
        let err = with(key, value).expect_err(&format!("{key}={value:?} was accepted"));
        assert!(matches!(err, Error::HttpSetting { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("annotation {key}")) && message.contains(value.trim()),
            "{message}"
        );
        message
    }

    #[test]
    fn defaults_without_settings() {
        let config = HttpConfig::from_settings(annotations(&[]), &[]).unwrap();
        assert_eq!(config, HttpConfig::default());
        assert_eq!(config.port, 8080);
        assert_eq!(config.address.to_string(), "0.0.0.0");
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.max_header_size, 32 * 1024);
        assert_eq!(config.max_body_size, 32 * 1024 * 1024);
    }

    #[test]
    fn env_port_wins_over_the_annotation() {
        let env = vec![(PORT_ENV.to_owned(), "9000".to_owned())];
        let config =
            HttpConfig::from_settings(annotations(&[(PORT_ANNOTATION, "7000")]), &env).unwrap();
        assert_eq!(config.port, 9000);
        let config =
            HttpConfig::from_settings(annotations(&[(PORT_ANNOTATION, "7000")]), &[]).unwrap();
        assert_eq!(config.port, 7000);
        let env = vec![(PORT_ENV.to_owned(), "0".to_owned())];
        let err = HttpConfig::from_settings(annotations(&[]), &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "env WASMPOD_HTTP_PORT: \"0\" is out of range (1..=65535)"
        );
    }

    #[test]
    fn the_huge_timeout_of_the_issue_is_a_named_range_error() {
        assert_eq!(
            refused(REQUEST_TIMEOUT_ANNOTATION, "18446744073709551615ms"),
            "annotation wasmpod.dev/http-request-timeout: \"18446744073709551615ms\" \
             is out of range (1ms..=1h)"
        );
    }

    /// Every duration annotation: valid forms, then zero, huge, garbage, negative, unit mixes.
    #[test]
    fn every_timeout_annotation_is_range_checked() {
        for key in [
            REQUEST_TIMEOUT_ANNOTATION,
            DRAIN_TIMEOUT_ANNOTATION,
            HEADER_READ_TIMEOUT_ANNOTATION,
            IDLE_TIMEOUT_ANNOTATION,
        ] {
            let field = |config: HttpConfig| match key {
                REQUEST_TIMEOUT_ANNOTATION => config.request_timeout,
                DRAIN_TIMEOUT_ANNOTATION => config.drain_timeout,
                HEADER_READ_TIMEOUT_ANNOTATION => config.header_read_timeout,
                _ => config.idle_timeout,
            };
            for (value, want) in [
                ("500ms", Duration::from_millis(500)),
                ("1ms", Duration::from_millis(1)),
                (" 7 ", Duration::from_secs(7)),
                ("30s", Duration::from_secs(30)),
                ("2m", Duration::from_secs(120)),
                ("1h", Duration::from_secs(3600)),
                ("3600000ms", Duration::from_secs(3600)),
            ] {
                assert_eq!(field(with(key, value).unwrap()), want, "{key}={value}");
            }
            for value in [
                "0",
                "0ms",
                "0s",
                "3601s",
                "61m",
                "2h",
                "18446744073709551615ms",
                "18446744073709551615h",
                "99999999999999999999999s",
            ] {
                let message = refused(key, value);
                assert!(message.ends_with("is out of range (1ms..=1h)"), "{message}");
            }
            for value in [
                "", "abc", "-1s", "-5", "1.5s", "1m30s", "10Mi", "5sec", "s", "ms", "1 s", "0x10",
            ] {
                let message = refused(key, value);
                assert!(message.contains("is not a duration"), "{message}");
            }
        }
    }

    /// Every count annotation: valid, zero, huge, garbage, negative, units.
    #[test]
    fn every_count_annotation_is_range_checked() {
        for (key, max) in [
            (PORT_ANNOTATION, "65535"),
            (MAX_CONCURRENCY_ANNOTATION, "1000"),
            (MAX_CONNECTIONS_ANNOTATION, "1000000"),
        ] {
            let config = with(key, "8").unwrap();
            let got = match key {
                PORT_ANNOTATION => u64::from(config.port),
                MAX_CONCURRENCY_ANNOTATION => u64::from(config.max_concurrency),
                _ => u64::from(config.max_connections),
            };
            assert_eq!(got, 8, "{key}");
            assert!(with(key, max).is_ok(), "{key}={max}");
            let range = format!("is out of range (1..={max})");
            for value in [
                "0",
                "1000001",
                "18446744073709551615",
                "18446744073709551616",
            ] {
                let message = refused(key, value);
                assert!(message.ends_with(&range), "{message}");
            }
            for value in ["", "http", "-1", "1.5", "8s", "1Ki", "+8"] {
                let message = refused(key, value);
                assert!(message.contains("is not a whole number"), "{message}");
            }
        }
    }

    /// Every size annotation: valid, zero, huge, garbage, negative, unit mixes.
    #[test]
    fn every_size_annotation_is_range_checked() {
        let header = |v| with(MAX_HEADER_SIZE_ANNOTATION, v).map(|c| u64::from(c.max_header_size));
        assert_eq!(header("16Ki").unwrap(), 16384);
        assert_eq!(header("1024").unwrap(), 1024);
        assert_eq!(header("256Ki").unwrap(), 256 << 10);
        let body = |v| with(MAX_BODY_SIZE_ANNOTATION, v).map(|c| c.max_body_size);
        assert_eq!(body("1").unwrap(), 1);
        assert_eq!(body("10Mi").unwrap(), 10 << 20);
        assert_eq!(body("64Gi").unwrap(), 64 << 30);
        for (key, range, too_big) in [
            (MAX_HEADER_SIZE_ANNOTATION, "1Ki..=256Ki", "257Ki"),
            (MAX_BODY_SIZE_ANNOTATION, "1..=64Gi", "65Gi"),
        ] {
            for value in [
                "0",
                "0Ki",
                too_big,
                "18446744073709551615",
                "18446744073709551615Gi",
                "99999999999999999999999",
            ] {
                let message = refused(key, value);
                assert!(
                    message.ends_with(&format!("is out of range ({range})")),
                    "{message}"
                );
            }
            for value in [
                "", "big", "-1", "1.5Mi", "16KiB", "16k", "10MB", "30s", "1Gi2",
            ] {
                let message = refused(key, value);
                assert!(message.contains("is not a size"), "{message}");
            }
        }
        let message = refused(MAX_HEADER_SIZE_ANNOTATION, "512");
        assert!(
            message.ends_with("is out of range (1Ki..=256Ki)"),
            "{message}"
        );
    }

    #[test]
    fn ranges_are_shown_in_the_largest_whole_unit() {
        assert_eq!(show_duration(Duration::from_millis(1)), "1ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(show_size(1), "1");
        assert_eq!(show_size(1536), "1536");
        assert_eq!(show_size(256 << 10), "256Ki");
        assert_eq!(show_size(64 << 30), "64Gi");
    }
}
