//! Part two: one real agent (the release `trellis agent`) serving many simulated sidecars, each
//! a real ADS client over the agent's xDS mTLS. Measures how long until every proxy acknowledged
//! a RouteTable change, and the agent's memory per proxy.

use std::time::{Duration, Instant};

use super::mesh_config as mesh;
use super::parallel;
use super::process::{self, Mgmt};
use super::scenario::{Options, apply};
use super::sim_proxy::SimProxy;
use super::stats::{self, KIB, MIB};
use super::waiting;

/// Ends a memory guard with the measurement it guards.
struct GuardOnDrop(tokio::task::JoinHandle<()>);

impl Drop for GuardOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registrations in flight at once (the agent takes 64 xDS handshakes at a time).
const CONCURRENCY: usize = 16;

struct Proxies(Vec<SimProxy>);

impl Proxies {
    fn watch(&self, id: u32, weight: u32) {
        for proxy in &self.0 {
            proxy.lock().markers.push((id, weight));
        }
    }

    fn unwatch(&self, id: u32) {
        for proxy in &self.0 {
            proxy.lock().markers.retain(|(m, _)| *m != id);
        }
    }
}

impl waiting::Watched for Proxies {
    fn seen_at(&self, n: usize, id: u32, since: Instant) -> Option<Instant> {
        let state = self.0[n].lock();
        state
            .received
            .iter()
            .find(|r| r.at >= since && r.found.contains(&id))
            .map(|r| r.at)
    }

    fn failures_since(&self, n: usize, since: Instant) -> Vec<(Instant, String)> {
        waiting::failures_since(&self.0[n].lock().failures, since)
    }

    fn name(&self, n: usize) -> String {
        self.0[n].lock().node_id.clone()
    }
}

pub async fn run(count: usize, options: &Options) {
    println!("== one real agent, {count} simulated proxies, {count} VirtualDestinations ==");
    let dir = std::env::temp_dir().join(format!("trellis-bench-scale-{}-proxies", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    process::clear_stopped();
    let mgmt = Mgmt::start(&dir).await;
    let outcome = measure(&mgmt, &dir, count, options).await;
    mgmt.stop().await;
    match outcome {
        Ok(()) if !options.keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(()) => println!("  data and logs kept in {}", dir.display()),
        Err(error) => println!("  proxies: {error}\n  data and logs kept in {}", dir.display()),
    }
}

/// Registers cluster-0 and starts its agent (which admits sidecars of the bench namespace).
async fn start_agent(mgmt: &Mgmt, dir: &std::path::Path) -> Result<(tokio::process::Child, String), String> {
    use trellis_support::process::free_port;
    let response = mgmt
        .api()
        .request(
            "POST",
            "/api/v1/clusters/cluster-0/register",
            Some(("application/json", Vec::new())),
        )
        .await
        .map_err(|e| format!("register cluster-0: {e:#}"))?;
    let body: serde_json::Value = serde_json::from_str(&response.body).map_err(|e| e.to_string())?;
    let root = dir.join("relay-root.pem");
    std::fs::write(&root, body["rootCaPem"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    let registry = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "agent",
        "--cluster",
        "cluster-0",
        "--mgmt",
        &mgmt.relay,
        "--data-dir",
        &dir.join("agent").display().to_string(),
        "--xds-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--registry-addr",
        &registry,
        "--root-ca",
        &root.display().to_string(),
        "--allow-namespace",
        mesh::NAMESPACE,
    ]
    .map(String::from)
    .to_vec();
    let token = body["token"].as_str().unwrap_or_default().to_string();
    let child = process::spawn(&args, &dir.join("agent.log"), &[("TRELLIS_TOKEN", &token)]);
    Ok((child, registry))
}

/// Waits until the server lists cluster-0 as connected with its current config acknowledged.
async fn wait_for_agent_config(mgmt: &Mgmt, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(body) = mgmt.api().get_json("/api/v1/clusters").await {
            let cluster = &body["clusters"]["cluster-0"];
            if cluster["connected"] == true && cluster["ackedVersion"] == cluster["currentVersion"] {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the agent did not connect and ack its config within {} s",
        limit.as_secs()
    ))
}

async fn measure(mgmt: &Mgmt, dir: &std::path::Path, count: usize, options: &Options) -> Result<(), String> {
    let (agent, registry) = start_agent(mgmt, dir).await?;
    let agent_pid = agent.id().ok_or("the agent exited at once")?;
    let _guard = process::memory_limit().map(|limit| GuardOnDrop(process::guard_memory(agent_pid, "agent", limit)));
    for first in (0..count).step_by(mesh::APPLY_BATCH) {
        let range = first..(first + mesh::APPLY_BATCH).min(count);
        apply(mgmt, &format!("vds-{first}"), mesh::virtual_destinations(range)).await?;
    }
    apply(mgmt, "route-table", mesh::route_table(500, 500)).await?;
    wait_for_agent_config(mgmt, options.timeout).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = process::rss_bytes(agent_pid);

    let started = Instant::now();
    // A rollout is a change per proxy, not one change: it gets three waits' time.
    let rollout = options.timeout * 3;
    let deadline = started + rollout;
    let proxies = parallel::bounded(count, CONCURRENCY, |i| {
        let registry = registry.clone();
        // Marker 0, the initial weight, is looked for from the first response on.
        async move { SimProxy::start(&registry, mesh::workload(i), vec![(0, 500)], deadline).await }
    })
    .await;
    let proxies = Proxies(
        proxies
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| format!("a proxy could not register within {} s: {e:#}", rollout.as_secs()))?,
    );
    let registered = started.elapsed();
    let everyone: Vec<usize> = (0..count).collect();
    // The registrations had their own limit; the routes get another.
    let initial = waiting::wait(&proxies, 0, &everyone, started, registered + options.timeout)
        .await
        .map_err(|e| format!("proxies' first config: {e}"))?;
    proxies.unwatch(0);
    println!(
        "  {count} proxies registered in {:.1} s; all had their routes {:.1} s after the first registration",
        registered.as_secs_f64(),
        initial.iter().max().copied().unwrap_or_default().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = process::rss_bytes(agent_pid);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "  agent RSS: {:.0} MiB with its config and no proxy, {:.0} MiB with {count} proxies: {:.0} KiB per proxy ({:.0} KiB added per proxy)",
            before as f64 / MIB,
            after as f64 / MIB,
            after as f64 / KIB / count as f64,
            after.saturating_sub(before) as f64 / KIB / count as f64
        );
    }

    let (mut latencies, mut slowest, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..options.changes as u32 {
        let (a, b) = mesh::flip_weights(k);
        let id = k + 1;
        proxies.watch(id, a);
        let cpu_before = process::cpu_seconds(agent_pid);
        let started = Instant::now();
        apply(mgmt, "route-table", mesh::route_table(a, b)).await?;
        let flip = waiting::wait(&proxies, id, &everyone, started, options.timeout).await;
        proxies.unwatch(id);
        let flip = flip.map_err(|e| format!("RouteTable flip {}: {e}", k + 1))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = cpu_before.zip(process::cpu_seconds(agent_pid)).map(|(b, a)| a - b);
        let max = flip.iter().max().copied().expect("proxies");
        println!(
            "  RouteTable flip {:>2}: all {count} proxies acked in {} ms (median {} ms); agent CPU {} s",
            k + 1,
            stats::ms(Some(max)),
            stats::ms(stats::percentile(&flip, 50.0)),
            stats::float(cpu, 2)
        );
        latencies.extend(flip);
        slowest.push(max);
        cpus.extend(cpu);
    }
    println!(
        "  proxies: change to ACK p50 {} ms, p99 {} ms over {} (changes x proxies); per-change slowest p50 {} ms, p99 {} ms; agent CPU {} s per change",
        stats::ms(stats::percentile(&latencies, 50.0)),
        stats::ms(stats::percentile(&latencies, 99.0)),
        latencies.len(),
        stats::ms(stats::percentile(&slowest, 50.0)),
        stats::ms(stats::percentile(&slowest, 99.0)),
        stats::float(stats::mean(&cpus), 2)
    );
    confirm_in_sync(mgmt, count).await;
    drop(proxies);
    drop(agent);
    Ok(())
}

/// The agent's own view, through the server: every proxy acknowledged every type it was sent.
async fn confirm_in_sync(mgmt: &Mgmt, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_sync = 0;
    while Instant::now() < deadline {
        if let Ok(body) = mgmt.api().get_json("/api/v1/clusters").await {
            let proxies = body["clusters"]["cluster-0"]["proxies"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            in_sync = proxies.iter().filter(|p| p["inSync"] == true).count();
            if in_sync == count {
                println!("  the agent reports all {count} proxies in sync (ACKed every type)");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("  the agent reports {in_sync}/{count} proxies in sync after the last change");
}
