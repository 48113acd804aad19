//! The daemon's log on stderr, wherever stderr goes: a terminal, `osvcd.log` (`daemon start`)
//! or the journal (systemd). `[log] format` picks text or one JSON object per line.

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber (`RUST_LOG` filters, default `info`). Text: colours only on
/// a terminal, local times with their offset. JSON: `timestamp` (UTC, RFC 3339), `level`,
/// `message`, the event's fields and `target`, one object per line. Under systemd (stderr is
/// the journal stream) no timestamps of our own, the journal stamps every line, and each line
/// starts with its syslog priority (`<3>` error ... `<7>` debug), which journald strips and
/// keeps as the entry's priority.
pub(super) fn init(log_format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    // Each arm is a subscriber of its own type: installed where it is built.
    let _ = match (log_format, journal) {
        (LogFormat::Text, false) => builder.with_timer(LocalTime).try_init(),
        (LogFormat::Text, true) => builder
            .event_format(SyslogPriority(format().without_time()))
            .try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Json, true) => builder
            .json()
            .event_format(SyslogPriority(
                format().json().flatten_event(true).without_time(),
            ))
            .try_init(),
    };
}

fn format() -> format::Format {
    format::Format::default().with_ansi(false)
}

/// systemd sets `JOURNAL_STREAM` to `DEVICE:INODE` of the stream it connected to stderr. A
/// process that inherited the variable but writes elsewhere (`daemon start` run from a unit,
/// writing `osvcd.log`) compares it with what its stderr is (the sd-daemon convention).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The sd-daemon prefix journald reads a line's priority from.
fn syslog_priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Another event format, its lines prefixed with their syslog priority.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// `2026-11-25T15:03:07.123456+01:00`: the local time (`TZ`, else /etc/localtime) with its
/// offset, so that a line reads as the node's clock and still compares across zones.
struct LocalTime;

impl FormatTime for LocalTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(
            w,
            "{}",
            jiff::ZonedDateTime::now().strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")
        )
    }
}
