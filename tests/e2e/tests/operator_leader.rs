//! The operator's leader election against the cluster's coordination.k8s.io Leases: of two
//! contenders exactly one leads; a standby takes over when the leader dies without releasing
//! (after the lease duration) or releases on shutdown (at once); a leader that sees another
//! holder or cannot renew steps down.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use maos_e2e::cluster::TestCluster;
use maos_operator::leader::{LeaderElector, LeaseSettings};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NAMESPACE: &str = "e2e-leader";
const LEASE: &str = "maos-operator";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_EVERY: Duration = Duration::from_millis(500);
/// Room for API round trips and scheduling on a loaded machine, on top of protocol timings.
const SLACK: Duration = Duration::from_secs(5);
/// How long a test waits for something that has no protocol deadline.
const PATIENCE: Duration = Duration::from_secs(30);

/// Who leads, as the contenders' `leading` channels say, and the most that ever led at once.
#[derive(Default)]
struct Leaders {
    now: BTreeSet<String>,
    most_at_once: usize,
}

/// The contenders' view of the election, shared with one watcher task per contender.
#[derive(Clone, Default)]
struct Election(Arc<Mutex<Leaders>>);

impl Election {
    fn set(&self, identity: &str, leading: bool) {
        let mut leaders = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if leading {
            leaders.now.insert(identity.to_owned());
        } else {
            leaders.now.remove(identity);
        }
        leaders.most_at_once = leaders.most_at_once.max(leaders.now.len());
    }

    fn leaders(&self) -> BTreeSet<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).now.clone()
    }

    fn most_at_once(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .most_at_once
    }

    /// Waits until exactly one contender leads and returns it.
    async fn one_leader(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let leaders = self.leaders();
            if leaders.len() == 1 {
                return leaders.into_iter().next().expect("one leader");
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `identity` is the one leader.
    async fn leader_is(&self, identity: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let leaders = self.leaders();
            if leaders.len() == 1 && leaders.contains(identity) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{identity} did not lead within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One replica contending for the Lease.
struct Contender {
    identity: String,
    elector: LeaderElector,
    /// The elector's own `leading` channel, final once `run` has ended.
    leading: watch::Receiver<bool>,
    run: JoinHandle<()>,
}

impl Contender {
    /// Starts contending; its `leading` channel feeds `election`. A contender whose `run` task
    /// ends, returning or aborted like a killed process, counts as not leading.
    fn start(client: &kube::Client, settings: LeaseSettings, election: &Election) -> Self {
        Self::start_with(LeaderElector::new(client.clone(), settings), election)
    }

    /// Starts contending with `elector` (one with its own wall clock, say).
    fn start_with(elector: LeaderElector, election: &Election) -> Self {
        let identity = elector.settings().identity.clone();
        let (sender, leading) = watch::channel(false);
        let mut observed = leading.clone();
        let run = tokio::spawn(elector.clone().run(sender));
        let (election, who) = (election.clone(), identity.clone());
        tokio::spawn(async move {
            while observed.changed().await.is_ok() {
                let now = *observed.borrow_and_update();
                election.set(&who, now);
            }
            election.set(&who, false);
        });
        Self {
            identity,
            elector,
            leading,
            run,
        }
    }

    /// Stops the run task the way SIGKILL would stop the process: no release.
    async fn kill(self) -> LeaderElector {
        self.run.abort();
        let _ = self.run.await;
        self.elector
    }
}

fn settings(identity: &str, lease: &str, lease_duration: Duration) -> LeaseSettings {
    LeaseSettings {
        lease_duration,
        renew_every: RENEW_EVERY,
        ..LeaseSettings::new(lease, NAMESPACE, identity)
    }
}

async fn cluster_with_namespace() -> (TestCluster, kube::Client) {
    let cluster = TestCluster::start().expect("cluster starts");
    let client = cluster.client().await.expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace is created");
    (cluster, client)
}

async fn lease_spec(client: &kube::Client, name: &str) -> LeaseSpec {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases
        .get(name)
        .await
        .expect("lease exists")
        .spec
        .expect("lease has a spec")
}

/// Waits until `leader` has held the Lease for `span` by its own renewals, the standby having
/// tried and failed to take it meanwhile; fails if anyone else holds it or two ever led at once.
async fn held_for(client: &kube::Client, election: &Election, leader: &str, span: Duration) {
    let deadline = Instant::now() + span + PATIENCE;
    loop {
        let spec = lease_spec(client, LEASE).await;
        assert_eq!(spec.holder_identity.as_deref(), Some(leader));
        assert_eq!(election.most_at_once(), 1, "two contenders led at once");
        let acquired = spec.acquire_time.expect("acquireTime").0;
        let renewed = spec.renew_time.expect("renewTime").0;
        if renewed.duration_since(acquired).as_secs_f64() >= span.as_secs_f64() {
            return;
        }
        assert!(Instant::now() < deadline, "{leader} stopped renewing");
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

fn two_contenders(client: &kube::Client, lease_duration: Duration) -> (Election, [Contender; 2]) {
    let election = Election::default();
    let contenders = ["replica-a", "replica-b"]
        .map(|id| Contender::start(client, settings(id, LEASE, lease_duration), &election));
    (election, contenders)
}

/// Splits the contenders into the leader and the standby.
fn leader_and_standby(contenders: [Contender; 2], leader: &str) -> (Contender, Contender) {
    let [a, b] = contenders;
    if a.identity == leader { (a, b) } else { (b, a) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_contenders_leads_and_keeps_the_lease_past_its_duration() {
    let (_cluster, client) = cluster_with_namespace().await;
    let (election, contenders) = two_contenders(&client, LEASE_DURATION);

    let leader = election.one_leader(PATIENCE).await;
    // Had renewal failed, the standby would have taken over within this span.
    held_for(&client, &election, &leader, 2 * LEASE_DURATION).await;

    let spec = lease_spec(&client, LEASE).await;
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(election.leaders(), BTreeSet::from([leader]));
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");
    for contender in contenders {
        contender.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_within_the_lease_duration_when_the_leader_dies() {
    let (_cluster, client) = cluster_with_namespace().await;
    let (election, contenders) = two_contenders(&client, LEASE_DURATION);
    let leader = election.one_leader(PATIENCE).await;
    held_for(&client, &election, &leader, 4 * RENEW_EVERY).await;
    let (leader, standby) = leader_and_standby(contenders, &leader);

    leader.kill().await;
    election
        .leader_is(&standby.identity, LEASE_DURATION + RENEW_EVERY + SLACK)
        .await;

    let spec = lease_spec(&client, LEASE).await;
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(standby.identity.as_str())
    );
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");
    standby.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_at_once_when_the_leader_releases() {
    let (_cluster, client) = cluster_with_namespace().await;
    // A lease far longer than the wait below: only the release can explain a takeover.
    let long = Duration::from_secs(120);
    let (election, contenders) = two_contenders(&client, long);
    let leader = election.one_leader(PATIENCE).await;
    held_for(&client, &election, &leader, 4 * RENEW_EVERY).await;
    let (leader, standby) = leader_and_standby(contenders, &leader);

    let elector = leader.kill().await;
    elector.release().await;
    election
        .leader_is(&standby.identity, RENEW_EVERY + SLACK)
        .await;

    let spec = lease_spec(&client, LEASE).await;
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(standby.identity.as_str())
    );
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");
    standby.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_by_a_replica_that_does_not_hold_the_lease_changes_nothing() {
    let (_cluster, client) = cluster_with_namespace().await;
    let (election, contenders) = two_contenders(&client, Duration::from_secs(120));
    let leader = election.one_leader(PATIENCE).await;
    held_for(&client, &election, &leader, 4 * RENEW_EVERY).await;
    let (leader, standby) = leader_and_standby(contenders, &leader);

    standby.kill().await.release().await;

    let spec = lease_spec(&client, LEASE).await;
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(leader.identity.as_str())
    );
    leader.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_racing_for_a_missing_or_expired_lease_never_both_win() {
    let (_cluster, client) = cluster_with_namespace().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    for round in 0..20 {
        let name = format!("race-{round}");
        let stale = round % 2 == 1;
        if stale {
            // The Lease of a dead holder: both contenders see it stop changing, then decide
            // to take it over at the same moment.
            let long_ago = Timestamp::now() - Duration::from_secs(600);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("dead-replica".into()),
                    lease_duration_seconds: Some(1),
                    renew_time: Some(MicroTime(long_ago)),
                    acquire_time: Some(MicroTime(long_ago)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .expect("stale lease is created");
        }
        let electors = ["replica-a", "replica-b"]
            .map(|id| LeaderElector::new(client.clone(), settings(id, &name, LEASE_DURATION)));
        if stale {
            // However old its renewTime, a record first seen now is valid for its duration.
            let first_seen = Instant::now();
            for elector in &electors {
                assert!(
                    !elector.try_acquire_or_renew().await.expect("election step"),
                    "round {round}: a lease seen for the first time was taken at once"
                );
            }
            // The lease's own term, on the contenders' clocks: the protocol's wait, not a
            // guess at how long something else takes.
            tokio::time::sleep_until(first_seen + Duration::from_secs(1)).await;
        }
        let [a, b] = electors
            .map(|elector| tokio::spawn(async move { elector.try_acquire_or_renew().await }));
        let mut winners = 0;
        for step in [a, b] {
            if step.await.expect("step task").expect("election step") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}: {winners} contenders won");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_sees_another_holder_steps_down_and_stops() {
    let (_cluster, client) = cluster_with_namespace().await;
    let election = Election::default();
    let contender = Contender::start(
        &client,
        settings("replica-a", LEASE, LEASE_DURATION),
        &election,
    );
    election.leader_is("replica-a", PATIENCE).await;

    // Another replica took the Lease (say, after this one was paused past its term).
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut lease = leases.get(LEASE).await.expect("lease");
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some("replica-z".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .expect("lease is taken over");

    tokio::time::timeout(LEASE_DURATION + SLACK, contender.run)
        .await
        .expect("the run task returns")
        .expect("the run task ends without panicking");
    assert!(!*contender.leading.borrow(), "it still claims to lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_cannot_reach_the_api_server_steps_down_and_stops() {
    let (cluster, client) = cluster_with_namespace().await;
    if cluster.testbed().is_none() {
        eprintln!("skipped: a real cluster cannot be stopped by the test");
        return;
    }
    let election = Election::default();
    let contender = Contender::start(
        &client,
        settings("replica-a", LEASE, LEASE_DURATION),
        &election,
    );
    election.leader_is("replica-a", PATIENCE).await;

    // Stopping the testbed joins its server thread, so it must not block this runtime.
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("the testbed stops");

    tokio::time::timeout(LEASE_DURATION + SLACK, contender.run)
        .await
        .expect("the run task returns")
        .expect("the run task ends without panicking");
    assert!(!*contender.leading.borrow(), "it still claims to lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_whose_clocks_disagree_by_two_minutes_never_lead_together() {
    let (_cluster, client) = cluster_with_namespace().await;
    let election = Election::default();
    // One replica's clock a minute fast, the other's a minute slow: each sees the other's
    // renewTime two minutes off, forty lease durations.
    let skewed = |id: &str, seconds: i64| {
        let elector = LeaderElector::new(client.clone(), settings(id, LEASE, LEASE_DURATION))
            .with_wall_clock(move || {
                Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(seconds))
                    .expect("a skewed time")
            });
        Contender::start_with(elector, &election)
    };
    let contenders = [skewed("replica-a", 60), skewed("replica-b", -60)];
    let leader = election.one_leader(PATIENCE).await;
    held_for(&client, &election, &leader, 2 * LEASE_DURATION).await;
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");

    // And the standby still takes over from a dead leader within the lease duration.
    let (leader, standby) = leader_and_standby(contenders, &leader);
    leader.kill().await;
    election
        .leader_is(&standby.identity, LEASE_DURATION + RENEW_EVERY + SLACK)
        .await;
    assert_eq!(lease_spec(&client, LEASE).await.lease_transitions, Some(1));
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");
    standby.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_whose_renewals_come_back_too_late_steps_down_and_no_two_ever_lead() {
    let (cluster, client) = cluster_with_namespace().await;
    let Some(testbed) = cluster.testbed() else {
        eprintln!("skipped: a real API server cannot be slowed by the test");
        return;
    };
    let (election, contenders) = two_contenders(&client, LEASE_DURATION);
    let leader = election.one_leader(PATIENCE).await;
    held_for(&client, &election, &leader, 4 * RENEW_EVERY).await;
    let (leader, standby) = leader_and_standby(contenders, &leader);

    // Slower than a renewal may take but shorter than the lease: each renewal still lands, too
    // late for the leader to go on trusting it.
    testbed.faults().delay("leases", LEASE_DURATION);
    tokio::time::timeout(LEASE_DURATION + SLACK, leader.run)
        .await
        .expect("the leader steps down")
        .expect("the run task ends without panicking");
    assert!(!*leader.leading.borrow(), "it still claims to lead");

    // Once the API server answers in time again the standby takes over; at no point did both
    // lead, although both kept contending through the slow answers.
    testbed.faults().delay("leases", Duration::ZERO);
    election.leader_is(&standby.identity, PATIENCE).await;
    assert_eq!(election.most_at_once(), 1, "two contenders led at once");
    standby.kill().await;
}
