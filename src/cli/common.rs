//! What both CLIs share: where a request goes, and time formatting.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::client::{Identity, Target};
use crate::config::{self, Paths};

/// The local daemon, or with `--node NAME` that peer over encrypted TCP (address from
/// `[node.NAME] addr` or name resolution, the cluster secret from this node's node.conf).
pub(super) fn target(paths: &Paths, node: Option<&str>) -> Result<Target> {
    let Some(node) = node else {
        return Ok(Target::Local(paths.lsnr_sock()));
    };
    let (_, conf) = config::load(&paths.node_conf())
        .context("--node needs this node's node.conf for the cluster secret")?;
    let addr = conf.peer_addr(node).ok_or_else(|| {
        if conf.cluster.nodes.iter().any(|n| n == node) {
            anyhow!("cannot resolve node {node:?} (set [node.{node}] addr in node.conf)")
        } else {
            anyhow!(
                "{node:?} is not a member of the cluster (cluster.nodes: {})",
                conf.cluster.nodes.join(" ")
            )
        }
    })?;
    Ok(Target::Peer {
        addr,
        identity: Identity::of(&conf),
    })
}

/// `2026-11-25 15:03:07.123 +01:00`: the local time (`TZ`, else /etc/localtime) with its
/// offset, from milliseconds since the epoch.
pub(super) fn format_ms(ms: u64) -> String {
    format_ms_in(ms, jiff::tz::TimeZone::system())
}

fn format_ms_in(ms: u64, zone: jiff::tz::TimeZone) -> String {
    match i64::try_from(ms).map(jiff::Timestamp::from_millisecond) {
        Ok(Ok(t)) => t
            .to_zoned_datetime(zone)
            .strftime("%Y-%m-%d %H:%M:%S%.3f %:z")
            .to_string(),
        // Past the year 9999: a corrupt record, shown as it is.
        _ => format!("{ms} ms since the epoch"),
    }
}

/// Edits a copy of `path` with $VISUAL/$EDITOR (default vi), then hands the edited text to
/// `apply`, which validates it and writes it in place (atomically). An edit `apply` refuses
/// is left in the copy, whose path the error gives.
pub(super) fn edit_file(path: &Path, apply: impl FnOnce(&str) -> Result<()>) -> Result<()> {
    let original =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let copy = path.with_file_name(format!(".{name}.edit.{}", std::process::id()));
    std::fs::write(&copy, &original).with_context(|| format!("cannot write {}", copy.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&copy)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&copy);
        bail!(
            "the editor exited with {status}; {} left unchanged",
            path.display()
        );
    }
    let edited = std::fs::read_to_string(&copy)?;
    if edited == original {
        let _ = std::fs::remove_file(&copy);
        println!("no change");
        return Ok(());
    }
    if let Err(e) = apply(&edited) {
        bail!(
            "{e:#}\n{} left unchanged; your edit is in {}",
            path.display(),
            copy.display()
        );
    }
    let _ = std::fs::remove_file(&copy);
    println!("{} updated", path.display());
    Ok(())
}

/// An error as the CLIs print it: one line, each cause once, and what to do when a file of
/// the agent's was not ours to read or write.
pub(super) fn report(bin: &str, e: &anyhow::Error) {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if denied {
        eprintln!("{bin}: {e:#} (run as root, or as the user owning the agent's files)");
    } else {
        eprintln!("{bin}: {e:#}");
    }
}

pub(super) fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_local_times_with_their_offset() {
        use jiff::tz::{TimeZone, offset};
        assert_eq!(
            format_ms_in(0, TimeZone::UTC),
            "1970-01-01 00:00:00.000 +00:00"
        );
        assert_eq!(
            format_ms_in(1_764_000_000_123, TimeZone::fixed(offset(-5))),
            "2025-11-24 11:00:00.123 -05:00"
        );
        assert_eq!(
            format_ms_in(u64::MAX, TimeZone::UTC),
            format!("{} ms since the epoch", u64::MAX)
        );
    }
}
