//! What `/proc` says about a group of processes: CPU time and resident
//! memory of some processes and all their descendants (sshd does its work
//! in forked children, so they count).

/// `(pid, parent)` of every process now (from each stat line; see proc(5)).
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name.
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, parent))
        })
        .collect()
}

/// `pids` and every process descended from them.
pub(crate) fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let processes = processes();
    let mut counted: Vec<u32> = pids.to_vec();
    let mut index = 0;
    while index < counted.len() {
        let parent = counted[index];
        counted.extend(processes.iter().filter(|p| p.1 == parent).map(|p| p.0));
        index += 1;
    }
    counted.sort_unstable();
    counted.dedup();
    counted
}

/// CPU seconds (user + system) used so far by `pids` and their descendants.
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = with_descendants(pids)
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    // USER_HZ is 100 on every Linux platform alknet targets.
    #[allow(clippy::cast_precision_loss)]
    let seconds = ticks as f64 / 100.0;
    seconds
}

/// Resident memory (KiB) of `pids` and their descendants, summed.
pub(crate) fn rss_kib(pids: &[u32]) -> u64 {
    with_descendants(pids)
        .into_iter()
        .map(process_rss_kib)
        .sum()
}

/// Resident memory (KiB) of one process; 0 once it is gone.
pub(crate) fn process_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// What each of a process's open descriptors is, by number: a path, an
/// anonymous inode, or for a socket its protocol, addresses and TCP state
/// (from the process's `/proc/<pid>/net` tables), so a leak says what
/// leaked. Empty once the process is gone.
pub(crate) fn open_descriptors(pid: u32) -> std::collections::BTreeMap<u32, String> {
    let sockets = socket_table(pid);
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return std::collections::BTreeMap::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy();
            let described = target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| sockets.get(inode).cloned())
                .unwrap_or_else(|| target.into_owned());
            Some((fd, described))
        })
        .collect()
}

/// The sockets of `pid`'s network namespace, by inode: "tcp 127.0.0.1:80 →
/// 127.0.0.1:5000 ESTABLISHED", "udp 127.0.0.1:53", "unix".
fn socket_table(pid: u32) -> std::collections::HashMap<String, String> {
    let mut sockets = std::collections::HashMap::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let protocol = table.trim_end_matches('6');
            let described = if protocol == "tcp" {
                format!(
                    "tcp {} → {} {}",
                    socket_address(local),
                    socket_address(remote),
                    tcp_state(state)
                )
            } else {
                format!("udp {}", socket_address(local))
            };
            sockets.insert((*inode).to_owned(), described);
        }
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(6) {
                let path = line.split_whitespace().nth(7).unwrap_or("");
                sockets.insert(
                    inode.to_owned(),
                    format!("unix {path}").trim_end().to_owned(),
                );
            }
        }
    }
    sockets
}

/// `0100007F:1F90` → `127.0.0.1:8080`; IPv6 addresses are kept in hex
/// (only the port is decoded), which is enough to tell them apart.
fn socket_address(hex: &str) -> String {
    let Some((address, port)) = hex.split_once(':') else {
        return hex.to_owned();
    };
    let port = u16::from_str_radix(port, 16).map_or_else(|_| port.to_owned(), |p| p.to_string());
    match u32::from_str_radix(address, 16) {
        Ok(v4) if address.len() == 8 => {
            format!("{}:{port}", std::net::Ipv4Addr::from(v4.swap_bytes()))
        }
        _ => format!("[{address}]:{port}"),
    }
}

/// The name of a TCP state as `/proc/net/tcp` numbers it (see tcp_states.h).
fn tcp_state(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "?",
    }
}
