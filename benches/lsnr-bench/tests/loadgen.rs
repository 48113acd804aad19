//! The load generator end to end, in its quickest form: `lsnr-bench --quick --scenario
//! hb-udp,hb-udp-news`
//! with tiny windows against real daemons (both backends), and its JSON summary checked for
//! non-zero figures. A smoke test of the tool, not a measurement.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The agent's `nodemgr`, built into the target directory that holds this test's
/// `lsnr-bench`: a binary of another package of the workspace has no `CARGO_BIN_EXE_` here,
/// and `cargo test -p lsnr-bench` alone does not build it. Up to date, the build is a no-op.
fn nodemgr() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_lsnr-bench"));
    let profile_dir = bench.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory above {}", bench.display()),
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "osvc-agent", "--bin", "nodemgr"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --bin nodemgr failed");
    profile_dir.join("nodemgr")
}

#[test]
fn quick_hb_udp_reports_nonzero_figures() {
    let json = std::env::temp_dir().join(format!("lsnr-bench-smoke-{}.json", std::process::id()));
    let nodemgr = nodemgr();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lsnr-bench"))
        .args([
            "--quick",
            "--scenario",
            "hb-udp,hb-udp-news",
            "--size",
            "256",
        ])
        .args(["--nodes", "50", "--duration", "0.5", "--warmup", "0.2"])
        .args(["--max-pool-mib", "16"])
        .arg("--nodemgr")
        .arg(&nodemgr)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "lsnr-bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let runs = summary["runs"].as_array().unwrap();
    let fig = |scenario: &str, backend: &str, name: &str| -> f64 {
        runs.iter()
            .find(|r| r["scenario"] == scenario && r["backend"] == backend)
            .unwrap_or_else(|| panic!("no {scenario} {backend} run in {summary}"))["figures"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in {scenario} {backend}"))
    };
    // Where io_uring is refused the tool runs the epoll backend only.
    let backends: Vec<&str> = summary["options"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(backends.contains(&"epoll"), "{backends:?}");
    assert!(fig("null-sink", "recvmmsg", "received_per_s") > 0.0);
    assert!(fig("null-sink", "recvmmsg", "sink_cpu_us_per_frame") > 0.0);
    for &backend in &backends {
        for sc in ["hb-udp", "hb-udp-news"] {
            assert!(fig(sc, backend, "delivered_per_s") > 0.0, "{sc} {backend}");
            assert!(fig(sc, backend, "applied_per_s") > 0.0, "{sc} {backend}");
            assert!(fig(sc, backend, "received_per_s") > 0.0, "{sc} {backend}");
            assert_eq!(fig(sc, backend, "invalid_in_window"), 0.0, "{sc} {backend}");
            assert!(fig(sc, backend, "cpu_us_per_frame") > 0.0, "{sc} {backend}");
            assert!(
                fig(sc, backend, "cpu_over_null_sink") > 0.0,
                "{sc} {backend}"
            );
        }
        // A node repeating itself is recognised; news never repeats.
        assert!(
            fig("hb-udp", backend, "heartbeat_repeats_per_s") > 0.0,
            "{backend}"
        );
        assert_eq!(
            fig("hb-udp-news", backend, "heartbeat_repeats_per_s"),
            0.0,
            "{backend}"
        );
        assert!(fig("hb-udp-news", backend, "news_per_s") > 0.0, "{backend}");
        let run = runs
            .iter()
            .find(|r| r["scenario"] == "hb-udp" && r["backend"] == backend)
            .unwrap();
        assert!(run["rss_peak_kib"].as_u64().unwrap() > 0, "{backend}");
    }
    let ratios = summary["ratios"].as_object().unwrap();
    assert!(ratios.keys().any(|k| k.contains("pipeline / null-sink")));
    assert!(
        ratios
            .keys()
            .any(|k| k.contains("cpu per frame / null-sink's"))
    );
    if backends.len() == 2 {
        assert!(
            ratios
                .keys()
                .any(|k| k.contains("io_uring / epoll cpu per frame"))
        );
    }
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: the quick mode must stay quick"
    );
}
