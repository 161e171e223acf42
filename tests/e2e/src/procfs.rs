//! What the benchmarks read from `/proc`: a process's memory and the machine's load.

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`); `pid` `None` is this process.
pub fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The 1, 5 and 15 minute load averages as `/proc/loadavg` gives them ("" if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The remote ports of the TCP connections process `pid` holds on 127.0.0.1 (from its fd
/// table and `/proc/<pid>/net/tcp`); empty if the process is gone.
pub fn loopback_peer_ports(pid: u32) -> Vec<u16> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashSet<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st … inode (the tenth field).
            let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
            // 01: ESTABLISHED.
            if *state != "01" || !inodes.contains(*inode) {
                return None;
            }
            let (address, port) = remote.split_once(':')?;
            (address == "0100007F").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

/// How many sockets process `pid` has open (its `/proc/<pid>/fd` entries that are sockets).
pub fn open_sockets(pid: u32) -> Option<usize> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

/// CPU time (user + system, all threads) process `pid` has used, from `/proc/<pid>/stat`
/// (clock ticks of 10 ms; USER_HZ is 100 on Linux).
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line; after the name, the line starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}

/// Runs a benchmark's `section` on the runtime the benches use (two workers, as the machine
/// has two cores) and prints it with the load average before and after.
pub fn print_section<F: std::future::Future<Output = String>>(section: F) {
    use std::fmt::Write as _;
    let load_before = load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut text = runtime.block_on(section);
    let _ = writeln!(
        text,
        "Load average before: {load_before}; after: {}.\n",
        load_average()
    );
    print!("{text}");
}
