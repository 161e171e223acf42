//! Every Redis key, key pattern, stream group and stream field name of the coordination protocol
//! (DESIGN.md §4), in one place, so the operator and the agents can never disagree.
//!
//! A pool's keys are `maos:{pool:<pool-uid>}:…`; a task's keys are
//! `maos:pool:<pool-uid>:{task:<task-uid>}:…`. The hash tags put all of one task's keys in one
//! Redis Cluster slot (so one Lua script can touch several of them) and all of one pool's keys
//! in another; the `maos:pool:<pool-uid>:` prefix lets one ACL pattern cover a pool's tasks.

use std::fmt;

use super::error::CoordError;
use crate::dag::SubtaskName;

/// Consumer group of the work stream: every agent of the pool consumes from it.
pub const GROUP_AGENTS: &str = "agents";
/// Consumer group of a task's event stream that the operator folds into status.
pub const GROUP_OPERATOR: &str = "operator";
/// Consumer group of a task's event stream that feeds the audit log.
pub const GROUP_AUDIT: &str = "audit";
/// Every consumer group a task's event stream has.
pub const EVENT_GROUPS: [&str; 2] = [GROUP_OPERATOR, GROUP_AUDIT];

/// Field names of stream entries and hashes.
pub mod field {
    /// Work item / event / journal: the task uid.
    pub const TASK: &str = "task";
    /// Work item / journal: the subtask name.
    pub const SUBTASK: &str = "subtask";
    /// Work item / journal: the attempt number (1 for the first delivery).
    pub const ATTEMPT: &str = "attempt";
    /// Work item: plan, work or synthesize.
    pub const KIND: &str = "kind";
    /// Work item: deadline, milliseconds since the Unix epoch.
    pub const DEADLINE: &str = "deadline";
    /// Event stream entry: the event as JSON.
    pub const EVENT: &str = "event";
    /// Bus message: the sending agent.
    pub const FROM: &str = "from";
    /// Bus message: the receiving agent, empty for a broadcast.
    pub const TO: &str = "to";
    /// Bus message / journal entry: the payload.
    pub const BODY: &str = "body";
    /// Journal entry: model response or tool result.
    pub const ENTRY_KIND: &str = "kind";
    /// Journal entry: the tool-use id a tool result answers.
    pub const TOOL_USE_ID: &str = "tool_use_id";
    /// Budget hash: the token limit (absent: unlimited). The budget functions spell every
    /// budget field out themselves (a caller cannot name another), a test keeps them equal.
    pub const BUDGET_LIMIT: &str = "limit";
    /// Spend hash: tokens reserved by calls in flight.
    pub const BUDGET_RESERVED: &str = "reserved";
    /// Spend hash: tokens spent by finished calls.
    pub const BUDGET_SPENT: &str = "spent";
    /// Budget hash: the cost limit in micro-dollars (absent: unlimited).
    pub const BUDGET_COST_LIMIT: &str = "costLimitMicroUSD";
    /// Spend hash: micro-dollars reserved by calls in flight.
    pub const BUDGET_COST_RESERVED: &str = "costReservedMicroUSD";
    /// Spend hash: micro-dollars spent by finished calls.
    pub const BUDGET_COST_SPENT: &str = "costSpentMicroUSD";
    /// Spend hash: prefix of one in-flight reservation's field (value: `<tokens>:<micro-USD>`).
    pub const BUDGET_RESERVATION_PREFIX: &str = "reservation:";
    /// Meta hash: the pool uid.
    pub const META_POOL: &str = "pool";
    /// Meta hash: the task uid.
    pub const META_TASK: &str = "task";
}

/// Longest uid accepted; Kubernetes uids are 36-character UUIDs.
const MAX_UID_LEN: usize = 64;
/// Longest agent name accepted: a pod name is a DNS-1123 subdomain.
const MAX_AGENT_LEN: usize = 253;

fn check_uid(what: &'static str, uid: &str) -> Result<(), CoordError> {
    let ok = !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        // Only letters, digits and '-': no ':' '{' '}' or glob characters, which would break
        // the key layout, the hash tag or the ACL patterns.
        Err(CoordError::InvalidName {
            what,
            reason: format!("must be 1 to {MAX_UID_LEN} ASCII letters, digits or '-'"),
        })
    }
}

/// The uid of an AgentPool; only letters, digits and `-`, so it is safe inside keys and ACL
/// patterns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolUid(String);

impl PoolUid {
    /// Checks that `uid` is safe to put in a key.
    pub fn new(uid: &str) -> Result<Self, CoordError> {
        check_uid("pool uid", uid)?;
        Ok(Self(uid.to_owned()))
    }

    /// The uid as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The uid of a Task; only letters, digits and `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskUid(String);

impl TaskUid {
    /// Checks that `uid` is safe to put in a key.
    pub fn new(uid: &str) -> Result<Self, CoordError> {
        check_uid("task uid", uid)?;
        Ok(Self(uid.to_owned()))
    }

    /// The uid as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent's name (its pod name): the consumer name in stream groups and the heartbeat member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    /// Checks that `name` is a DNS-1123 subdomain-like name (lowercase letters, digits, `-`, `.`).
    pub fn new(name: &str) -> Result<Self, CoordError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_AGENT_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(CoordError::InvalidName {
                what: "agent name",
                reason: format!(
                    "must be 1 to {MAX_AGENT_LEN} lowercase letters, digits, '-' or '.'"
                ),
            })
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys of one AgentPool: `maos:{pool:<uid>}:…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKeys {
    pool: PoolUid,
    prefix: String,
}

impl PoolKeys {
    /// The keys of pool `pool`.
    pub fn new(pool: &PoolUid) -> Self {
        Self {
            pool: pool.clone(),
            prefix: format!("maos:{{pool:{pool}}}"),
        }
    }

    /// The pool's uid.
    pub fn pool(&self) -> &PoolUid {
        &self.pool
    }

    /// The work stream (consumer group [`GROUP_AGENTS`]).
    pub fn work(&self) -> String {
        format!("{}:work", self.prefix)
    }

    /// The heartbeat sorted set: agent → last heartbeat (ms, Redis server clock).
    pub fn heartbeats(&self) -> String {
        format!("{}:hb", self.prefix)
    }

    /// The rate-limit buckets hash.
    pub fn rate_limit(&self) -> String {
        format!("{}:ratelimit", self.prefix)
    }

    /// Work items ever enqueued (hash: `<task-uid>/<subtask>/<attempt>` → 1), so dispatch
    /// enqueues each attempt at most once, even across operator restarts.
    pub fn dispatched(&self) -> String {
        format!("{}:dispatched", self.prefix)
    }

    /// Agents' reports of the API refusing the pool's key or model (hash: agent → report).
    pub fn model_errors(&self) -> String {
        format!("{}:modelerrors", self.prefix)
    }

    /// Agents' reports of the pool's MCP servers they cannot use (hash: agent → report).
    pub fn tool_errors(&self) -> String {
        format!("{}:toolerrors", self.prefix)
    }

    /// The keys of task `task` of this pool.
    pub fn task(&self, task: &TaskUid) -> TaskKeys {
        TaskKeys::new(&self.pool, task)
    }

    /// The ACL user name of this pool's agents.
    pub fn acl_user(&self) -> String {
        format!("maos-pool-{}", self.pool)
    }

    /// The ACL key patterns that allow exactly this pool's keys and its tasks' keys.
    pub fn acl_key_patterns(&self) -> [String; 2] {
        // Uids contain no glob characters (checked by PoolUid), so the patterns match literally
        // up to the trailing '*'; the ':' after the uid stops a uid that is a prefix of another.
        [
            format!("{}:*", self.prefix),
            format!("maos:pool:{}:*", self.pool),
        ]
    }

    /// The ACL key patterns of the keys an agent writes (through the library functions): every
    /// key of the pool and its tasks except the operator's own (the task's identity and plan,
    /// its budget limits, its cancel flag, the dispatch markers) and the work stream, which
    /// has a selector of its own ([`super::acl`]).
    pub fn acl_agent_write_patterns(&self) -> [String; 13] {
        let task = |suffix: &str| format!("maos:pool:{}:*:{suffix}", self.pool);
        [
            self.heartbeats(),
            self.rate_limit(),
            self.model_errors(),
            self.tool_errors(),
            task("kv"),
            task("kv:ver"),
            task("events"),
            task("bus"),
            task("results"),
            task("journal:*"),
            task("journals"),
            task("applied"),
            task("spend"),
        ]
    }
}

/// The keys of one Task: `maos:pool:<pool-uid>:{task:<task-uid>}:…`, all in one cluster slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKeys {
    pool: PoolUid,
    task: TaskUid,
    prefix: String,
}

impl TaskKeys {
    /// The keys of task `task` in pool `pool`.
    pub fn new(pool: &PoolUid, task: &TaskUid) -> Self {
        Self {
            pool: pool.clone(),
            task: task.clone(),
            prefix: format!("maos:pool:{pool}:{{task:{task}}}"),
        }
    }

    /// The uid of the task's pool.
    pub fn pool(&self) -> &PoolUid {
        &self.pool
    }

    /// The task's uid.
    pub fn task(&self) -> &TaskUid {
        &self.task
    }

    /// What every key of the task starts with (followed by `:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The task identity hash; its absence means the task's state was lost.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// Shared-state values (hash: state key → value).
    pub fn kv(&self) -> String {
        format!("{}:kv", self.prefix)
    }

    /// Shared-state versions (hash: state key → version).
    pub fn kv_versions(&self) -> String {
        format!("{}:kv:ver", self.prefix)
    }

    /// Agent → operator events (stream, groups [`EVENT_GROUPS`]).
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Inter-agent messages (stream).
    pub fn bus(&self) -> String {
        format!("{}:bus", self.prefix)
    }

    /// Subtask results (hash: subtask → recorded result).
    pub fn results(&self) -> String {
        format!("{}:results", self.prefix)
    }

    /// The conversation journal of `subtask` (stream).
    pub fn journal(&self, subtask: &SubtaskName) -> String {
        format!("{}:journal:{subtask}", self.prefix)
    }

    /// The set of subtasks that have a journal, so cleanup and checkpoints can find every
    /// journal without scanning the keyspace (SCAN is per node on a cluster).
    pub fn journal_index(&self) -> String {
        format!("{}:journals", self.prefix)
    }

    /// Budget limits hash (tokens and micro-dollars), written by the operator only: a pool user
    /// may read it and not write it, so an agent cannot raise its own limit.
    pub fn budget(&self) -> String {
        format!("{}:budget", self.prefix)
    }

    /// What the task's model calls reserved and spent (hash: tokens and micro-dollars, and one
    /// field per reservation in flight), written by the agents through the library functions.
    pub fn spend(&self) -> String {
        format!("{}:spend", self.prefix)
    }

    /// Set when the task is cancelled or suspended.
    pub fn cancel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// Tool effects already applied (hash: tool-use id → 1), so a replayed tool call whose
    /// result never reached the journal is not applied twice.
    pub fn applied(&self) -> String {
        format!("{}:applied", self.prefix)
    }

    /// The keys a finished task keeps until the Task is deleted: what its status, its result
    /// and a later Checkpoint or resume read (identity and plan, shared state, results, budget,
    /// and the cancel reason, which tells an agent still holding an item to stop).
    pub fn retained(&self) -> [String; 7] {
        [
            self.meta(),
            self.kv(),
            self.kv_versions(),
            self.results(),
            self.budget(),
            self.spend(),
            self.cancel(),
        ]
    }

    /// The keys with a fixed name a finished task drops after the retention, together with
    /// every journal (the conversations, the bulk of a task's memory): the event and bus
    /// streams, the applied tool effects, and the journal index.
    pub fn transient(&self) -> [String; 4] {
        [
            self.events(),
            self.bus(),
            self.applied(),
            // Last, as in `fixed`: a drop cut short still finds the journals it must remove.
            self.journal_index(),
        ]
    }

    /// Every key of the task with a fixed name (journals are listed in [`Self::journal_index`]).
    pub fn fixed(&self) -> [String; 11] {
        [
            self.meta(),
            self.applied(),
            self.kv(),
            self.kv_versions(),
            self.events(),
            self.bus(),
            self.results(),
            self.budget(),
            self.spend(),
            self.cancel(),
            // Last, so a cleanup interrupted half-way still finds the journals it must remove.
            self.journal_index(),
        ]
    }
}

/// The Redis Cluster slot of `key` (CRC16 of the hash tag, or of the key without one).
pub fn slot_of(key: &str) -> u16 {
    slot_of_bytes(key.as_bytes())
}

/// [`slot_of`] for a key given as bytes, as it appears inside a command.
pub fn slot_of_bytes(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            key[open + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &key[open + 1..open + 1 + len])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for slots; table-driven because the
/// cluster connection computes it for every request it routes itself.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// CRC16 (polynomial 0x1021) of every byte value, computed at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Whether `key` matches a Redis glob `pattern` (`*`, `?`, `[...]`, `\` escapes), as Redis's
/// ACL key patterns do; used to check our patterns against our keys without a server.
pub fn glob_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((b'\\', rest)) => match (rest.split_first(), s.split_first()) {
                (Some((pc, prest)), Some((sc, srest))) => pc == sc && go(prest, srest),
                _ => false,
            },
            Some((b'[', rest)) => {
                let Some(close) = rest.iter().position(|&b| b == b']') else {
                    return false;
                };
                let (class, after) = (&rest[..close], &rest[close + 1..]);
                let Some((&c, srest)) = s.split_first() else {
                    return false;
                };
                let (negate, class) = match class.split_first() {
                    Some((b'^', tail)) => (true, tail),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(after, srest)
            }
            Some((&pc, rest)) => s.first() == Some(&pc) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(uid: &str) -> PoolKeys {
        PoolKeys::new(&PoolUid::new(uid).expect("valid pool uid"))
    }

    fn task_keys(pool_keys: &PoolKeys, uid: &str) -> Vec<String> {
        let keys = pool_keys.task(&TaskUid::new(uid).expect("valid task uid"));
        let mut all: Vec<String> = keys.fixed().to_vec();
        all.push(keys.journal(&SubtaskName::new("research-a").expect("name")));
        all.push(keys.journal(&SubtaskName::new("synthesize").expect("name")));
        all
    }

    #[test]
    fn keys_follow_the_design_layout() {
        let p = pool("p-1");
        assert_eq!(p.work(), "maos:{pool:p-1}:work");
        assert_eq!(p.heartbeats(), "maos:{pool:p-1}:hb");
        assert_eq!(p.rate_limit(), "maos:{pool:p-1}:ratelimit");
        assert_eq!(p.dispatched(), "maos:{pool:p-1}:dispatched");
        let t = p.task(&TaskUid::new("t-9").expect("uid"));
        assert_eq!(t.meta(), "maos:pool:p-1:{task:t-9}:meta");
        assert_eq!(t.kv(), "maos:pool:p-1:{task:t-9}:kv");
        assert_eq!(t.kv_versions(), "maos:pool:p-1:{task:t-9}:kv:ver");
        assert_eq!(t.events(), "maos:pool:p-1:{task:t-9}:events");
        assert_eq!(t.bus(), "maos:pool:p-1:{task:t-9}:bus");
        assert_eq!(t.results(), "maos:pool:p-1:{task:t-9}:results");
        assert_eq!(t.budget(), "maos:pool:p-1:{task:t-9}:budget");
        assert_eq!(t.cancel(), "maos:pool:p-1:{task:t-9}:cancel");
        let sub = SubtaskName::new("a").expect("name");
        assert_eq!(t.journal(&sub), "maos:pool:p-1:{task:t-9}:journal:a");
    }

    #[test]
    fn a_tasks_fixed_keys_are_either_retained_or_transient() {
        let t = pool("p-1").task(&TaskUid::new("t-9").expect("uid"));
        let retained: std::collections::BTreeSet<String> = t.retained().into_iter().collect();
        let transient: std::collections::BTreeSet<String> = t.transient().into_iter().collect();
        let fixed: std::collections::BTreeSet<String> = t.fixed().into_iter().collect();
        assert!(retained.is_disjoint(&transient));
        assert_eq!(&retained | &transient, fixed);
        assert!(transient.contains(&t.events()) && transient.contains(&t.journal_index()));
        assert!(retained.contains(&t.results()) && retained.contains(&t.meta()));
    }

    #[test]
    fn all_keys_of_a_task_hash_to_one_slot() {
        let p = pool("5c3e8f9e-1111-4a2b-9c3d-000000000001");
        let keys = task_keys(&p, "0b7d5a55-2222-4f00-8e2c-000000000002");
        let slot = slot_of(&keys[0]);
        for key in &keys {
            assert_eq!(slot_of(key), slot, "{key}");
        }
        assert_eq!(slot, slot_of("{task:0b7d5a55-2222-4f00-8e2c-000000000002}"));
    }

    #[test]
    fn all_keys_of_a_pool_hash_to_one_slot() {
        let p = pool("pool-x");
        assert_eq!(slot_of(&p.work()), slot_of(&p.heartbeats()));
        assert_eq!(slot_of(&p.work()), slot_of(&p.rate_limit()));
        assert_eq!(slot_of(&p.work()), slot_of(&p.dispatched()));
    }

    #[test]
    fn different_tasks_spread_over_slots() {
        let p = pool("pool-x");
        let slots: std::collections::HashSet<u16> = (0..50)
            .map(|i| slot_of(&p.task(&TaskUid::new(&format!("t{i}")).expect("uid")).kv()))
            .collect();
        assert!(slots.len() > 40, "only {} distinct slots", slots.len());
    }

    #[test]
    fn slot_matches_redis_reference_values() {
        // Reference values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("123456789"), 0x31c3);
        // An empty tag does not count as a tag.
        assert_eq!(slot_of("foo{}bar"), crc16_xmodem(b"foo{}bar") % 16384);
    }

    #[test]
    fn pool_acl_patterns_match_its_keys_and_its_tasks_keys() {
        let p = pool("a1");
        let patterns = p.acl_key_patterns();
        let mut keys = vec![
            p.work(),
            p.heartbeats(),
            p.rate_limit(),
            p.dispatched(),
            p.model_errors(),
            p.tool_errors(),
        ];
        keys.extend(task_keys(&p, "t1"));
        keys.extend(task_keys(&p, "t2"));
        for key in &keys {
            assert!(
                patterns.iter().any(|pat| glob_matches(pat, key)),
                "{key} not covered by {patterns:?}"
            );
        }
    }

    #[test]
    fn pool_acl_patterns_match_no_key_of_another_pool() {
        let a = pool("a1");
        // "a1" is a prefix of "a10": the patterns must still keep them apart.
        for other in [pool("b2"), pool("a10")] {
            let mut keys = vec![
                other.work(),
                other.heartbeats(),
                other.rate_limit(),
                other.dispatched(),
            ];
            keys.extend(task_keys(&other, "t1"));
            for key in &keys {
                for pat in a.acl_key_patterns() {
                    assert!(!glob_matches(&pat, key), "{pat} matches {key}");
                }
            }
        }
    }

    #[test]
    fn uids_with_key_syntax_are_rejected() {
        for bad in [
            "",
            "a:b",
            "a{b",
            "a}b",
            "a*",
            "a?",
            "a[b]",
            "a b",
            "a\\b",
            &"x".repeat(65),
        ] {
            assert!(PoolUid::new(bad).is_err(), "{bad:?}");
            assert!(TaskUid::new(bad).is_err(), "{bad:?}");
        }
        assert!(TaskUid::new("0b7d5a55-2222-4f00-8e2c-000000000002").is_ok());
    }

    #[test]
    fn agent_names_are_pod_names() {
        assert!(AgentName::new("pool-a-agent-7x2k.default").is_ok());
        for bad in ["", "Agent", "a b", "a:b", "a*"] {
            assert!(AgentName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn glob_matcher_handles_redis_syntax() {
        assert!(glob_matches("maos:*", "maos:x"));
        assert!(!glob_matches("maos:*", "mao:x"));
        assert!(glob_matches("a?c", "abc"));
        assert!(glob_matches("a[b-d]e", "ace"));
        assert!(!glob_matches("a[^b-d]e", "ace"));
        assert!(glob_matches("a\\*", "a*"));
        assert!(!glob_matches("a\\*", "ab"));
    }

    #[test]
    fn agents_may_write_every_key_they_use_and_none_of_the_operators() {
        let p = PoolKeys::new(&PoolUid::new("p-1").expect("uid"));
        let t = p.task(&TaskUid::new("t-9").expect("uid"));
        let subtask = SubtaskName::new("budget").expect("subtask");
        let writable = |key: &str| {
            p.acl_agent_write_patterns()
                .iter()
                .any(|pattern| glob_matches(pattern, key))
        };
        for key in [
            p.heartbeats(),
            p.rate_limit(),
            p.model_errors(),
            p.tool_errors(),
            t.kv(),
            t.kv_versions(),
            t.events(),
            t.bus(),
            t.results(),
            t.journal(&subtask),
            t.journal_index(),
            t.applied(),
            t.spend(),
        ] {
            assert!(writable(&key), "{key}");
        }
        for key in [t.budget(), t.meta(), t.cancel(), p.dispatched(), p.work()] {
            assert!(!writable(&key), "{key}");
        }
    }
}
