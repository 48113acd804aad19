//! Per-service structured logs: one JSON record per line in `<var>/services/NAME/log`,
//! rotated by size. Written by the daemon and by `svcmgr` (appends of one line are atomic
//! with O_APPEND), read as a backlog and followed by polling.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) const ROTATE_BYTES: u64 = 1 << 20;
pub(crate) const KEEP_ROTATED: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub level: String,
    pub node: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub message: String,
}

pub(crate) fn log_path(services_dir: &Path, svcname: &str) -> PathBuf {
    services_dir.join(svcname).join("log")
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Appends one record, rotating first when the file is over `ROTATE_BYTES`.
pub(crate) fn append(path: &Path, record: &Record) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= ROTATE_BYTES) {
        for i in (1..KEEP_ROTATED).rev() {
            let _ = std::fs::rename(rotated(path, i), rotated(path, i + 1));
        }
        let _ = std::fs::rename(path, rotated(path, 1));
    }
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&line)
}

fn parse_lines(text: &str, out: &mut Vec<Record>) {
    for line in text.lines() {
        // A torn or foreign line is skipped, not fatal.
        if let Ok(r) = serde_json::from_str::<Record>(line) {
            out.push(r);
        }
    }
}

/// The last `n` records, oldest first, reading rotated files as needed. Returns them with the
/// position just after the last one, for `Follower::from`.
pub(crate) fn backlog(path: &Path, n: usize) -> (Vec<Record>, Position) {
    let mut current = Vec::new();
    let mut position = Position::default();
    if let Ok(mut f) = File::open(path) {
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        if let Ok(m) = f.metadata() {
            position = Position {
                inode: m.ino(),
                offset: text.len() as u64,
            };
        }
        parse_lines(&text, &mut current);
    }
    let mut records = current;
    let mut i = 1;
    while records.len() < n && i <= KEEP_ROTATED {
        let Ok(text) = std::fs::read_to_string(rotated(path, i)) else {
            break;
        };
        let mut older = Vec::new();
        parse_lines(&text, &mut older);
        older.extend(records);
        records = older;
        i += 1;
    }
    let skip = records.len().saturating_sub(n);
    (records.split_off(skip), position)
}

/// The end of the current log file: a `Follower` from there reads only what is appended
/// after this call.
pub(crate) fn end(path: &Path) -> Position {
    std::fs::metadata(path)
        .map(|m| Position {
            inode: m.ino(),
            offset: m.len(),
        })
        .unwrap_or_default()
}

/// Where a follower is in the current log file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Reads records appended since the last call.
pub(crate) struct Follower {
    path: PathBuf,
    pos: Position,
    partial: String,
}

impl Follower {
    pub(crate) fn from(path: PathBuf, pos: Position) -> Self {
        Follower {
            path,
            pos,
            partial: String::new(),
        }
    }

    /// New complete records since the last poll (a rotation restarts at the new file's start).
    pub(crate) fn poll(&mut self) -> Vec<Record> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(m) = f.metadata() else {
            return Vec::new();
        };
        if m.ino() != self.pos.inode || m.len() < self.pos.offset {
            self.pos = Position {
                inode: m.ino(),
                offset: 0,
            };
            self.partial.clear();
        }
        if m.len() == self.pos.offset {
            return Vec::new();
        }
        if f.seek(SeekFrom::Start(self.pos.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        self.pos.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = Vec::new();
        if let Some(end) = self.partial.rfind('\n') {
            let complete: String = self.partial.drain(..=end).collect();
            parse_lines(&complete, &mut out);
        }
        out
    }
}

/// A follower of this node's log merged with records other nodes stream in (aggregated
/// logs): each poll returns what arrived, in time order.
pub(crate) struct MergedFollower {
    pub local: Follower,
    pub remote: Option<std::sync::mpsc::Receiver<Vec<Record>>>,
}

impl MergedFollower {
    pub(crate) fn poll(&mut self) -> Vec<Record> {
        let mut out = self.local.poll();
        if let Some(rx) = &self.remote {
            while let Ok(batch) = rx.try_recv() {
                out.extend(batch);
            }
        }
        out.sort_by_key(|r| r.time);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Record {
        Record {
            time: i,
            level: "info".into(),
            node: "n1".into(),
            service: "s".into(),
            resource: None,
            message: format!("m{i}"),
        }
    }

    #[test]
    fn backlog_follow_and_rotation() {
        let dir = std::env::temp_dir().join(format!("osvc-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("s/log");
        for i in 0..5 {
            append(&path, &rec(i)).unwrap();
        }
        let (last, pos) = backlog(&path, 3);
        assert_eq!(
            last.iter().map(|r| r.time).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        let mut f = Follower::from(path.clone(), pos);
        assert!(f.poll().is_empty());
        append(&path, &rec(5)).unwrap();
        assert_eq!(f.poll(), vec![rec(5)]);
        // Rotation: the follower moves to the new file.
        std::fs::rename(&path, rotated(&path, 1)).unwrap();
        append(&path, &rec(6)).unwrap();
        assert_eq!(f.poll(), vec![rec(6)]);
        // The backlog spans the rotated file.
        let (all, _) = backlog(&path, 100);
        assert_eq!(all.len(), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
