//! Config resources as translation judged them, and workspace sharing.

use std::collections::BTreeMap;

use crate::codes::{EXPORT_NOT_IMPORTED, RESOURCE_FAILED, SELECTS_NOTHING};
use crate::{Insight, MeshSnapshot, Severity};

/// How translation's status messages say a selector matched nothing.
const SELECTS_NOTHING_PHRASES: [&str; 4] = ["selects nothing", "selects no ", "matches nothing", "matches no "];

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    for resource in &snapshot.resources {
        match resource.state.as_str() {
            "FAILED" | "INVALID" => out.push(Insight::new(
                RESOURCE_FAILED,
                Severity::Error,
                resource.target(),
                format!("{} is {}: {}", resource.target(), resource.state, resource.message),
                format!(
                    "fix what the status says; `trellis describe {}` shows it whole",
                    resource.target()
                ),
            )),
            "WARNING" if SELECTS_NOTHING_PHRASES.iter().any(|p| resource.message.contains(p)) => {
                out.push(Insight::new(
                    SELECTS_NOTHING,
                    Severity::Warning,
                    resource.target(),
                    format!("{} selects nothing, so it has no effect: {}", resource.target(), resource.message),
                    "correct its selectors (labels, names, namespaces, clusters) or delete it; `trellis get` lists what exists",
                ));
            }
            _ => {}
        }
    }
    let imports: BTreeMap<&str, &[String]> = snapshot
        .workspaces
        .iter()
        .map(|w| (w.name.as_str(), w.imports_from.as_slice()))
        .collect();
    for workspace in &snapshot.workspaces {
        for to in workspace
            .exports_to
            .iter()
            .filter(|t| *t != "*" && **t != workspace.name)
        {
            let why = match imports.get(to.as_str()) {
                None => format!("there is no workspace {to}"),
                Some(from) if from.iter().any(|f| f == "*" || *f == workspace.name) => continue,
                Some(_) => format!("workspace {to} does not import from {}", workspace.name),
            };
            let target = if workspace.settings.is_empty() {
                format!("Workspace/{}", workspace.name)
            } else {
                workspace.settings.clone()
            };
            out.push(Insight::new(
                EXPORT_NOT_IMPORTED,
                Severity::Warning,
                target,
                format!(
                    "workspace {} exports to {to}, but {why}: the export shares nothing",
                    workspace.name
                ),
                format!(
                    "add {} to importFrom in the WorkspaceSettings of {to}, or drop the export",
                    workspace.name
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::checks::testing::of;
    use crate::*;

    fn policy(state: &str, message: &str) -> ResourceInfo {
        ResourceInfo {
            kind: "AccessPolicy".into(),
            namespace: "demo".into(),
            name: "p".into(),
            state: state.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_resource_that_selects_nothing_is_reported_until_it_selects_something() {
        let mut mesh = MeshSnapshot {
            resources: vec![policy("WARNING", "applies to 0 workload(s); selects nothing yet")],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0018");
        assert_eq!(found[0].target, "AccessPolicy/demo/p");
        mesh.resources = vec![policy("ACCEPTED", "applies to 2 workload(s)")];
        assert!(of(&mesh, "TRL0018").is_empty());
        mesh.resources = vec![policy("WARNING", "spec.config: not supported yet")];
        assert!(of(&mesh, "TRL0018").is_empty(), "other warnings are not this insight");
    }

    #[test]
    fn a_failed_resource_is_an_error_until_it_is_fixed() {
        let mut mesh = MeshSnapshot {
            resources: vec![policy("FAILED", "an older AccessPolicy already applies")],
            ..Default::default()
        };
        assert_eq!(of(&mesh, "TRL0021")[0].severity, Severity::Error);
        mesh.resources = vec![policy("ACCEPTED", "")];
        assert!(of(&mesh, "TRL0021").is_empty());
    }

    fn workspace(name: &str, exports: &[&str], imports: &[&str]) -> WorkspaceInfo {
        WorkspaceInfo {
            name: name.into(),
            settings: format!("WorkspaceSettings/{name}/settings"),
            exports_to: exports.iter().map(|s| s.to_string()).collect(),
            imports_from: imports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_export_nobody_imports_is_reported_until_imported() {
        let mut mesh = MeshSnapshot {
            workspaces: vec![
                workspace("backend", &["frontend", "ghost"], &[]),
                workspace("frontend", &[], &[]),
            ],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0019");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|i| i.summary.contains("no workspace ghost")));
        assert!(
            found
                .iter()
                .any(|i| i.summary.contains("frontend does not import from backend"))
        );
        mesh.workspaces = vec![
            workspace("backend", &["frontend"], &[]),
            workspace("frontend", &[], &["backend"]),
        ];
        assert!(of(&mesh, "TRL0019").is_empty());
        mesh.workspaces[1].imports_from = vec!["*".into()];
        assert!(of(&mesh, "TRL0019").is_empty(), "an import by selector may take it");
    }
}
