//! Running a resource's command line (`sh -c`) or a program with its arguments, with a
//! timeout that kills its whole process group, and its output captured (bounded).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// None when killed (timeout or signal).
    pub code: Option<i32>,
    pub timed_out: bool,
    /// At most 64 KiB of each, lossily decoded, trailing whitespace trimmed.
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

impl Outcome {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output then standard error, as one text (what a resource's log shows).
    pub(crate) fn output(&self) -> String {
        match (self.stdout.is_empty(), self.stderr.is_empty()) {
            (_, true) => self.stdout.clone(),
            (true, false) => self.stderr.clone(),
            (false, false) => format!("{}\n{}", self.stdout, self.stderr),
        }
    }
}

/// Runs `command_line` with `sh -c`, environment `env` added.
pub(crate) fn run_shell(
    command_line: &str,
    timeout: Duration,
    env: &[(&str, &str)],
) -> std::io::Result<Outcome> {
    run_program("sh", ["-c", command_line], timeout, env)
}

/// Runs `program` with `args` (no shell), environment `env` added.
pub(crate) fn run_program<I, S>(
    program: impl AsRef<std::ffi::OsStr>,
    args: I,
    timeout: Duration,
    env: &[(&str, &str)],
) -> std::io::Result<Outcome>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let start = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // Readers on threads: a chatty command must not block on a full pipe while we wait.
    let out_reader = std::thread::spawn(move || read_bounded(stdout.as_mut()));
    let err_reader = std::thread::spawn(move || read_bounded(stderr.as_mut()));
    let pgid = child.id() as i32;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            // SAFETY: signalling a process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A background process of the command may keep the pipes open: do not wait for it forever.
    let stdout = join_with_deadline(out_reader, Instant::now() + Duration::from_secs(1));
    let stderr = join_with_deadline(err_reader, Instant::now() + Duration::from_secs(1));
    Ok(Outcome {
        code: if timed_out { None } else { status.code() },
        timed_out,
        stdout: stdout.trim_end().to_string(),
        stderr: stderr.trim_end().to_string(),
        duration: start.elapsed(),
    })
}

fn read_bounded<R: Read>(r: Option<&mut R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf.len() < MAX_OUTPUT {
                    let room = MAX_OUTPUT - buf.len();
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn join_with_deadline(h: std::thread::JoinHandle<String>, deadline: Instant) -> String {
    while !h.is_finished() {
        if Instant::now() >= deadline {
            return String::new();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_output_and_timeout() {
        let o = run_shell(
            "echo out; echo err >&2; exit 3",
            Duration::from_secs(5),
            &[],
        )
        .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("out", "err"));
        assert_eq!(o.output(), "out\nerr");
        let o = run_shell("echo $X", Duration::from_secs(5), &[("X", "y")]).unwrap();
        assert!(o.success());
        assert_eq!(o.output(), "y");
        let o = run_program("echo", ["a b", "$X"], Duration::from_secs(5), &[]).unwrap();
        assert_eq!(o.stdout, "a b $X", "no shell between the arguments");
        let o = run_shell("sleep 5", Duration::from_millis(200), &[]).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.code, None);
        assert!(o.duration < Duration::from_secs(3));
    }
}
