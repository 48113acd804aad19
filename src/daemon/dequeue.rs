//! The queued actions run on an empty packet: each file in `<var>/actions/` is one
//! `nodemgr`/`svcmgr` command line (a JSON array of arguments), run in name order and removed
//! once run. Triggers are coalesced: at most one run at a time and at most one more pending,
//! however many empty packets arrive — a trigger costs one atomic swap. A run starts a short
//! settle delay after its trigger, so a burst of empty packets becomes one run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use tokio::sync::watch;

use crate::listener::DequeueTrigger;

/// How long a run waits after its trigger for the rest of a burst.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Dequeue {
    pending: AtomicBool,
    thread: Mutex<Option<Thread>>,
    pub triggers: AtomicU64,
    pub runs: AtomicU64,
    pub actions_run: AtomicU64,
    pub actions_failed: AtomicU64,
}

impl DequeueTrigger for Dequeue {
    fn trigger(&self) {
        self.triggers.fetch_add(1, Ordering::Relaxed);
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Some(t) = self
                .thread
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            t.unpark();
        }
    }
}

/// How a queued action is run: which binaries may be named, and the root to pass them.
pub struct Runner {
    pub actions_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub root: Option<PathBuf>,
}

impl Dequeue {
    /// The `dequeue` thread's body, until `stop` turns true.
    pub fn run(&self, runner: &Runner, stop: watch::Receiver<bool>) -> Result<(), String> {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current());
        while !*stop.borrow() {
            if self.pending.load(Ordering::Acquire) {
                std::thread::sleep(SETTLE);
                self.pending.store(false, Ordering::Release);
                self.runs.fetch_add(1, Ordering::Relaxed);
                let (ok, failed) = runner.run_all();
                self.actions_run.fetch_add(ok, Ordering::Relaxed);
                self.actions_failed.fetch_add(failed, Ordering::Relaxed);
            } else {
                std::thread::park_timeout(Duration::from_millis(200));
            }
        }
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

impl Runner {
    /// Runs every queued action in name order; returns (succeeded, failed).
    pub fn run_all(&self) -> (u64, u64) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.actions_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !is_hidden(p))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, 0),
            Err(e) => {
                tracing::error!(dir = %self.actions_dir.display(), "cannot list queued actions: {e}");
                return (0, 1);
            }
        };
        files.sort();
        let (mut ok, mut failed) = (0, 0);
        for file in files {
            match self.run_one(&file) {
                Ok(()) => ok += 1,
                Err(e) => {
                    failed += 1;
                    tracing::error!(action = %file.display(), "queued action failed: {e}");
                }
            }
            // Removed once run, whatever its outcome: a failing action must not run forever.
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::error!(action = %file.display(), "cannot remove queued action: {e}");
            }
        }
        (ok, failed)
    }

    fn run_one(&self, file: &Path) -> Result<(), String> {
        let text = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
        let args: Vec<String> = serde_json::from_slice(&text)
            .map_err(|e| format!("not a JSON array of strings: {e}"))?;
        let (program, rest) = args.split_first().ok_or("empty command line")?;
        if program != "nodemgr" && program != "svcmgr" {
            return Err(format!(
                "only nodemgr and svcmgr commands are queued, not {program:?}"
            ));
        }
        let exe = self.bin_dir.join(program);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(rest).stdin(std::process::Stdio::null());
        if let Some(root) = &self.root {
            cmd.env("OSVC_ROOT", root);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let code = out.status.code().unwrap_or(-1);
        tracing::info!(
            action = %file.display(),
            command = %args.join(" "),
            code,
            stdout = %String::from_utf8_lossy(&out.stdout).trim(),
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "queued action ran"
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("exit code {code}"))
        }
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Shared handle for the daemon.
pub type DequeueHandle = Arc<Dequeue>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_coalesce_while_nobody_runs() {
        let d = Dequeue::default();
        for _ in 0..1000 {
            d.trigger();
        }
        assert_eq!(d.triggers.load(Ordering::Relaxed), 1000);
        // One pending run, whatever the number of triggers.
        assert!(d.pending.swap(false, Ordering::AcqRel));
        assert!(!d.pending.load(Ordering::Acquire));
    }

    #[test]
    fn refuses_other_programs_and_removes_files() {
        let dir = std::env::temp_dir().join(format!("osvc-dq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("01"), r#"["sh","-c","true"]"#).unwrap();
        std::fs::write(dir.join("02"), "not json").unwrap();
        let r = Runner {
            actions_dir: dir.clone(),
            bin_dir: dir.clone(),
            root: None,
        };
        assert_eq!(r.run_all(), (0, 2));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
