//! Who may reach what: services without an access policy, open egress, conflicting routes.

use std::collections::{BTreeMap, BTreeSet};

use crate::codes::{EGRESS_OPEN, NO_ACCESS_POLICY, ROUTE_CONFLICT};
use crate::{Insight, MeshSnapshot, Severity};

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    let protected: BTreeSet<&str> = snapshot
        .services_with_access_policy
        .iter()
        .map(String::as_str)
        .collect();
    let mut open: BTreeSet<String> = BTreeSet::new();
    for workload in snapshot.workloads.iter().filter(|w| !w.isolated) {
        let service = workload.service_key();
        if !protected.contains(service.as_str()) {
            open.insert(service);
        }
    }
    for service in open {
        out.push(Insight::new(
            NO_ACCESS_POLICY,
            Severity::Warning,
            format!("service/{service}"),
            format!("service {service} has no AccessPolicy and its workspace has no service isolation: any workload in the mesh can call it"),
            "apply an AccessPolicy that names its allowed clients, or turn on serviceIsolation in its WorkspaceSettings",
        ));
    }
    for external in snapshot.external_services.iter().filter(|e| !e.through_egress_gateway) {
        out.push(Insight::new(
            EGRESS_OPEN,
            Severity::Warning,
            format!("ExternalService/{}/{}", external.namespace, external.name),
            format!(
                "sidecars reach {} directly: traffic leaves from every workload, and no AccessPolicy can limit which may call it",
                external.hosts.join(", ")
            ),
            "route it through an egress gateway (spec.ports[].egressGatewayRoutes) and apply an AccessPolicy to the ExternalService",
        ));
    }
    route_conflicts(snapshot, out);
}

/// Two tables conflict where they serve the same host with the same match for the same
/// workloads: one of them wins, the other's route silently serves nothing there.
fn route_conflicts(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    // (host, applies_to, match) -> tables claiming it, in name order.
    let mut claims: BTreeMap<(&str, &[String], &str), BTreeSet<String>> = BTreeMap::new();
    for table in &snapshot.route_tables {
        for host in &table.hosts {
            for matcher in &table.matches {
                claims
                    .entry((host.as_str(), table.applies_to.as_slice(), matcher.as_str()))
                    .or_default()
                    .insert(table.target());
            }
        }
    }
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    for ((host, _, matcher), tables) in claims.iter().filter(|(_, tables)| tables.len() > 1) {
        let tables: Vec<&String> = tables.iter().collect();
        for table in &tables {
            let others: Vec<&str> = tables.iter().filter(|t| t != &table).map(|t| t.as_str()).collect();
            if !reported.insert((table.to_string(), others.join(","))) {
                continue;
            }
            let what = if *matcher == "*" {
                "every request".to_string()
            } else {
                format!("match {matcher}")
            };
            out.push(Insight::new(
                ROUTE_CONFLICT,
                Severity::Error,
                table.to_string(),
                format!("{table} and {} both route {what} on host {host} for the same workloads: only one of them serves it", others.join(", ")),
                "keep the route in one table, give the tables different hosts or workload selectors, or delegate from one to the other",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::checks::testing::of;
    use crate::*;

    fn workload(isolated: bool) -> WorkloadInfo {
        WorkloadInfo {
            cluster: "c1".into(),
            namespace: "demo".into(),
            name: "web-1".into(),
            service: "web".into(),
            isolated,
            ..Default::default()
        }
    }

    #[test]
    fn a_service_without_access_policy_or_isolation_is_reported_until_either_is_there() {
        let mut mesh = MeshSnapshot {
            workloads: vec![workload(false)],
            ..Default::default()
        };
        assert_eq!(of(&mesh, "TRL0011")[0].target, "service/c1/demo/web");
        mesh.services_with_access_policy = vec!["c1/demo/web".into()];
        assert!(of(&mesh, "TRL0011").is_empty());
        mesh.services_with_access_policy.clear();
        mesh.workloads = vec![workload(true)];
        assert!(of(&mesh, "TRL0011").is_empty(), "isolation closes it too");
    }

    #[test]
    fn egress_straight_from_sidecars_is_reported_until_it_goes_through_a_gateway() {
        let mut mesh = MeshSnapshot {
            external_services: vec![ExternalServiceInfo {
                namespace: "demo".into(),
                name: "payments".into(),
                hosts: vec!["api.payments.example".into()],
                through_egress_gateway: false,
            }],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0012");
        assert_eq!(found[0].target, "ExternalService/demo/payments");
        mesh.external_services[0].through_egress_gateway = true;
        assert!(of(&mesh, "TRL0012").is_empty());
    }

    fn table(name: &str, path: &str) -> RouteTableInfo {
        RouteTableInfo {
            namespace: "demo".into(),
            name: name.into(),
            hosts: vec!["web.demo".into()],
            applies_to: vec![],
            matches: vec![path.into()],
        }
    }

    #[test]
    fn two_tables_claiming_one_host_and_match_conflict_until_one_moves() {
        let mut mesh = MeshSnapshot {
            route_tables: vec![
                table("a", "{\"uri\":{\"prefix\":\"/\"}}"),
                table("b", "{\"uri\":{\"prefix\":\"/\"}}"),
            ],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0017");
        assert_eq!(found.len(), 2, "each table is told: {found:?}");
        assert!(found.iter().all(|i| i.severity == Severity::Error));
        assert!(found[0].summary.contains("RouteTable/demo/b"));
        // Different workloads: no conflict.
        mesh.route_tables[1].applies_to = vec!["{\"labels\":{\"app\":\"x\"}}".into()];
        assert!(of(&mesh, "TRL0017").is_empty());
        mesh.route_tables[1].applies_to.clear();
        mesh.route_tables[1].matches = vec!["{\"uri\":{\"prefix\":\"/api\"}}".into()];
        assert!(of(&mesh, "TRL0017").is_empty());
    }
}
