//! The pods a pool's controller created or deleted that its pod cache does not show yet, kept
//! as the ReplicaSet controller keeps its expectations: a pod created but not yet seen counts
//! as there and one deleted but still shown counts as gone, so a watch that lags behind the
//! controller's own writes never makes it create a pod twice or count a deleted one as running.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a write may stay unseen before the controller stops waiting for it (the watch
/// relisted past it, say) and trusts its cache again.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One pool's outstanding pod writes.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    /// Pods created, by name, not yet in the cache.
    created: HashMap<String, Instant>,
    /// Pods deleted, by name, still in the cache without a deletion timestamp.
    deleted: HashMap<String, Instant>,
}

/// A pod as the cache shows it: its name and whether it is being deleted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cached<'a> {
    /// The pod's name.
    pub name: &'a str,
    /// Whether it has a deletion timestamp.
    pub deleting: bool,
}

impl Expectations {
    /// Notes that the pod `name` was created at `now`.
    pub fn created(&mut self, name: &str, now: Instant) {
        self.created.insert(name.to_owned(), now);
    }

    /// Notes that the pod `name` was deleted at `now`.
    pub fn deleted(&mut self, name: &str, now: Instant) {
        self.created.remove(name);
        self.deleted.insert(name.to_owned(), now);
    }

    /// Forgets every write the cache now shows and every one older than the timeout.
    pub fn observe<'a>(&mut self, cache: impl IntoIterator<Item = Cached<'a>>, now: Instant) {
        let cache: HashMap<&str, bool> = cache.into_iter().map(|p| (p.name, p.deleting)).collect();
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < EXPECTATION_TIMEOUT;
        self.created
            .retain(|name, at| !cache.contains_key(name.as_str()) && fresh(at));
        self.deleted
            .retain(|name, at| cache.get(name.as_str()) == Some(&false) && fresh(at));
    }

    /// Whether the cache shows every write still worth waiting for.
    #[cfg(test)]
    fn satisfied(&self) -> bool {
        self.created.is_empty() && self.deleted.is_empty()
    }

    /// Pods created that the cache does not show yet.
    pub fn pending_creates(&self) -> impl Iterator<Item = &str> {
        self.created.keys().map(String::as_str)
    }

    /// Whether `name` was deleted although the cache still shows it running.
    pub fn is_deleted(&self, name: &str) -> bool {
        self.deleted.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Cached<'_> {
        Cached {
            name,
            deleting: false,
        }
    }

    #[test]
    fn a_created_pod_is_expected_until_the_cache_shows_it() {
        let start = Instant::now();
        let mut expect = Expectations::default();
        expect.created("a", start);
        expect.observe([pod("b")], start);
        assert!(!expect.satisfied());
        assert_eq!(expect.pending_creates().collect::<Vec<_>>(), ["a"]);
        expect.observe([pod("a"), pod("b")], start + Duration::from_secs(1));
        assert!(expect.satisfied());
        assert_eq!(expect.pending_creates().count(), 0);
    }

    #[test]
    fn a_deleted_pod_is_expected_until_the_cache_shows_it_going_or_gone() {
        let start = Instant::now();
        let mut expect = Expectations::default();
        expect.deleted("a", start);
        expect.deleted("b", start);
        expect.observe([pod("a"), pod("b")], start);
        assert!(expect.is_deleted("a") && !expect.satisfied());
        // `a` shows its deletion timestamp, `b` is gone from the cache.
        expect.observe(
            [Cached {
                name: "a",
                deleting: true,
            }],
            start,
        );
        assert!(!expect.is_deleted("a") && !expect.is_deleted("b"));
        assert!(expect.satisfied());
    }

    #[test]
    fn a_write_the_cache_never_shows_is_given_up_after_the_timeout() {
        let start = Instant::now();
        let mut expect = Expectations::default();
        expect.created("a", start);
        expect.deleted("b", start);
        expect.observe(
            [pod("b")],
            start + EXPECTATION_TIMEOUT - Duration::from_secs(1),
        );
        assert!(!expect.satisfied());
        expect.observe([pod("b")], start + EXPECTATION_TIMEOUT);
        assert!(expect.satisfied());
    }

    #[test]
    fn deleting_a_pod_not_yet_seen_forgets_its_creation() {
        let start = Instant::now();
        let mut expect = Expectations::default();
        expect.created("a", start);
        expect.deleted("a", start);
        assert_eq!(expect.pending_creates().count(), 0);
        expect.observe([], start);
        assert!(expect.satisfied());
    }
}
