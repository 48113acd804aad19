//! `osvc-sim`: runs the deterministic cluster simulation (`osvc_agent::internals::sim`) over many seeds
//! and says whether the orchestration's invariants held, or prints the failing seed and the
//! events that led to it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use osvc_agent::internals::sim::{SimConfig, run_seeds};

#[derive(Parser, Debug)]
#[command(
    name = "osvc-sim",
    version,
    about = "Simulate a cluster (network faults, partitions, crashes, daemon stops) and check that a failover service never runs twice and runs again when a quorate side can run it"
)]
struct Cli {
    /// How many seeds to run
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (a failure names its seed: rerun it with --first-seed S --seeds 1)
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Simulated seconds per seed
    #[arg(long, default_value_t = 3600)]
    sim_seconds: u64,
    /// Nodes in the cluster
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Chance that a heartbeat datagram is lost
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Add one arbitrator granting leases of this many simulated milliseconds (0: none)
    #[arg(long, default_value_t = 0)]
    arbitrator_lease_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.nodes < 2 || !(0.0..1.0).contains(&cli.loss) {
        eprintln!("osvc-sim: --nodes must be at least 2 and --loss in [0, 1)");
        return ExitCode::FAILURE;
    }
    let cfg = SimConfig {
        nodes: cli.nodes,
        loss: cli.loss,
        arbitrator_lease: cli.arbitrator_lease_ms,
        ..SimConfig::default()
    };
    let started = Instant::now();
    match run_seeds(&cfg, cli.first_seed, cli.seeds, cli.sim_seconds * 1000) {
        Ok(s) => {
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{} seeds, {} simulated seconds each, invariants held ({} events, {} starts, {} faults, {} ticks with quorum through the arbitrator, in {wall:.1} s: {:.0} simulated seconds per second)",
                cli.seeds,
                cli.sim_seconds,
                s.events,
                s.starts,
                s.faults,
                s.arbitrated_ticks,
                (cli.seeds * cli.sim_seconds) as f64 / wall.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(v) => {
            eprintln!("osvc-sim: invariant broken\n{v}");
            ExitCode::FAILURE
        }
    }
}
