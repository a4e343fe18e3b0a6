//! `cargo xtask bench-report [JSON] [MARKDOWN]`: writes the tables of
//! `BENCHMARKS.md` from the report `cargo xtask bench --json` wrote
//! (default `bench/latest.json` into `BENCHMARKS.md`). Everything from the
//! file's `## Notes on this run` heading on is written by people and kept.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::Value;

use xtask::{Result, XtaskError};

/// Where the hand-written part of `BENCHMARKS.md` starts.
const NOTES_HEADING: &str = "## Notes on this run";

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let json = Path::new(args.first().map_or("bench/latest.json", String::as_str));
    let markdown = Path::new(args.get(1).map_or("BENCHMARKS.md", String::as_str));
    let text = std::fs::read_to_string(json)
        .map_err(XtaskError::io(format!("reading {}", json.display())))?;
    let report: Value = serde_json::from_str(&text)
        .map_err(|error| XtaskError::Failed(format!("{} is no report: {error}", json.display())))?;
    let date = report["date"].as_str().map_or_else(
        || {
            std::fs::metadata(json)
                .and_then(|meta| meta.modified())
                .map_or_else(|_| civil_date(SystemTime::now()), civil_date)
        },
        str::to_owned,
    );
    let notes = std::fs::read_to_string(markdown)
        .ok()
        .and_then(|old| old.find(NOTES_HEADING).map(|at| old[at..].to_owned()))
        .unwrap_or_default();
    let tables = Tables::new(&report).render(&date, json)?;
    std::fs::write(markdown, tables + &notes)
        .map_err(XtaskError::io(format!("writing {}", markdown.display())))?;
    println!("wrote {} from {}", markdown.display(), json.display());
    Ok(ExitCode::SUCCESS)
}

/// The report's numbers, looked up by key; a missing one is an error
/// naming it, so a renamed row cannot silently print a zero.
struct Tables<'a> {
    report: &'a Value,
}

impl<'a> Tables<'a> {
    fn new(report: &'a Value) -> Self {
        Self { report }
    }

    fn get(&self, key: &str) -> Result<f64> {
        self.report[key]
            .as_f64()
            .ok_or_else(|| XtaskError::Failed(format!("the report has no {key}")))
    }

    /// `key` with `decimals` decimals.
    fn num(&self, key: &str, decimals: usize) -> Result<String> {
        Ok(format!("{:.decimals$}", self.get(key)?))
    }

    /// A whole number with spaced thousands, as the prose writes them.
    fn count(&self, key: &str) -> Result<String> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counts
        Ok(grouped(self.get(key)?.round() as u64))
    }

    fn render(&self, date: &str, json: &Path) -> Result<String> {
        let mut out = String::new();
        let settings = &self.report["settings"];
        let _ = write!(
            out,
            "# Benchmarks\n\nThe latest full run of\n\n```sh\ncargo xtask bench --json {json}\ncargo xtask bench-report {json}\n```\n\n\
             on {machine}, {date} (release build; loopback; every ratio is\n\
             alknet against OpenSSH measured in the same run; the machine is shared, so\n\
             expect ±15 % between runs — the runs of each row are in the log the\n\
             bench prints). The raw numbers are in [{json}]({json}).\n\n",
            json = json.display(),
            machine = self.report["machine"]
                .as_str()
                .unwrap_or("an unnamed machine"),
        );
        let _ = write!(
            out,
            "## Bulk and latency\n\nOne {} MiB curl download through each tunnel's SOCKS5 port (best of {}), CPU\n\
             of client + server per GiB, and SOCKS5 connect → first response byte over\n\
             {} connections to an HTTP target in a process of its own. Direct (no tunnel):\n\
             {} MiB/s.\n\n\
             | tunnel | MiB/s | CPU s/GiB | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n",
            settings["size_mib"],
            settings["runs"],
            settings["connections"],
            self.num("throughput_mib_s.direct", 0)?
        );
        for (name, key) in [
            ("alknet (TCP)", "alknet"),
            ("alknet over TLS", "alknet_over_tls"),
            ("alknet over iroh (QUIC)", "alknet_over_iroh_quic"),
            ("alknet client → sshd", "alknet_client_sshd"),
            ("OpenSSH, default cipher", "openssh_default_cipher"),
            ("OpenSSH, aes128-gcm", "openssh_aes128_gcm"),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                self.num(&format!("throughput_mib_s.{key}"), 0)?,
                self.num(&format!("cpu_s_per_gib.{key}"), 2)?,
                self.num(&format!("latency_p50_ms.{key}"), 2)?,
                self.num(&format!("latency_p99_ms.{key}"), 2)?,
            );
        }
        if self.report.get("throughput_mib_s.dumbpipe").is_some() {
            let _ = writeln!(
                out,
                "| n0's dumbpipe (raw iroh QUIC, no SSH) | {} | | | |",
                self.num("throughput_mib_s.dumbpipe", 0)?
            );
        }
        self.ratios(&mut out)?;
        self.scale(&mut out)?;
        let _ = write!(
            out,
            "\n## Call protocol\n\n`/services/whoami` over one `alknet-control:0` channel: sequential\n\
             {} calls/s (p50 {} ms, p99 {} ms); 64 in flight {} calls/s\n\
             (p50 {} ms, p99 {} ms); each the median of the runs. Aim: ≥ 250 000\n\
             calls/s, p99 ≤ 0.5 ms.\n\n\
             ## UDP\n\n20 000 datagrams of 1200 bytes to a UDP echo, 32 in flight: direct\n\
             {}/s, through `-L …/udp` {}/s ({}×), loss {} %.\n\n",
            self.count("calls.sequential.calls_per_s")?,
            self.num("calls.sequential.p50_ms", 2)?,
            self.num("calls.sequential.p99_ms", 2)?,
            self.count("calls.concurrent.calls_per_s")?,
            self.num("calls.concurrent.p50_ms", 2)?,
            self.num("calls.concurrent.p99_ms", 2)?,
            self.count("udp_datagrams_s.direct")?,
            self.count("udp_datagrams_s.alknet")?,
            self.num("ratio.udp_vs_direct", 2)?,
            self.num("udp_loss_percent.alknet", 2)?,
        );
        Ok(out)
    }

    fn ratios(&self, out: &mut String) -> Result<()> {
        let cpu =
            self.get("cpu_s_per_gib.alknet")? / self.get("cpu_s_per_gib.openssh_aes128_gcm")?;
        let _ = write!(
            out,
            "\n| ratio | value | aim (issue 16) |\n|---|---:|---:|\n\
             | throughput vs OpenSSH default cipher | {}× | |\n\
             | throughput vs OpenSSH aes128-gcm | {}× | ≥ 1.3× |\n\
             | CPU per GiB vs OpenSSH aes128-gcm | {cpu:.2}× | ≤ 0.75× |\n\
             | latency p50 vs best OpenSSH | {}× | ≤ 0.9× |\n\
             | TLS vs TCP throughput | {}× | ≥ 0.95× |\n\
             | iroh vs TCP throughput | {}× | ≥ 0.7× |\n",
            self.num("ratio.throughput_vs_default_cipher", 2)?,
            self.num("ratio.throughput_vs_aes128_gcm", 2)?,
            self.num("ratio.latency_p50_vs_best_openssh", 2)?,
            self.num("ratio.tls_vs_tcp_throughput", 2)?,
            self.num("ratio.iroh_vs_tcp_throughput", 2)?,
        );
        if self.report.get("ratio.iroh_vs_dumbpipe").is_some() {
            let _ = writeln!(
                out,
                "| iroh vs dumbpipe throughput | {}× | ≥ 1.2× |",
                self.num("ratio.iroh_vs_dumbpipe", 2)?
            );
        }
        for rtt in [50, 100] {
            for (way, label) in [("", "download"), ("upload_", "upload")] {
                let ratio = format!("ratio.wan_{way}{rtt}ms_vs_aes128_gcm");
                if self.report.get(&ratio).is_none() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "| long distance, {rtt} ms RTT, {label}, vs aes128-gcm | {}× ({} vs {} MiB/s) | ≥ 8× |",
                    self.num(&ratio, 2)?,
                    self.num(&format!("wan_{way}mib_s.alknet_{rtt}ms"), 1)?,
                    self.num(&format!("wan_{way}mib_s.openssh_aes128_gcm_{rtt}ms"), 1)?,
                );
            }
            let iroh = format!("ratio.wan_iroh_{rtt}ms_vs_aes128_gcm");
            if self.report.get(&iroh).is_some() {
                let _ = writeln!(
                    out,
                    "| long distance, {rtt} ms RTT, download, alknet over iroh vs aes128-gcm over TCP | {}× ({} vs {} MiB/s) | |",
                    self.num(&iroh, 2)?,
                    self.num(&format!("wan_mib_s.alknet_over_iroh_{rtt}ms"), 1)?,
                    self.num(&format!("wan_mib_s.openssh_aes128_gcm_{rtt}ms"), 1)?,
                );
            }
        }
        if self.report.get("ratio.node_duplex_vs_socks").is_some() {
            let _ = writeln!(
                out,
                "| Node `connect()` Duplex vs the CLI's SOCKS5 | {}× ({} MiB/s) | ≥ 0.8× |",
                self.num("ratio.node_duplex_vs_socks", 2)?,
                self.num("throughput_mib_s.node_duplex", 0)?
            );
        }
        Ok(())
    }

    fn scale(&self, out: &mut String) -> Result<()> {
        let settings = &self.report["settings"];
        let tunnels = grouped(settings["tunnels"].as_u64().unwrap_or(0));
        let sessions = grouped(settings["sessions"].as_u64().unwrap_or(0));
        let _ = write!(
            out,
            "\n## Scale\n\n{tunnels} SOCKS5 tunnels opened (16 threads) through one client and one\n\
             server to a target that greets each with a byte, and held; memory is the\n\
             growth of client + server resident memory (sshd's forked children\n\
             included) divided by the tunnels. Then {sessions} SSH sessions started at once\n\
             (key exchange and public-key login; the facade's `session_bench` example),\n\
             with both servers' start-up limits raised.\n\n\
             | | alknet | OpenSSH (aes128-gcm) | ratio | aim |\n|---|---:|---:|---:|---:|\n\
             | {tunnels} tunnels opened in | {} s | {} s | {}× | |\n\
             | memory per tunnel | {} KiB | {} KiB | {}× | ≤ 0.5× |\n\
             | {sessions} sessions at once | {} /s | {} /s | {}× | ≥ 5× |\n",
            self.num("tunnels.alknet.seconds", 2)?,
            self.num("tunnels.openssh_aes128_gcm.seconds", 2)?,
            self.num("ratio.time_to_open_tunnels_vs_openssh", 2)?,
            self.num("tunnels.alknet.kib_per_tunnel", 1)?,
            self.num("tunnels.openssh_aes128_gcm.kib_per_tunnel", 1)?,
            self.num("ratio.memory_per_tunnel_vs_openssh", 2)?,
            self.num("sessions.alknet_serve.per_s", 0)?,
            self.num("sessions.openssh_sshd.per_s", 0)?,
            self.num("ratio.sessions_per_s_vs_sshd", 1)?,
        );
        Ok(())
    }
}

/// The UTC day of `time` as `YYYY-MM-DD` (the proleptic Gregorian
/// calendar, from days since 1970 by the usual era arithmetic).
pub(crate) fn civil_date(time: std::time::SystemTime) -> String {
    let seconds = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = seconds / 86_400 + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `n` with a space between each group of three digits: 10 000.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_row_is_named_not_printed_as_zero() {
        let report = serde_json::json!({"throughput_mib_s.direct": 5000.0});
        let error = Tables::new(&report)
            .render("2026-12-01", Path::new("bench/latest.json"))
            .unwrap_err();
        assert!(error.to_string().contains("the report has no"), "{error}");
    }

    #[test]
    fn dates_are_utc_days() {
        let day =
            |seconds| civil_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_709_164_800), "2024-02-29");
        assert_eq!(day(1_796_169_540), "2026-12-01");
    }

    #[test]
    fn counts_get_thin_thousands() {
        let report = serde_json::json!({"a": 1_234_567.4, "b": 999.0});
        let tables = Tables::new(&report);
        assert_eq!(tables.count("a").unwrap(), "1 234 567");
        assert_eq!(tables.count("b").unwrap(), "999");
    }
}
