//! A task's budget, in tokens and in cost: every model call reserves its worst case (its
//! `max_tokens` plus its input, and what that costs at the operator's prices) before it is
//! sent, and settles what it actually used afterwards, so a task overshoots either limit by at
//! most the calls already in flight. Reserve and settle are each one Lua script over both
//! limits, so concurrent agents never both take the last tokens or the last dollar, and a call
//! is never granted one limit while the other refuses it.
//!
//! Cost is counted in whole micro-dollars ([`crate::price`]): integers add up exactly in Redis.

use super::conn::Redis;
use super::error::CoordResult;
use super::functions::Function;
use super::keys::{TaskKeys, field};
use super::script::Call;

// KEYS: the task's spend hash (its limits are the `budget` hash next to it, which the caller may
// only read, so it is not declared: a declared key must be writable; it shares the hash tag, so
// the same slot). ARGV: reservation id (hex), tokens, micro-dollars ('?' when the cost is
// unknown), the Unix ms the reservation lapses at. Lapsed reservations are released first: an
// agent killed mid-call never settles its own, and its item's deadline (past which no call of
// it runs) is when it lapses.
// Reply: {1, 0, 0} when reserved, or {0, which, remaining} with which 1 (tokens) or 2 (cost)
// the limit that cannot cover the call, or 3 when a cost limit is set and the cost unknown. The
// reservation is recorded under its own field, so a retried call (its first reply lost) finds it
// and does not reserve twice. Every field name is spelled out here and every amount checked to
// be a plain non-negative integer: an agent calls this with arguments of its own choosing.
// Amounts are handed to HINCRBY as the strings they came in: Lua would print a large number as
// 1e+15.
pub(crate) static RESERVE: Function = Function::new(
    "maos_budget_reserve",
    r"
local task = string.match(KEYS[1], '^(maos:pool:[%w%-]+:{task:[%w%-]+}):spend$')
if not task then return redis.error_reply('ERR maos_budget_reserve: not a spend key') end
local id, tokens, cost = ARGV[1], ARGV[2], ARGV[3]
if not (id and string.match(id, '^%x+$') and #id <= 64) then
  return redis.error_reply('ERR maos_budget_reserve: reservation id must be hex')
end
if not (tokens and string.match(tokens, '^%d+$') and #tokens <= 15)
   or not (cost and (cost == '?' or (string.match(cost, '^%d+$') and #cost <= 15))) then
  return redis.error_reply('ERR maos_budget_reserve: amounts must be integers')
end
local lapses = ARGV[4]
if not (lapses and string.match(lapses, '^%d+$') and #lapses <= 15) then
  return redis.error_reply('ERR maos_budget_reserve: the lapse time must be Unix ms')
end
local field = 'reservation:' .. id
if redis.call('HEXISTS', KEYS[1], field) == 1 then return {1, 0, 0} end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  if string.sub(held[i], 1, 12) == 'reservation:' then
    local t, c, at = string.match(held[i + 1], '^(%d+):(%d+):(%d+)$')
    if at and tonumber(at) < now_ms then
      redis.call('HDEL', KEYS[1], held[i])
      -- '-0' is not an integer to HINCRBY.
      if t ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. t) end
      if c ~= '0' then redis.call('HINCRBY', KEYS[1], 'costReservedMicroUSD', '-' .. c) end
    end
  end
end
local limits = redis.call('HMGET', task .. ':budget', 'limit', 'costLimitMicroUSD')
local used = redis.call('HMGET', KEYS[1], 'reserved', 'spent', 'costReservedMicroUSD',
  'costSpentMicroUSD')
if cost == '?' then
  if tonumber(limits[2]) ~= nil then return {0, 3, 0} end
  cost = '0'
end
local want = {tokens, cost}
for which = 1, 2 do
  local limit = tonumber(limits[which])
  if limit ~= nil then
    local remaining = limit - (tonumber(used[2 * which - 1]) or 0)
      - (tonumber(used[2 * which]) or 0)
    if tonumber(want[which]) > remaining then return {0, which, math.max(remaining, 0)} end
  end
end
redis.call('HINCRBY', KEYS[1], 'reserved', tokens)
redis.call('HINCRBY', KEYS[1], 'costReservedMicroUSD', cost)
redis.call('HSET', KEYS[1], field, tokens .. ':' .. cost .. ':' .. lapses)
return {1, 0, 0}
",
);

// KEYS: the task's spend hash. ARGV: reservation id, tokens used, micro-dollars used.
// Releases exactly what the reservation holds and adds what was used, once: settling a settled
// (or never made) reservation changes nothing, so no call can give back more than was reserved.
// Reply: {tokens spent, micro-dollars spent} in total.
pub(crate) static SETTLE: Function = Function::new(
    "maos_budget_settle",
    r"
if not string.match(KEYS[1], '^maos:pool:[%w%-]+:{task:[%w%-]+}:spend$') then
  return redis.error_reply('ERR maos_budget_settle: not a spend key')
end
local id, tokens, cost = ARGV[1], ARGV[2], ARGV[3]
if not (id and string.match(id, '^%x+$') and #id <= 64) then
  return redis.error_reply('ERR maos_budget_settle: reservation id must be hex')
end
if not (tokens and string.match(tokens, '^%d+$') and #tokens <= 15)
   or not (cost and string.match(cost, '^%d+$') and #cost <= 15) then
  return redis.error_reply('ERR maos_budget_settle: amounts must be integers')
end
local field = 'reservation:' .. id
local held = redis.call('HGET', KEYS[1], field)
if held then
  redis.call('HDEL', KEYS[1], field)
  local held_tokens, held_cost = string.match(held, '^(%d+):(%d+)')
  if held_tokens then
    -- '-0' is not an integer to HINCRBY.
    if held_tokens ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. held_tokens) end
    if held_cost ~= '0' then
      redis.call('HINCRBY', KEYS[1], 'costReservedMicroUSD', '-' .. held_cost)
    end
  end
  redis.call('HINCRBY', KEYS[1], 'spent', tokens)
  redis.call('HINCRBY', KEYS[1], 'costSpentMicroUSD', cost)
end
return {tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0,
        tonumber(redis.call('HGET', KEYS[1], 'costSpentMicroUSD')) or 0}
",
);

/// The longest an unsettled reservation holds budget: longer than any model call can last
/// (the client's request time-out times its attempts, with their waits), so only a call whose
/// agent died is outlived.
pub const LONGEST_RESERVATION: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

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
    /// The reservation's id (hex, unique per reservation); its field in the spend hash is
    /// [`field::BUDGET_RESERVATION_PREFIX`] and the id.
    id: String,
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
    /// unknown cost is refused only by a task with a cost limit. Lapses after
    /// [`LONGEST_RESERVATION`] if never settled.
    pub async fn reserve(&self, want: impl Into<Spend>) -> CoordResult<ReserveOutcome> {
        self.reserve_until(want, u64::MAX).await
    }

    /// [`Budget::reserve`] for a call that cannot run past `deadline_ms` (Unix ms; its item's
    /// deadline): unsettled, the reservation lapses then (at most [`LONGEST_RESERVATION`]
    /// from now), and the next reservation on the task gives it back. So a budget does not
    /// shrink for good by the calls of agents killed mid-call.
    pub async fn reserve_until(
        &self,
        want: impl Into<Spend>,
        deadline_ms: u64,
    ) -> CoordResult<ReserveOutcome> {
        let want = want.into();
        let longest = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis() as u64)
            .saturating_add(LONGEST_RESERVATION.as_millis() as u64);
        let lapses = deadline_ms.min(longest);
        let key = self.keys.spend();
        let reservation = Reservation {
            id: uuid::Uuid::new_v4().simple().to_string(),
            spend: want,
        };
        let (granted, which, remaining): (i64, i64, i64) = self
            .redis
            .run("reserve budget", |mut c| {
                let (key, id) = (&key, &reservation.id);
                async move {
                    let cost = want
                        .cost_micro_usd
                        .map_or_else(|| "?".to_owned(), |c| c.to_string());
                    Call::new(&RESERVE, &[key], 112)
                        .arg(id)
                        .arg(want.tokens)
                        .arg(cost)
                        .arg(lapses)
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
        let key = self.keys.spend();
        let (tokens, cost): (i64, i64) = self
            .redis
            .run("settle budget", |mut c| {
                let (key, id) = (&key, &reservation.id);
                async move {
                    Call::new(&SETTLE, &[key], 96)
                        .arg(id)
                        .arg(used.tokens)
                        .arg(used.cost_micro_usd.unwrap_or(0))
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
        let (limits, spend) = (self.keys.budget(), self.keys.spend());
        type Fields = (
            (Option<u64>, Option<u64>),
            (Option<u64>, Option<u64>, Option<u64>, Option<u64>),
        );
        let ((limit, cost_limit), (reserved, spent, cost_reserved, cost_spent)): Fields = self
            .redis
            .run("budget usage", |mut c| {
                let (limits, spend) = (&limits, &spend);
                async move {
                    redis::pipe()
                        .cmd("HMGET")
                        .arg(limits)
                        .arg(field::BUDGET_LIMIT)
                        .arg(field::BUDGET_COST_LIMIT)
                        .cmd("HMGET")
                        .arg(spend)
                        .arg(field::BUDGET_RESERVED)
                        .arg(field::BUDGET_SPENT)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_functions_spell_the_protocols_field_names() {
        for name in [
            field::BUDGET_LIMIT,
            field::BUDGET_COST_LIMIT,
            field::BUDGET_RESERVED,
            field::BUDGET_SPENT,
            field::BUDGET_COST_RESERVED,
            field::BUDGET_COST_SPENT,
            field::BUDGET_RESERVATION_PREFIX,
        ] {
            assert!(RESERVE.body().contains(&format!("'{name}")), "{name}");
        }
        for name in [
            field::BUDGET_RESERVED,
            field::BUDGET_SPENT,
            field::BUDGET_COST_RESERVED,
            field::BUDGET_COST_SPENT,
            field::BUDGET_RESERVATION_PREFIX,
        ] {
            assert!(SETTLE.body().contains(&format!("'{name}")), "{name}");
        }
    }
}
