//! One `EVALSHA` per script call, written straight into a single pre-sized command.
//!
//! redis-rs's `ScriptInvocation` copies each key and argument into vectors of its own and then
//! again into the command it sends: seven allocations for a CAS, the layer's hottest call, and a
//! measurable share of its client CPU (BENCHMARKS.md). A [`Call`] writes them once.

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, RedisWrite, Script, ServerErrorKind, ToRedisArgs};

/// Bytes reserved for the command name, the hash, the key count and the framing of each part.
const FIXED_BYTES: usize = 64;
/// Arguments reserved for: the layer's scripts take up to about this many.
const TYPICAL_ARGS: usize = 6;

/// A prepared `EVALSHA` of a script, its keys and arguments.
pub(crate) struct Call<'s> {
    script: &'s Script,
    cmd: Cmd,
}

impl<'s> Call<'s> {
    /// A call of `script` on `keys`; `arg_bytes` sizes the command for the arguments to come.
    pub(crate) fn new(script: &'s Script, keys: &[&str], arg_bytes: usize) -> Self {
        let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
        let parts = 3 + keys.len() + TYPICAL_ARGS;
        let mut cmd = Cmd::with_capacity(parts, FIXED_BYTES + key_bytes + arg_bytes);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        Self { script, cmd }
    }

    /// Appends an argument (`ARGV[n]`).
    pub(crate) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Appends `value` as JSON written straight into the command's buffer.
    pub(crate) fn json_arg(mut self, value: &impl serde::Serialize) -> serde_json::Result<Self> {
        serde_json::to_writer(self.cmd.writer_for_next_arg(), value)?;
        Ok(self)
    }

    /// Runs the call; a server that does not know the script yet (restarted, failed over, or
    /// flushed) is sent it with `SCRIPT LOAD` and the call is made again.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        con: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd.query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                self.cmd.query_async(con).await
            }
            other => other,
        }
    }
}
