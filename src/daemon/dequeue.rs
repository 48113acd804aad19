//! The queued actions run on an empty packet: each file in `<var>/actions/` is one
//! `nodemgr`/`svcmgr` command line (a JSON array of arguments), run in name order, each within
//! `[dequeue] timeout`. A file whose action ran is removed; one that cannot be read or parsed,
//! or whose action failed or timed out, is moved to `<var>/actions/failed/` with a
//! `<name>.err` beside it saying why, and the queue goes on. Triggers are coalesced: at most
//! one run at a time and at most one more pending, however many empty packets arrive — a
//! trigger costs one atomic swap. A run starts a short settle delay after its trigger, so a
//! burst of empty packets becomes one run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::Dequeue;

/// How long a run waits after its trigger for the rest of a burst.
const SETTLE: Duration = Duration::from_millis(50);

/// How often a running action is looked at, for its end or its deadline.
const POLL: Duration = Duration::from_millis(20);
/// Output kept of each stream of an action, for its log line.
const MAX_OUTPUT: usize = 16 * 1024;

/// How a queued action is run: which binaries may be named, and the root to pass them.
pub(crate) struct Runner {
    pub actions_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub root: Option<PathBuf>,
}

/// The `dequeue` thread's body, until `stop` turns true.
pub(crate) fn run(dq: &Dequeue, runner: &Runner, stop: &watch::Receiver<bool>) {
    *crate::locks::lock(&dq.thread) = Some(std::thread::current());
    while !*stop.borrow() {
        if dq.pending.load(Ordering::Acquire) {
            std::thread::sleep(SETTLE);
            dq.pending.store(false, Ordering::Release);
            dq.runs.fetch_add(1, Ordering::Relaxed);
            let timeout = Duration::from_millis(dq.timeout_ms.load(Ordering::Relaxed));
            let r = runner.run_all(timeout, || *stop.borrow());
            dq.actions_run.fetch_add(r.ok, Ordering::Relaxed);
            dq.actions_failed.fetch_add(r.failed, Ordering::Relaxed);
            dq.actions_timed_out
                .fetch_add(r.timed_out, Ordering::Relaxed);
        } else {
            std::thread::park_timeout(Duration::from_millis(200));
        }
    }
    *crate::locks::lock(&dq.thread) = None;
}

/// What one run of the queue did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunSummary {
    pub ok: u64,
    /// Set aside in `failed/` (timed out ones included).
    pub failed: u64,
    pub timed_out: u64,
}

/// Why a queued action did not succeed.
#[derive(Debug, thiserror::Error)]
enum ActionError {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("not a JSON array of strings: {0}")]
    Parse(serde_json::Error),
    #[error("empty command line")]
    Empty,
    #[error("only nodemgr and svcmgr commands are queued, not {0:?}")]
    Program(String),
    #[error("cannot run {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("exit code {0}")]
    Exit(i32),
    #[error("timed out after {0:?}: its process group was killed")]
    TimedOut(Duration),
}

impl Runner {
    /// Where the files of actions that did not succeed are kept, each with a `.err` beside.
    pub(crate) fn failed_dir(&self) -> PathBuf {
        self.actions_dir.join("failed")
    }

    /// Runs every queued action in name order, each within `timeout`, until `stopping` says
    /// the daemon stops: the actions not started yet stay queued for the next run, and the
    /// stop waits at most for the one running.
    pub(crate) fn run_all(&self, timeout: Duration, stopping: impl Fn() -> bool) -> RunSummary {
        let mut summary = RunSummary::default();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.actions_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !is_hidden(p))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return summary,
            Err(e) => {
                tracing::error!(dir = %self.actions_dir.display(), "cannot list queued actions: {e}");
                summary.failed += 1;
                return summary;
            }
        };
        files.sort();
        for file in files {
            if stopping() {
                break;
            }
            match self.run_one(&file, timeout) {
                Ok(()) => {
                    summary.ok += 1;
                    if let Err(e) = std::fs::remove_file(&file) {
                        tracing::error!(action = %file.display(), "cannot remove queued action: {e}");
                    }
                }
                Err(e) => {
                    summary.failed += 1;
                    if matches!(e, ActionError::TimedOut(_)) {
                        summary.timed_out += 1;
                    }
                    let kept = self.set_aside(&file, &e.to_string());
                    tracing::error!(
                        action = %file.display(),
                        kept = %kept.as_deref().map_or_else(|| "nowhere".into(), |p| p.display().to_string()),
                        "queued action failed: {e}"
                    );
                }
            }
        }
        summary
    }

    /// Moves `file` to `failed/` with a `.err` file saying `why`, so that it neither runs
    /// again nor is lost. Returns where it went.
    fn set_aside(&self, file: &Path, why: &str) -> Option<PathBuf> {
        let dir = self.failed_dir();
        let name = file.file_name()?.to_string_lossy().into_owned();
        let result = std::fs::create_dir_all(&dir).and_then(|()| {
            // An earlier failure of the same name is kept too.
            let mut dest = dir.join(&name);
            if dest.exists() {
                dest = dir.join(format!("{name}.{}", crate::clock::now_ms()));
            }
            let mut err = dest.clone().into_os_string();
            err.push(".err");
            std::fs::write(&err, format!("{why}\n"))?;
            std::fs::rename(file, &dest)?;
            Ok(dest)
        });
        match result {
            Ok(dest) => Some(dest),
            Err(e) => {
                // It must not run again on every trigger: removed, its content logged.
                let content = std::fs::read(file).unwrap_or_default();
                tracing::error!(
                    action = %file.display(),
                    content = %String::from_utf8_lossy(&content),
                    "cannot move the failed action to {}: {e}; removing it",
                    dir.display()
                );
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    fn run_one(&self, file: &Path, timeout: Duration) -> Result<(), ActionError> {
        let text = std::fs::read(file).map_err(ActionError::Read)?;
        let args: Vec<String> = serde_json::from_slice(&text).map_err(ActionError::Parse)?;
        let (program, rest) = args.split_first().ok_or(ActionError::Empty)?;
        if program != "nodemgr" && program != "svcmgr" {
            return Err(ActionError::Program(program.clone()));
        }
        let exe = self.bin_dir.join(program);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: at the deadline the action is killed with whatever it
        // started.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        if let Some(root) = &self.root {
            cmd.env("OSVC_ROOT", root);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| ActionError::Spawn(exe.clone(), e))?;
        let output = collect_output(&mut child);
        let status = wait_within(&mut child, timeout);
        let (stdout, stderr) = output.take(Duration::from_secs(1));
        let command = args.join(" ");
        let Some(status) = status else {
            tracing::warn!(
                action = %file.display(),
                command = %command,
                pid = child.id(),
                timeout_ms = timeout.as_millis() as u64,
                stdout = %stdout.trim(),
                stderr = %stderr.trim(),
                "queued action timed out; its process group was killed"
            );
            return Err(ActionError::TimedOut(timeout));
        };
        let code = status.code().unwrap_or(-1);
        tracing::info!(
            action = %file.display(),
            command = %command,
            code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            stdout = %stdout.trim(),
            stderr = %stderr.trim(),
            "queued action ran"
        );
        if status.success() {
            Ok(())
        } else {
            Err(ActionError::Exit(code))
        }
    }
}

/// Waits for `child` until `timeout`; past it, kills its process group and reaps it: None.
fn wait_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Cannot be waited for: treated as hung, so it is killed below.
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the process group the child leads (process_group(0)); no memory
        // is involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The output of an action, read by two threads so that neither pipe fills and stalls it.
struct Output(mpsc::Receiver<(bool, String)>);

fn collect_output(child: &mut Child) -> Output {
    let (tx, rx) = mpsc::channel();
    let streams: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (
            true,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (is_stdout, stream) in streams {
        let Some(mut stream) = stream else { continue };
        let tx = tx.clone();
        let _ = std::thread::Builder::new()
            .name("dequeue.out".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                // Read to the end (a full pipe would block the action), keep the beginning.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                let _ = tx.send((is_stdout, String::from_utf8_lossy(&kept).into_owned()));
            });
    }
    Output(rx)
}

impl Output {
    /// (stdout, stderr) once both streams ended, or what came within `grace` after the
    /// action ended (a process that left its group may still hold a pipe open).
    fn take(self, grace: Duration) -> (String, String) {
        let deadline = Instant::now() + grace;
        let (mut out, mut err) = (String::new(), String::new());
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok((true, s)) => out = s,
                Ok((false, s)) => err = s,
                Err(_) => break,
            }
        }
        (out, err)
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("osvc-dq-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Bad files are set aside with the reason, not deleted, and the queue goes on.
    #[test]
    fn bad_actions_are_set_aside_with_the_reason() {
        let dir = scratch("aside");
        std::fs::write(dir.join("01"), r#"["sh","-c","true"]"#).unwrap();
        std::fs::write(dir.join("02"), "not json").unwrap();
        let r = Runner {
            actions_dir: dir.clone(),
            bin_dir: dir.clone(),
            root: None,
        };
        let s = r.run_all(Duration::from_secs(5), || false);
        assert_eq!((s.ok, s.failed, s.timed_out), (0, 2, 0));
        let failed = r.failed_dir();
        assert_eq!(
            std::fs::read_to_string(failed.join("01")).unwrap(),
            r#"["sh","-c","true"]"#
        );
        assert!(
            std::fs::read_to_string(failed.join("01.err"))
                .unwrap()
                .contains("only nodemgr and svcmgr")
        );
        assert_eq!(
            std::fs::read_to_string(failed.join("02")).unwrap(),
            "not json"
        );
        assert!(
            std::fs::read_to_string(failed.join("02.err"))
                .unwrap()
                .contains("not a JSON array")
        );
        // Only the failed/ directory is left in the queue.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stopping daemon starts no more actions: they stay queued.
    #[test]
    fn a_stop_leaves_the_rest_queued() {
        let dir = scratch("stop");
        std::fs::write(dir.join("01"), "not json").unwrap();
        let r = Runner {
            actions_dir: dir.clone(),
            bin_dir: dir.clone(),
            root: None,
        };
        assert_eq!(
            r.run_all(Duration::from_secs(1), || true),
            RunSummary::default()
        );
        assert!(dir.join("01").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A hung action and what it started are killed at the deadline; the next one runs.
    #[test]
    fn a_hung_action_is_killed_at_the_timeout() {
        let dir = scratch("hung");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let marker = dir.join("child.pid");
        // A "nodemgr" that starts a grandchild and hangs; a "svcmgr" that succeeds.
        let script = format!(
            "#!/bin/sh\nsleep 30 &\necho $! > {}\nsleep 30\n",
            marker.display()
        );
        for (name, text) in [
            ("nodemgr", script.as_str()),
            ("svcmgr", "#!/bin/sh\nexit 0\n"),
        ] {
            let p = bin.join(name);
            std::fs::write(&p, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.join("01"), r#"["nodemgr","hang"]"#).unwrap();
        std::fs::write(dir.join("02"), r#"["svcmgr","ok"]"#).unwrap();
        let r = Runner {
            actions_dir: dir.clone(),
            bin_dir: bin,
            root: None,
        };
        let t = Instant::now();
        let s = r.run_all(Duration::from_millis(300), || false);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!((s.ok, s.failed, s.timed_out), (1, 1, 1));
        assert!(
            std::fs::read_to_string(r.failed_dir().join("01.err"))
                .unwrap()
                .contains("timed out")
        );
        // The grandchild went with its group.
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie nobody reaped yet.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        let t = Instant::now();
        while alive() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "grandchild {pid} still alive");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
