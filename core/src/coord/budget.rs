//! A task's token budget: every model call reserves its `max_tokens` before it is sent and
//! settles the tokens actually used afterwards, so a task overshoots its budget by at most the
//! calls already in flight. Reserve and settle are each one Lua script, so concurrent agents
//! never both take the last tokens.

use std::sync::LazyLock;

use redis::Script;

use super::conn::Redis;
use super::error::CoordResult;
use super::keys::{TaskKeys, field};
use super::script::Call;

// KEYS: budget. ARGV: tokens, limit field, reserved field, spent field, reservation field.
// Reply: {1, remaining after the reservation} or {0, remaining}; remaining -1 when unlimited.
// The reservation is recorded under its own field, so a retried call (its first reply lost)
// finds it and does not reserve twice.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local limit = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
local reserved = tonumber(redis.call('HGET', KEYS[1], ARGV[3])) or 0
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[4])) or 0
local want = tonumber(ARGV[1])
local remaining = -1
if limit ~= nil then remaining = limit - spent - reserved end
if redis.call('HEXISTS', KEYS[1], ARGV[5]) == 1 then return {1, remaining} end
if limit ~= nil then
  if want > remaining then return {0, math.max(remaining, 0)} end
  remaining = remaining - want
end
redis.call('HINCRBY', KEYS[1], ARGV[3], want)
redis.call('HSET', KEYS[1], ARGV[5], want)
return {1, remaining}
",
    )
});

// KEYS: budget. ARGV: used tokens, reserved field, spent field, reservation field.
// Releases the reservation and adds the tokens used, once: settling a settled reservation (a
// retried call) changes nothing. Reply: tokens spent in total.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[4]))
if held == nil then return tonumber(redis.call('HGET', KEYS[1], ARGV[3])) or 0 end
redis.call('HDEL', KEYS[1], ARGV[4])
redis.call('HINCRBY', KEYS[1], ARGV[2], -held)
return redis.call('HINCRBY', KEYS[1], ARGV[3], tonumber(ARGV[1]))
",
    )
});

/// Tokens reserved for one model call; settle it with [`Budget::settle`] after the call.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds budget until it is settled"]
pub struct Reservation {
    /// The reservation's field in the budget hash (unique per reservation).
    field: String,
    tokens: u64,
}

impl Reservation {
    /// How many tokens are reserved.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// The answer to a reservation request.
#[derive(Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The tokens are reserved.
    Reserved(Reservation),
    /// The budget cannot cover the call; the subtask should stop with BudgetExceeded.
    Exhausted {
        /// Tokens still available (fewer than requested).
        remaining: u64,
    },
}

/// A snapshot of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetUsage {
    /// The limit; `None` when the task has no token budget.
    pub limit: Option<u64>,
    /// Tokens reserved by calls in flight.
    pub reserved: u64,
    /// Tokens spent by finished calls.
    pub spent: u64,
}

/// One task's token budget.
#[derive(Clone, Debug)]
pub struct Budget {
    redis: Redis,
    keys: TaskKeys,
}

impl Budget {
    /// The budget of the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// Sets the token limit (the operator does this when it registers the task).
    pub async fn set_limit(&self, tokens: u64) -> CoordResult<()> {
        let key = self.keys.budget();
        self.redis
            .run("set budget", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(field::BUDGET_LIMIT)
                        .arg(tokens)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Reserves `tokens` if the budget still covers them.
    pub async fn reserve(&self, tokens: u64) -> CoordResult<ReserveOutcome> {
        let key = self.keys.budget();
        let reservation = Reservation {
            field: format!(
                "{}{}",
                field::BUDGET_RESERVATION_PREFIX,
                uuid::Uuid::new_v4().simple()
            ),
            tokens,
        };
        let (granted, remaining): (i64, i64) = self
            .redis
            .run("reserve budget", |mut c| {
                let (key, reservation_field) = (&key, &reservation.field);
                async move {
                    Call::new(&RESERVE, &[key], 64)
                        .arg(tokens)
                        .arg(field::BUDGET_LIMIT)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .arg(reservation_field)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(if granted == 1 {
            ReserveOutcome::Reserved(reservation)
        } else {
            ReserveOutcome::Exhausted {
                remaining: u64::try_from(remaining).unwrap_or(0),
            }
        })
    }

    /// Releases `reservation` and records `used` tokens as spent; returns the total spent.
    pub async fn settle(&self, reservation: Reservation, used: u64) -> CoordResult<u64> {
        let key = self.keys.budget();
        let spent: i64 = self
            .redis
            .run("settle budget", |mut c| {
                let (key, reservation_field) = (&key, &reservation.field);
                async move {
                    Call::new(&SETTLE, &[key], 64)
                        .arg(used)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .arg(reservation_field)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(u64::try_from(spent).unwrap_or(0))
    }

    /// The limit, reserved and spent tokens.
    pub async fn usage(&self) -> CoordResult<BudgetUsage> {
        let key = self.keys.budget();
        let (limit, reserved, spent): (Option<u64>, Option<u64>, Option<u64>) = self
            .redis
            .run("budget usage", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(field::BUDGET_LIMIT)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(BudgetUsage {
            limit,
            reserved: reserved.unwrap_or(0),
            spent: spent.unwrap_or(0),
        })
    }
}
