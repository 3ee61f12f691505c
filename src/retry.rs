//! How long to wait before trying again: the one backoff formula for every retry Lifeboat
//! makes (registry requests in `registry::client`, status pushes in `git::publish`). Pure: the
//! callers sleep.

use std::time::Duration;

/// The longest single wait, whatever the attempt number or a server asked for.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The wait before retry number `attempt` (1-based): `base`, doubled for each retry before it,
/// plus 0–50 % more at random so that clients which failed together do not retry together;
/// never shorter than `at_least` (a `Retry-After` the server sent), never longer than
/// [`MAX_DELAY`].
pub fn backoff(base: Duration, attempt: u32, at_least: Option<Duration>) -> Duration {
    let doubled = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let half = u64::try_from(doubled.as_nanos() / 2).unwrap_or(u64::MAX);
    let jittered = doubled.saturating_add(Duration::from_nanos(fastrand::u64(0..=half)));
    jittered.max(at_least.unwrap_or_default()).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_up_to_half_again_of_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..=6 {
            let doubled = base * 2u32.pow(attempt - 1);
            for _ in 0..50 {
                let d = backoff(base, attempt, None);
                assert!(d >= doubled && d <= doubled.mul_f64(1.5), "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn honours_retry_after_within_the_cap() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(backoff(base, 1, Some(Duration::from_secs(86_400))), MAX_DELAY);
    }

    #[test]
    fn never_overflows() {
        assert_eq!(backoff(Duration::from_secs(1), u32::MAX, None), MAX_DELAY);
        assert_eq!(backoff(Duration::MAX, 2, None), MAX_DELAY);
        assert_eq!(backoff(Duration::ZERO, 0, None), Duration::ZERO);
    }
}
