//! Output formatting: JSON as the wire shows it to scripts (`{"data": {...}, "status": 0}`,
//! with ", " and ": " separators), and tables for people.

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;

/// serde_json's compact output with a space after ',' and ':'.
struct Spaced;

impl Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

pub(super) fn json_line<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    if value.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A command's one-line answer: the line for a person, `{"data": "LINE", "status": 0}` for a
/// script (as the daemon's answers are).
pub(super) fn say(format: super::nodemgr::Format, line: &str) {
    match format {
        super::nodemgr::Format::Table => println!("{line}"),
        super::nodemgr::Format::Json => {
            println!(
                "{}",
                json_line(&serde_json::json!({"data": line, "status": 0}))
            )
        }
    }
}

/// Rows of `name  value`, the values aligned in one column.
pub(super) fn aligned<K: AsRef<str>, V: AsRef<str>>(rows: &[(K, V)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.as_ref().len())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$}  {}\n", k.as_ref(), v.as_ref()))
        .collect()
}

/// Any answer for a person: an object as aligned `key  value` rows (nested objects as
/// `key.sub`, lists joined by spaces, null as `-`), a string as it is.
pub(super) fn value_table(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(" "),
            other => other.to_string(),
        }
    }
    fn rows(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    rows(&key, v, out);
                }
            }
            Value::Object(_) => out.push((prefix.to_string(), "-".into())),
            other => out.push((prefix.to_string(), scalar(other))),
        }
    }
    match v {
        Value::Object(_) => {
            let mut out = Vec::new();
            rows("", v, &mut out);
            aligned(&out)
        }
        other => format!("{}\n", scalar(other)),
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A heartbeat's age, short: `0.4s`, `12m05s`, `3h20m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// How wide the header of `daemon status` is kept.
const WIDTH: usize = 100;
const MARGIN: usize = 10;

/// A header line: `label` in the margin, then `items` joined by `sep`, wrapped under the
/// margin before `WIDTH`.
fn header(label: &str, items: &[String], sep: &str) -> String {
    let mut out = format!("{label:<MARGIN$}");
    let mut col = MARGIN;
    for (i, item) in items.iter().enumerate() {
        let gap = if i == 0 { "" } else { sep };
        if i > 0 && col + gap.len() + item.len() > WIDTH {
            out += sep.trim_end();
            out += &format!("\n{:MARGIN$}", "");
            col = MARGIN;
        } else {
            out += gap;
            col += gap.len();
        }
        out += item;
        col += item.len();
    }
    out + "\n"
}

/// A section of `daemon status`: its name, then a header and a row per item, each column as
/// wide as its widest cell (the last one left ragged).
fn table<const N: usize>(label: &str, head: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = head.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l += &format!(" {cell}");
            } else {
                l += &format!(" {cell:<w$} ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = format!("{label}\n");
    out += &line(head.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The metric table's headline counters, named as in the metrics without `osvc_` and
/// `_total`.
fn headline_counters(d: &Value) -> Vec<String> {
    use crate::state::metrics::{Shape, table, value_in};
    table()
        .filter(|m| m.headline && matches!(m.shape, Shape::Single))
        .filter_map(|m| {
            let v = value_in(d, &m)?;
            let name = m.name.map_or(m.key, |n| {
                let n = n.strip_prefix("osvc_").unwrap_or(n);
                n.strip_suffix("_total").unwrap_or(n)
            });
            Some(format!("{name} {}", str_of(v)))
        })
        .collect()
}

/// `daemon status` for a terminal: a short header (this node, its threads, the headline
/// counters, members by state), then one line per member, then services and the blacklist.
pub(super) fn status_table(d: &Value) -> String {
    let mut s = String::new();
    s += &header(
        "node",
        &[
            str_of(&d["nodename"]),
            format!("cluster {}", str_of(&d["cluster"]["name"])),
            format!("pid {}", str_of(&d["pid"])),
            d["uptime_s"]
                .as_u64()
                .map_or_else(|| "up -".into(), |s| format!("up {}", age(s * 1000))),
            format!(
                "monitor {} ({})",
                str_of(&d["monitor"]["local_expect"]),
                str_of(&d["monitor"]["status"]),
            ),
        ],
        "   ",
    );
    let l = &d["listener"];
    s += &header(
        "listener",
        &[
            format!("{} on {}", str_of(&l["backend"]), str_of(&l["addr"])),
            format!("{} workers", str_of(&l["threads"])),
            format!("{} shards", str_of(&d["shards"])),
        ],
        ", ",
    );
    if let Some(reason) = l["backend_reason"].as_str() {
        s += &header("backend", &[reason.to_string()], "");
    }
    let q = &d["quorum"];
    let quorum = if q["enabled"] == true {
        format!(
            "quorum {}/{} votes{}",
            str_of(&q["votes"]),
            str_of(&q["total"]),
            if q["has_quorum"] == true {
                ""
            } else {
                " (lost)"
            }
        )
    } else {
        "quorum off".into()
    };
    s += &header(
        "keyring",
        &[
            format!("primary {}", str_of(&d["keyring"]["primary"])),
            format!("alternate {}", str_of(&d["keyring"]["alternate"])),
            quorum,
        ],
        "   ",
    );
    if let Some(t) = d["threads"].as_object() {
        let mut errors = String::new();
        let items: Vec<String> = t
            .iter()
            .map(|(name, v)| {
                if let Some(e) = v["last_error"].as_str() {
                    match v["last_error_ms"].as_u64() {
                        Some(ms) => {
                            errors +=
                                &format!("  {name}: {e} (at {})\n", super::common::format_ms(ms))
                        }
                        None => errors += &format!("  {name}: {e}\n"),
                    }
                }
                match v["restarts"].as_u64().unwrap_or(0) {
                    0 => format!("{name} {}", str_of(&v["state"])),
                    n => format!("{name} {} ({n} restarts)", str_of(&v["state"])),
                }
            })
            .collect();
        s += &header("threads", &items, ", ");
        s += &errors;
    }
    s += &header("counters", &headline_counters(d), "  ");
    if d["members"].as_object().is_some_and(|m| m.is_empty()) {
        s += "members   none but this node\n";
    }
    if let Some(members) = d["members"].as_object().filter(|m| !m.is_empty()) {
        let by_state: Vec<String> = crate::state::members::MemberState::ALL
            .iter()
            .map(|state| {
                let state = state.as_str();
                format!("{state} {}", str_of(&d["member_states"][state]))
            })
            .collect();
        s += &header("members", &by_state, ", ");
        let name_w = members.keys().map(String::len).max().unwrap_or(0).max(6);
        let addr_w = members
            .values()
            .map(|m| str_of(&m["addr"]).len())
            .max()
            .unwrap_or(0)
            .max(7);
        s += &format!(
            "  {:<name_w$}  {:<11}  {:<addr_w$}  {:>9}  {:>8}\n",
            "MEMBER", "STATE", "ADDRESS", "LAST BEAT", "BEATS"
        );
        for (name, m) in members {
            s += &format!(
                "  {:<name_w$}  {:<11}  {:<addr_w$}  {:>9}  {:>8}\n",
                name,
                str_of(&m["state"]),
                str_of(&m["addr"]),
                m["age_ms"].as_u64().map_or("-".into(), age),
                str_of(&m["beats"]),
            );
        }
    }
    if let Some(svcs) = d["services"].as_object().filter(|m| !m.is_empty()) {
        let rows: Vec<[String; 6]> = svcs
            .iter()
            .map(|(name, v)| {
                let m = &v["monitor"];
                let restarts: u64 = m["restarts"]
                    .as_object()
                    .map(|r| r.values().filter_map(Value::as_u64).sum())
                    .unwrap_or(0);
                // An ha service: who runs it or should, and why this node does what it does.
                let ha = match (&v["ha"]["leader"], v["ha"]["reason"].as_str()) {
                    (Value::Null, None) => "-".to_string(),
                    (leader, None) => format!("leader {}", str_of(leader)),
                    (leader, Some(why)) => format!("leader {}: {why}", str_of(leader)),
                };
                [
                    name.clone(),
                    str_of(&v["avail"]),
                    str_of(&m["status"]),
                    str_of(&m["local_expect"]),
                    restarts.to_string(),
                    ha,
                ]
            })
            .collect();
        s += &table(
            "services",
            ["SERVICE", "AVAIL", "MONITOR", "EXPECT", "RESTARTS", "HA"],
            &rows,
        );
    }
    if let Some(a) = d["actions"].as_object().filter(|a| !a.is_empty()) {
        s += "actions running\n";
        for (id, v) in a {
            s += &format!(
                "  {id}  {} {}\n",
                str_of(&v["service"]),
                str_of(&v["action"])
            );
        }
    }
    if let Some(b) = d["blacklist"].as_object().filter(|b| !b.is_empty()) {
        s += "blacklist\n";
        for (name, n) in b {
            let banned = n.as_u64() >= Some(u64::from(crate::guard::BAN_THRESHOLD));
            s += &format!(
                "  {:<16} {}{}\n",
                name,
                n,
                if banned { " (banned)" } else { "" }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_json_like_the_documentation() {
        let v = serde_json::json!({"status": 0, "data": {"node1": 1, "node2": 5}});
        assert_eq!(
            json_line(&v),
            r#"{"data": {"node1": 1, "node2": 5}, "status": 0}"#
        );
        assert_eq!(json_line(&serde_json::json!([1, 2])), "[1, 2]");
    }

    #[test]
    fn one_aligned_line_per_member() {
        let d = serde_json::json!({
            "nodename": "n1",
            "listener": {"counters": {"received": 7, "invalid_total": 1}},
            "threads": {
                "hb.tx": {"state": "running", "restarts": 2, "last_error": "boom"},
                "metrics": {"state": "idle", "restarts": 0, "last_error": "bind", "last_error_ms": 0},
            },
            "member_states": {"up": 1, "never seen": 1},
            "members": {
                "n2": {"state": "up", "addr": "127.0.0.2:1214", "age_ms": 400, "beats": 12},
                "node-three": {"state": "never seen", "addr": null, "age_ms": null, "beats": 0},
            },
        });
        let text = status_table(&d);
        assert!(text.contains("received 7"), "{text}");
        assert!(text.contains("invalid_total 1"), "{text}");
        assert!(text.contains("hb.tx running (2 restarts)"), "{text}");
        assert!(text.lines().all(|l| l.len() <= WIDTH), "{text}");
        assert!(
            text.contains("members   up 1, maintenance -, stale -, never seen 1"),
            "{text}"
        );
        assert!(text.contains("  hb.tx: boom\n"), "{text}");
        assert!(text.contains("metrics idle"), "{text}");
        assert!(
            text.contains("  metrics: bind (at 19"),
            "when it happened: {text}"
        );
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("MEMBER"))
            .take(3)
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[1].starts_with("  n2          up "), "{text}");
        assert!(rows[2].contains("never seen"), "{text}");
        assert!(rows[1].ends_with("0.4s        12"), "{text}");
        let widths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "aligned: {text}");
        let wrapped = header("threads", &["a".repeat(60), "b".repeat(60)], ", ");
        assert_eq!(
            wrapped,
            format!(
                "threads   {},\n          {}\n",
                "a".repeat(60),
                "b".repeat(60)
            )
        );
        assert_eq!(age(125_000), "2m05s");
        assert_eq!(age(7_500_000), "2h05m");
    }

    #[test]
    fn services_in_aligned_columns_with_their_ha_leader() {
        let d = serde_json::json!({"services": {
            "a-long-name": {"avail": "up", "monitor": {"status": "idle", "local_expect": "started",
                "restarts": {"app#1": 1, "app#2": 2}}},
            "ha1": {"avail": "down", "ha": {"leader": "n2", "reason": "n2 runs it"},
                "monitor": {"status": "idle", "local_expect": "unset"}},
        }});
        let text = status_table(&d);
        let rows: Vec<&str> = text.lines().skip_while(|l| *l != "services").collect();
        assert_eq!(
            rows[1..],
            [
                "  SERVICE      AVAIL  MONITOR  EXPECT   RESTARTS  HA",
                "  a-long-name  up     idle     started  3         -",
                "  ha1          down   idle     unset    0         leader n2: n2 runs it",
            ],
            "{text}"
        );
    }

    #[test]
    fn objects_as_aligned_rows() {
        let v = serde_json::json!({"status": "idle", "local_expect": "frozen",
            "restarts": {"app#1": 2}, "nodes": ["a", "b"], "none": null, "empty": {}});
        assert_eq!(
            value_table(&v),
            "empty           -\nlocal_expect    frozen\nnodes           a b\nnone            -\n\
             restarts.app#1  2\nstatus          idle\n"
        );
        assert_eq!(value_table(&serde_json::json!("done")), "done\n");
    }
}
