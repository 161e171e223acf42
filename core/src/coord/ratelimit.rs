//! A pool's shared rate limits: token buckets for requests, input tokens and output tokens per
//! minute, held in one Redis hash and taken from by every agent of the pool.
//!
//! One Lua script refills all buckets from the Redis server's clock and takes from all of them
//! or from none, so concurrent agents can never together exceed a bucket's capacity plus its
//! refill, and agents' clocks never matter.

use std::time::Duration;

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::PoolKeys;
use super::script::Call;

/// Name of the requests bucket in the rate-limit hash.
const BUCKET_REQUESTS: &str = "requests";
/// Name of the input-tokens bucket.
const BUCKET_INPUT: &str = "input_tokens";
/// Name of the output-tokens bucket.
const BUCKET_OUTPUT: &str = "output_tokens";

// KEYS: rate-limit hash. ARGV: bucket count, then per bucket: name, rate per minute, capacity,
// amount. A bucket with rate 0 is unlimited and skipped by the caller.
// Reply: 0 if every bucket had enough (all were taken from), else the ms until they will.
pub(crate) static ACQUIRE: Function = Function::new(
    "maos_ratelimit_acquire",
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
-- Never more buckets than the arguments hold.
local n = math.min(tonumber(ARGV[1]) or 0, math.floor((#ARGV - 1) / 4))
local wait = 0
local levels = {}
for i = 0, n - 1 do
  local name = ARGV[2 + i * 4]
  local rate = tonumber(ARGV[3 + i * 4])
  local cap = tonumber(ARGV[4 + i * 4])
  local amount = tonumber(ARGV[5 + i * 4])
  local tokens = tonumber(redis.call('HGET', KEYS[1], name .. ':tokens')) or cap
  local ts = tonumber(redis.call('HGET', KEYS[1], name .. ':ts')) or now
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(cap, tokens + elapsed * rate / 60000)
  levels[i] = tokens
  if tokens < amount then
    local need = math.ceil((amount - tokens) * 60000 / rate)
    if need > wait then wait = need end
  end
end
for i = 0, n - 1 do
  local name = ARGV[2 + i * 4]
  local tokens = levels[i]
  if wait == 0 then tokens = tokens - tonumber(ARGV[5 + i * 4]) end
  redis.call('HSET', KEYS[1], name .. ':tokens', string.format('%.6f', tokens),
    name .. ':ts', string.format('%.3f', now))
end
return wait
",
);

// KEYS: rate-limit hash. ARGV: bucket count, then per bucket: name, capacity, amount.
// Puts back tokens taken by an estimate that the real usage undercut, never above capacity.
pub(crate) static REFUND: Function = Function::new(
    "maos_ratelimit_refund",
    r"
local n = math.min(tonumber(ARGV[1]) or 0, math.floor((#ARGV - 1) / 3))
for i = 0, n - 1 do
  local name = ARGV[2 + i * 3]
  local cap = tonumber(ARGV[3 + i * 3])
  local amount = tonumber(ARGV[4 + i * 3])
  local tokens = tonumber(redis.call('HGET', KEYS[1], name .. ':tokens'))
  if tokens then
    redis.call('HSET', KEYS[1], name .. ':tokens', string.format('%.6f', math.min(cap, tokens + amount)))
  end
end
return 0
",
);

/// One bucket: refills at `per_minute`, holds at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Refill rate per minute; 0 means unlimited.
    pub per_minute: u64,
    /// Capacity: the most that can be taken at once after a quiet period.
    pub burst: u64,
}

impl Bucket {
    /// A bucket refilling at `per_minute` whose capacity is one minute's worth, as the
    /// Anthropic API's own limits behave.
    pub fn per_minute(per_minute: u64) -> Self {
        Self {
            per_minute,
            burst: per_minute,
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            per_minute: 0,
            burst: 0,
        }
    }
}

/// A pool's limits (from the AgentPool's `rateLimits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Model requests.
    pub requests: Bucket,
    /// Input tokens.
    pub input_tokens: Bucket,
    /// Output tokens.
    pub output_tokens: Bucket,
}

/// The answer to an acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send the call now; the tokens are taken.
    Go,
    /// Nothing was taken; ask again after this long.
    Wait(Duration),
}

/// A pool's rate limiter.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    redis: Redis,
    keys: PoolKeys,
    limits: RateLimits,
}

impl RateLimiter {
    /// The limiter of the pool with `keys`, enforcing `limits`.
    pub fn new(redis: Redis, keys: PoolKeys, limits: RateLimits) -> Self {
        Self {
            redis,
            keys,
            limits,
        }
    }

    /// Takes `requests` requests, `input_tokens` and `output_tokens` (estimates for the call
    /// about to be sent) from the pool's buckets, all or nothing.
    pub async fn acquire(
        &self,
        requests: u64,
        input_tokens: u64,
        output_tokens: u64,
    ) -> CoordResult<Admission> {
        let wanted = [
            (BUCKET_REQUESTS, self.limits.requests, requests),
            (BUCKET_INPUT, self.limits.input_tokens, input_tokens),
            (BUCKET_OUTPUT, self.limits.output_tokens, output_tokens),
        ];
        let mut limited = Vec::new();
        for (name, bucket, amount) in wanted {
            if bucket.per_minute == 0 {
                continue;
            }
            if amount > bucket.burst {
                // More than the bucket can ever hold: waiting would never end.
                return Err(CoordError::RateRequestTooLarge {
                    bucket: name,
                    requested: amount,
                    capacity: bucket.burst,
                });
            }
            limited.push((name, bucket, amount));
        }
        if limited.is_empty() {
            return Ok(Admission::Go);
        }
        let key = self.keys.rate_limit();
        let wait_ms: u64 = self
            .redis
            .run("rate limit", |mut c| {
                let (key, limited) = (&key, &limited);
                async move {
                    let mut call =
                        Call::new(&ACQUIRE, &[key], 64 * limited.len()).arg(limited.len());
                    for (name, bucket, amount) in limited {
                        call = call
                            .arg(*name)
                            .arg(bucket.per_minute)
                            .arg(bucket.burst)
                            .arg(*amount);
                    }
                    call.invoke(&mut c).await
                }
            })
            .await?;
        Ok(if wait_ms == 0 {
            Admission::Go
        } else {
            Admission::Wait(Duration::from_millis(wait_ms))
        })
    }

    /// Gives back what an acquire took beyond a call's real usage (e.g. `max_tokens` reserved
    /// as output, fewer produced), so estimates do not starve the pool. Never fills a bucket
    /// past its capacity.
    pub async fn refund(&self, input_tokens: u64, output_tokens: u64) -> CoordResult<()> {
        let refunds: Vec<(&str, Bucket, u64)> = [
            (BUCKET_INPUT, self.limits.input_tokens, input_tokens),
            (BUCKET_OUTPUT, self.limits.output_tokens, output_tokens),
        ]
        .into_iter()
        .filter(|(_, bucket, amount)| bucket.per_minute > 0 && *amount > 0)
        .collect();
        if refunds.is_empty() {
            return Ok(());
        }
        let key = self.keys.rate_limit();
        self.redis
            .run("rate limit refund", |mut c| {
                let (key, refunds) = (&key, &refunds);
                async move {
                    let mut call =
                        Call::new(&REFUND, &[key], 64 * refunds.len()).arg(refunds.len());
                    for (name, bucket, amount) in refunds {
                        call = call.arg(*name).arg(bucket.burst).arg(*amount);
                    }
                    call.invoke::<()>(&mut c).await
                }
            })
            .await
    }
}
