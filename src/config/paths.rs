//! Where the agent keeps its files: `etc` (node.conf, service configs) and `var` (sockets,
//! queued actions, runtime state). `--root DIR` (or `OSVC_ROOT`) puts both under one folder.

use std::path::{Path, PathBuf};

pub const SYSTEM_ETC: &str = "/etc/opensvc";
pub const SYSTEM_VAR: &str = "/var/lib/opensvc";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub etc: PathBuf,
    pub var: PathBuf,
}

impl Paths {
    /// `root` = Some(DIR): DIR/etc and DIR/var; None: the system paths.
    pub fn new(root: Option<&Path>) -> Self {
        match root {
            Some(r) => Paths {
                etc: r.join("etc"),
                var: r.join("var"),
            },
            None => Paths {
                etc: PathBuf::from(SYSTEM_ETC),
                var: PathBuf::from(SYSTEM_VAR),
            },
        }
    }

    pub fn node_conf(&self) -> PathBuf {
        self.etc.join("node.conf")
    }

    /// The local administration socket.
    pub fn lsnr_sock(&self) -> PathBuf {
        self.var.join("lsnr.sock")
    }

    /// Queued `nodemgr`/`svcmgr` command lines, one JSON array per file.
    pub fn actions(&self) -> PathBuf {
        self.var.join("actions")
    }

    pub fn services(&self) -> PathBuf {
        self.var.join("services")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.var.join("osvcd.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_system() {
        let p = Paths::new(Some(Path::new("/tmp/r")));
        assert_eq!(p.node_conf(), Path::new("/tmp/r/etc/node.conf"));
        assert_eq!(p.lsnr_sock(), Path::new("/tmp/r/var/lsnr.sock"));
        assert_eq!(
            Paths::new(None).node_conf(),
            Path::new("/etc/opensvc/node.conf")
        );
    }
}
