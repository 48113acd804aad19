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

/// `daemon status` for a terminal.
pub(super) fn status_table(d: &Value) -> String {
    let mut s = String::new();
    let str_of = |v: &Value| match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let nodes: Vec<String> = d["cluster"]["nodes"]
        .as_array()
        .map(|a| a.iter().map(str_of).collect())
        .unwrap_or_default();
    s += &format!(
        "node      {}   cluster {} (nodes: {})   pid {}   up {}s\n",
        str_of(&d["nodename"]),
        str_of(&d["cluster"]["name"]),
        nodes.join(" "),
        str_of(&d["pid"]),
        str_of(&d["uptime_s"]),
    );
    s += &format!(
        "keyring   primary {}   alternate {}\n",
        str_of(&d["keyring"]["primary"]),
        str_of(&d["keyring"]["alternate"]),
    );
    let l = &d["listener"];
    let c = &l["counters"];
    s += &format!(
        "listener  {} on {} ({} workers, {} shards)\n",
        str_of(&l["backend"]),
        str_of(&l["addr"]),
        str_of(&l["threads"]),
        str_of(&d["shards"]),
    );
    // Every counter of the gate's table, in its order, then the connections'.
    let mut line = String::from("         ");
    for (name, _) in crate::guard::GateStats::COUNTERS {
        line += &format!(" {name} {}", str_of(&c[*name]));
    }
    line += &format!(" invalid {}", str_of(&c["invalid_total"]));
    s += &line;
    s += "\n         ";
    for name in [
        "tcp_accepted",
        "tcp_refused",
        "tcp_open",
        "tcp_evicted",
        "tcp_closed_length",
    ] {
        s += &format!(" {name} {}", str_of(&c[name]));
    }
    s += "\n";
    s += "threads\n";
    if let Some(t) = d["threads"].as_object() {
        for (name, v) in t {
            s += &format!(
                "  {:<10} {:<10} restarts {}{}\n",
                name,
                str_of(&v["state"]),
                str_of(&v["restarts"]),
                v["last_error"]
                    .as_str()
                    .map(|e| format!("  last error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    s += &format!(
        "node monitor  {} ({})\n",
        str_of(&d["monitor"]["local_expect"]),
        str_of(&d["monitor"]["status"]),
    );
    if let Some(svcs) = d["services"].as_object().filter(|m| !m.is_empty()) {
        s += "services\n";
        for (name, v) in svcs {
            let m = &v["monitor"];
            let restarts: u64 = m["restarts"]
                .as_object()
                .map(|r| r.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            s += &format!(
                "  {:<16} {:<6} monitor {:<14} expect {:<8} restarts {}\n",
                name,
                str_of(&v["avail"]),
                str_of(&m["status"]),
                str_of(&m["local_expect"]),
                restarts,
            );
        }
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
    if let Some(p) = d["peers"].as_object().filter(|p| !p.is_empty()) {
        s += "peers\n";
        for (name, v) in p {
            let age = v["age_ms"].as_u64().unwrap_or(0);
            s += &format!(
                "  {:<16} {:<12} last heartbeat {:.1}s ago from {}\n",
                name,
                str_of(&v["status"]),
                age as f64 / 1000.0,
                str_of(&v["addr"]),
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
