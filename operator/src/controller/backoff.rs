//! Per-object exponential backoff for failed reconciles: an object whose reconcile keeps
//! failing is retried less and less often (up to [`MAX_DELAY`]), so a broken Redis or API
//! server is not hammered by every object at a fixed rate; a success starts it over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The longest wait between two retries of one object.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The wait before retry `failures` (1 for the first failure) of an error whose first wait is
/// `base`: `base`, 2×, 4×, … up to [`MAX_DELAY`], with up to 10 % jitter so objects that failed
/// together do not retry together.
pub fn delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let capped = doubled.min(MAX_DELAY);
    capped
        .mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.1)
        .min(MAX_DELAY)
}

/// Consecutive failures per object (by uid).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts one more failure of `object` and returns how long to wait before its retry.
    pub fn failed(&self, object: &str, base: Duration) -> Duration {
        let failures = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(object.to_owned()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        delay(base, failures, fastrand::f64())
    }

    /// Forgets the failures of `object`: it reconciled.
    pub fn succeeded(&self, object: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_a_success_starts_over() {
        let base = Duration::from_secs(2);
        assert_eq!(delay(base, 1, 0.0), base);
        assert_eq!(delay(base, 2, 0.0), Duration::from_secs(4));
        assert_eq!(delay(base, 5, 0.0), Duration::from_secs(32));
        assert_eq!(delay(base, 40, 0.0), MAX_DELAY);
        assert!(delay(base, 1, 1.0) <= Duration::from_millis(2_200));

        let backoff = Backoff::default();
        let first = backoff.failed("a", base);
        let second = backoff.failed("a", base);
        assert!(second > first, "{first:?} then {second:?}");
        assert!(
            backoff.failed("b", base) < Duration::from_millis(2_300),
            "per object"
        );
        backoff.succeeded("a");
        assert!(
            backoff.failed("a", base) < Duration::from_millis(2_300),
            "reset"
        );
    }
}
