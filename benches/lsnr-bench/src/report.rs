//! Results: one `Run` per (scenario, backend, size), the ratios between them, the targets,
//! printed as tables and written as one JSON document holding every figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::options::{BACKENDS, SINK, UNPINNED};

/// One measured run.
/// The heartbeat scenarios: the steady state (every heartbeat repeats its node's last one)
/// and the worst case (every heartbeat is news).
const HB_SCENARIOS: [&str; 2] = ["hb-udp", "hb-udp-news"];

#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub scenario: &'static str,
    /// `io_uring` or `epoll` for a daemon; `recvmmsg` (or `recvmmsg unpinned`) for the null
    /// sink.
    pub backend: &'static str,
    /// Frame size in bytes (UDP payload), 0 for empty datagrams, or the request size.
    pub size: usize,
    /// Every figure, by name (rates are per second over the measured window).
    pub figures: BTreeMap<String, f64>,
    /// Daemon memory: VmRSS when the daemon was ready and at the end, VmHWM (peak), KiB.
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
    /// CPU seconds of each daemon thread over the measured window.
    pub cpu_s: BTreeMap<String, f64>,
    /// Series sampled during the run (`rss-flood`: VmRSS every second, KiB).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<f64>>,
    /// The columns shown in the table, in order: (title, figure name).
    #[serde(skip)]
    pub columns: Vec<(&'static str, &'static str)>,
    pub notes: Vec<String>,
}

impl Run {
    pub fn new(scenario: &'static str, backend: &'static str, size: usize) -> Run {
        Run {
            scenario,
            backend,
            size,
            ..Default::default()
        }
    }

    pub fn set(&mut self, name: &str, v: f64) {
        self.figures.insert(name.to_string(), v);
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.get(name).copied()
    }
}

/// A target the listener is held to and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub measured: Option<f64>,
    pub threshold: f64,
    /// `>=`, `<=` or `<` (or `within` for ±).
    pub op: &'static str,
    pub met: Option<bool>,
    /// Counted by `--check`: issue 14's goals (CPU per frame, io_uring against epoll, tcp-req
    /// p99) and the floods' robustness. The throughput ratios to the null sink are
    /// secondary: the recvmmsg sink is a floor no pipeline reaches on 2 vCPUs shared with
    /// its sender, and they measure how the scheduler shares them more than the daemon.
    pub primary: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub date: String,
    pub command: String,
    pub machine: Value,
    pub options: Value,
    pub runs: Vec<Run>,
    pub ratios: BTreeMap<String, f64>,
    pub targets: Vec<Target>,
    pub elapsed_s: f64,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Summary {
    pub fn find(&self, scenario: &str, backend: &str, size: usize) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.scenario == scenario && r.backend == backend && r.size == size)
    }

    fn fig(&self, scenario: &str, backend: &str, size: usize, name: &str) -> Option<f64> {
        self.find(scenario, backend, size).and_then(|r| r.get(name))
    }

    /// Ratios between runs, and the targets, from the runs made.
    pub fn compute(&mut self, sizes: &[usize], flood_size: usize) {
        let mut ratios = BTreeMap::new();
        let mut put = |k: String, a: Option<f64>, b: Option<f64>| {
            if let (Some(a), Some(b)) = (a, b)
                && b > 0.0
            {
                ratios.insert(k, a / b);
            }
        };
        for b in BACKENDS {
            for &s in sizes {
                for hb in HB_SCENARIOS {
                    put(
                        format!("{hb}/{s}/{b}: pipeline / null-sink"),
                        self.fig(hb, b, s, "applied_per_s"),
                        self.fig("null-sink", SINK, s, "received_per_s"),
                    );
                }
            }
            put(
                format!("blacklisted-flood/{b}: drop rate / null-sink"),
                self.fig(
                    "blacklisted-flood",
                    b,
                    flood_size,
                    "dropped_blacklisted_per_s",
                ),
                self.fig("null-sink", SINK, flood_size, "received_per_s"),
            );
            put(
                format!("blacklisted-flood/{b}: legit under flood / legit alone"),
                self.fig("blacklisted-flood", b, flood_size, "legit_flood_per_s"),
                self.fig("blacklisted-flood", b, flood_size, "legit_alone_per_s"),
            );
            put(
                format!("random-names-flood/{b}: drop rate / null-sink"),
                self.fig(
                    "random-names-flood",
                    b,
                    flood_size,
                    "dropped_join_rate_per_s",
                ),
                self.fig("null-sink", SINK, flood_size, "received_per_s"),
            );
            put(
                format!("random-names-flood/{b}: legit under flood / legit alone"),
                self.fig("random-names-flood", b, flood_size, "legit_flood_per_s"),
                self.fig("random-names-flood", b, flood_size, "legit_alone_per_s"),
            );
            put(
                format!("empty-packets/{b}: dequeue triggers / null-sink"),
                self.fig("empty-packets", b, 0, "dequeues_per_s"),
                self.fig("null-sink", SINK, 0, "received_per_s"),
            );
        }
        for &s in sizes {
            for hb in HB_SCENARIOS {
                for b in BACKENDS {
                    put(
                        format!("{hb}/{s}/{b}: cpu per frame / null-sink's"),
                        self.fig(hb, b, s, "cpu_us_per_frame"),
                        self.fig("null-sink", SINK, s, "sink_cpu_us_per_frame"),
                    );
                }
                put(
                    format!("{hb}/{s}: io_uring / epoll cpu per frame"),
                    self.fig(hb, "io_uring", s, "cpu_us_per_frame"),
                    self.fig(hb, "epoll", s, "cpu_us_per_frame"),
                );
            }
        }
        for &s in sizes {
            for hb in HB_SCENARIOS {
                for b in BACKENDS {
                    put(
                        format!("{hb}/{s}/{b}: pipeline / null-sink unpinned"),
                        self.fig(hb, b, s, "applied_per_s"),
                        self.fig("null-sink", UNPINNED, s, "received_per_s"),
                    );
                }
                put(
                    format!("{hb}/{s}: io_uring / epoll"),
                    self.fig(hb, "io_uring", s, "applied_per_s"),
                    self.fig(hb, "epoll", s, "applied_per_s"),
                );
            }
        }
        put(
            "blacklisted-flood: io_uring / epoll (drop rate)".into(),
            self.fig(
                "blacklisted-flood",
                "io_uring",
                flood_size,
                "dropped_blacklisted_per_s",
            ),
            self.fig(
                "blacklisted-flood",
                "epoll",
                flood_size,
                "dropped_blacklisted_per_s",
            ),
        );
        put(
            "random-names-flood: io_uring / epoll (drop rate)".into(),
            self.fig(
                "random-names-flood",
                "io_uring",
                flood_size,
                "dropped_join_rate_per_s",
            ),
            self.fig(
                "random-names-flood",
                "epoll",
                flood_size,
                "dropped_join_rate_per_s",
            ),
        );
        put(
            "empty-packets: io_uring / epoll".into(),
            self.fig("empty-packets", "io_uring", 0, "dequeues_per_s"),
            self.fig("empty-packets", "epoll", 0, "dequeues_per_s"),
        );
        put(
            "tcp-req: p99 epoll / io_uring".into(),
            self.fig("tcp-req", "epoll", 0, "p99_us"),
            self.fig("tcp-req", "io_uring", 0, "p99_us"),
        );
        self.ratios = ratios;

        let mut targets = Vec::new();
        let mut target = |name: String, measured: Option<f64>, op: &'static str, threshold: f64| {
            let primary = !name.contains("/ null-sink") || name.contains("cpu per frame");
            let met = measured.map(|m| match op {
                ">=" => m >= threshold,
                "<" => m < threshold,
                "<=" => m <= threshold,
                _ => m.abs() <= threshold,
            });
            targets.push(Target {
                name,
                measured,
                threshold,
                op,
                met,
                primary,
            });
        };
        let r = |k: &str| self.ratios.get(k).copied();
        // Issue 14's goals: CPU per frame on the receive path (the workers and the handler
        // shards) against the null sink's per datagram, and io_uring against epoll.
        for b in BACKENDS {
            for (hb, limit) in [("hb-udp-news", 2.0), ("hb-udp", 1.5)] {
                target(
                    format!("{hb} 1024 B {b}: cpu per frame / null-sink's"),
                    r(&format!("{hb}/1024/{b}: cpu per frame / null-sink's")),
                    "<=",
                    limit,
                );
            }
        }
        for &s in sizes {
            target(
                format!("hb-udp-news {s} B: io_uring / epoll cpu per frame"),
                r(&format!("hb-udp-news/{s}: io_uring / epoll cpu per frame")),
                "<=",
                0.77,
            );
        }
        for b in BACKENDS {
            for &s in sizes {
                for hb in HB_SCENARIOS {
                    target(
                        format!("{hb} {s} B {b}: pipeline / null-sink"),
                        r(&format!("{hb}/{s}/{b}: pipeline / null-sink")),
                        ">=",
                        0.8,
                    );
                }
            }
            target(
                format!("blacklisted-flood {b}: drop rate / null-sink"),
                r(&format!("blacklisted-flood/{b}: drop rate / null-sink")),
                ">=",
                0.95,
            );
            target(
                format!("blacklisted-flood {b}: legit under flood / alone"),
                r(&format!(
                    "blacklisted-flood/{b}: legit under flood / legit alone"
                )),
                ">=",
                0.9,
            );
            target(
                format!("tcp-req {b}: p99 at the target rate (µs)"),
                self.fig("tcp-req", b, 0, "p99_us"),
                "<",
                1000.0,
            );
            target(
                format!("rss-flood {b}: RSS deviation from baseline (%)"),
                self.fig("rss-flood", b, flood_size, "rss_deviation_pct"),
                "within",
                10.0,
            );
        }
        self.targets = targets
            .into_iter()
            .filter(|t| t.measured.is_some())
            .collect();
    }

    /// The targets missed: one line each, the goal and the figure (`--check`).
    pub fn missed(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| t.primary && t.met == Some(false))
            .map(|t| {
                format!(
                    "missed: {}: {} (goal {} {})",
                    t.name,
                    t.measured.map_or("-".into(), |m| format!("{m:.3}")),
                    t.op,
                    t.threshold
                )
            })
            .collect()
    }

    /// The tables, the ratios and the targets, as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.runs {
            if !scenarios.contains(&r.scenario) {
                scenarios.push(r.scenario);
            }
        }
        for sc in scenarios {
            let runs: Vec<&Run> = self.runs.iter().filter(|r| r.scenario == sc).collect();
            let cols = &runs[0].columns;
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut head = vec!["backend".to_string(), "size".to_string()];
            head.extend(cols.iter().map(|(t, _)| t.to_string()));
            head.extend(["rss start/end/peak MiB".to_string()]);
            rows.push(head);
            for r in &runs {
                let mut row = vec![r.backend.to_string(), r.size.to_string()];
                row.extend(
                    cols.iter()
                        .map(|(_, k)| r.get(k).map_or("-".into(), fmt_num)),
                );
                row.push(if r.rss_peak_kib > 0 {
                    format!(
                        "{:.1}/{:.1}/{:.1}",
                        r.rss_start_kib as f64 / 1024.0,
                        r.rss_end_kib as f64 / 1024.0,
                        r.rss_peak_kib as f64 / 1024.0
                    )
                } else {
                    "-".into()
                });
                rows.push(row);
            }
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            let _ = writeln!(out, "\n== {sc}");
            for row in &rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:>w$}"))
                    .collect();
                let _ = writeln!(out, "  {}", line.join("  "));
            }
            for r in &runs {
                for n in &r.notes {
                    let _ = writeln!(out, "  note ({} {}): {n}", r.backend, r.size);
                }
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out, "\n== ratios");
            let w = self
                .ratios
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0);
            for (k, v) in &self.ratios {
                let _ = writeln!(out, "  {k:<w$}  {v:.3}");
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n== targets");
            let w = self
                .targets
                .iter()
                .map(|t| t.name.chars().count())
                .max()
                .unwrap_or(0);
            for t in &self.targets {
                let verdict = match (t.met, t.primary) {
                    (Some(true), _) => "met",
                    (Some(false), true) => "NOT met",
                    (Some(false), false) => "not met (secondary)",
                    (None, _) => "-",
                };
                let _ = writeln!(
                    out,
                    "  {:<w$}  {:>10}  {} {}  {verdict}",
                    t.name,
                    t.measured.map_or("-".into(), |m| format!("{m:.3}")),
                    t.op,
                    t.threshold,
                );
            }
        }
        let _ = writeln!(out, "\n({:.1} s)", self.elapsed_s);
        out
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}
