//! Bounds on what preparing a payload may cost: its size, and the time to get its compiled
//! code (waiting for another start compiling the same module, then compiling).
//!
//! A payload is untrusted input: without a bound, a 4 GiB file is read into memory and a
//! module crafted to make Cranelift slow holds Create (and a core) for as long as it likes.
//!
//! | bound | node (the shim's environment) | per pod (annotation, may only lower it) | default |
//! |---|---|---|---|
//! | payload size | `WASMPOD_MAX_PAYLOAD_BYTES` | `wasmpod.dev/max-payload-bytes` | 256 MiB |
//! | compile deadline | `WASMPOD_COMPILE_TIMEOUT` | `wasmpod.dev/compile-timeout` | 90 s |
//!
//! Sizes are bytes, or a number with `Ki`, `Mi` or `Gi`; durations are `500ms`, `30s`, `2m`
//! or a bare number of seconds. Every value is range-checked
//! ([`MAX_PAYLOAD_RANGE`], [`COMPILE_TIMEOUT_RANGE`]) and an annotation above the node's
//! bound is refused: a workload cannot raise what the node allows.
//!
//! The default deadline (90 s) leaves a 2-core node time to compile a module of tens of MB
//! at Cranelift's speed setting, and stays below kubelet's 2-minute runtime request timeout,
//! so a slow compile ends as this crate's named error rather than a kubelet retry loop.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::{Error, Result};

/// Node-level payload size bound (environment of the shim, inherited by its runners).
pub const MAX_PAYLOAD_ENV: &str = "WASMPOD_MAX_PAYLOAD_BYTES";
/// Node-level compile deadline.
pub const COMPILE_TIMEOUT_ENV: &str = "WASMPOD_COMPILE_TIMEOUT";
/// Per-workload payload size bound (may only lower the node's).
pub const MAX_PAYLOAD_ANNOTATION: &str = "wasmpod.dev/max-payload-bytes";
/// Per-workload compile deadline (may only lower the node's).
pub const COMPILE_TIMEOUT_ANNOTATION: &str = "wasmpod.dev/compile-timeout";

pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 256 << 20;
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(90);
/// Accepted payload bounds: 1 KiB to 4 GiB.
pub const MAX_PAYLOAD_RANGE: RangeInclusive<u64> = 1 << 10..=4 << 30;
/// Accepted deadlines: 10 ms to 1 hour.
pub const COMPILE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);

/// The bounds one container's preparation runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareBounds {
    pub max_payload_bytes: u64,
    pub compile_timeout: Duration,
}

impl Default for PrepareBounds {
    fn default() -> Self {
        PrepareBounds {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

impl PrepareBounds {
    /// The node's bounds from `env`, lowered by `annotation`s.
    pub fn from_settings<'a>(
        env: impl Fn(&str) -> Option<String>,
        annotation: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self> {
        let mut bounds = PrepareBounds::default();
        if let Some(value) = env(MAX_PAYLOAD_ENV) {
            bounds.max_payload_bytes =
                checked(MAX_PAYLOAD_ENV, &value, parse_size, &MAX_PAYLOAD_RANGE)?;
        }
        if let Some(value) = env(COMPILE_TIMEOUT_ENV) {
            bounds.compile_timeout = checked(
                COMPILE_TIMEOUT_ENV,
                &value,
                parse_duration,
                &COMPILE_TIMEOUT_RANGE,
            )?;
        }
        if let Some(value) = annotation(MAX_PAYLOAD_ANNOTATION) {
            let node = bounds.max_payload_bytes;
            bounds.max_payload_bytes = checked(
                MAX_PAYLOAD_ANNOTATION,
                value,
                parse_size,
                &MAX_PAYLOAD_RANGE,
            )?;
            if bounds.max_payload_bytes > node {
                return Err(above_node(
                    MAX_PAYLOAD_ANNOTATION,
                    value,
                    node,
                    MAX_PAYLOAD_ENV,
                ));
            }
        }
        if let Some(value) = annotation(COMPILE_TIMEOUT_ANNOTATION) {
            let node = bounds.compile_timeout;
            bounds.compile_timeout = checked(
                COMPILE_TIMEOUT_ANNOTATION,
                value,
                parse_duration,
                &COMPILE_TIMEOUT_RANGE,
            )?;
            if bounds.compile_timeout > node {
                return Err(above_node(
                    COMPILE_TIMEOUT_ANNOTATION,
                    value,
                    format!("{node:?}"),
                    COMPILE_TIMEOUT_ENV,
                ));
            }
        }
        Ok(bounds)
    }
}

fn above_node(key: &str, value: &str, node: impl std::fmt::Display, env: &str) -> Error {
    Error::Setting {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: format!("above the node's bound {node} ({env}); an annotation may only lower it"),
    }
}

fn checked<T: PartialOrd + std::fmt::Debug>(
    key: &str,
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
    range: &RangeInclusive<T>,
) -> Result<T> {
    let error = |reason: String| Error::Setting {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let parsed = parse(value.trim()).ok_or_else(|| error("does not parse".to_owned()))?;
    if !range.contains(&parsed) {
        return Err(error(format!(
            "out of range {:?}..={:?}",
            range.start(),
            range.end()
        )));
    }
    Ok(parsed)
}

/// `1048576`, `512Ki`, `64Mi`, `1Gi`.
fn parse_size(value: &str) -> Option<u64> {
    let (number, unit) = split_unit(value);
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// `500ms`, `30s`, `2m`, or a bare number of seconds.
fn parse_duration(value: &str) -> Option<Duration> {
    let (number, unit) = split_unit(value);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" | "" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

fn split_unit(value: &str) -> (&str, &str) {
    match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(env: &[(&str, &str)], annotations: &[(&str, &'static str)]) -> Result<PrepareBounds> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PrepareBounds::from_settings(
            |key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
            |key| annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| *v),
        )
    }

    #[test]
    fn defaults_then_node_then_lower_annotations() {
        assert_eq!(bounds(&[], &[]).unwrap(), PrepareBounds::default());
        let node = bounds(
            &[(MAX_PAYLOAD_ENV, "64Mi"), (COMPILE_TIMEOUT_ENV, "30s")],
            &[],
        )
        .unwrap();
        assert_eq!(node.max_payload_bytes, 64 << 20);
        assert_eq!(node.compile_timeout, Duration::from_secs(30));
        let lowered = bounds(
            &[(COMPILE_TIMEOUT_ENV, "30s")],
            &[
                (MAX_PAYLOAD_ANNOTATION, "4096"),
                (COMPILE_TIMEOUT_ANNOTATION, "250ms"),
            ],
        )
        .unwrap();
        assert_eq!(lowered.max_payload_bytes, 4096);
        assert_eq!(lowered.compile_timeout, Duration::from_millis(250));
    }

    #[test]
    fn annotations_cannot_raise_the_node_bounds() {
        let err = bounds(
            &[(COMPILE_TIMEOUT_ENV, "30s")],
            &[(COMPILE_TIMEOUT_ANNOTATION, "31s")],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(COMPILE_TIMEOUT_ANNOTATION), "{msg}");
        assert!(msg.contains("may only lower"), "{msg}");
        let err = bounds(&[], &[(MAX_PAYLOAD_ANNOTATION, "1Gi")]).unwrap_err();
        assert!(err.to_string().contains(MAX_PAYLOAD_ANNOTATION), "{err}");
    }

    #[test]
    fn out_of_range_and_overflowing_values_are_named_errors() {
        for (key, value) in [
            (COMPILE_TIMEOUT_ANNOTATION, "18446744073709551615"),
            (COMPILE_TIMEOUT_ANNOTATION, "18446744073709551615m"),
            (COMPILE_TIMEOUT_ANNOTATION, "99999999999999999999999"),
            (COMPILE_TIMEOUT_ANNOTATION, "0"),
            (COMPILE_TIMEOUT_ANNOTATION, "1ms"),
            (COMPILE_TIMEOUT_ANNOTATION, "-5s"),
            (COMPILE_TIMEOUT_ANNOTATION, "5h"),
            (MAX_PAYLOAD_ANNOTATION, "18446744073709551615Gi"),
            (MAX_PAYLOAD_ANNOTATION, "0"),
            (MAX_PAYLOAD_ANNOTATION, "12KB"),
            (MAX_PAYLOAD_ANNOTATION, ""),
        ] {
            let err = bounds(&[], &[(key, value)]).unwrap_err();
            assert!(matches!(err, Error::Setting { .. }), "{key}={value}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
        for (key, value) in [(MAX_PAYLOAD_ENV, "5Gi"), (COMPILE_TIMEOUT_ENV, "2h")] {
            let err = bounds(&[(key, value)], &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
