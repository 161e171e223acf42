//! Leader election over a coordination.k8s.io/v1 Lease, as client-go and controller-runtime do
//! it: one replica holds the Lease and renews it; a standby takes it once its holder has not
//! renewed for the lease duration, or at once when the holder releases it on shutdown.
//!
//! Expiry is judged on the observer's own monotonic clock, from when it last saw the Lease's
//! record change, never by comparing the holder's `renewTime` with the observer's wall clock:
//! replicas whose clocks disagree by more than a lease duration still never lead together.
//! The holder steps down when it could not renew within its renew deadline, a renewal period
//! before any standby may take the Lease (fencing).
//!
//! The decision is the pure [`decide`]; [`LeaderElector`] reads the Lease, applies the decision
//! and writes with the Lease's resourceVersion, so of two contenders at most one write wins.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a Lease stays valid without renewal unless configured (client-go's default).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// How often the holder renews and a standby retries unless configured.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(2);

/// Which Lease to contend for, under which identity, and how fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (unique per replica, e.g. the pod name).
    pub identity: String,
    /// How long the Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and a standby retries.
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// Settings with the default lease duration (15 s) and renewal period (2 s).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_every: DEFAULT_RENEW_EVERY,
        }
    }

    /// How long the leader keeps leading without a successful renewal: short of the lease
    /// duration by one renewal period, so it steps down before a standby may take over.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration - self.renew_every.min(self.lease_duration / 2)
    }
}

/// What to do with the Lease, as [`decide`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create one held by us.
    Create,
    /// We hold the Lease: renew it.
    Renew,
    /// The Lease is released or its holder let it expire: take it over.
    Acquire,
    /// Another replica holds a valid Lease.
    Wait {
        /// The current holder's identity.
        holder: String,
        /// When, on our clock, the Lease expires unless its record changes meanwhile.
        retry_at: Instant,
    },
}

/// What a contender last saw of the Lease's record, and since when on its own clock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    record: Option<LeaseSpec>,
    since: Option<Instant>,
}

impl Observed {
    /// Notes the record `lease` holds as seen at `now` and returns since when this record has
    /// been seen unchanged: the clock restarts only when the record changes (a renewal, a new
    /// holder), so a holder that stopped renewing is judged by how long it has been silent.
    pub fn see(&mut self, lease: Option<&Lease>, now: Instant) -> Instant {
        let record = lease.and_then(|l| l.spec.as_ref());
        match self.since {
            Some(since) if self.record.as_ref() == record => since,
            _ => {
                self.record = record.cloned();
                self.since = Some(now);
                now
            }
        }
    }
}

/// Decides what `identity` should do with `lease` at `now`, having seen its current record
/// unchanged since `seen_since` (both on this replica's monotonic clock); `lease_duration`
/// applies only when the Lease does not state its own.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    seen_since: Instant,
    now: Instant,
    lease_duration: Duration,
) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    if holder.is_empty() {
        return LeaseAction::Acquire;
    }
    if holder == identity {
        return LeaseAction::Renew;
    }
    // The holder's own duration is the promise it made; ours may differ during a rollout.
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(lease_duration, Duration::from_secs);
    // The holder renewed no later than we first saw this record, so it promised to lead until
    // at most `duration` after that: whatever its clock said when it wrote `renewTime`.
    let retry_at = seen_since
        .checked_add(duration)
        .unwrap_or(now + Duration::from_secs(86_400));
    if now >= retry_at {
        LeaseAction::Acquire
    } else {
        LeaseAction::Wait {
            holder: holder.to_owned(),
            retry_at,
        }
    }
}

/// `leaseDurationSeconds` for a duration: whole seconds, rounded up, at least one.
fn whole_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

/// A new Lease held by `identity` since `now`.
fn created(settings: &LeaseSettings, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(whole_seconds(settings.lease_duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// `lease` renewed by its holder at `now`.
fn renewed(mut lease: Lease, settings: &LeaseSettings, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(whole_seconds(settings.lease_duration));
    spec.renew_time = Some(MicroTime(now));
    if spec.acquire_time.is_none() {
        spec.acquire_time = Some(MicroTime(now));
    }
    lease
}

/// `lease` taken over by `settings.identity` at `now`: one more transition.
fn acquired(mut lease: Lease, settings: &LeaseSettings, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(whole_seconds(settings.lease_duration));
    spec.acquire_time = Some(MicroTime(now));
    spec.renew_time = Some(MicroTime(now));
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    lease
}

/// `lease` given up by its holder at `now`, so any standby may take it at once.
fn released(mut lease: Lease, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Why a step of the election could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read.
    #[error("cannot read Lease {namespace}/{name}: {source}")]
    LeaseUnreadable {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// The Lease could not be created or updated.
    #[error("cannot write Lease {namespace}/{name}: {source}")]
    LeaseNotWritten {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// The outcome of one election step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// We hold the Lease, freshly written.
    Leading,
    /// Another replica holds a valid Lease.
    Waiting { holder: String },
    /// Someone wrote the Lease between our read and our write.
    LostRace,
}

/// Whether an API error is a 409: an AlreadyExists on create or a stale resourceVersion.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// A replica's wall clock: what it writes into `renewTime` and `acquireTime`.
type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Contends for one Lease on behalf of this replica.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease's record as this replica last saw it; shared by clones of one elector.
    observed: Arc<Mutex<Observed>>,
    wall_clock: WallClock,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for the Lease `settings` names.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Arc::default(),
            wall_clock: Arc::new(Timestamp::now),
        }
    }

    /// The same elector with another wall clock for the times it writes into the Lease (tests
    /// give replicas skewed clocks with it: the election never compares wall clocks).
    #[must_use]
    pub fn with_wall_clock(
        mut self,
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        self.wall_clock = Arc::new(clock);
        self
    }

    /// Notes `lease` as seen now; since when its record has been seen unchanged.
    fn observe(&self, lease: Option<&Lease>, now: Instant) -> Instant {
        self.observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .see(lease, now)
    }

    /// The settings this elector contends with.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One election step: true when we hold the Lease afterwards, false when another replica
    /// does or won a race for it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        Ok(self.step().await? == Step::Leading)
    }

    async fn step(&self) -> Result<Step, LeaderError> {
        let lease = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|source| self.unreadable(source))?;
        let seen = Instant::now();
        let seen_since = self.observe(lease.as_ref(), seen);
        let action = decide(
            lease.as_ref(),
            &self.settings.identity,
            seen_since,
            seen,
            self.settings.lease_duration,
        );
        let now = (self.wall_clock)();
        // Replacing with the resourceVersion we read makes the write conditional: if anyone
        // wrote the Lease since, the API server answers 409 and this step is lost.
        let written = match (action, lease) {
            (LeaseAction::Wait { holder, .. }, _) => return Ok(Step::Waiting { holder }),
            (LeaseAction::Renew, Some(lease)) => {
                self.api
                    .replace(
                        &self.settings.name,
                        &PostParams::default(),
                        &renewed(lease, &self.settings, now),
                    )
                    .await
            }
            (LeaseAction::Acquire, Some(lease)) => {
                self.api
                    .replace(
                        &self.settings.name,
                        &PostParams::default(),
                        &acquired(lease, &self.settings, now),
                    )
                    .await
            }
            (LeaseAction::Create | LeaseAction::Renew | LeaseAction::Acquire, None) => {
                self.api
                    .create(&PostParams::default(), &created(&self.settings, now))
                    .await
            }
            (LeaseAction::Create, Some(_)) => return Ok(Step::LostRace),
        };
        match written {
            Ok(lease) => {
                // Our own write is the record a later read must compare with.
                self.observe(Some(&lease), Instant::now());
                Ok(Step::Leading)
            }
            Err(error) if is_conflict(&error) => Ok(Step::LostRace),
            Err(source) => Err(self.not_written(source)),
        }
    }

    /// Contends every `renew_every`, setting `leading` to true once the Lease is ours; returns
    /// after setting it to false when another holder is seen or renewals fail until the Lease
    /// could be taken (the process should then exit, as controller-runtime's managers do).
    pub async fn run(self, leading: watch::Sender<bool>) {
        let mut ticks = tokio::time::interval(self.settings.renew_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When we last wrote the Lease as holder, while leading.
        let mut renewed_at: Option<Instant> = None;
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let deadline = match renewed_at {
                Some(at) => at + self.settings.renew_deadline(),
                None => started + self.settings.lease_duration,
            };
            let outcome = tokio::time::timeout_at(deadline, self.step()).await;
            match (renewed_at, outcome) {
                (_, Ok(Ok(Step::Leading))) => {
                    if renewed_at.is_none() {
                        tracing::info!(
                            lease = %self.settings.name,
                            namespace = %self.settings.namespace,
                            identity = %self.settings.identity,
                            "acquired the leader Lease"
                        );
                        leading.send_replace(true);
                    }
                    renewed_at = Some(started);
                }
                (None, Ok(Ok(Step::Waiting { holder }))) => {
                    tracing::debug!(lease = %self.settings.name, %holder, "another replica leads");
                }
                (None, Ok(Ok(Step::LostRace))) => {
                    tracing::debug!(lease = %self.settings.name, "lost a race for the Lease");
                }
                (None, Ok(Err(error))) => {
                    tracing::warn!(%error, "leader election step failed");
                }
                (None, Err(_)) => {
                    tracing::warn!(lease = %self.settings.name, "leader election step timed out");
                }
                (Some(_), Ok(Ok(Step::Waiting { holder }))) => {
                    tracing::warn!(
                        lease = %self.settings.name,
                        identity = %self.settings.identity,
                        %holder,
                        "lost the leader Lease to another holder"
                    );
                    leading.send_replace(false);
                    return;
                }
                (Some(_), failed) => {
                    match failed {
                        Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader Lease"),
                        _ => tracing::warn!(lease = %self.settings.name, "renewal not written"),
                    }
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            lease = %self.settings.name,
                            identity = %self.settings.identity,
                            "could not renew the leader Lease in time; stepping down"
                        );
                        leading.send_replace(false);
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up if we hold it, so a standby takes over at once; call it on graceful
    /// shutdown after the [`LeaderElector::run`] task has stopped.
    pub async fn release(&self) {
        let lease = match self.api.get_opt(&self.settings.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(source) => {
                tracing::warn!(error = %self.unreadable(source), "cannot release the leader Lease");
                return;
            }
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.settings.identity.as_str()) {
            return;
        }
        let now = (self.wall_clock)();
        match self
            .api
            .replace(
                &self.settings.name,
                &PostParams::default(),
                &released(lease, now),
            )
            .await
        {
            Ok(_) => tracing::info!(
                lease = %self.settings.name,
                identity = %self.settings.identity,
                "released the leader Lease"
            ),
            Err(source) => {
                tracing::warn!(error = %self.not_written(source), "cannot release the leader Lease");
            }
        }
    }

    fn unreadable(&self, source: kube::Error) -> LeaderError {
        LeaderError::LeaseUnreadable {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    fn not_written(&self, source: kube::Error) -> LeaderError {
        LeaderError::LeaseNotWritten {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Duration = Duration::from_secs(15);

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid timestamp")
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("maos-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                acquire_time: renewed.map(|s| MicroTime(at(s - 100))),
                lease_duration_seconds: duration,
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings::new("maos-operator", "maos-system", "me")
    }

    /// Instants `n` seconds after one fixed start, as a replica's monotonic clock reads them.
    fn clock() -> impl Fn(u64) -> Instant {
        let start = Instant::now();
        move |n| start + Duration::from_secs(n)
    }

    #[test]
    fn missing_lease_is_created() {
        let t = clock();
        assert_eq!(decide(None, "me", t(0), t(0), OURS), LeaseAction::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        let t = clock();
        let own = lease(Some("me"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&own), "me", t(0), t(1), OURS),
            LeaseAction::Renew
        );
    }

    #[test]
    fn own_expired_lease_is_renewed_not_reacquired() {
        let t = clock();
        let own = lease(Some("me"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&own), "me", t(0), t(60), OURS),
            LeaseAction::Renew
        );
    }

    #[test]
    fn others_lease_is_waited_for_until_a_duration_after_its_record_was_first_seen() {
        let t = clock();
        let theirs = lease(Some("other"), Some(0), Some(15));
        assert_eq!(
            decide(Some(&theirs), "me", t(3), t(17), OURS),
            LeaseAction::Wait {
                holder: "other".into(),
                retry_at: t(18),
            }
        );
        assert_eq!(
            decide(Some(&theirs), "me", t(3), t(18), OURS),
            LeaseAction::Acquire
        );
        assert_eq!(
            decide(Some(&theirs), "me", t(3), t(300), OURS),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn the_holders_renew_time_does_not_matter_whatever_its_clock_says() {
        let t = clock();
        // A renewTime an hour in the past (its clock is slow, or ours fast), in the future,
        // or none at all: a record first seen now is valid for the lease duration from now.
        for renewed in [Some(-3600), Some(3600), None] {
            let theirs = lease(Some("other"), renewed, Some(15));
            assert_eq!(
                decide(Some(&theirs), "me", t(0), t(14), OURS),
                LeaseAction::Wait {
                    holder: "other".into(),
                    retry_at: t(15),
                },
                "renewTime {renewed:?}"
            );
        }
    }

    #[test]
    fn a_record_is_seen_since_it_last_changed() {
        let t = clock();
        let mut observed = Observed::default();
        let first = lease(Some("other"), Some(0), Some(15));
        assert_eq!(observed.see(Some(&first), t(1)), t(1));
        assert_eq!(observed.see(Some(&first), t(9)), t(1), "unchanged");
        // Only the resourceVersion moved: the record is the same.
        let mut same = first.clone();
        same.metadata.resource_version = Some("8".into());
        assert_eq!(observed.see(Some(&same), t(10)), t(1));
        let renewed = lease(Some("other"), Some(2), Some(15));
        assert_eq!(observed.see(Some(&renewed), t(11)), t(11), "a renewal");
        assert_eq!(observed.see(None, t(12)), t(12), "deleted");
        assert_eq!(observed.see(None, t(13)), t(12));
    }

    #[test]
    fn released_lease_is_acquired_at_once() {
        let t = clock();
        for holder in [None, Some("")] {
            let free = lease(holder, Some(0), Some(15));
            assert_eq!(
                decide(Some(&free), "me", t(1), t(1), OURS),
                LeaseAction::Acquire,
                "holder {holder:?}"
            );
        }
    }

    #[test]
    fn lease_without_spec_is_acquired() {
        let t = clock();
        let bare = Lease {
            metadata: ObjectMeta::default(),
            spec: None,
        };
        assert_eq!(
            decide(Some(&bare), "me", t(0), t(0), OURS),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn lease_duration_stated_in_the_lease_wins_over_ours() {
        let t = clock();
        let theirs = lease(Some("other"), Some(0), Some(60));
        assert_eq!(
            decide(Some(&theirs), "me", t(0), t(30), OURS),
            LeaseAction::Wait {
                holder: "other".into(),
                retry_at: t(60),
            }
        );
        let short = lease(Some("other"), Some(0), Some(5));
        assert_eq!(
            decide(Some(&short), "me", t(0), t(5), OURS),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn our_lease_duration_applies_when_the_lease_states_none_or_nonsense() {
        let t = clock();
        for duration in [None, Some(0), Some(-4)] {
            let theirs = lease(Some("other"), Some(0), duration);
            assert_eq!(
                decide(Some(&theirs), "me", t(0), t(10), OURS),
                LeaseAction::Wait {
                    holder: "other".into(),
                    retry_at: t(15),
                },
                "leaseDurationSeconds {duration:?}"
            );
        }
    }

    #[test]
    fn created_lease_is_held_by_us_from_now_with_no_transitions() {
        let spec = created(&settings(), at(0)).spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn renewal_moves_only_renew_time_and_keeps_the_resource_version() {
        let own = lease(Some("me"), Some(0), Some(15));
        let next = renewed(own.clone(), &settings(), at(2));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
        let (before, after) = (own.spec.expect("spec"), next.spec.expect("spec"));
        assert_eq!(after.renew_time, Some(MicroTime(at(2))));
        assert_eq!(after.acquire_time, before.acquire_time);
        assert_eq!(after.lease_transitions, before.lease_transitions);
        assert_eq!(after.holder_identity.as_deref(), Some("me"));
    }

    #[test]
    fn takeover_counts_a_transition_and_restarts_the_term() {
        let theirs = lease(Some("other"), Some(0), Some(15));
        let next = acquired(theirs, &settings(), at(20));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
        let spec = next.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(20))));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn released_lease_has_no_holder_and_keeps_its_transitions() {
        let t = clock();
        let own = lease(Some("me"), Some(0), Some(15));
        let spec = released(own, at(5)).spec.expect("spec");
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(
            decide(
                Some(&Lease {
                    metadata: ObjectMeta::default(),
                    spec: Some(spec)
                }),
                "other",
                t(0),
                t(0),
                OURS
            ),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn lease_duration_seconds_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(15)), 15);
        assert_eq!(whole_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn leader_steps_down_a_renewal_period_before_the_lease_can_be_taken() {
        let mut s = settings();
        assert_eq!(s.renew_deadline(), Duration::from_secs(13));
        s.lease_duration = Duration::from_secs(3);
        s.renew_every = Duration::from_secs(5);
        assert_eq!(s.renew_deadline(), Duration::from_millis(1500));
    }
}
