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
