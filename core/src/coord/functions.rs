//! The coordination layer's Redis Functions library: every script an agent runs, loaded by the
//! operator with `FUNCTION LOAD` and called by name with `FCALL`.
//!
//! Agents connect as pool users that may not run `EVAL` (an arbitrary script could stall the
//! server for every tenant, `while true do end`), so the only code they can run on the server
//! is this library's. A [`Function`] is declared like a script, `static X: Function =
//! Function::new("maos_…", r"<body>");`, and listed in [`LIBRARY`]; its body sees `KEYS` and
//! `ARGV` as a script's would.
//!
//! Redis runs a function with its caller's ACL, so a function grants no permission its caller
//! lacks: what an agent may write is decided by the pool user's key patterns
//! ([`super::acl`]). Operator-only steps (limits, dispatch, reclaim, trimming, cleanup) are
//! therefore never functions: the library is callable by every pool user, and an ACL cannot
//! tell which function an `FCALL` names.
//!
//! Versioning: the library is named `maos` and carries one more function, `maos_version`,
//! returning a digest of the library's source ([`version`]), so the operator can tell a library
//! of another build from its own and replace it. A function whose arguments change must get a
//! new name, so an agent of the older build fails with "Function not found" rather than run
//! with misread arguments.

use std::fmt::Write as _;
use std::sync::LazyLock;

use redis::{RedisError, Value};

use super::conn::Redis;
use super::error::CoordResult;

/// The library's name in `FUNCTION LIST`.
pub const LIBRARY_NAME: &str = "maos";
/// The function that returns the loaded library's [`version`].
pub const VERSION_FUNCTION: &str = "maos_version";

/// One function of the library: its name and its Lua body (a script's, reading `KEYS`/`ARGV`).
#[derive(Debug)]
pub struct Function {
    name: &'static str,
    body: &'static str,
}

impl Function {
    /// A function called `name` (globally unique on the server: prefix it `maos_`) running
    /// `body`.
    pub const fn new(name: &'static str, body: &'static str) -> Self {
        Self { name, body }
    }

    /// The name `FCALL` takes.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Lua body.
    pub fn body(&self) -> &'static str {
        self.body
    }
}

/// Every function of the library. A function missing here is not loaded: its calls fail with
/// "Function not found" (a test calls each of them).
pub(crate) static LIBRARY: &[&Function] = &[
    &super::budget::RESERVE,
    &super::budget::SETTLE,
    &super::events::PUBLISH,
    &super::journal::APPEND,
    &super::mailbox::SEND,
    &super::mailbox::SEND_ONCE,
    &super::model_errors::REPORT,
    &super::model_errors::CLEAR,
    &super::tool_errors::REPORT,
    &super::tool_errors::CLEAR,
    &super::queue::ENSURE_GROUP,
    &super::queue::ACK,
    &super::queue::HEARTBEAT,
    &super::queue::RECLAIM,
    &super::queue::FORGET,
    &super::ratelimit::ACQUIRE,
    &super::ratelimit::REFUND,
    &super::results::RECORD,
    &super::state::GET,
    &super::state::PUT,
    &super::state::CAS,
    &super::state::DELETE,
];

/// The library's functions without the version function, in a stable order.
fn functions_source() -> String {
    let mut source = String::new();
    for function in LIBRARY {
        // `writeln!` into a String cannot fail.
        let _ = writeln!(
            source,
            "redis.register_function{{function_name='{}', callback=function(KEYS, ARGV)\n{}\nend}}",
            function.name, function.body
        );
    }
    source
}

/// A digest of the library's functions (FNV-1a, 64 bits, hex): equal for equal sources, so
/// two builds with the same functions agree and any change to one is visible.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let digest = functions_source()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("{digest:016x}")
    });
    &VERSION
}

/// The source `FUNCTION LOAD` takes: the shebang, the functions, and `maos_version`.
pub fn library_source() -> &'static str {
    static SOURCE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "#!lua name={LIBRARY_NAME}\n{}redis.register_function{{function_name='{VERSION_FUNCTION}', callback=function() return '{}' end, flags={{'no-writes'}}}}\n",
            functions_source(),
            version()
        )
    });
    &SOURCE
}

/// Whether `err` says the function called is not loaded on that server (restarted empty,
/// flushed, a new master, or the library never loaded).
pub(crate) fn is_function_missing(err: &RedisError) -> bool {
    err.code() == Some("ERR")
        && err
            .detail()
            .is_some_and(|d| d.starts_with("Function not found"))
}

/// `FUNCTION LOAD REPLACE` of the library, as a command.
pub(crate) fn load_command() -> redis::Cmd {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(library_source());
    cmd
}

/// What [`ensure_loaded`] found and did on the masters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Masters that already had this version.
    pub current: usize,
    /// Masters that had no library and got it.
    pub loaded: usize,
    /// Masters whose library was of another version, and what that version answered; they
    /// got this one if [`ensure_loaded`] was told to replace other versions.
    pub other_versions: Vec<String>,
}

/// Makes sure every master (the server, on a standalone Redis) has the library: asks each one
/// for `maos_version` and loads the library where it is missing, and where it is of another
/// build if `replace_other_versions` (an operator at start: the newest build started wins; its
/// periodic check leaves another build's library alone, so two builds side by side during a
/// rollout do not replace each other's every round). Cheap when nothing is to do: one read per
/// master. Replicas get the library by replication. `redis` must be connected as a user that
/// may run `FUNCTION LOAD` (the operator's).
pub async fn ensure_loaded(redis: &Redis, replace_other_versions: bool) -> CoordResult<LoadReport> {
    const OP: &str = "load function library";
    let mut probe = redis::cmd("FCALL");
    probe.arg(VERSION_FUNCTION).arg(0);
    let load = load_command();
    let outcomes = redis
        .on_every_master(
            OP,
            &probe,
            |found| match found {
                Ok(Value::BulkString(v)) if v.as_slice() == version().as_bytes() => (None, false),
                Err(e) if is_function_missing(e) => (Some(None), true),
                // Another build's `maos_version`, or a library of that name without one.
                Ok(other) => (Some(Some(format!("{other:?}"))), replace_other_versions),
                Err(e) => (Some(Some(e.to_string())), replace_other_versions),
            },
            &load,
        )
        .await?;
    let mut report = LoadReport::default();
    for outcome in outcomes {
        match outcome {
            None => report.current += 1,
            Some(None) => report.loaded += 1,
            Some(Some(other)) => report.other_versions.push(other),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_every_function_once_with_the_maos_prefix() {
        let mut names: Vec<&str> = LIBRARY.iter().map(|f| f.name()).collect();
        names.push(VERSION_FUNCTION);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate function names");
        for name in names {
            assert!(name.starts_with("maos_"), "{name}");
            assert!(
                library_source().contains(&format!("function_name='{name}'")),
                "{name}"
            );
        }
    }

    #[test]
    fn library_source_starts_with_the_shebang_and_carries_its_version() {
        let source = library_source();
        assert!(source.starts_with("#!lua name=maos\n"));
        assert!(source.contains(&format!("return '{}'", version())));
        assert_eq!(version().len(), 16);
    }

    #[test]
    fn function_not_found_is_recognised_by_its_text() {
        let missing =
            redis::make_extension_error("ERR".to_owned(), Some("Function not found".to_owned()));
        assert!(is_function_missing(&missing));
        let other = redis::make_extension_error("ERR".to_owned(), Some("syntax".to_owned()));
        assert!(!is_function_missing(&other));
    }
}
