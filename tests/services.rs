//! Services with a real daemon: resources are small shell scripts acting on flag files.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A daemon whose monitor looks every 300 ms.
fn daemon() -> Node {
    Node::start(Opts {
        extra: "[monitor]\ninterval = 300ms\n",
        ..Default::default()
    })
}

/// A service with one resource up while `<root>/NAME.flag` exists.
fn service(n: &Node, name: &str, restart: u32, start_delay: &str) -> std::path::PathBuf {
    n.flag_service(
        name,
        "nodes = n1",
        start_delay,
        &format!("restart = {restart}\ntimeout = 10\n"),
    )
}

fn monitor(n: &Node, svc: &str) -> Value {
    n.json(&["daemon", "status"]); // keeps the daemon's log in the failure output
    let out = n.svcmgr(svc, &["print", "monitor", "--format", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["data"].clone()
}

fn restarts(n: &Node, svc: &str) -> u64 {
    monitor(n, svc)["restarts"]["app#1"].as_u64().unwrap_or(0)
}

#[test]
fn killed_resource_is_started_once_then_retried_restart_times_then_start_failed_and_clear_retries()
{
    let n = daemon();
    let flag = service(&n, "web", 2, "");
    n.svcmgr("web", &["start"]);
    assert!(flag.exists());
    assert_eq!(monitor(&n, "web")["local_expect"], "started");
    // The first attempt, then `restart = 2` retries.
    for i in 1..=3 {
        std::fs::remove_file(&flag).unwrap();
        wait_for("a restart", Duration::from_secs(10), || {
            (flag.exists() && restarts(&n, "web") == i).then_some(())
        });
    }
    std::fs::remove_file(&flag).unwrap();
    wait_for("start failed", Duration::from_secs(10), || {
        (monitor(&n, "web")["status"] == "start failed").then_some(())
    });
    // It stops trying.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!flag.exists());
    assert_eq!(restarts(&n, "web"), 3);
    let logs = n.svcmgr("web", &["logs", "--backlog", "100"]);
    assert!(logs.contains("start attempt 3/3"), "{logs}");
    assert!(logs.contains("start failed"), "{logs}");
    // clear resets it and the monitor tries again.
    n.svcmgr("web", &["clear"]);
    wait_for("restarted after clear", Duration::from_secs(10), || {
        (flag.exists() && restarts(&n, "web") == 1).then_some(())
    });
    assert_eq!(monitor(&n, "web")["status"], "idle");
}

#[test]
fn frozen_node_runs_no_restart() {
    let n = daemon();
    let flag = service(&n, "db", 3, "");
    n.svcmgr("db", &["start"]);
    n.nodemgr(&["freeze"]);
    assert_eq!(n.status()["monitor"]["local_expect"], "frozen");
    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!flag.exists(), "no restart while frozen");
    assert_eq!(restarts(&n, "db"), 0);
    assert_eq!(n.status()["services"]["db"]["avail"], "down");
    n.nodemgr(&["thaw"]);
    wait_for("restart after thaw", Duration::from_secs(10), || {
        flag.exists().then_some(())
    });
}

#[test]
fn sync_and_async_service_actions() {
    let n = daemon();
    let flag = service(&n, "app", 0, "sleep 1; ");
    // Sync: answers with the exit code and output when the action ends.
    let r = n.raw(r#"{"action": "service_action", "options": {"svcname": "app", "command": ["start"], "sync": true}}"#);
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["data"]["code"], 0);
    assert!(flag.exists());
    let r = n.raw(r#"{"action": "service_action", "options": {"svcname": "app", "command": ["stop"], "sync": true}}"#);
    assert_eq!(r["data"]["code"], 0);
    assert!(!flag.exists());
    // Async: answers at once with an id that daemon status shows until the action ends.
    let t = Instant::now();
    let r = n.raw(r#"{"action": "service_action", "options": {"svcname": "app", "command": ["start"], "sync": false}}"#);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "answered before the 1 s start ended"
    );
    let id = r["data"]["id"].as_str().unwrap().to_string();
    assert!(n.status()["actions"].get(&id).is_some(), "in flight: {id}");
    wait_for("the async action to end", Duration::from_secs(10), || {
        n.status()["actions"].get(&id).is_none().then_some(())
    });
    assert!(flag.exists());
    assert_eq!(monitor(&n, "app")["local_expect"], "started");
    // Through the CLI too, and a failing action reports its exit code.
    n.svcmgr("app", &["stop"]);
    assert!(!flag.exists());
}

#[test]
fn logs_backlog_and_follow() {
    let n = daemon();
    service(&n, "lg", 0, "");
    n.svcmgr("lg", &["start"]);
    n.svcmgr("lg", &["stop"]);
    let all = n.svcmgr("lg", &["logs", "--backlog", "1000", "--format", "json"]);
    let total = all.lines().count();
    assert!(total >= 6, "{all}");
    let last2 = n.svcmgr("lg", &["logs", "--backlog", "2", "--format", "json"]);
    let lines: Vec<&str> = last2.lines().collect();
    assert_eq!(lines, all.lines().skip(total - 2).collect::<Vec<_>>());
    let rec: Value = serde_json::from_str(lines[1]).unwrap();
    for field in ["time", "level", "node", "service", "message"] {
        assert!(rec.get(field).is_some(), "{field} in {rec}");
    }
    // A follower sees a record written after it started following, within a second.
    let mut child = Command::new(SVCMGR)
        .arg("--root")
        .arg(&n.root)
        .args([
            "-s",
            "lg",
            "logs",
            "--follow",
            "--backlog",
            "0",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let written = Instant::now();
    n.svcmgr("lg", &["clear"]);
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a followed record");
    let latency = written.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("clear"), "{line}");
    assert!(
        latency < Duration::from_secs(1),
        "followed record after {latency:?}"
    );
}

#[test]
fn get_service_config_is_the_file() {
    let n = daemon();
    service(&n, "cfg", 1, "");
    let file = std::fs::read_to_string(n.root.join("etc/cfg.conf")).unwrap();
    let r = n.raw(r#"{"action": "get_service_config", "options": {"svcname": "cfg"}}"#);
    assert_eq!(r["data"].as_str().unwrap(), file);
    assert_eq!(n.svcmgr("cfg", &["print", "config"]), file);
}

#[test]
fn bad_inputs_get_clear_errors() {
    let n = daemon();
    service(&n, "ok", 0, "");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"action": "get_service_config", "options": {"svcname": "nope"}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "clear", "options": {"svcname": "nope"}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "get_service_monitor", "options": {"svcname": "nope"}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "set_service_monitor", "options": {"svcname": "nope", "status": "idle"}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "service_logs", "options": {"svcname": "nope"}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "service_action", "options": {"svcname": "nope", "command": ["start"]}}"#,
            "unknown service nope",
        ),
        (
            r#"{"action": "set_service_monitor", "options": {"svcname": "ok", "status": "sleepy"}}"#,
            "\"status\": invalid value \"sleepy\"",
        ),
        (
            r#"{"action": "set_service_monitor", "options": {"svcname": "ok", "colour": "red"}}"#,
            "unknown option \"colour\"",
        ),
        (
            r#"{"action": "set_service_monitor", "options": {"svcname": "ok"}}"#,
            "give at least one of",
        ),
        (
            r#"{"action": "set_node_monitor", "options": {"local_expect": "melted"}}"#,
            "\"local_expect\": invalid value \"melted\"",
        ),
        (
            r#"{"action": "service_action", "options": {"svcname": "ok", "command": []}}"#,
            "\"command\": must not be empty",
        ),
        (
            r#"{"action": "get_service_config", "options": {"svcname": "node"}}"#,
            "not a service",
        ),
        (
            r#"{"action": "service_action", "options": {"svcname": "node", "command": ["delete"], "sync": true}}"#,
            "not a service",
        ),
        (
            r#"{"action": "service_action", "options": {"svcname": "ok", "command": "start"}}"#,
            "command",
        ),
        (
            r#"{"action": "service_logs", "options": {"svcname": "ok", "backlog": -1}}"#,
            "backlog",
        ),
        (
            r#"{"action": "clear", "options": {"svcname": "../node"}}"#,
            "invalid service name",
        ),
        (r#"{"action": "fly"}"#, "unknown action \"fly\""),
    ];
    for (request, expected) in cases {
        let r = n.raw(request);
        assert_eq!(r["status"], 1, "{request} -> {r}");
        let e = r["error"].as_str().unwrap_or_default();
        assert!(e.contains(expected), "{request}: {e:?} lacks {expected:?}");
    }
    let out = n.try_svcmgr("nope", &["clear"]);
    assert!(!out.status.success());
    // An action on a service that does not exist: said once, with the file it would be.
    let out = n.try_svcmgr("nope", &["start"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("unknown service nope").count(), 1, "{err}");
    assert!(err.contains("nope.conf"), "{err}");
    // -s after the command, as after `svcmgr start --help` shows it.
    let out = Command::new(SVCMGR)
        .arg("--root")
        .arg(&n.root)
        .args(["print", "monitor", "-s", "ok", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 0, "{answer}");
    // `node` names the node's configuration: svcmgr neither shows nor deletes it.
    for args in [&["print", "config"][..], &["delete"]] {
        let out = n.try_svcmgr("node", args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a service"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(n.root.join("etc/node.conf").is_file());
}

/// `service_action` runs `svcmgr -s NAME` with the given arguments, no shell between them,
/// whatever svcmgr supports, and answers its exit code and output.
#[test]
fn service_action_runs_any_svcmgr_command_line() {
    let n = daemon();
    service(&n, "any", 0, "");
    let config = std::fs::read_to_string(n.root.join("etc/any.conf")).unwrap();
    let call = |command: &str| {
        n.raw(&format!(
            r#"{{"action": "service_action", "options": {{"svcname": "any", "command": {command}, "sync": true}}}}"#
        ))
    };
    // A command that calls the daemon back about this very service.
    let r = call(r#"["print", "config"]"#);
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["data"]["code"], 0, "{r}");
    assert_eq!(r["data"]["stdout"].as_str().unwrap(), config.trim_end());
    let r = call(r#"["print", "monitor", "--format", "json"]"#);
    assert_eq!(r["data"]["code"], 0, "{r}");
    // What svcmgr does not support: its own exit code and error.
    let r = call(r#"["compliance", "fix", "--moduleset", "foo"]"#);
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["data"]["code"], 2, "{r}");
    assert!(
        r["data"]["stderr"].as_str().unwrap().contains("compliance"),
        "{r}"
    );
    // No shell: metacharacters are one argument.
    let marker = n.root.join("shell-ran");
    let r = call(&format!(
        r#"["print", "config; touch {}"]"#,
        marker.display()
    ));
    assert_ne!(r["data"]["code"], 0, "{r}");
    assert!(!marker.exists(), "no shell interpreted the argument");
    // Async: an id at once, listed until the command ends.
    let r = n.raw(r#"{"action": "service_action", "options": {"svcname": "any", "command": ["status"], "sync": false}}"#);
    assert!(
        r["data"]["id"].as_str().unwrap().starts_with("any.status."),
        "{r}"
    );
    wait_for("the async action to end", Duration::from_secs(10), || {
        n.status()["actions"]
            .as_object()
            .unwrap()
            .is_empty()
            .then_some(())
    });
}

/// With no `restart` key, a service expected started is still started once by the monitor;
/// only when that attempt fails does it go `start failed`.
#[test]
fn no_restart_key_still_gets_its_first_start_attempt() {
    let n = daemon();
    let flag = n.flag_service("once", "nodes = n1", "", "");
    n.svcmgr("once", &["set", "monitor", "--local-expect", "started"]);
    wait_for("started by the monitor", Duration::from_secs(10), || {
        flag.exists().then_some(())
    });
    assert_eq!(monitor(&n, "once")["status"], "idle");
    // Killed: no retry left.
    std::fs::remove_file(&flag).unwrap();
    wait_for("start failed", Duration::from_secs(10), || {
        (monitor(&n, "once")["status"] == "start failed").then_some(())
    });
    assert!(!flag.exists());
}

/// DESIGN.md: on a rebind, requests in flight are finished on the old sockets.
#[test]
fn a_request_in_flight_during_a_port_change_is_answered() {
    let n = daemon();
    let flag = service(&n, "slow", 0, "sleep 1.5; ");
    // Over TCP (--node n1 is this daemon's own listener), so the old socket carries it.
    let child = Command::new(SVCMGR)
        .arg("--root")
        .arg(&n.root)
        .args(["--node", "n1", "-s", "slow", "start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let new_port = n.set_free_port();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "answered across the rebind: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(flag.exists());
    wait_for("the new port", Duration::from_secs(10), || {
        (n.status()["listener"]["addr"] == format!("{}:{new_port}", n.ip)).then_some(())
    });
}

/// Table output is text for people, with local times and their offset; `--format json` keeps
/// the answers as the wire has them.
#[test]
fn table_output_is_text_and_json_stays_json() {
    let n = daemon();
    let flag = service(&n, "tbl", 0, "echo starting up; ");
    // start and stop print the action's log records, then the state they left.
    let out = n.svcmgr("tbl", &["start"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with("app#1: starting up")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.ends_with("n1 start done")), "{out}");
    assert!(
        out.contains("tbl  up  (node n1)\n  app#1      up\n"),
        "{out}"
    );
    assert!(flag.exists());
    let out = n.svcmgr("tbl", &["stop"]);
    assert!(out.contains("app#1: stop: rm -f"), "{out}");
    assert!(
        !out.contains("start done"),
        "only this action's records: {out}"
    );
    assert!(out.contains("tbl  down  (node n1)"), "{out}");
    // A failed start: its records and state on stdout, the failure on stderr, non-zero.
    std::fs::write(
        n.root.join("etc/bad.conf"),
        "[DEFAULT]\nnodes = n1\n[app#1]\nstart = echo no disk; exit 3\ncheck = false\n",
    )
    .unwrap();
    let out = n.try_svcmgr("bad", &["start"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app#1: no disk"), "{stdout}");
    assert!(stdout.contains("start failed with exit code 3"), "{stdout}");
    assert!(stdout.contains("bad  down  (node n1)"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("start failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Monitor answers: aligned rows in table mode, the wire's JSON with --format json.
    n.svcmgr("tbl", &["start"]);
    let table = n.svcmgr("tbl", &["print", "monitor"]);
    assert_eq!(
        table,
        "avail          up\nstatus         idle\nlocal expect   started\n\
         global expect  unset\nrestarts       none\n"
    );
    let cleared = n.svcmgr("tbl", &["clear"]);
    assert!(cleared.starts_with("status         idle\n"), "{cleared}");
    let set = n.svcmgr("tbl", &["set", "monitor", "--global-expect", "frozen"]);
    assert!(set.contains("global expect  frozen (set 20"), "{set}");
    let json: Value =
        serde_json::from_str(&n.svcmgr("tbl", &["print", "monitor", "--format", "json"])).unwrap();
    assert_eq!(json["status"], 0);
    assert_eq!(json["data"]["local_expect"], "started");
    assert!(json["data"]["global_expect_updated_ms"].as_u64() > Some(0));
    // The instance status, computed by svcmgr itself, wrapped like the daemon's answers.
    let json: Value =
        serde_json::from_str(&n.svcmgr("tbl", &["status", "--format", "json"])).unwrap();
    assert_eq!(json["status"], 0, "{json}");
    assert_eq!(json["data"]["avail"], "up", "{json}");

    // The node's monitor, frozen and thawed.
    assert_eq!(
        n.nodemgr(&["freeze"]),
        "local_expect  frozen\nstatus        idle\n"
    );
    assert_eq!(
        n.nodemgr(&["thaw"]),
        "local_expect  thawed\nstatus        idle\n"
    );
    let json: Value = serde_json::from_str(&n.nodemgr(&["freeze", "--format", "json"])).unwrap();
    assert_eq!(json["data"]["local_expect"], "frozen");
    n.nodemgr(&["thaw"]);
    assert_eq!(
        n.nodemgr(&["daemon", "blacklist", "clear"]),
        "blacklist cleared (0 entries)\n"
    );

    // Log times are local, with the offset: TZ east of UTC by 3 h (a POSIX TZ string).
    let logs = |tz: &str, format: &str| {
        let out = Command::new(SVCMGR)
            .arg("--root")
            .arg(&n.root)
            .args(["-s", "tbl", "logs", "--backlog", "1", "--format", format])
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let json_line = logs("XYZ-3", "json");
    let record: Value = serde_json::from_str(json_line.trim()).unwrap();
    let ms = record["time"].as_u64().unwrap();
    let line = logs("XYZ-3", "table");
    let utc = logs("UTC0", "table");
    assert!(line.contains(" +03:00 "), "{line}");
    assert!(utc.contains(" +00:00 "), "{utc}");
    // Same record, 3 hours apart on the clock face: "YYYY-MM-DD HH:MM:SS.mmm".
    let hour = |l: &str| l[11..13].parse::<u64>().unwrap();
    assert_eq!((hour(&utc) + 3) % 24, hour(&line), "{utc} / {line}");
    assert_eq!(
        &utc[20..23],
        format!("{:03}", ms % 1000),
        "the record's own milliseconds: {utc}"
    );
}
