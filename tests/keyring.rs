//! Secret rotation on a live three-node cluster (127.0.0.1-3): heartbeats and requests keep
//! flowing while `nodemgr cluster keyring` runs its three steps, and nothing goes stale, gets
//! banned or fails.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use osvc_agent::internals::client::{self, Identity};
use osvc_agent::internals::wire::{Fingerprint, Kind, Request, Sealer};
use serde_json::{Value, json};

fn fp(secret: &str) -> String {
    Fingerprint::of(secret.as_bytes(), CLUSTER).to_string()
}

/// `daemon_status` over a node's unix socket; None while it is down.
fn try_status(root: &Path) -> Option<Value> {
    let mut c = std::os::unix::net::UnixStream::connect(root.join("var/lsnr.sock")).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = br#"{"action":"daemon_status"}"#;
    c.write_all(&(request.len() as u32).to_be_bytes()).ok()?;
    c.write_all(request).ok()?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body).ok()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(v["data"].clone())
}

/// What the watcher saw go wrong.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Vec<String>, u64)>,
}

/// Watches every node's view and sends requests n1 -> n2 and n2 -> n1, each under the
/// keyring its node.conf holds at that moment, until told to stop (at most 5 minutes).
fn watch(nodes: &[Node]) -> Watch {
    let roots: Vec<(String, PathBuf, std::net::SocketAddr)> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.root.clone(), n.addr()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut problems = Vec::new();
        let mut requests = 0;
        let start = Instant::now();
        while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300) {
            for (name, root, _) in &roots {
                let Some(s) = try_status(root) else { continue };
                for (peer, p) in s["peers"].as_object().into_iter().flatten() {
                    if p["status"] == "stale" {
                        problems.push(format!("{name} sees {peer} stale: {p}"));
                    }
                }
                if s["blacklist"] != json!({}) {
                    problems.push(format!("{name}'s blacklist: {}", s["blacklist"]));
                }
            }
            for (from, to) in [(0, 1), (1, 0)] {
                let conf =
                    osvc_agent::internals::config::load(&roots[from].1.join("etc/node.conf"));
                let Ok((_, conf)) = conf else {
                    problems.push(format!("{} node.conf unreadable", roots[from].0));
                    continue;
                };
                let identity = Identity::of(&conf);
                match client::call_peer(
                    roots[to].2,
                    &identity,
                    &Request::DaemonStatus,
                    Duration::from_secs(5),
                ) {
                    Ok(r) if r.status == 0 => requests += 1,
                    Ok(r) => problems.push(format!("{} -> {}: {:?}", from, to, r.error)),
                    Err(e) => problems.push(format!("{} -> {}: {e}", from, to)),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (problems, requests)
    });
    Watch { stop, handle }
}

/// `nodemgr cluster keyring ARGS --format json` on `n`: each member's line, by name.
fn keyring(n: &Node, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["cluster", "keyring"];
    a.extend(args);
    a.extend(["--format", "json"]);
    serde_json::from_str(&n.nodemgr(&a)).unwrap()
}

fn holds(rows: &[Value], primary: &str, alternate: Option<&str>) -> bool {
    rows.iter()
        .all(|r| r["primary"] == primary && r["alternate"] == json!(alternate))
}

/// A request under `secret` alone, as `n1`, over TCP: whether the daemon answered at all
/// (it closes the connection on a frame that does not open).
fn old_client_served(to: &Node, secret: &str) -> bool {
    let mut s = Sealer::new(secret.as_bytes(), CLUSTER, "n1", now_ms());
    let f = frame(&mut s, Kind::Request, &Request::DaemonStatus.to_vec());
    tcp_request(to.addr(), &f).is_some()
}

#[test]
fn rotation_without_downtime() {
    let mut nodes = cluster_of("n1 n2 n3", 3, FAST);
    for n in &nodes {
        wait_for("both peers up", Duration::from_secs(10), || {
            let s = n.status();
            let peers = s["peers"].as_object()?;
            (peers.len() == 2 && peers.values().all(|p| p["status"] == "up")).then_some(())
        });
    }
    let (old, old_fp) = (SECRET, fp(SECRET));
    let new = nodes[0].nodemgr(&["cluster", "keyring", "generate"]);
    let new = new.trim().to_string();
    assert_eq!(new.len(), 64);
    let new_fp = fp(&new);
    let secret_file = nodes[0].root.join("new.secret");
    std::fs::write(&secret_file, format!("{new}\n")).unwrap();

    let watcher = watch(&nodes);
    let timed = |what: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        eprintln!("keyring {what}: {} ms", t.elapsed().as_millis());
    };
    let n1 = &nodes[0];
    timed("install", &mut || {
        let rows = keyring(
            n1,
            &["install", "--secret-file", secret_file.to_str().unwrap()],
        );
        assert!(holds(&rows, &old_fp, Some(&new_fp)), "{rows:?}");
    });
    // What a step refuses, it refuses by fingerprint, never showing a secret.
    let third = "a-third-secret";
    let r = nodes[1].raw(&format!(
        r#"{{"action":"keyring_install","options":{{"secret":"{third}"}}}}"#
    ));
    assert_ne!(r["status"], 0, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains(&new_fp) && !e.contains(third) && !e.contains(&new),
        "{e}"
    );
    let r = nodes[1].raw(&format!(
        r#"{{"action":"keyring_remove","options":{{"fingerprint":"{old_fp}"}}}}"#
    ));
    assert_ne!(r["status"], 0, "the primary is not removed: {r}");
    let r =
        nodes[1].raw(r#"{"action":"keyring_use","options":{"fingerprint":"0123456789abcdef"}}"#);
    assert_ne!(r["status"], 0, "{r}");
    // Run again, it changes nothing.
    let rows = keyring(
        n1,
        &["install", "--secret-file", secret_file.to_str().unwrap()],
    );
    assert!(rows.iter().all(|r| r["result"] == "unchanged"), "{rows:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(old_client_served(&nodes[1], old));
    timed("use", &mut || {
        let rows = keyring(n1, &["use", "--fingerprint", &new_fp]);
        assert!(holds(&rows, &new_fp, Some(&old_fp)), "{rows:?}");
    });
    // Two beats under the new primary everywhere.
    std::thread::sleep(Duration::from_secs(1));
    assert!(old_client_served(&nodes[1], old));

    // n3 stops (maintenance, not stale): `remove` is refused while it lags.
    nodes[2].nodemgr(&["daemon", "stop"]);
    let out = n1.try_nodemgr(&["cluster", "keyring", "remove", "--fingerprint", &old_fp]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("n3"), "{err}");
    // `list` names it lagging, and fails for it.
    let out = n1.try_nodemgr(&["cluster", "keyring", "list", "--format", "json"]);
    assert!(!out.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows[..2].iter().all(|r| r["alternate"] == old_fp),
        "{rows:?}"
    );
    assert!(
        rows[2]["result"].as_str().unwrap().starts_with("lagging"),
        "{rows:?}"
    );
    // Restarted between use and remove, it comes back holding both secrets.
    nodes[2].spawn(&[]);
    let rows = keyring(&nodes[2], &["list"]);
    assert!(holds(&rows, &new_fp, Some(&old_fp)), "{rows:?}");
    for n in &nodes {
        wait_for("peers up again", Duration::from_secs(10), || {
            let s = n.status();
            let peers = s["peers"].as_object()?;
            (peers.len() == 2 && peers.values().all(|p| p["status"] == "up")).then_some(())
        });
    }
    timed("remove", &mut || {
        let rows = keyring(&nodes[0], &["remove", "--fingerprint", &old_fp]);
        assert!(holds(&rows, &new_fp, None), "{rows:?}");
    });
    std::thread::sleep(Duration::from_secs(2));
    watcher.stop.store(true, Ordering::Relaxed);
    let (problems, requests) = watcher.handle.join().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(requests > 10, "{requests} requests");
    for n in &nodes {
        let s = n.status();
        assert_eq!(s["listener"]["counters"]["invalid_total"], 0, "{}", n.name);
        assert_eq!(s["keyring"], json!({"primary": new_fp, "alternate": null}));
        let conf = std::fs::read_to_string(n.root.join("etc/node.conf")).unwrap();
        assert!(conf.contains(&format!("secret = {new}")) && !conf.contains(old));
        // No secret in what the daemon logged.
        let log = n.log();
        assert!(!log.contains(&new) && !log.contains(old), "{}", n.name);
    }
    // After remove, the old secret is refused: one invalid message, no answer.
    assert!(!old_client_served(&nodes[1], old));
    assert_eq!(nodes[1].invalid("decrypt"), 1);
}

/// A node joining between `install` and `use` gets the alternate with the rest, so it opens
/// what the members seal once they switch.
#[test]
fn join_in_the_middle_of_a_rotation() {
    let port = free_port_on(&CLUSTER_IPS);
    let start = |i, nodes, secret, extra| cluster_node(i, port, nodes, secret, extra);
    let n1 = start(0, "n1 n2", SECRET, FAST);
    let n2 = start(1, "n1 n2", SECRET, FAST);
    let n3 = start(2, "n3", "not-yet-the-cluster-secret", "");
    let new = "the-next-secret";
    let file = n1.root.join("new.secret");
    std::fs::write(&file, new).unwrap();
    keyring(&n1, &["install", "--secret-file", file.to_str().unwrap()]);
    n3.nodemgr(&[
        "daemon",
        "join",
        "--secret",
        SECRET,
        "--node",
        "n1",
        "--cluster",
        CLUSTER,
    ]);
    for n in [&n1, &n2, &n3] {
        wait_for("three members", Duration::from_secs(10), || {
            (n.status()["cluster"]["nodes"] == json!(["n1", "n2", "n3"])).then_some(())
        });
    }
    let rows = keyring(&n3, &["list"]);
    assert!(holds(&rows, &fp(SECRET), Some(&fp(new))), "{rows:?}");
    let rows = keyring(&n3, &["use", "--fingerprint", &fp(new)]);
    assert!(holds(&rows, &fp(new), Some(&fp(SECRET))), "{rows:?}");
    for n in [&n1, &n2, &n3] {
        wait_for(
            "peers up under the new secret",
            Duration::from_secs(10),
            || {
                let s = n.status();
                let peers = s["peers"].as_object()?;
                (peers.len() == 2 && peers.values().all(|p| p["status"] == "up")).then_some(())
            },
        );
        assert_eq!(n.status()["blacklist"], json!({}), "{}", n.name);
    }
    // Past hb.timeout, every peer still heard: they beat under the new primary now.
    std::thread::sleep(Duration::from_millis(2500));
    for n in [&n1, &n2, &n3] {
        let s = n.status();
        for (peer, p) in s["peers"].as_object().unwrap() {
            assert_eq!(p["status"], "up", "{} sees {peer}: {p}", n.name);
        }
        // n3 itself may have refused a beat or two sent to it by the members between the
        // join and its reading the node.conf the join wrote: not a rotation's doing.
        if n.name != "n3" {
            assert_eq!(s["listener"]["counters"]["invalid_total"], 0, "{}", n.name);
        }
    }
}
