//! Scale benchmark: how the management server and the relay cope with many services and many
//! clusters, against the release `trellis mgmt` binary and simulated agents (real relay clients
//! over mTLS, in this process).
//!
//! Per scenario (S services over C clusters, one VirtualDestination each): time until every
//! agent has the full config, then RouteTable weight flips and endpoint changes, each timed from
//! the change to every agent that should see it having received it; the server's CPU seconds per
//! change and its resident memory.
//!
//! Then one real `trellis agent` with simulated sidecars (real ADS clients over its xDS mTLS):
//! RouteTable change to every proxy's ACK, and the agent's memory per proxy.
//!
//! Run: `scripts/bench-scale [--quick | --services N --clusters M] [--proxies N] [--timeout SECS]
//! [--changes N] [--keep]`. The full run (no flags) ends with 1,000 proxies; `--proxies N` alone
//! runs only the real-agent part, and with `--quick` or a custom combination adds it. It needs `--bench` (which `cargo bench` passes), so `cargo test --all-targets` does
//! not run it.

#[path = "scale/fleet.rs"]
mod fleet;
#[path = "scale/mesh_config.rs"]
mod mesh_config;
#[path = "scale/parallel.rs"]
mod parallel;
#[path = "scale/process.rs"]
mod process;
#[path = "scale/proxies.rs"]
mod proxies;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/route_weights.rs"]
mod route_weights;
#[path = "scale/scenario.rs"]
mod scenario;
#[path = "scale/sim_agent.rs"]
mod sim_agent;
#[path = "scale/sim_proxy.rs"]
mod sim_proxy;
#[path = "scale/stats.rs"]
mod stats;
#[path = "scale/waiting.rs"]
mod waiting;

use std::time::Duration;

/// The combinations the scale issue asks for: services grow at 10 clusters, clusters grow at
/// 10,000 services.
const DEFAULT: &[(usize, usize)] = &[(1_000, 10), (10_000, 10), (100_000, 10), (10_000, 100), (10_000, 1_000)];
const QUICK: &[(usize, usize)] = &[(1_000, 10), (10_000, 10)];

struct Args {
    scenarios: Vec<(usize, usize)>,
    options: scenario::Options,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut services = None;
    let mut clusters = None;
    let mut quick = false;
    let mut proxies = None;
    let mut options = scenario::Options {
        proxies: 0,
        timeout: Duration::from_secs(120),
        changes: 10,
        keep: false,
    };
    let mut iter = args.iter();
    let number = |value: Option<&String>, flag: &str| -> Result<usize, String> {
        value
            .and_then(|v| v.replace('_', "").parse().ok())
            .ok_or_else(|| format!("{flag} takes a number"))
    };
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--bench" => {}
            "--quick" => quick = true,
            "--keep" => options.keep = true,
            "--proxies" => proxies = Some(number(iter.next(), "--proxies")?),
            "--services" => services = Some(number(iter.next(), "--services")?),
            "--clusters" => clusters = Some(number(iter.next(), "--clusters")?),
            "--changes" => options.changes = number(iter.next(), "--changes")?,
            "--timeout" => options.timeout = Duration::from_secs(number(iter.next(), "--timeout")? as u64),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let scenarios = match (services, clusters, quick, proxies) {
        (Some(s), Some(c), false, _) => vec![(s, c)],
        (None, None, true, _) => QUICK.to_vec(),
        (None, None, false, None) => DEFAULT.to_vec(),
        (None, None, false, Some(_)) => Vec::new(),
        _ => return Err("give --services N and --clusters M together, or --quick, or neither".into()),
    };
    // The real-agent part is in the full run; --quick and a custom combination run without it
    // unless --proxies asks for it.
    options.proxies = proxies.unwrap_or(if services.is_some() || quick { 0 } else { 1000 });
    if scenarios.iter().any(|&(s, c)| s < 2 || c == 0 || c > 50_000) {
        return Err("at least 2 services (the RouteTable splits between svc-0 and svc-1), 1 to 50000 clusters".into());
    }
    if options.proxies == 1 || options.proxies > 4000 {
        return Err("--proxies: 0 (skip), or 2 to 4000 (an agent holds at most 4096 registrations)".into());
    }
    if options.changes == 0 || options.timeout.is_zero() {
        return Err("--changes and --timeout must be positive".into());
    }
    Ok(Args { scenarios, options })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets too; this one takes minutes and real processes.
        println!("scale benchmark: not run (it runs under `cargo bench --bench scale` or scripts/bench-scale)");
        return;
    }
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!(
                "bench-scale: {error}\nusage: scripts/bench-scale [--quick | --services N --clusters M] [--proxies N] [--timeout SECS] [--changes N] [--keep]"
            );
            std::process::exit(2);
        }
    };
    println!(
        "trellis scale benchmark: binary {}, {} change(s) per kind, {} s limit per wait",
        process::binary().display(),
        args.options.changes,
        args.options.timeout.as_secs()
    );
    println!(
        "note: the simulated agents run in this process, on the same cores as the server: latencies include their share of the machine"
    );
    let mut rows = Vec::new();
    for &(services, clusters) in &args.scenarios {
        rows.push(scenario::run(services, clusters, &args.options).await);
    }
    if !rows.is_empty() {
        report::print(&rows);
    }
    if args.options.proxies > 0 {
        println!();
        proxies::run(args.options.proxies, &args.options).await;
    }
}
