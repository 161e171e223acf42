//! One `FCALL` (a library function) or `EVALSHA` (an operator-only script) per call, written
//! straight into a single pre-sized command.
//!
//! redis-rs's `ScriptInvocation` copies each key and argument into vectors of its own and then
//! again into the command it sends: seven allocations for a CAS, the layer's hottest call, and a
//! measurable share of its client CPU (BENCHMARKS.md). A [`Call`] writes them once.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, RedisWrite, Script, ServerErrorKind,
    ToRedisArgs,
};

use super::functions::{self, Function};

/// Bytes reserved for the command name, the hash, the key count and the framing of each part.
const FIXED_BYTES: usize = 64;
/// Arguments reserved for: the layer's scripts take up to about this many.
const TYPICAL_ARGS: usize = 6;

/// What a [`Call`] runs: a function of the library (what agents may run) or a script (the
/// operator's own steps, sent as `EVALSHA`).
#[derive(Clone, Copy)]
pub(crate) enum Target<'s> {
    /// A library function, by name.
    Function(&'s Function),
    /// A script, by hash.
    Script(&'s Script),
}

impl<'s> From<&'s Function> for Target<'s> {
    fn from(function: &'s Function) -> Self {
        Self::Function(function)
    }
}

impl<'s> From<&'s Script> for Target<'s> {
    fn from(script: &'s Script) -> Self {
        Self::Script(script)
    }
}

impl<'s> From<&'s LazyLock<Script>> for Target<'s> {
    fn from(script: &'s LazyLock<Script>) -> Self {
        Self::Script(script)
    }
}

/// A prepared `FCALL` or `EVALSHA`, its keys and arguments.
pub(crate) struct Call<'s> {
    target: Target<'s>,
    cmd: Cmd,
}

impl<'s> Call<'s> {
    /// A call of `target` on `keys`; `arg_bytes` sizes the command for the arguments to come.
    pub(crate) fn new(target: impl Into<Target<'s>>, keys: &[&str], arg_bytes: usize) -> Self {
        let target = target.into();
        let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
        let parts = 3 + keys.len() + TYPICAL_ARGS;
        let mut cmd = Cmd::with_capacity(parts, FIXED_BYTES + key_bytes + arg_bytes);
        match target {
            Target::Function(f) => cmd.arg("FCALL").arg(f.name()),
            Target::Script(s) => cmd.arg("EVALSHA").arg(s.get_hash()),
        };
        cmd.arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        Self { target, cmd }
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

    /// Runs the call. A server that does not know the script yet (restarted, failed over, or
    /// flushed) is sent it with `SCRIPT LOAD` and the call is made again; one that does not
    /// know the function is sent the whole library with `FUNCTION LOAD` if this user may
    /// (the operator), and the call is made again. A user that may not (an agent) gets an
    /// error [`super::error`] counts as transient: it backs off while the operator loads it.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        con: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match (self.cmd.query_async(con).await, self.target) {
            (Err(e), Target::Script(script))
                if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
            {
                script.load_async(con).await?;
                self.cmd.query_async(con).await
            }
            (Err(e), Target::Function(_)) if functions::is_function_missing(&e) => {
                match functions::load_command().query_async::<()>(con).await {
                    Ok(()) => self.cmd.query_async(con).await,
                    // Not allowed to load: the original error, which says what is missing.
                    Err(refused) if is_refused(&refused) => Err(e),
                    Err(other) => Err(other),
                }
            }
            (other, _) => other,
        }
    }
}

fn is_refused(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || err.code() == Some("NOPERM")
}
