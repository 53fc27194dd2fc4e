//! The kinds Trellis understands, their apiVersions and the names the CLI accepts for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    KubernetesCluster,
    Workspace,
    WorkspaceSettings,
    VirtualDestination,
    RouteTable,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::KubernetesCluster,
        Kind::Workspace,
        Kind::WorkspaceSettings,
        Kind::VirtualDestination,
        Kind::RouteTable,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::KubernetesCluster | Kind::Workspace | Kind::WorkspaceSettings => "admin.gloo.solo.io/v2",
            Kind::VirtualDestination | Kind::RouteTable => "networking.gloo.solo.io/v2",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KubernetesCluster => "KubernetesCluster",
            Kind::Workspace => "Workspace",
            Kind::WorkspaceSettings => "WorkspaceSettings",
            Kind::VirtualDestination => "VirtualDestination",
            Kind::RouteTable => "RouteTable",
        }
    }

    /// Lower-case plural, as used in API paths and `trellis get`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::KubernetesCluster => "kubernetesclusters",
            Kind::Workspace => "workspaces",
            Kind::WorkspaceSettings => "workspacesettings",
            Kind::VirtualDestination => "virtualdestinations",
            Kind::RouteTable => "routetables",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::KubernetesCluster => "kc",
            Kind::Workspace => "ws",
            Kind::WorkspaceSettings => "wss",
            Kind::VirtualDestination => "vd",
            Kind::RouteTable => "rt",
        }
    }

    /// Accepts the kind name, its plural, its singular lower case and its short name, any case.
    pub fn parse_loose(input: &str) -> Option<Kind> {
        let wanted = input.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| wanted == k.as_str().to_ascii_lowercase() || wanted == k.plural() || wanted == k.short())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse_loose(s).ok_or_else(|| {
            let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown kind {s:?} (known kinds: {})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_of_a_kind() {
        for input in ["RouteTable", "routetable", "routetables", "rt", "ROUTETABLES"] {
            assert_eq!(Kind::parse_loose(input), Some(Kind::RouteTable), "{input}");
        }
        assert_eq!(Kind::parse_loose("Gateway"), None);
    }
}
