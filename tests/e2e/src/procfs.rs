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
