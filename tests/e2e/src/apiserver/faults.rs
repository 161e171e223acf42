//! Faults a test injects into the API server while it runs: answers to some resources that
//! come late, as a kube-apiserver under load or behind a slow etcd gives them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The faults in force; every request consults them after it is authorized.
#[derive(Debug, Default)]
pub struct Faults {
    /// Resource (plural, e.g. `leases`) → how long each request for it waits before it is
    /// served.
    delays: Mutex<HashMap<String, Duration>>,
}

impl Faults {
    /// Makes every request for `resource` wait `by` before it is served; `Duration::ZERO`
    /// ends the fault. Requests already waiting keep their delay.
    pub fn delay(&self, resource: &str, by: Duration) {
        let mut delays = self.delays.lock().unwrap_or_else(|p| p.into_inner());
        if by.is_zero() {
            delays.remove(resource);
        } else {
            delays.insert(resource.to_owned(), by);
        }
    }

    /// How long a request for `resource` waits, if it does.
    pub(crate) fn delay_for(&self, resource: &str) -> Option<Duration> {
        if resource.is_empty() {
            return None;
        }
        self.delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(resource)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_applies_to_its_resource_until_it_is_ended() {
        let faults = Faults::default();
        assert_eq!(faults.delay_for("leases"), None);
        faults.delay("leases", Duration::from_secs(2));
        assert_eq!(faults.delay_for("leases"), Some(Duration::from_secs(2)));
        assert_eq!(faults.delay_for("pods"), None);
        assert_eq!(faults.delay_for(""), None);
        faults.delay("leases", Duration::ZERO);
        assert_eq!(faults.delay_for("leases"), None);
    }
}
