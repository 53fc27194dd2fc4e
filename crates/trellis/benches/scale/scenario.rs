//! One scenario: S services over C clusters on a fresh management server, then RouteTable
//! changes and endpoint changes, each timed until the agents that should see it received it.

use std::time::{Duration, Instant};

use super::fleet::Fleet;
use super::mesh_config::{self as mesh, APPLY_BATCH};
use super::process::{self, Mgmt};
use super::stats::{self, KIB, MIB};

pub struct Options {
    /// Simulated proxies of the real-agent part (0: that part is skipped).
    pub proxies: usize,
    /// How long any one wait (setup, one change) may take before the scenario gives up.
    pub timeout: Duration,
    /// RouteTable flips, and endpoint changes, per scenario.
    pub changes: usize,
    /// Keep the scenario's directory (server data and log) even when it went well.
    pub keep: bool,
}

/// What one scenario measured; `None` is "not measured" (the scenario stopped before).
#[derive(Default)]
pub struct Row {
    pub services: usize,
    pub clusters: usize,
    /// Registering every cluster and agent until the server had every agent's discovery.
    pub setup: Option<Duration>,
    /// Applying every VirtualDestination (batches of 1000).
    pub apply: Option<Duration>,
    /// From the start of the last apply until every agent had a config with all of them.
    pub converge: Option<Duration>,
    /// Relay bytes per agent from the first apply until convergence (the full config).
    pub config_bytes: Option<f64>,
    pub rss: Option<u64>,
    pub route: Changes,
    pub endpoint: Changes,
    /// Agents that received the endpoint change, of all agents, over all changes.
    pub endpoint_seen_by: Option<(usize, usize)>,
    pub notes: Vec<String>,
}

/// Latencies and costs of a series of changes.
#[derive(Default)]
pub struct Changes {
    /// Change applied to config received, one per (change, agent that should see it).
    pub latencies: Vec<Duration>,
    /// Per change, the slowest agent.
    pub slowest: Vec<Duration>,
    pub cpu_seconds: Vec<f64>,
    pub bytes_per_agent: Vec<f64>,
}

/// Lets the server finish what a change set off (acks, status) before its CPU time is read.
const SETTLE: Duration = Duration::from_millis(300);

pub async fn run(services: usize, clusters: usize, options: &Options) -> Row {
    println!("== {services} services over {clusters} clusters ==");
    let dir = std::env::temp_dir().join(format!(
        "trellis-bench-scale-{}-{services}x{clusters}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    process::clear_stopped();
    let limit = process::memory_limit();
    let mgmt = Mgmt::start(&dir).await;
    let guard = limit.map(|limit| process::guard_memory(mgmt.pid(), "management server", limit));
    let mut row = Row {
        services,
        clusters,
        ..Default::default()
    };
    measure(&mgmt, options, &mut row).await;
    guard.inspect(|g| g.abort());
    if let Some(reason) = process::stopped()
        && !row.notes.iter().any(|note| note.contains(&reason))
    {
        row.notes.push(reason);
    }
    mgmt.stop().await;
    if row.notes.is_empty() && !options.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  server data and log kept in {}", dir.display());
    }
    row
}

async fn measure(mgmt: &Mgmt, options: &Options, row: &mut Row) {
    let (services, clusters) = (row.services, row.clusters);
    let started = Instant::now();
    let discoveries = (0..clusters).map(|c| mesh::discovery(c, clusters, services)).collect();
    let fleet = match Fleet::start(mgmt, discoveries).await {
        Ok(fleet) => fleet,
        Err(error) => return row.notes.push(format!("setup failed: {error:#}")),
    };
    if let Err(error) = wait_for_discovery(mgmt, clusters, services, options.timeout).await {
        return row.notes.push(error);
    }
    row.setup = Some(started.elapsed());
    println!(
        "  {clusters} agents registered, connected, {services} workloads reported: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let converged = apply_virtual_destinations(mgmt, &fleet, options, row).await;
    let rss = process::rss_bytes(mgmt.pid());
    if let Some(rss) = rss {
        println!(
            "  management server RSS {}: {:.0} MiB ({:.0} KiB per cluster)",
            if converged { "after setup" } else { "when setup stopped" },
            rss as f64 / MIB,
            rss as f64 / KIB / clusters as f64
        );
    }
    // The table's column is memory after setup; a setup cut short is only in the log.
    row.rss = rss.filter(|_| converged);
    if converged && route_changes(mgmt, &fleet, options, row).await {
        endpoint_changes(mgmt, &fleet, options, row).await;
    }
}

/// Waits until the server has every cluster's discovery (before any VirtualDestination exists,
/// while the cluster list is cheap to ask for).
async fn wait_for_discovery(mgmt: &Mgmt, clusters: usize, services: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut seen = (0, 0);
    while Instant::now() < deadline {
        if let Ok(body) = mgmt.api().get_json("/api/v1/clusters").await {
            let all = body["clusters"].as_object().cloned().unwrap_or_default();
            let connected = all.values().filter(|c| c["connected"] == true).count();
            let workloads: u64 = all.values().filter_map(|c| c["workloads"].as_u64()).sum();
            seen = (connected, workloads as usize);
            if seen == (clusters, services) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "setup did not finish within {:.0} s: {}/{clusters} agents connected, {}/{services} workloads reported",
        limit.as_secs_f64(),
        seen.0,
        seen.1
    ))
}

pub async fn apply(mgmt: &Mgmt, source: &str, yaml: String) -> Result<(), String> {
    let response = mgmt
        .api()
        .request(
            "POST",
            &format!("/api/v1/apply?source={source}"),
            Some(("application/yaml", yaml.into_bytes())),
        )
        .await
        .map_err(|e| format!("apply {source}: {e:#}"))?;
    if response.status != 200 {
        let body: String = response.body.chars().take(500).collect();
        return Err(format!("apply {source}: HTTP {}: {body}", response.status));
    }
    Ok(())
}

/// Applies one VirtualDestination per service and waits until every agent has them all: a
/// config naming the last one's host (applies are translated in order, so it has the others).
async fn apply_virtual_destinations(mgmt: &Mgmt, fleet: &Fleet, options: &Options, row: &mut Row) -> bool {
    let services = row.services;
    let last = fleet.watch(&format!("\"{}\"", mesh::host(services - 1)));
    // Applying is many changes, not one: the limit of one wait for every 10 requests.
    let apply_limit = options.timeout * services.div_ceil(APPLY_BATCH * 10) as u32;
    let started = Instant::now();
    let mut last_batch = started;
    for first in (0..services).step_by(APPLY_BATCH) {
        last_batch = Instant::now();
        let range = first..range_end(first, services);
        if let Err(error) = apply(mgmt, &format!("vds-{first}"), mesh::virtual_destinations(range)).await {
            row.notes.push(format!("setup: {error}"));
            return false;
        }
        if started.elapsed() > apply_limit {
            row.notes.push(format!(
                "setup: applying {services} VirtualDestinations did not finish within {:.0} s ({} applied)",
                apply_limit.as_secs_f64(),
                range_end(first, services)
            ));
            return false;
        }
    }
    row.apply = Some(started.elapsed());
    println!(
        "  {services} VirtualDestinations applied in {} requests: {:.1} s",
        services.div_ceil(APPLY_BATCH),
        started.elapsed().as_secs_f64()
    );
    let everyone: Vec<usize> = (0..fleet.agents.len()).collect();
    match fleet.wait(last, &everyone, last_batch, options.timeout).await {
        Ok(latencies) => {
            row.converge = latencies.iter().max().copied();
            // Everything the relay sent while the VirtualDestinations went in: the full config,
            // in however many changes and messages it came.
            row.config_bytes = Some(fleet.bytes_per_agent(started, Instant::now()));
            println!(
                "  converged: every agent had the full config {} s after the last apply began ({:.0} KiB per agent received since the first apply)",
                stats::secs(row.converge),
                row.config_bytes.unwrap_or(0.0) / KIB
            );
            fleet.unwatch(last);
            confirm_acks(mgmt, row).await;
            true
        }
        Err(error) => {
            println!("  setup {error}");
            row.notes.push(format!("setup {error}"));
            false
        }
    }
}

/// The end of the batch of VirtualDestinations that starts at `first`.
fn range_end(first: usize, services: usize) -> usize {
    (first + APPLY_BATCH).min(services)
}

/// The server's own view: every cluster acknowledged its current config.
async fn confirm_acks(mgmt: &Mgmt, row: &mut Row) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut behind = usize::MAX;
    while Instant::now() < deadline {
        if let Ok(body) = mgmt.api().get_json("/api/v1/clusters").await {
            behind = body["clusters"]
                .as_object()
                .map(|all| {
                    all.values()
                        .filter(|c| c["ackedVersion"] != c["currentVersion"])
                        .count()
                })
                .unwrap_or(usize::MAX);
            if behind == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.notes.push(format!(
        "the server still lists {behind} clusters as not having acked their config"
    ));
}

/// The initial RouteTable, then `changes` weight flips, each timed until every agent has it.
async fn route_changes(mgmt: &Mgmt, fleet: &Fleet, options: &Options, row: &mut Row) -> bool {
    let everyone: Vec<usize> = (0..fleet.agents.len()).collect();
    let initial = fleet.watch(&mesh::route_weight_marker(500));
    let started = Instant::now();
    let outcome = match apply(mgmt, "route-table", mesh::route_table(500, 500)).await {
        Ok(()) => fleet
            .wait(initial, &everyone, started, options.timeout)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    fleet.unwatch(initial);
    if let Err(error) = outcome {
        row.notes.push(format!("RouteTable: {error}"));
        return false;
    }
    let pid = mgmt.pid();
    for k in 0..options.changes as u32 {
        let (a, b) = mesh::flip_weights(k);
        let id = fleet.watch(&mesh::route_weight_marker(a));
        let cpu_before = process::cpu_seconds(pid);
        let started = Instant::now();
        let outcome = match apply(mgmt, "route-table", mesh::route_table(a, b)).await {
            Ok(()) => fleet.wait(id, &everyone, started, options.timeout).await,
            Err(error) => Err(error),
        };
        fleet.unwatch(id);
        let latencies = match outcome {
            Ok(latencies) => latencies,
            Err(error) => {
                row.notes.push(format!("RouteTable flip {}: {error}", k + 1));
                return false;
            }
        };
        tokio::time::sleep(SETTLE).await;
        let cpu = cpu_before.zip(process::cpu_seconds(pid)).map(|(b, a)| a - b);
        let bytes = fleet.bytes_per_agent(started, Instant::now());
        let slowest = latencies.iter().max().copied().expect("agents");
        println!(
            "  RouteTable flip {:>2} (weights {a}/{b}): all {} agents in {} ms (median agent {} ms); server CPU {} s; {:.1} KiB per agent",
            k + 1,
            latencies.len(),
            stats::ms(Some(slowest)),
            stats::ms(stats::percentile(&latencies, 50.0)),
            stats::float(cpu, 2),
            bytes / KIB
        );
        row.route.latencies.extend(latencies);
        row.route.slowest.push(slowest);
        row.route.cpu_seconds.extend(cpu);
        row.route.bytes_per_agent.push(bytes);
    }
    true
}

/// cluster-0's agent moves svc-0's workload to a new address, `changes` times. Other clusters
/// reach svc-0 through cluster-0's east-west gateway, so their configs carry the gateway, not the
/// workload address: the wait is for cluster-0's own config, and the report counts who else
/// received the new address (none, unless translation changes).
async fn endpoint_changes(mgmt: &Mgmt, fleet: &Fleet, options: &Options, row: &mut Row) {
    let pid = mgmt.pid();
    let (mut seen, mut possible) = (0, 0);
    for k in 0..options.changes {
        let address = mesh::changed_address(k);
        let id = fleet.watch(&format!("\"{address}\""));
        let mut discovery = fleet.agents[0].discovery();
        for workload in discovery.workloads.iter_mut().filter(|w| w.name == "svc-0-0") {
            workload.address = address.clone();
        }
        let cpu_before = process::cpu_seconds(pid);
        let started = Instant::now();
        fleet.agents[0].set_discovery(discovery);
        let outcome = fleet.wait(id, &[0], started, options.timeout).await;
        if let Err(error) = outcome {
            fleet.unwatch(id);
            row.notes.push(format!("endpoint change {}: {error}", k + 1));
            return;
        }
        tokio::time::sleep(SETTLE).await;
        let cpu = cpu_before.zip(process::cpu_seconds(pid)).map(|(b, a)| a - b);
        let bytes = fleet.bytes_per_agent(started, Instant::now());
        let latencies: Vec<Duration> = (0..fleet.agents.len())
            .filter_map(|n| fleet.seen_at(n, id, started))
            .map(|at| at.duration_since(started))
            .collect();
        fleet.unwatch(id);
        seen += latencies.len();
        possible += fleet.agents.len();
        let slowest = latencies.iter().max().copied().expect("cluster-0 saw it");
        println!(
            "  endpoint change {:>2}: received by {}/{} agents, the last after {} ms; server CPU {} s; {:.1} KiB per agent",
            k + 1,
            latencies.len(),
            fleet.agents.len(),
            stats::ms(Some(slowest)),
            stats::float(cpu, 2),
            bytes / KIB
        );
        row.endpoint.latencies.extend(latencies);
        row.endpoint.slowest.push(slowest);
        row.endpoint.cpu_seconds.extend(cpu);
        row.endpoint.bytes_per_agent.push(bytes);
    }
    row.endpoint_seen_by = Some((seen, possible));
}
