//! `cargo xtask bench`: alknet against OpenSSH on loopback, same run, same
//! target, same tools. Prints numbers and ratios; asserts nothing.
//!
//! Options: `--size-mib N` (bulk transfer, default 1024), `--runs N`
//! (throughput runs per tunnel, best counted, and call-protocol runs, the
//! median counted; default 3), `--connections N`
//! (latency samples per tunnel, default 1000), `--wan-mib N` (the
//! long-distance download and upload, default 256), `--wan-only`, `--udp-only`,
//! `--quick` (64 MiB, one run, 100 connections, 16 MiB long-distance,
//! 1000 tunnels, 200 sessions: ~40 s once built, for checking a
//! change), `--tunnels N` and `--sessions N` (the scale rows, default
//! 10 000 and 1000), `--scale-only`, `--json FILE` (every row and
//! ratio, for BENCHMARKS.md and for comparing runs). Then
//! the call protocol: calls per second and latency over one control
//! channel; UDP datagrams per second and loss through `-L …/udp`; and a
//! long-distance link (a delay proxy between client and server).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xtask::BoundedOutput as _;

use super::bench_report::civil_date;
use super::proc_stats::cpu_seconds;
use xtask::{
    AlknetClient, AlknetServer, DelayProxy, HttpTarget, Profile, Result, SshDynamicForward, Sshd,
    UdpDelayProxy, UdpEcho, Workdir, XtaskError, ca_signed_server_cert, call_bench_binary,
    current_user, free_udp_port, iroh_peer_args_at, require_tool, socks5_connect,
};

struct Settings {
    size_mib: u64,
    runs: usize,
    connections: usize,
    wan_mib: u64,
    /// Only the long-distance rows (`--wan-only`).
    wan_only: bool,
    /// Only the UDP rows (`--udp-only`).
    udp_only: bool,
    /// Only the scale rows (`--scale-only`).
    scale_only: bool,
    /// Tunnels held at once in the scale row (`--tunnels N`).
    tunnels: usize,
    /// SSH sessions started at once in the scale row (`--sessions N`).
    sessions: usize,
    /// Where to write every row as JSON (`--json FILE`).
    json: Option<std::path::PathBuf>,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self> {
        let mut settings = Settings {
            size_mib: 1024,
            runs: 3,
            connections: 1000,
            wan_mib: 256,
            wan_only: false,
            udp_only: false,
            scale_only: false,
            tunnels: 10_000,
            sessions: 1000,
            json: None,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--wan-only" {
                settings.wan_only = true;
                continue;
            }
            if flag == "--udp-only" {
                settings.udp_only = true;
                continue;
            }
            if flag == "--scale-only" {
                settings.scale_only = true;
                continue;
            }
            if flag == "--quick" {
                settings.size_mib = 64;
                settings.runs = 1;
                settings.connections = 100;
                settings.wan_mib = 16;
                settings.tunnels = 1000;
                settings.sessions = 200;
                continue;
            }
            if flag == "--json" {
                let path = args
                    .next()
                    .ok_or_else(|| XtaskError::Failed("--json needs a file".into()))?;
                settings.json = Some(path.into());
                continue;
            }
            let value = args
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| XtaskError::Failed(format!("{flag} needs a number")))?;
            match flag.as_str() {
                "--size-mib" => settings.size_mib = value.max(1),
                "--runs" => settings.runs = usize::try_from(value.max(1)).unwrap_or(1),
                "--wan-mib" => settings.wan_mib = value.max(1),
                "--connections" => {
                    settings.connections = usize::try_from(value.max(10)).unwrap_or(10)
                }
                "--tunnels" => settings.tunnels = usize::try_from(value.max(1)).unwrap_or(1),
                "--sessions" => settings.sessions = usize::try_from(value.max(1)).unwrap_or(1),
                other => return Err(XtaskError::Failed(format!("unknown bench option {other}"))),
            }
        }
        Ok(settings)
    }
}

/// Every number a run printed, by name, for `--json`.
#[derive(Debug, Default)]
struct Report {
    rows: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn set(&mut self, key: impl Into<String>, value: f64) {
        // Two decimals are all the noise of a shared machine allows.
        let rounded = (value * 100.0).round() / 100.0;
        self.rows.insert(key.into(), serde_json::json!(rounded));
    }

    fn write(mut self, path: &std::path::Path, settings: &Settings) -> Result<()> {
        self.rows.insert(
            "settings".into(),
            serde_json::json!({
                "size_mib": settings.size_mib,
                "runs": settings.runs,
                "connections": settings.connections,
                "wan_mib": settings.wan_mib,
                "tunnels": settings.tunnels,
                "sessions": settings.sessions,
            }),
        );
        self.rows
            .insert("machine".into(), serde_json::json!(machine()));
        self.rows.insert(
            "date".into(),
            serde_json::json!(civil_date(std::time::SystemTime::now())),
        );
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(self.rows))
            .map_err(|error| XtaskError::Failed(format!("encoding the report: {error}")))?;
        std::fs::write(path, text + "\n")
            .map_err(XtaskError::io(format!("writing {}", path.display())))
    }
}

/// The machine a run happened on: CPU model and count, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: u64 = info
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / (1024 * 1024))
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} × {model}, {memory_gib} GiB, Linux {}",
        kernel.trim()
    )
}

/// A key for a tunnel's name: `OpenSSH aes128-gcm` → `openssh_aes128_gcm`.
fn key(name: &str) -> String {
    let mut key = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if !key.ends_with('_') && !key.is_empty() {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_owned()
}

/// One way of reaching the target through SOCKS5.
struct Tunnel {
    name: &'static str,
    socks: SocketAddr,
    /// The client and server processes (with their children), whose CPU
    /// time is counted.
    pids: Vec<u32>,
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let settings = Settings::parse(args)?;
    for tool in ["curl", "ssh", "sshd", "ssh-keygen"] {
        require_tool(tool)?;
    }
    println!("building the release binary…");
    if settings.scale_only {
        let mut report = Report::default();
        scale(&settings, &mut report)?;
        if let Some(path) = &settings.json {
            report.write(path, &settings)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = Workdir::new()?;
    let target = HttpTarget::start("127.0.0.1:0")?;

    // One server, listening on TCP, TLS and iroh (loopback UDP, no relay).
    let iroh_port = free_udp_port()?;
    let iroh_listen = format!("iroh://127.0.0.1:{iroh_port}");
    let tls = ca_signed_server_cert(&dir)?;
    let (cert, key_file) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let server = AlknetServer::start_listening_with(
        &dir,
        Profile::Release,
        &["127.0.0.1:0", "tls://127.0.0.1:0", &iroh_listen],
        &[
            "--iroh-relay",
            "none",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key_file,
        ],
    )?;
    let tls_server = server
        .listeners
        .iter()
        .find(|listener| listener.starts_with("tls://"))
        .map(|listener| listener.replacen("tls://", "", 1))
        .ok_or_else(|| XtaskError::Failed("the server logged no TLS listener".into()))?;
    let ca = tls.ca.display().to_string();
    let tls_client = AlknetClient::start_to(
        &dir,
        Profile::Release,
        &[
            "--server",
            &tls_server,
            "--transport",
            "tls",
            "--tls-ca",
            &ca,
        ],
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )?;
    let client = AlknetClient::start_with(
        &dir,
        Profile::Release,
        server.port,
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )?;
    let iroh_client = iroh_client(&dir, &server, SocketAddr::from(([127, 0, 0, 1], iroh_port)))?;
    let sshd = Sshd::start(&dir, &dir.join("alknet_user.pub"))?;
    let user = current_user()?;
    // alknet's client against OpenSSH's server, as users of plain sshd run it.
    let client_to_sshd = AlknetClient::start_with(
        &dir,
        Profile::Release,
        sshd.port,
        &server.user_key,
        &["--user", &user],
    )?;
    let ssh_default = SshDynamicForward::start(
        &dir,
        "ssh-default",
        sshd.port,
        &user,
        &server.user_key,
        None,
        &[],
    )?;
    let ssh_gcm = SshDynamicForward::start(
        &dir,
        "ssh-aes128-gcm",
        sshd.port,
        &user,
        &server.user_key,
        None,
        &["-c", "aes128-gcm@openssh.com"],
    )?;

    if settings.udp_only {
        let udp = udp_datagrams(&dir, &server)?;
        println!(
            "\n  UDP through -L …/udp vs direct   {:.2}× datagrams/s",
            udp.tunnel.per_second / udp.direct.per_second
        );
        return Ok(ExitCode::SUCCESS);
    }
    if settings.wan_only {
        long_distance(&dir, &server, &sshd, &user, target.addr(), settings.wan_mib)?;
        return Ok(ExitCode::SUCCESS);
    }
    let tunnels = [
        Tunnel {
            name: "alknet",
            socks: client.socks_addr,
            pids: vec![client.process.pid(), server.process.pid()],
        },
        Tunnel {
            name: "OpenSSH (default cipher)",
            socks: ssh_default.socks_addr,
            pids: vec![ssh_default.process.pid(), sshd.process.pid()],
        },
        Tunnel {
            name: "OpenSSH aes128-gcm",
            socks: ssh_gcm.socks_addr,
            pids: vec![ssh_gcm.process.pid(), sshd.process.pid()],
        },
        Tunnel {
            name: "alknet over iroh (QUIC)",
            socks: iroh_client.socks_addr,
            pids: vec![iroh_client.process.pid(), server.process.pid()],
        },
        Tunnel {
            name: "alknet client → sshd",
            socks: client_to_sshd.socks_addr,
            pids: vec![client_to_sshd.process.pid(), sshd.process.pid()],
        },
        Tunnel {
            name: "alknet over TLS",
            socks: tls_client.socks_addr,
            pids: vec![tls_client.process.pid(), server.process.pid()],
        },
    ];
    let mut report = Report::default();

    let bytes = settings.size_mib * 1024 * 1024;
    println!(
        "\nthroughput: one stream of {} MiB via curl --socks5-hostname, best of {}",
        settings.size_mib, settings.runs
    );
    let direct = best_of(settings.runs, || curl_speed(None, target.addr(), bytes))?;
    println!("  {:<28} {:>9.0} MiB/s", "direct (no tunnel)", direct / MIB);
    report.set("throughput_mib_s.direct", direct / MIB);
    let mut runs = vec![Vec::new(); tunnels.len()];
    let mut cpu = vec![0.0f64; tunnels.len()];
    // Interleave runs, so a noisy moment on a shared machine hits every tunnel alike.
    for _ in 0..settings.runs {
        for ((runs, cpu), tunnel) in runs.iter_mut().zip(cpu.iter_mut()).zip(&tunnels) {
            let before = cpu_seconds(&tunnel.pids);
            runs.push(curl_speed(Some(tunnel.socks), target.addr(), bytes)?);
            *cpu += cpu_seconds(&tunnel.pids) - before;
        }
    }
    #[allow(clippy::cast_precision_loss)] // far below 2^52
    let gib_moved = (bytes as f64 * settings.runs as f64) / (MIB * 1024.0);
    let mut speeds = Vec::new();
    let cpu_per_gib: Vec<f64> = cpu.iter().map(|cpu| cpu / gib_moved).collect();
    for ((runs, cpu), tunnel) in runs.iter().zip(&cpu).zip(&tunnels) {
        let best = runs.iter().copied().fold(0.0, f64::max);
        let all: Vec<String> = runs
            .iter()
            .map(|speed| format!("{:.0}", speed / MIB))
            .collect();
        println!(
            "  {:<28} {:>9.0} MiB/s   CPU {:.2} s/GiB (client+server)   runs: {}",
            tunnel.name,
            best / MIB,
            cpu / gib_moved,
            all.join(", ")
        );
        report.set(format!("throughput_mib_s.{}", key(tunnel.name)), best / MIB);
        report.set(
            format!("cpu_s_per_gib.{}", key(tunnel.name)),
            cpu / gib_moved,
        );
        speeds.push(best);
    }
    println!(
        "\nlatency: SOCKS5 connect to first response byte, {} connections each",
        settings.connections
    );
    // Interleaved one connection at a time, like the throughput runs, but
    // in a shuffled order each round: a tunnel's latency depends on which
    // tunnel ran just before it (whether the CPUs had gone idle, whose
    // caches are warm), and in a fixed order OpenSSH's default cipher
    // always followed alknet and measured 0.41 ms against aes128-gcm's 0.96.
    // The target answering them runs in a process of its own, as a real
    // one would, so its threads do not share this one's.
    let (_latency_target, latency_target) = super::own_process_target(&dir, "http-target")?;
    let mut samples = vec![Vec::with_capacity(settings.connections); tunnels.len()];
    let mut order = TurnOrder::new(tunnels.len());
    for _ in 0..settings.connections {
        for &index in order.next_round() {
            samples[index].push(first_byte_latency(tunnels[index].socks, latency_target)?);
        }
    }
    let mut latencies = Vec::new();
    for (samples, tunnel) in samples.iter_mut().zip(&tunnels) {
        samples.sort();
        let (p50, p99) = (percentile(samples, 50), percentile(samples, 99));
        println!(
            "  {:<28} p50 {:>7.2} ms   p99 {:>7.2} ms",
            tunnel.name,
            ms(p50),
            ms(p99)
        );
        report.set(format!("latency_p50_ms.{}", key(tunnel.name)), ms(p50));
        report.set(format!("latency_p99_ms.{}", key(tunnel.name)), ms(p99));
        latencies.push((p50, p99));
    }

    let dumbpipe =
        super::dumbpipe::speed(&dir, target.addr(), bytes, settings.runs, |at, bytes| {
            curl_speed(None, at, bytes)
        })?;
    if let Some(dumbpipe) = dumbpipe {
        println!("  {:<28} {:>9.0} MiB/s", "dumbpipe", dumbpipe / MIB);
        report.set("throughput_mib_s.dumbpipe", dumbpipe / MIB);
        report.set("ratio.iroh_vs_dumbpipe", speeds[3] / dumbpipe);
    }
    call_protocol(&server, settings.runs, &mut report)?;
    let udp = udp_datagrams(&dir, &server)?;
    report.set("udp_datagrams_s.direct", udp.direct.per_second);
    report.set("udp_datagrams_s.alknet", udp.tunnel.per_second);
    report.set("udp_loss_percent.alknet", udp.tunnel.loss * 100.0);
    let wan = long_distance(&dir, &server, &sshd, &user, target.addr(), settings.wan_mib)?;
    scale(&settings, &mut report)?;
    let duplex = node_duplex(&server, target.addr(), bytes, settings.runs)?;

    let best_openssh = speeds[1].max(speeds[2]);
    report.set("ratio.throughput_vs_default_cipher", speeds[0] / speeds[1]);
    report.set("ratio.throughput_vs_aes128_gcm", speeds[0] / speeds[2]);
    report.set(
        "ratio.cpu_per_gib_vs_aes128_gcm",
        cpu_per_gib[0] / cpu_per_gib[2],
    );
    report.set("ratio.iroh_vs_tcp_throughput", speeds[3] / speeds[0]);
    report.set("ratio.tls_vs_tcp_throughput", speeds[5] / speeds[0]);
    report.set(
        "ratio.latency_p50_vs_best_openssh",
        ms(latencies[0].0) / ms(latencies[1].0.min(latencies[2].0)),
    );
    for row in &wan {
        let rtt = row.rtt_ms;
        for (way, (alknet, openssh)) in [("", row.download), ("upload_", row.upload)] {
            report.set(format!("wan_{way}mib_s.alknet_{rtt}ms"), alknet / MIB);
            report.set(
                format!("wan_{way}mib_s.openssh_aes128_gcm_{rtt}ms"),
                openssh / MIB,
            );
            report.set(
                format!("ratio.wan_{way}{rtt}ms_vs_aes128_gcm"),
                alknet / openssh,
            );
        }
        report.set(
            format!("wan_mib_s.alknet_over_iroh_{rtt}ms"),
            row.iroh_download / MIB,
        );
        report.set(
            format!("ratio.wan_iroh_{rtt}ms_vs_aes128_gcm"),
            row.iroh_download / row.download.1,
        );
    }
    if let Some(duplex) = duplex {
        report.set("throughput_mib_s.node_duplex", duplex / MIB);
        report.set("ratio.node_duplex_vs_socks", duplex / speeds[0]);
    }
    report.set(
        "ratio.udp_vs_direct",
        udp.tunnel.per_second / udp.direct.per_second,
    );
    println!("\nratios alknet / OpenSSH:");
    println!(
        "  throughput vs default cipher   {:.2}×",
        speeds[0] / speeds[1]
    );
    println!(
        "  throughput vs aes128-gcm       {:.2}×   (aim: ≥ 1.3)",
        speeds[0] / speeds[2]
    );
    println!(
        "  CPU per GiB vs aes128-gcm      {:.2}×   (aim: ≤ 0.75)",
        cpu_per_gib[0] / cpu_per_gib[2]
    );
    println!(
        "  throughput vs best OpenSSH     {:.2}×",
        speeds[0] / best_openssh
    );
    println!(
        "  alknet over TLS vs over TCP    {:.2}× throughput   (aim: ≥ 0.95)",
        speeds[5] / speeds[0]
    );
    println!(
        "  alknet over iroh vs over TCP   {:.2}× throughput (aim: ≥ 0.7), {:.2}× / {:.2}× latency p50 / p99",
        speeds[3] / speeds[0],
        ms(latencies[3].0) / ms(latencies[0].0),
        ms(latencies[3].1) / ms(latencies[0].1)
    );
    if let Some(dumbpipe) = dumbpipe {
        println!(
            "  alknet over iroh vs dumbpipe   {:.2}× throughput   (aim: ≥ 1.2)",
            speeds[3] / dumbpipe
        );
    }
    for (index, name) in [(1, "default cipher"), (2, "aes128-gcm")] {
        println!(
            "  latency p50 / p99 vs {name:<15} {:.2}× / {:.2}×   (aim for p50: ≤ 0.9 of the best)",
            ms(latencies[0].0) / ms(latencies[index].0),
            ms(latencies[0].1) / ms(latencies[index].1)
        );
    }
    for row in &wan {
        println!(
            "  {} ms round trip vs aes128-gcm   {:.2}× down, {:.2}× up   (aim: ≥ 8)",
            row.rtt_ms,
            row.download.0 / row.download.1,
            row.upload.0 / row.upload.1
        );
        println!(
            "  {} ms round trip, alknet over iroh vs aes128-gcm over TCP   {:.2}× down",
            row.rtt_ms,
            row.iroh_download / row.download.1
        );
    }
    if let Some(duplex) = duplex {
        println!(
            "  Node connect() Duplex vs the CLI's SOCKS5   {:.2}× throughput   (aim: ≥ 0.8)",
            duplex / speeds[0]
        );
    }
    println!(
        "  UDP through -L …/udp vs direct   {:.2}× datagrams/s, loss {:.2} % vs {:.2} %",
        udp.tunnel.per_second / udp.direct.per_second,
        udp.tunnel.loss * 100.0,
        udp.direct.loss * 100.0
    );
    if let Some(path) = &settings.json {
        report.write(path, &settings)?;
        println!("\nwrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The scale rows (see `scale.rs`): tunnels held at once, and SSH
/// sessions started at once, alknet against OpenSSH.
fn scale(settings: &Settings, report: &mut Report) -> Result<()> {
    println!(
        "\nscale: {} tunnels held through one client and server",
        settings.tunnels
    );
    let tunnels = super::scale::tunnels(settings.tunnels)?;
    for row in &tunnels {
        println!(
            "  {:<28} {:>6} opened in {:>6.2} s   {:>6.1} KiB per tunnel (client + server RSS)",
            row.name, row.opened, row.seconds, row.kib_per_tunnel
        );
        report.set(
            format!("tunnels.{}.opened", key(row.name)),
            row.opened as f64,
        );
        report.set(format!("tunnels.{}.seconds", key(row.name)), row.seconds);
        report.set(
            format!("tunnels.{}.kib_per_tunnel", key(row.name)),
            row.kib_per_tunnel,
        );
    }
    println!(
        "\nscale: {} SSH sessions started at once (key exchange + login)",
        settings.sessions
    );
    let sessions = super::scale::sessions(settings.sessions)?;
    for row in &sessions {
        println!(
            "  {:<28} {:>6} in, {} refused   {:>8.0} sessions/s   p50 {:>7.1} ms",
            row.name, row.sessions, row.failed, row.per_second, row.p50_ms
        );
        report.set(format!("sessions.{}.per_s", key(row.name)), row.per_second);
        report.set(
            format!("sessions.{}.failed", key(row.name)),
            row.failed as f64,
        );
    }
    let (alknet, openssh) = (&tunnels[0], &tunnels[1]);
    let memory = alknet.kib_per_tunnel / openssh.kib_per_tunnel;
    let open_time = alknet.seconds / openssh.seconds;
    let handshakes = sessions[0].per_second / sessions[1].per_second;
    report.set("ratio.memory_per_tunnel_vs_openssh", memory);
    report.set("ratio.time_to_open_tunnels_vs_openssh", open_time);
    report.set("ratio.sessions_per_s_vs_sshd", handshakes);
    println!("  memory per tunnel vs OpenSSH    {memory:.2}×   (aim: ≤ 0.5)");
    println!("  time to open them vs OpenSSH    {open_time:.2}×");
    println!("  sessions per second vs sshd     {handshakes:.2}×   (aim: ≥ 5)");
    Ok(())
}

/// Datagrams echoed per second, and the share lost.
#[derive(Clone, Copy, Debug)]
struct UdpRate {
    per_second: f64,
    loss: f64,
}

#[derive(Debug)]
struct UdpRow {
    direct: UdpRate,
    tunnel: UdpRate,
}

/// Datagrams per second and loss to a UDP echo, directly and through an
/// `-L …/udp` forward of a second client of the same server.
fn udp_datagrams(dir: &Workdir, server: &AlknetServer) -> Result<UdpRow> {
    const COUNT: usize = 20_000;
    const SIZE: usize = 1200;
    let echo = UdpEcho::start();
    let forward = format!("127.0.0.1:0:127.0.0.1:{}/udp", echo.addr().port());
    let client = AlknetClient::start_with(
        dir,
        Profile::Release,
        server.port,
        &server.user_key,
        &["--host-key", &server.fingerprint, "-L", &forward],
    )?;
    let local = client.forward_addr(1)?;
    println!("\nUDP: {COUNT} datagrams of {SIZE} bytes to an echo, 32 in flight");
    let direct = udp_rate(echo.addr(), COUNT, SIZE)?;
    let tunnel = udp_rate(local, COUNT, SIZE)?;
    for (name, rate) in [("direct (no tunnel)", direct), ("alknet -L …/udp", tunnel)] {
        println!(
            "  {name:<28} {:>9.0} datagrams/s   loss {:.2} %",
            rate.per_second,
            rate.loss * 100.0
        );
    }
    Ok(UdpRow { direct, tunnel })
}

/// Sends `count` datagrams of `size` bytes to the echo at `to`, keeping 32
/// unanswered at most; one unanswered for 200 ms counts the window lost.
fn udp_rate(to: SocketAddr, count: usize, size: usize) -> Result<UdpRate> {
    const WINDOW: usize = 32;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(XtaskError::io("binding the UDP bench socket"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(XtaskError::io("setting a UDP read timeout"))?;
    let payload = vec![0x5a; size];
    let mut buffer = vec![0u8; 65_536];
    let (mut sent, mut received, mut in_flight) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    while sent < count || in_flight > 0 {
        while in_flight < WINDOW && sent < count {
            socket
                .send_to(&payload, to)
                .map_err(XtaskError::io("sending a UDP datagram"))?;
            sent += 1;
            in_flight += 1;
        }
        match socket.recv_from(&mut buffer) {
            Ok(_) => {
                received += 1;
                in_flight -= 1;
            }
            Err(_) => in_flight = 0,
        }
    }
    #[allow(clippy::cast_precision_loss)] // far below 2^52
    Ok(UdpRate {
        per_second: received as f64 / started.elapsed().as_secs_f64(),
        loss: 1.0 - received as f64 / sent as f64,
    })
}

/// Bulk download through one Node `connect()` Duplex to the same server
/// (the addon's `bench/duplex.mjs`); best bytes/s, or `None` without node.
fn node_duplex(
    server: &AlknetServer,
    target: SocketAddr,
    bytes: u64,
    runs: usize,
) -> Result<Option<f64>> {
    if require_tool("node").is_err() || require_tool("npm").is_err() {
        println!("\nNode addon: skipped (node and npm are not installed)");
        return Ok(None);
    }
    let addon = super::addon::build(true)?;
    let output = Command::new("node")
        .arg("bench/duplex.mjs")
        .arg(format!("127.0.0.1:{}", server.port))
        .arg(&server.user_key)
        .arg(&server.fingerprint)
        .arg(target.to_string())
        .arg(bytes.to_string())
        .arg(runs.to_string())
        .current_dir(&addon)
        .output()
        .map_err(XtaskError::io("running node bench/duplex.mjs"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let speeds: Vec<f64> = serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()
        .and_then(|value| {
            value["speeds"]
                .as_array()
                .map(|all| all.iter().filter_map(serde_json::Value::as_f64).collect())
        })
        .filter(|speeds: &Vec<f64>| !speeds.is_empty() && output.status.success())
        .ok_or_else(|| {
            XtaskError::Failed(format!(
                "node bench/duplex.mjs failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            ))
        })?;
    let best = speeds.iter().copied().fold(0.0, f64::max);
    let all: Vec<String> = speeds.iter().map(|s| format!("{:.0}", s / MIB)).collect();
    println!(
        "\nNode addon: {} MiB through one connect() Duplex, best of {runs}\n  {:<28} {:>9.0} MiB/s   runs: {}",
        bytes / (1024 * 1024),
        "connect() Duplex",
        best / MIB,
        all.join(", ")
    );
    Ok(Some(best))
}

const MIB: f64 = 1024.0 * 1024.0;

/// A release client of `server`'s iroh endpoint, reaching it at `addr`.
fn iroh_client(dir: &Workdir, server: &AlknetServer, addr: SocketAddr) -> Result<AlknetClient> {
    let endpoint_id = server
        .endpoint_id
        .as_deref()
        .ok_or_else(|| XtaskError::Failed("the server printed no endpoint-id".into()))?;
    let args = iroh_peer_args_at(endpoint_id, addr);
    AlknetClient::start_to(
        dir,
        Profile::Release,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &server.user_key,
        &["--host-key", &server.fingerprint],
    )
}

/// One round trip's long-distance rows: bytes per second through alknet
/// and through OpenSSH aes128-gcm, downloading and uploading, and through
/// alknet over iroh downloading.
struct LongDistance {
    rtt_ms: u64,
    download: (f64, f64),
    upload: (f64, f64),
    iroh_download: f64,
}

/// A download and an upload of `mib` through alknet and through OpenSSH
/// (aes128-gcm) with a delay proxy between client and server, at 50 and
/// 100 ms round trip; and a download through alknet over iroh with a UDP
/// delay relay between them.
fn long_distance(
    dir: &Workdir,
    server: &AlknetServer,
    sshd: &Sshd,
    user: &str,
    target: SocketAddr,
    mib: u64,
) -> Result<Vec<LongDistance>> {
    println!(
        "\nlong-distance link: {mib} MiB down and up through a userspace delay proxy (client ↔ server)"
    );
    let bytes = mib * 1024 * 1024;
    let upload = dir.join("upload.bin");
    write_cached_file(&upload, bytes).map_err(XtaskError::io("making the file to upload"))?;
    // An iroh server of its own, on IPv6 loopback: the client, bound to
    // IPv4, reaches it only through the relay (iroh would otherwise find
    // the direct path). Its own directory: its keys are its own.
    let iroh_dir = Workdir::new()?;
    let iroh_port = free_udp_port()?;
    let iroh_server = AlknetServer::start_listening_with(
        &iroh_dir,
        Profile::Release,
        &[&format!("iroh://[::1]:{iroh_port}")],
        &["--iroh-relay", "none"],
    )?;
    let mut rows = Vec::new();
    for rtt_ms in [50u64, 100] {
        let one_way = Duration::from_millis(rtt_ms / 2);
        let alknet_link =
            DelayProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port)), one_way)?;
        let openssh_link =
            DelayProxy::start(SocketAddr::from(([127, 0, 0, 1], sshd.port)), one_way)?;
        let client = AlknetClient::start_with(
            dir,
            Profile::Release,
            alknet_link.addr().port(),
            &server.user_key,
            &["--host-key", &server.fingerprint],
        )?;
        let ssh = SshDynamicForward::start(
            dir,
            "ssh-aes128-gcm-wan",
            openssh_link.addr().port(),
            user,
            &server.user_key,
            None,
            &["-c", "aes128-gcm@openssh.com"],
        )?;
        let iroh_link = UdpDelayProxy::start(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, iroh_port)),
            one_way,
        )?;
        let iroh_client = iroh_client(&iroh_dir, &iroh_server, iroh_link.addr())?;
        let row = LongDistance {
            rtt_ms,
            download: (
                curl_speed(Some(client.socks_addr), target, bytes)?,
                curl_speed(Some(ssh.socks_addr), target, bytes)?,
            ),
            upload: (
                curl_upload_speed(client.socks_addr, target, &upload, bytes)?,
                curl_upload_speed(ssh.socks_addr, target, &upload, bytes)?,
            ),
            iroh_download: curl_speed(Some(iroh_client.socks_addr), target, bytes)?,
        };
        for (way, (alknet, openssh)) in [("down", row.download), ("up", row.upload)] {
            println!(
                "  {rtt_ms:>3} ms RTT {way:<4}  alknet {:>7.1} MiB/s   OpenSSH aes128-gcm {:>7.1} MiB/s   {:.2}×",
                alknet / MIB,
                openssh / MIB,
                alknet / openssh
            );
        }
        println!(
            "  {rtt_ms:>3} ms RTT down  alknet over iroh {:>7.1} MiB/s   vs OpenSSH aes128-gcm over TCP {:.2}×",
            row.iroh_download / MIB,
            row.iroh_download / row.download.1
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Writes `bytes` of zeros to `path` and flushes them to disk, so every
/// upload reads them from the page cache alike. A sparse file is no cheaper:
/// the first read of a hole allocates and zeroes its pages, which cost curl
/// 0.7 s of CPU per 256 MiB — the first upload measured curl, not the tunnel.
fn write_cached_file(path: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::create(path)?;
    std::io::copy(&mut std::io::repeat(0).take(bytes), &mut file)?;
    file.sync_all()
}

/// Calls over one control channel to the release server: sequential, then
/// 64 in flight (the facade's `call_bench` example does the calling), `runs`
/// times. Each number is the median of the runs: one run takes under a
/// second, and a p99 of ~1000 calls out of 100 000 moved with a neighbour's
/// burst (0.31 and 0.65 ms in two quick runs 20 minutes apart, 0.22–0.30 by
/// hand in between).
fn call_protocol(server: &AlknetServer, runs: usize, report: &mut Report) -> Result<()> {
    let bench = call_bench_binary()?;
    let mut outputs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let output = Command::new(&bench)
            .arg(format!("127.0.0.1:{}", server.port))
            .arg(&server.user_key)
            .arg(&server.fingerprint)
            .arg(current_user()?)
            .bounded_output()
            .map_err(XtaskError::io("running call_bench"))?;
        if !output.status.success() {
            return Err(XtaskError::Failed(format!(
                "call_bench failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| XtaskError::Failed(format!("call_bench printed no JSON: {error}")))?;
        outputs.push(parsed);
    }
    let in_flight = outputs
        .first()
        .map_or(0, |output| output["in_flight"].as_u64().unwrap_or_default());
    println!(
        "\ncall protocol: /services/whoami over one alknet-control:0 channel, median of {runs}"
    );
    for (phase, label) in [
        ("sequential", "sequential".to_owned()),
        ("concurrent", format!("{in_flight} in flight")),
    ] {
        let field = |name: &str| -> Vec<f64> {
            outputs
                .iter()
                .map(|output| output[phase][name].as_f64().unwrap_or(0.0))
                .collect()
        };
        let (rate, p50, p99) = (field("calls_per_s"), field("p50_ms"), field("p99_ms"));
        for (name, values) in [("calls_per_s", &rate), ("p50_ms", &p50), ("p99_ms", &p99)] {
            report.set(format!("calls.{phase}.{name}"), median(values));
        }
        let each: Vec<String> = rate
            .iter()
            .zip(&p99)
            .map(|(rate, p99)| format!("{rate:.0}/s p99 {p99:.3}"))
            .collect();
        println!(
            "  {label:<28} {:>9.0} calls/s   p50 {:>7.3} ms   p99 {:>7.3} ms   runs: {}",
            median(&rate),
            median(&p50),
            median(&p99),
            each.join(", "),
        );
    }
    println!("  (aim at 64 in flight: ≥ 250 000 calls/s, p99 ≤ 0.5 ms)");
    Ok(())
}

/// The middle value (the upper middle of an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The order tunnels take turns in, shuffled afresh each round by a fixed
/// seed, so runs are comparable and no tunnel always follows the same one.
struct TurnOrder {
    order: Vec<usize>,
    rng: fastrand::Rng,
}

impl TurnOrder {
    fn new(count: usize) -> Self {
        Self {
            order: (0..count).collect(),
            rng: fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn next_round(&mut self) -> &[usize] {
        self.rng.shuffle(&mut self.order);
        &self.order
    }
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let index = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn best_of(runs: usize, mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..runs {
        best = best.max(measure()?);
    }
    Ok(best)
}

/// Downloads `bytes` from the target with curl (through `socks` if given)
/// and returns curl's bytes per second.
fn curl_speed(socks: Option<SocketAddr>, target: SocketAddr, bytes: u64) -> Result<f64> {
    let mut command = Command::new("curl");
    command.args(["--write-out", "%{speed_download} %{size_download}"]);
    if let Some(socks) = socks {
        command.arg("--socks5-hostname").arg(socks.to_string());
    }
    command.arg(format!("http://{target}/{bytes}"));
    curl_rate(command, bytes, "download")
}

/// Uploads `file` (`bytes` long) to the target through `socks` with curl
/// and returns curl's bytes per second.
fn curl_upload_speed(
    socks: SocketAddr,
    target: SocketAddr,
    file: &std::path::Path,
    bytes: u64,
) -> Result<f64> {
    let mut command = Command::new("curl");
    command
        .args(["--write-out", "%{speed_upload} %{size_upload}"])
        .arg("--socks5-hostname")
        .arg(socks.to_string())
        .arg("--upload-file")
        .arg(file)
        .arg(format!("http://{target}/upload"));
    curl_rate(command, bytes, "upload")
}

/// Runs a curl `command` whose `--write-out` prints a speed and a size,
/// and returns the speed if the size is `bytes`.
fn curl_rate(mut command: Command, bytes: u64, what: &str) -> Result<f64> {
    command.args([
        "--silent",
        "--show-error",
        "--fail",
        "--output",
        "/dev/null",
    ]);
    let output = command.output().map_err(XtaskError::io("running curl"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let speed = fields.next().and_then(|s| s.parse::<f64>().ok());
    let size = fields.next().and_then(|s| s.parse::<f64>().ok());
    match (output.status.success(), speed, size) {
        #[allow(clippy::cast_precision_loss)] // sizes far below 2^52
        (true, Some(speed), Some(size)) if size == bytes as f64 => Ok(speed),
        _ => Err(XtaskError::Failed(format!(
            "curl {what} failed: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        ))),
    }
}

/// `cargo xtask http-target` (not listed in the help): an [`HttpTarget`]
/// in a process of its own, printed as `listening ADDR`, until killed.
pub(crate) fn http_target() -> Result<ExitCode> {
    let target = HttpTarget::start("127.0.0.1:0")?;
    println!("listening {}", target.addr());
    std::io::stdout()
        .flush()
        .map_err(XtaskError::io("writing stdout"))?;
    loop {
        std::thread::park();
    }
}

/// Times one fresh connection from the SOCKS5 connect to the first byte of
/// the target's response.
fn first_byte_latency(socks: SocketAddr, target: SocketAddr) -> Result<Duration> {
    let start = Instant::now();
    let (reply, mut stream) = socks5_connect(socks, &target.ip().to_string(), target.port())?;
    if reply != 0 {
        return Err(XtaskError::Failed(format!("SOCKS5 reply {reply}")));
    }
    stream
        .write_all(b"GET /1 HTTP/1.0\r\n\r\n")
        .map_err(XtaskError::io("sending the request"))?;
    let mut first = [0u8; 1];
    stream
        .read_exact(&mut first)
        .map_err(XtaskError::io("reading the response"))?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::TurnOrder;

    #[test]
    fn every_round_takes_each_tunnel_once_and_no_tunnel_always_follows_the_same_one() {
        let tunnels = 6;
        let mut order = TurnOrder::new(tunnels);
        let mut followed_by = vec![std::collections::HashSet::new(); tunnels];
        for _ in 0..100 {
            let round = order.next_round().to_vec();
            let mut sorted = round.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..tunnels).collect::<Vec<_>>());
            for pair in round.windows(2) {
                followed_by[pair[0]].insert(pair[1]);
            }
        }
        for (tunnel, next) in followed_by.iter().enumerate() {
            assert_eq!(
                next.len(),
                tunnels - 1,
                "tunnel {tunnel} is followed by {next:?}"
            );
        }
    }
}
