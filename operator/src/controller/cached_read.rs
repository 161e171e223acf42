//! A value the pool controller read from the API (a Secret's), kept between reconciles: the
//! controller runs every heartbeat, and re-reading Secrets that change once in months on each
//! beat was three API requests a second per pool.

use std::time::{Duration, Instant};

/// How long a cached read is trusted: a rotated API key reaches the agents within this, or at
/// once when the pool's spec changes.
pub(crate) const SECRET_RESYNC: Duration = Duration::from_secs(300);

/// A value, when it was read, and the generation of the pool it was read for.
#[derive(Debug)]
pub(crate) struct CachedRead<T> {
    value: T,
    at: Instant,
    generation: Option<i64>,
}

impl<T> CachedRead<T> {
    /// `value`, read at `at` while the pool had `generation`.
    pub fn new(value: T, at: Instant, generation: Option<i64>) -> Self {
        Self {
            value,
            at,
            generation,
        }
    }

    /// The value while it is younger than [`SECRET_RESYNC`] and the pool's spec is the one it
    /// was read for; `None` when it must be read again.
    pub fn fresh(&self, now: Instant, generation: Option<i64>) -> Option<&T> {
        (now.saturating_duration_since(self.at) < SECRET_RESYNC && generation == self.generation)
            .then_some(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_fresh_until_the_resync_period_or_a_new_generation() {
        let start = Instant::now();
        let read = CachedRead::new("hash", start, Some(3));
        assert_eq!(read.fresh(start, Some(3)), Some(&"hash"));
        assert_eq!(
            read.fresh(start + SECRET_RESYNC - Duration::from_secs(1), Some(3)),
            Some(&"hash")
        );
        assert_eq!(read.fresh(start + SECRET_RESYNC, Some(3)), None);
        assert_eq!(read.fresh(start, Some(4)), None, "the spec changed");
        assert_eq!(read.fresh(start, None), None);
    }
}
