//! `maos-agent`: a Claude agent that claims subtasks from its pool's queue and works them.
//!
//! Not built yet: the agent loop arrives with the agent-runner issue. Until then the binary
//! refuses to start rather than pretend to work.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "maos-agent {}: the agent loop is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
