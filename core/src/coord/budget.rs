//! A task's budget, in tokens and in cost: every model call reserves its worst case (its
//! `max_tokens` plus its input, and what that costs at the operator's prices) before it is
//! sent, and settles what it actually used afterwards, so a task overshoots either limit by at
//! most the calls already in flight. Reserve and settle are each one Lua script over both
//! limits, so concurrent agents never both take the last tokens or the last dollar, and a call
//! is never granted one limit while the other refuses it.
//!
//! Cost is counted in whole micro-dollars ([`crate::price`]): integers add up exactly in Redis.

use std::sync::LazyLock;

use redis::Script;

use super::conn::Redis;
use super::error::CoordResult;
use super::keys::{TaskKeys, field};
use super::script::Call;

// KEYS: budget. ARGV: tokens, micro-dollars ('?' when the cost is unknown), reservation field,
// then the fields token limit, tokens reserved, tokens spent, cost limit, cost reserved, cost
// spent.
// Reply: {1, 0, 0} when reserved, or {0, which, remaining} with which 1 (tokens) or 2 (cost)
// the limit that cannot cover the call, or 3 when a cost limit is set and the cost unknown. The reservation is recorded under its own field, so a
// retried call (its first reply lost) finds it and does not reserve twice. Amounts are handed
// to HINCRBY as the strings they came in: Lua would print a large number as 1e+15.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {1, 0, 0} end
local function num(f) return tonumber(redis.call('HGET', KEYS[1], f)) end
local want = {ARGV[1], ARGV[2]}
if want[2] == '?' then
  if num(ARGV[7]) ~= nil then return {0, 3, 0} end
  want[2] = '0'
end
for which = 1, 2 do
  local at = 3 * which + 1
  local limit = num(ARGV[at])
  if limit ~= nil then
    local remaining = limit - (num(ARGV[at + 1]) or 0) - (num(ARGV[at + 2]) or 0)
    if tonumber(want[which]) > remaining then return {0, which, math.max(remaining, 0)} end
  end
end
redis.call('HINCRBY', KEYS[1], ARGV[5], want[1])
redis.call('HINCRBY', KEYS[1], ARGV[8], want[2])
redis.call('HSET', KEYS[1], ARGV[3], want[1] .. ':' .. want[2])
return {1, 0, 0}
",
    )
});

// KEYS: budget. ARGV: tokens used, micro-dollars used, reservation field, then the fields
// tokens reserved, tokens spent, cost reserved, cost spent.
// Releases the reservation and adds what was used, once: settling a settled reservation (a
// retried call) changes nothing. A reservation written before cost was reserved holds tokens
// only. Reply: {tokens spent, micro-dollars spent} in total.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = redis.call('HGET', KEYS[1], ARGV[3])
if held then
  redis.call('HDEL', KEYS[1], ARGV[3])
  local tokens, cost = string.match(held, '^(%d+):(%d+)$')
  if tokens == nil then tokens, cost = held, '0' end
  -- '-0' is not an integer to HINCRBY.
  if tokens ~= '0' then redis.call('HINCRBY', KEYS[1], ARGV[4], '-' .. tokens) end
  if cost ~= '0' then redis.call('HINCRBY', KEYS[1], ARGV[6], '-' .. cost) end
  redis.call('HINCRBY', KEYS[1], ARGV[5], ARGV[1])
  redis.call('HINCRBY', KEYS[1], ARGV[7], ARGV[2])
end
return {tonumber(redis.call('HGET', KEYS[1], ARGV[5])) or 0,
        tonumber(redis.call('HGET', KEYS[1], ARGV[7])) or 0}
",
    )
});

/// What a model call may take from a budget, or took: tokens and their cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spend {
    /// Tokens: input, output and prompt-cache reads and writes, each counted once.
    pub tokens: u64,
    /// Their cost in micro-dollars; `None` when it cannot be known (the model has no price),
    /// which a task with a cost limit refuses and settling counts as nothing.
    pub cost_micro_usd: Option<u64>,
}

impl From<u64> for Spend {
    /// Tokens that cost nothing.
    fn from(tokens: u64) -> Self {
        Self {
            tokens,
            cost_micro_usd: Some(0),
        }
    }
}

/// A task's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most tokens (`spec.budget.maxTokens`).
    pub tokens: Option<u64>,
    /// The most micro-dollars (`spec.budget.maxCostUSD`).
    pub cost_micro_usd: Option<u64>,
}

impl From<Option<u64>> for Limits {
    /// A token limit alone.
    fn from(tokens: Option<u64>) -> Self {
        Self {
            tokens,
            cost_micro_usd: None,
        }
    }
}

/// Which limit refused a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The token limit.
    Tokens,
    /// The cost limit.
    Cost,
    /// The cost limit, which cannot be kept: the call's cost is unknown.
    CostUnknown,
}

/// Tokens and cost reserved for one model call; settle it with [`Budget::settle`] after the
/// call.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds budget until it is settled"]
pub struct Reservation {
    /// The reservation's field in the budget hash (unique per reservation).
    field: String,
    spend: Spend,
}

impl Reservation {
    /// How many tokens are reserved.
    pub fn tokens(&self) -> u64 {
        self.spend.tokens
    }

    /// How many micro-dollars are reserved (0 for a call of unknown cost).
    pub fn cost_micro_usd(&self) -> u64 {
        self.spend.cost_micro_usd.unwrap_or(0)
    }
}

/// The answer to a reservation request.
#[derive(Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The tokens and their cost are reserved.
    Reserved(Reservation),
    /// The budget cannot cover the call; the subtask should stop with BudgetExceeded.
    Exhausted {
        /// The limit that refused it (the token limit first when both would).
        limit: Limit,
        /// What is still available of that limit (less than requested): tokens, or
        /// micro-dollars.
        remaining: u64,
    },
}

/// A snapshot of a budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetUsage {
    /// The token limit; `None` when the task has no token budget.
    pub limit: Option<u64>,
    /// Tokens reserved by calls in flight.
    pub reserved: u64,
    /// Tokens spent by finished calls.
    pub spent: u64,
    /// The cost limit in micro-dollars; `None` when the task has no cost budget.
    pub cost_limit_micro_usd: Option<u64>,
    /// Micro-dollars reserved by calls in flight.
    pub cost_reserved_micro_usd: u64,
    /// Micro-dollars spent by finished calls.
    pub cost_spent_micro_usd: u64,
}

/// One task's budget.
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

    /// Sets the token limit.
    pub async fn set_limit(&self, tokens: u64) -> CoordResult<()> {
        self.set_limits(&Limits {
            tokens: Some(tokens),
            cost_micro_usd: None,
        })
        .await
    }

    /// Sets the limits that are given (the operator does this when it registers the task);
    /// one that is `None` is left as it is.
    pub async fn set_limits(&self, limits: &Limits) -> CoordResult<()> {
        let fields: Vec<(&str, u64)> = [
            (field::BUDGET_LIMIT, limits.tokens),
            (field::BUDGET_COST_LIMIT, limits.cost_micro_usd),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.keys.budget();
        self.redis
            .run("set budget", |mut c| {
                let (key, fields) = (&key, &fields);
                async move {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(fields)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Reserves `want` (tokens and their cost) if both limits still cover it; a call of
    /// unknown cost is refused only by a task with a cost limit.
    pub async fn reserve(&self, want: impl Into<Spend>) -> CoordResult<ReserveOutcome> {
        let want = want.into();
        let key = self.keys.budget();
        let reservation = Reservation {
            field: format!(
                "{}{}",
                field::BUDGET_RESERVATION_PREFIX,
                uuid::Uuid::new_v4().simple()
            ),
            spend: want,
        };
        let (granted, which, remaining): (i64, i64, i64) = self
            .redis
            .run("reserve budget", |mut c| {
                let (key, reservation_field) = (&key, &reservation.field);
                async move {
                    let cost = want
                        .cost_micro_usd
                        .map_or_else(|| "?".to_owned(), |c| c.to_string());
                    Call::new(&RESERVE, &[key], 256)
                        .arg(want.tokens)
                        .arg(cost)
                        .arg(reservation_field)
                        .arg(field::BUDGET_LIMIT)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .arg(field::BUDGET_COST_LIMIT)
                        .arg(field::BUDGET_COST_RESERVED)
                        .arg(field::BUDGET_COST_SPENT)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(if granted == 1 {
            ReserveOutcome::Reserved(reservation)
        } else {
            ReserveOutcome::Exhausted {
                limit: match which {
                    2 => Limit::Cost,
                    3 => Limit::CostUnknown,
                    _ => Limit::Tokens,
                },
                remaining: u64::try_from(remaining).unwrap_or(0),
            }
        })
    }

    /// Releases `reservation` and records `used` as spent (an unknown cost as nothing);
    /// returns the total spent.
    pub async fn settle(
        &self,
        reservation: Reservation,
        used: impl Into<Spend>,
    ) -> CoordResult<Spend> {
        let used = used.into();
        let key = self.keys.budget();
        let (tokens, cost): (i64, i64) = self
            .redis
            .run("settle budget", |mut c| {
                let (key, reservation_field) = (&key, &reservation.field);
                async move {
                    Call::new(&SETTLE, &[key], 192)
                        .arg(used.tokens)
                        .arg(used.cost_micro_usd.unwrap_or(0))
                        .arg(reservation_field)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .arg(field::BUDGET_COST_RESERVED)
                        .arg(field::BUDGET_COST_SPENT)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(Spend {
            tokens: u64::try_from(tokens).unwrap_or(0),
            cost_micro_usd: Some(u64::try_from(cost).unwrap_or(0)),
        })
    }

    /// The limits, and what is reserved and spent.
    pub async fn usage(&self) -> CoordResult<BudgetUsage> {
        let key = self.keys.budget();
        type Fields = (
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        );
        let (limit, reserved, spent, cost_limit, cost_reserved, cost_spent): Fields = self
            .redis
            .run("budget usage", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg(field::BUDGET_LIMIT)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
                        .arg(field::BUDGET_COST_LIMIT)
                        .arg(field::BUDGET_COST_RESERVED)
                        .arg(field::BUDGET_COST_SPENT)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(BudgetUsage {
            limit,
            reserved: reserved.unwrap_or(0),
            spent: spent.unwrap_or(0),
            cost_limit_micro_usd: cost_limit,
            cost_reserved_micro_usd: cost_reserved.unwrap_or(0),
            cost_spent_micro_usd: cost_spent.unwrap_or(0),
        })
    }
}
