//! Several daemons forming one cluster: three nodes on 127.0.0.1, .2 and .3, one port.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Fast heartbeats and monitor for tests.
const TUNING: &str = "[hb]\ninterval = 500ms\ntimeout = 2s\n[monitor]\ninterval = 300ms\n";

fn cluster(nodes: &str, count: usize) -> Vec<Node> {
    let port = free_port_on(&IPS[..count]);
    (0..count)
        .map(|i| {
            Node::start(Opts {
                name: ["n1", "n2", "n3"][i],
                ip: IPS[i],
                nodes,
                extra: TUNING,
                port: Some(port),
                ..Default::default()
            })
        })
        .collect()
}

fn peer_status(n: &Node, peer: &str) -> Value {
    n.status()["peers"][peer].clone()
}

fn members(n: &Node) -> Vec<String> {
    serde_json::from_value(n.status()["cluster"]["nodes"].clone()).unwrap()
}

#[test]
fn heartbeats_converge() {
    let nodes = cluster("n1 n2 n3", 3);
    for n in &nodes {
        wait_for("both peers up", Duration::from_secs(10), || {
            let s = n.status();
            let others: Vec<&str> = ["n1", "n2", "n3"]
                .into_iter()
                .filter(|x| *x != n.name)
                .collect();
            others
                .iter()
                .all(|o| {
                    s["peers"][o]["status"] == "up" && s["peers"][o]["age_ms"].as_u64() < Some(1000)
                })
                .then_some(())
        });
    }
}

#[test]
fn join_through_a_member_then_leave() {
    let port = free_port_on(&IPS);
    let start = |i: usize, nodes: &str, secret: &str| {
        Node::start(Opts {
            name: ["n1", "n2", "n3"][i],
            ip: IPS[i],
            nodes,
            extra: TUNING,
            port: Some(port),
            secret,
            ..Default::default()
        })
    };
    let n1 = start(0, "n1 n2", SECRET);
    let n2 = start(1, "n1 n2", SECRET);
    let n3 = start(2, "n3", "not-yet-the-cluster-secret");
    // A wrong secret is refused like any invalid message, but a non-member's name is never
    // entered in the blacklist.
    let out = n3.try_nodemgr(&[
        "daemon",
        "join",
        "--secret",
        "wrong",
        "--node",
        "n1",
        "--cluster",
        CLUSTER,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the join"));
    assert_eq!(n1.invalid("decrypt"), 1);
    assert_eq!(
        n1.json(&["daemon", "blacklist", "status"])["data"],
        serde_json::json!({})
    );
    assert!(!members(&n1).contains(&"n3".to_string()));
    // The right one.
    let joined = n3.nodemgr(&[
        "daemon",
        "join",
        "--secret",
        SECRET,
        "--node",
        "n1",
        "--cluster",
        CLUSTER,
    ]);
    assert!(joined.contains("joined cluster"), "{joined}");
    for n in [&n1, &n2, &n3] {
        wait_for("n3 listed", Duration::from_secs(10), || {
            (members(n) == ["n1", "n2", "n3"]).then_some(())
        });
    }
    wait_for("n3 sees its peers", Duration::from_secs(10), || {
        (peer_status(&n3, "n1")["status"] == "up" && peer_status(&n3, "n2")["status"] == "up")
            .then_some(())
    });
    wait_for("n2 hears n3", Duration::from_secs(10), || {
        (peer_status(&n2, "n3")["status"] == "up").then_some(())
    });
    // Leave.
    n3.nodemgr(&["daemon", "leave"]);
    for n in [&n1, &n2] {
        wait_for("n3 gone", Duration::from_secs(10), || {
            (members(n) == ["n1", "n2"]).then_some(())
        });
    }
    wait_for("n3 alone", Duration::from_secs(10), || {
        (members(&n3) == ["n3"]).then_some(())
    });
}

fn ha_service(n: &Node, name: &str) -> std::path::PathBuf {
    n.flag_service(name, "nodes = n2 n1 n3\norchestrate = ha", "", "")
}

#[test]
fn killed_node_goes_stale_and_its_ha_service_moves() {
    let mut nodes = cluster("n1 n2 n3", 3);
    let flags: Vec<_> = nodes.iter().map(|n| ha_service(n, "ha1")).collect();
    for n in &nodes {
        wait_for("peers up", Duration::from_secs(10), || {
            (n.status()["peers"].as_object().map(|p| p.len()) == Some(2)).then_some(())
        });
    }
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for(
        "ha1 runs on n2, its first node",
        Duration::from_secs(15),
        || flags[1].exists().then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !flags[0].exists() && !flags[2].exists(),
        "one instance only"
    );
    nodes[1].kill();
    let n1 = &nodes[0];
    wait_for("n2 stale on n1", Duration::from_secs(5), || {
        (peer_status(n1, "n2")["status"] == "stale").then_some(())
    });
    wait_for("ha1 moved to n1", Duration::from_secs(10), || {
        flags[0].exists().then_some(())
    });
    assert!(!flags[2].exists(), "n3 leaves it to n1");
    let logs = n1.svcmgr("ha1", &["logs", "--backlog", "100"]);
    assert!(logs.contains("global_expect started: start"), "{logs}");
    assert!(
        logs.contains("node n2 did not answer"),
        "aggregated logs name the dead node: {logs}"
    );
}

#[test]
fn stopped_node_shows_maintenance_not_stale() {
    let nodes = cluster("n1 n2 n3", 3);
    wait_for("n2 up on n1", Duration::from_secs(10), || {
        (peer_status(&nodes[0], "n2")["status"] == "up").then_some(())
    });
    nodes[1].nodemgr(&["daemon", "stop"]);
    wait_for("maintenance", Duration::from_secs(10), || {
        (peer_status(&nodes[0], "n2")["status"] == "maintenance").then_some(())
    });
    // Past hb.timeout it is still maintenance, not stale.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(peer_status(&nodes[0], "n2")["status"], "maintenance");
    assert_eq!(peer_status(&nodes[2], "n2")["status"], "maintenance");
}

#[test]
fn aggregated_logs_merge_every_node_in_time_order() {
    let nodes = cluster("n1 n2", 2);
    for n in &nodes {
        n.flag_service("agg", "nodes = n1 n2", "", "");
    }
    nodes[0].svcmgr("agg", &["start"]);
    nodes[1].svcmgr("agg", &["start"]);
    nodes[0].svcmgr("agg", &["clear"]);
    let out = nodes[0].svcmgr("agg", &["logs", "--backlog", "100", "--format", "json"]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from = |node: &str| records.iter().filter(|r| r["node"] == node).count();
    assert!(from("n1") >= 3 && from("n2") >= 3, "{out}");
    let times: Vec<u64> = records
        .iter()
        .map(|r| r["time"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );
    // Asked over the network, a node answers with its own records only.
    let remote = nodes[0].svcmgr(
        "agg",
        &[
            "--node",
            "n2",
            "logs",
            "--backlog",
            "100",
            "--format",
            "json",
        ],
    );
    assert!(
        remote.lines().all(|l| l.contains("\"node\":\"n2\"")),
        "{remote}"
    );
}
