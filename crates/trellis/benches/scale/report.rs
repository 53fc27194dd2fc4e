//! The summary table: one row per scenario, "-" where nothing was measured, and below it why a
//! scenario stopped.

use super::scenario::{Changes, Row};
use super::stats::{self, KIB, MIB};

const COLUMNS: &[(&str, usize)] = &[
    ("services", 8),
    ("clusters", 8),
    ("setup s", 7),
    ("apply s", 7),
    ("converge s", 10),
    ("setup KiB/ag", 12),
    ("RSS MiB", 7),
    ("RSS KiB/cl", 10),
    ("RT p50 ms", 9),
    ("RT p99 ms", 9),
    ("RT max p50", 10),
    ("RT max p99", 10),
    ("RT CPU s", 8),
    ("RT KiB/ag", 9),
    ("EP p50 ms", 9),
    ("EP p99 ms", 9),
    ("EP CPU s", 8),
    ("EP KiB/ag", 9),
    ("EP seen by", 10),
];

pub fn print(rows: &[Row]) {
    println!();
    println!(
        "RT = RouteTable weight flip, EP = endpoint change (one workload's address), each from the change to the config arriving at every agent that should see it;"
    );
    println!(
        "p50/p99 over (changes x agents); 'max' = per-change slowest agent; CPU s = management server CPU seconds per change; KiB/ag = relay bytes per agent per change;"
    );
    println!("setup KiB/ag = relay bytes per agent from the first apply to convergence; RSS after setup;");
    println!(
        "'EP seen by' = agents that received the new address / agents (remote clusters reach svc-0 through cluster-0's east-west gateway)."
    );
    let header: Vec<String> = COLUMNS.iter().map(|(name, width)| format!("{name:>width$}")).collect();
    println!("{}", header.join(" | "));
    for row in rows {
        let cells = cells(row);
        let line: Vec<String> = cells
            .iter()
            .zip(COLUMNS)
            .map(|(cell, (_, width))| format!("{cell:>width$}"))
            .collect();
        println!("{}", line.join(" | "));
    }
    for row in rows {
        for note in &row.notes {
            println!("{} services x {} clusters: {note}", row.services, row.clusters);
        }
    }
}

fn cells(row: &Row) -> Vec<String> {
    let (rt, ep) = (changes(&row.route), changes(&row.endpoint));
    let mut cells = vec![
        row.services.to_string(),
        row.clusters.to_string(),
        stats::secs(row.setup),
        stats::secs(row.apply),
        stats::secs(row.converge),
        stats::float(row.config_bytes.map(|b| b / KIB), 0),
        stats::float(row.rss.map(|r| r as f64 / MIB), 0),
        stats::float(row.rss.map(|r| r as f64 / KIB / row.clusters as f64), 0),
    ];
    cells.extend(rt);
    // The endpoint change reaches one agent today, so its per-change slowest is its p50/p99.
    cells.extend([0, 1, 4, 5].map(|i| ep[i].clone()));
    cells.push(
        row.endpoint_seen_by
            .map_or("-".into(), |(seen, of)| format!("{seen}/{of}")),
    );
    cells
}

/// p50, p99, slowest p50, slowest p99, CPU per change, KiB per agent per change.
fn changes(changes: &Changes) -> Vec<String> {
    vec![
        stats::ms(stats::percentile(&changes.latencies, 50.0)),
        stats::ms(stats::percentile(&changes.latencies, 99.0)),
        stats::ms(stats::percentile(&changes.slowest, 50.0)),
        stats::ms(stats::percentile(&changes.slowest, 99.0)),
        stats::float(stats::mean(&changes.cpu_seconds), 2),
        stats::float(stats::mean(&changes.bytes_per_agent).map(|b| b / KIB), 1),
    ]
}
