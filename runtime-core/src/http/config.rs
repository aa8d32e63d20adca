//! How a wasi:http server listens and bounds its requests: [`HttpConfig`], with the
//! documented defaults and the container env var / annotation overrides.

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

/// The port served when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8080;
/// Requests handled at once by default (also sizes the instance pool).
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
/// Default time one request may take, waiting for a slot included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default drain after SIGTERM: under Kubernetes' default 30 s grace period, so the
/// server ends by itself before the kubelet's SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Listening address and per-request bounds of a wasi:http server.
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl HttpConfig {
    /// The defaults overridden by the pod's annotations (`annotation(key)`) and, for the
    /// port, the container's environment (`env`, `KEY=VALUE` pairs as in
    /// [`crate::WasiConfig::env`]). A value that does not parse is an error naming it.
    pub fn from_settings<'a>(
        annotation: impl Fn(&str) -> Option<&'a str>,
        env: &[(String, String)],
    ) -> Result<Self> {
        let mut config = HttpConfig::default();
        let env_port = env
            .iter()
            .rev()
            .find(|(key, _)| key == PORT_ENV)
            .map(|(_, value)| (PORT_ENV, value.as_str()));
        if let Some((key, value)) =
            env_port.or_else(|| annotation(PORT_ANNOTATION).map(|v| (PORT_ANNOTATION, v)))
        {
            config.port = parse(key, value, |v| v.parse().ok())?;
        }
        if let Some(value) = annotation(MAX_CONCURRENCY_ANNOTATION) {
            config.max_concurrency = parse(MAX_CONCURRENCY_ANNOTATION, value, |v| {
                v.parse().ok().filter(|n| *n > 0)
            })?;
        }
        if let Some(value) = annotation(REQUEST_TIMEOUT_ANNOTATION) {
            config.request_timeout = parse(REQUEST_TIMEOUT_ANNOTATION, value, parse_duration)?;
        }
        if let Some(value) = annotation(DRAIN_TIMEOUT_ANNOTATION) {
            config.drain_timeout = parse(DRAIN_TIMEOUT_ANNOTATION, value, parse_duration)?;
        }
        Ok(config)
    }
}

fn parse<T>(key: &str, value: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(value.trim()).ok_or_else(|| Error::HttpSetting {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// `500ms`, `30s`, `2m`, or a bare number of seconds.
fn parse_duration(value: &str) -> Option<Duration> {
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    #[test]
    fn defaults_without_settings() {
        let config = HttpConfig::from_settings(annotations(&[]), &[]).unwrap();
        assert_eq!(config, HttpConfig::default());
        assert_eq!(config.port, 8080);
        assert_eq!(config.address.to_string(), "0.0.0.0");
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
    }

    #[test]
    fn annotations_set_limits_and_timeouts() {
        let config = HttpConfig::from_settings(
            annotations(&[
                (MAX_CONCURRENCY_ANNOTATION, "8"),
                (REQUEST_TIMEOUT_ANNOTATION, "500ms"),
                (DRAIN_TIMEOUT_ANNOTATION, "2m"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.max_concurrency, 8);
        assert_eq!(config.request_timeout, Duration::from_millis(500));
        assert_eq!(config.drain_timeout, Duration::from_secs(120));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (key, value) in [
            (PORT_ANNOTATION, "http"),
            (PORT_ANNOTATION, "70000"),
            (MAX_CONCURRENCY_ANNOTATION, "0"),
            (REQUEST_TIMEOUT_ANNOTATION, "5h"),
            (DRAIN_TIMEOUT_ANNOTATION, ""),
        ] {
            let err = HttpConfig::from_settings(annotations(&[(key, value)]), &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
