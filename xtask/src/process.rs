//! Child processes with their output in files, stopped by PID.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, XtaskError};

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() > limit {
            return Err(XtaskError::Timeout {
                what: what.to_owned(),
                seconds: limit.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long [`BoundedOutput::bounded_output`] lets a program run.
pub const OUTPUT_LIMIT: Duration = Duration::from_secs(120);

/// `Command::output`, but bounded in time: a program that has not exited
/// after [`OUTPUT_LIMIT`] is killed and the call fails, so a regression
/// that makes a command hang fails its test instead of stalling CI.
pub trait BoundedOutput {
    /// Runs the command to completion (at most [`OUTPUT_LIMIT`]) and
    /// collects its exit status and output. Its standard input is empty.
    fn bounded_output(&mut self) -> std::io::Result<Output> {
        self.bounded_output_with_stdin(Stdio::null())
    }

    /// [`bounded_output`](Self::bounded_output) with `stdin` as its
    /// standard input (such as a file).
    fn bounded_output_with_stdin(&mut self, stdin: Stdio) -> std::io::Result<Output>;
}

impl BoundedOutput for Command {
    fn bounded_output_with_stdin(&mut self, stdin: Stdio) -> std::io::Result<Output> {
        let mut child = self
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Drain both pipes on their own threads so neither can fill up.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > OUTPUT_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{self:?} did not exit within {OUTPUT_LIMIT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

/// A running child process. Its stdout and stderr go to files (a full pipe
/// can never block it); dropping it kills the process by PID and reaps it.
#[derive(Debug)]
pub struct Spawned {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Spawned {
    /// Starts `command`, capturing its output into `<dir>/<name>.{out,err}`.
    pub fn start(name: &str, dir: &Path, mut command: Command) -> Result<Self> {
        // Several processes of one name in one directory each get their own files.
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    name.to_owned()
                } else {
                    format!("{name}-{n}")
                }
            })
            .find(|candidate| !dir.join(format!("{candidate}.err")).exists())
            .unwrap_or_else(|| name.to_owned());
        let name = name.as_str();
        let stdout_path = dir.join(format!("{name}.out"));
        let stderr_path = dir.join(format!("{name}.err"));
        let stdout = File::create(&stdout_path).map_err(XtaskError::io(format!(
            "creating {}",
            stdout_path.display()
        )))?;
        let stderr = File::create(&stderr_path).map_err(XtaskError::io(format!(
            "creating {}",
            stderr_path.display()
        )))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(XtaskError::io(format!("starting {name} ({command:?})")))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process wrote to stderr (its log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until a line of stderr contains `needle`, and returns that line.
    /// Fails early if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<String> {
        self.wait_for_line(needle, limit, Self::stderr)
    }

    /// Waits until a line of stdout contains `needle`, and returns that line.
    pub fn wait_for_stdout(&mut self, needle: &str, limit: Duration) -> Result<String> {
        self.wait_for_line(needle, limit, Self::stdout)
    }

    fn wait_for_line(
        &mut self,
        needle: &str,
        limit: Duration,
        read: fn(&Self) -> String,
    ) -> Result<String> {
        let what = format!("{} to print {needle:?}", self.name);
        let mut exited = None;
        let found = wait_until(&what, limit, || {
            if let Some(line) = read(self).lines().find(|line| line.contains(needle)) {
                return Some(Some(line.to_owned()));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return Some(None);
            }
            None
        });
        match found {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(XtaskError::Failed(format!(
                "{} exited ({}) before printing {needle:?}; its log:\n{}",
                self.name,
                exited.map(|s| s.to_string()).unwrap_or_default(),
                self.stderr()
            ))),
            Err(timeout) => Err(XtaskError::Failed(format!(
                "{timeout}; its log:\n{}",
                self.stderr()
            ))),
        }
    }

    /// Waits for the process to exit on its own, for at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let what = format!("{} to exit", self.name);
        wait_until(&what, limit, || self.child.try_wait().ok().flatten())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .map_err(XtaskError::io(format!("killing {}", self.name)))?;
        self.child
            .wait()
            .map_err(XtaskError::io(format!("reaping {}", self.name)))?;
        Ok(())
    }

    /// Sends SIGSTOP (by PID): the process freezes, its sockets stay open.
    pub fn freeze(&self) -> Result<()> {
        signal(self.pid(), "STOP")
    }

    /// Sends SIGHUP (by PID): "re-read your configuration".
    pub fn hangup(&self) -> Result<()> {
        signal(self.pid(), "HUP")
    }

    /// Sends SIGCONT (by PID) to a frozen process.
    pub fn thaw(&self) -> Result<()> {
        signal(self.pid(), "CONT")
    }

    /// Sends SIGTERM (by PID) and waits for the exit, for at most `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        signal(self.pid(), "TERM")?;
        self.wait_exit(limit)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1), so no unsafe FFI is needed.
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map_err(XtaskError::io("running kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(XtaskError::Failed(format!("kill -{name} {pid} failed")))
    }
}
