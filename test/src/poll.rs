//! The one way tests wait for something: [`wait_until`] polls a check until it yields a
//! value or a timeout passes, and the timeout error says what was awaited. A loop with its
//! own deadline in a test is a bug waiting to happen (off-by-one on the last check, a sleep
//! longer than the timeout, a message that does not say what never came).

use std::time::{Duration, Instant};

/// First pause between two checks; doubled after each miss up to [`MAX_INTERVAL`], so a
/// quick event is seen quickly and a slow one is not polled in a busy loop.
const FIRST_INTERVAL: Duration = Duration::from_millis(5);
const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// What [`wait_until`] returns when its check never yielded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: not within {timeout:?}")]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
}

/// Calls `check` until it returns `Some` (its value is returned) or `timeout` has passed
/// (`Err` naming `what`). `check` runs at least once, and once more at the deadline. A check
/// that can fail for good returns `Some(Err(..))` to stop the wait with its error.
pub fn wait_until<T>(
    timeout: Duration,
    what: impl Into<String>,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                what: what.into(),
                timeout,
            });
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_the_check_yields() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(5), "the third call", || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Ok(3));
    }

    #[test]
    fn times_out_naming_what_never_came_after_a_last_check() {
        let mut calls = 0;
        let got: Result<(), _> = wait_until(Duration::from_millis(30), "nothing", || {
            calls += 1;
            None
        });
        let err = got.unwrap_err();
        assert_eq!(err.to_string(), "nothing: not within 30ms");
        assert!(
            calls >= 2,
            "checked once more at the deadline ({calls} calls)"
        );
    }
}
