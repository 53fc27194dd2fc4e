//! The insight codes. A code keeps its meaning forever; a retired check leaves its number unused.

/// One code: what it checks and why it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub title: &'static str,
    /// What the check looks at, and its severity.
    pub checks: &'static str,
}

pub const MGMT_COLOCATED: &str = "TRL0001";
pub const RELAY_INSECURE: &str = "TRL0002";
pub const GENERATED_CA: &str = "TRL0003";
pub const CERT_EXPIRY: &str = "TRL0004";
pub const UNAUTHENTICATED: &str = "TRL0005";
pub const BUILTIN_REDIS: &str = "TRL0006";
pub const BUILTIN_PROMETHEUS: &str = "TRL0007";
pub const FIPS: &str = "TRL0008";
pub const ADDON_NAMESPACE: &str = "TRL0009";
pub const ADDON_PLAINTEXT: &str = "TRL0010";
pub const NO_ACCESS_POLICY: &str = "TRL0011";
pub const EGRESS_OPEN: &str = "TRL0012";
pub const SINGLE_REPLICA: &str = "TRL0013";
pub const NO_HEALTH_INFO: &str = "TRL0014";
pub const PERSONAL_DATA: &str = "TRL0015";
pub const OUTDATED_ENVOY: &str = "TRL0016";
pub const ROUTE_CONFLICT: &str = "TRL0017";
pub const SELECTS_NOTHING: &str = "TRL0018";
pub const EXPORT_NOT_IMPORTED: &str = "TRL0019";
pub const AGENT_DISCONNECTED: &str = "TRL0020";
pub const RESOURCE_FAILED: &str = "TRL0021";

pub const CODES: &[Code] = &[
    Code {
        code: MGMT_COLOCATED,
        title: "management plane in a workload cluster",
        checks: "--colocated-cluster names a registered cluster: an outage or compromise of that cluster takes the control plane with it (warning; error in production)",
    },
    Code {
        code: RELAY_INSECURE,
        title: "insecure relay",
        checks: "the relay runs --insecure: plaintext, and any host can claim any cluster (warning; error in production)",
    },
    Code {
        code: GENERATED_CA,
        title: "built-in self-signed CA in production",
        checks: "with --profile production, a CA the management server generated itself is in use (error)",
    },
    Code {
        code: CERT_EXPIRY,
        title: "certificate near expiry",
        checks: "a relay, mesh root, intermediate or agent certificate expires within a week, or a renewed one is past three quarters of its life (warning); expired (error)",
    },
    Code {
        code: UNAUTHENTICATED,
        title: "API or UI without authentication",
        checks: "the API or UI answers without credentials, or takes them over plain HTTP (error when exposed or in production, else warning)",
    },
    Code {
        code: BUILTIN_REDIS,
        title: "built-in Redis in production",
        checks: "with --profile production, rate limit counters live in a Redis the platform started itself (warning)",
    },
    Code {
        code: BUILTIN_PROMETHEUS,
        title: "built-in Prometheus in production",
        checks: "with --profile production, metrics go to a Prometheus the platform started itself (warning)",
    },
    Code {
        code: FIPS,
        title: "FIPS required but not in use",
        checks: "--require-fips is set and the build's cryptography is not a FIPS-validated module (error)",
    },
    Code {
        code: ADDON_NAMESPACE,
        title: "add-on outside its own namespace",
        checks: "an add-on (ext-auth, rate limiter) runs in a namespace that also holds application workloads (warning)",
    },
    Code {
        code: ADDON_PLAINTEXT,
        title: "add-on without mTLS",
        checks: "proxies reach an add-on without mesh mTLS (error)",
    },
    Code {
        code: NO_ACCESS_POLICY,
        title: "service open to every workload",
        checks: "a service no AccessPolicy applies to, in a workspace without service isolation: every workload in the mesh can call it (warning)",
    },
    Code {
        code: EGRESS_OPEN,
        title: "egress open",
        checks: "an ExternalService that sidecars reach directly rather than through an egress gateway: no AccessPolicy can limit who calls it (warning)",
    },
    Code {
        code: SINGLE_REPLICA,
        title: "single replica",
        checks: "a service with one workload in its cluster: no redundancy there (warning in production, info in dev)",
    },
    Code {
        code: NO_HEALTH_INFO,
        title: "no readiness or liveness information",
        checks: "a service no ActiveHealthCheckPolicy or OutlierDetectionPolicy covers: the mesh keeps sending to an instance that stopped answering (info)",
    },
    Code {
        code: PERSONAL_DATA,
        title: "personal data in names",
        checks: "a resource or workload name or label that looks like an e-mail address or phone number: names are logged, exported as metric labels and shown to every reader (warning)",
    },
    Code {
        code: OUTDATED_ENVOY,
        title: "outdated Envoy",
        checks: "a proxy runs an Envoy older than the minimum supported release (warning)",
    },
    Code {
        code: ROUTE_CONFLICT,
        title: "route conflict",
        checks: "two RouteTables claim the same host and the same request match for the same workloads: only one of them serves it (error)",
    },
    Code {
        code: SELECTS_NOTHING,
        title: "selects nothing",
        checks: "a resource whose selectors match nothing, as translation reports it: it has no effect (warning)",
    },
    Code {
        code: EXPORT_NOT_IMPORTED,
        title: "export nobody imports",
        checks: "a WorkspaceSettings exports to a workspace that does not exist or does not import from it: the export shares nothing (warning)",
    },
    Code {
        code: AGENT_DISCONNECTED,
        title: "agent not connected",
        checks: "a registered cluster whose agent is not connected: it runs its last config and reports nothing (error)",
    },
    Code {
        code: RESOURCE_FAILED,
        title: "resource failed",
        checks: "translation marked a resource FAILED or INVALID: it applies nowhere (error)",
    },
];

/// The documentation of `code`, or `None` for a code Trellis does not have.
pub fn code_info(code: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_numbered_and_in_order() {
        for (i, code) in CODES.iter().enumerate() {
            assert_eq!(code.code, format!("TRL{:04}", i + 1), "codes are numbered without gaps");
        }
    }

    #[test]
    fn the_documentation_lists_every_code_as_the_code_says_it() {
        let doc = include_str!("../../../docs/insights.md");
        for code in CODES {
            let row = format!("| {} | {} | {} |", code.code, code.title, code.checks);
            assert!(doc.contains(&row), "docs/insights.md lacks or differs on:\n{row}");
        }
    }
}
