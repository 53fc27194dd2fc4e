//! Names that look like personal data. Resource and workload names and labels end up in logs,
//! metric labels, audit records and every reader's `trellis get`: an e-mail address or phone
//! number there is personal data spread where nobody can erase it.

use std::collections::BTreeMap;

use crate::codes::PERSONAL_DATA;
use crate::{Insight, MeshSnapshot, Severity};

/// Digits that make a phone number: E.164 numbers have at most 15, national ones at least 9.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 9..=15;

/// What personal data `text` looks like it holds, if any.
pub fn personal_data(text: &str) -> Option<&'static str> {
    if looks_like_email(text) {
        return Some("an e-mail address");
    }
    if looks_like_phone(text) {
        return Some("a phone number");
    }
    None
}

fn looks_like_email(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .any(|word| {
            let Some((local, domain)) = word.split_once('@') else {
                return false;
            };
            let labels: Vec<&str> = domain.split('.').collect();
            !local.is_empty()
                && labels.len() >= 2
                && labels
                    .iter()
                    .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                && labels
                    .last()
                    .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
        })
}

/// A run of digits, maybe with the separators people write numbers with, of phone length.
fn looks_like_phone(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | ' ' | '(' | ')')))
        .any(|run| {
            // Groups of one to four digits joined by separators, or one long run: not a version
            // like 1.2.3 or an address like 10.0.0.1, which have too few digits.
            let digits = run.chars().filter(char::is_ascii_digit).count();
            PHONE_DIGITS.contains(&digits)
        })
}

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    let mut push = |target: String, what: &str, text: &str, kind: &str| {
        out.push(Insight::new(
            PERSONAL_DATA,
            Severity::Warning,
            target,
            format!("{what} {text:?} looks like {kind}: names and labels are logged, exported as metric labels and shown to every reader"),
            "rename it with a role or team name instead of a person's details (a ticket id, a team handle)",
        ));
    };
    let labels = |target: &str, map: &BTreeMap<String, String>, push: &mut dyn FnMut(String, &str, &str, &str)| {
        for (key, value) in map {
            for text in [key, value] {
                if let Some(kind) = personal_data(text) {
                    push(target.to_string(), "label", &format!("{key}={value}"), kind);
                }
            }
        }
    };
    for resource in &snapshot.resources {
        let target = resource.target();
        for (what, text) in [("namespace", &resource.namespace), ("name", &resource.name)] {
            if let Some(kind) = personal_data(text) {
                push(target.clone(), what, text, kind);
            }
        }
        labels(&target, &resource.labels, &mut push);
    }
    for workload in &snapshot.workloads {
        let target = format!("workload/{}/{}/{}", workload.cluster, workload.namespace, workload.name);
        for (what, text) in [("workload name", &workload.name), ("service name", &workload.service)] {
            if let Some(kind) = personal_data(text) {
                push(target.clone(), what, text, kind);
            }
        }
        labels(&target, &workload.labels, &mut push);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testing::of;
    use crate::{ResourceInfo, WorkloadInfo};

    #[test]
    fn emails_and_phone_numbers_are_recognized_and_ordinary_names_are_not() {
        for (text, expected) in [
            ("jane.doe@example.com", Some("an e-mail address")),
            ("owner jane@corp.example.org", Some("an e-mail address")),
            ("+1-415-555-0123", Some("a phone number")),
            ("callback-4155550123", Some("a phone number")),
            ("reviews-v2", None),
            ("10.0.0.12", None),
            ("1.40.0", None),
            ("build-20241205", None),
            ("team@", None),
            ("a@b", None),
        ] {
            assert_eq!(personal_data(text), expected, "{text}");
        }
    }

    #[test]
    fn personal_data_in_names_and_labels_is_reported_until_renamed() {
        let mut mesh = MeshSnapshot {
            resources: vec![ResourceInfo {
                kind: "RouteTable".into(),
                namespace: "demo".into(),
                name: "web".into(),
                labels: [("owner".to_string(), "jane.doe@example.com".to_string())].into(),
                ..Default::default()
            }],
            workloads: vec![WorkloadInfo {
                cluster: "c1".into(),
                namespace: "demo".into(),
                name: "web-4155550123".into(),
                service: "web".into(),
                isolated: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0015");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].target, "RouteTable/demo/web");
        mesh.resources[0].labels = [("owner".to_string(), "team-web".to_string())].into();
        mesh.workloads[0].name = "web-1".into();
        assert!(of(&mesh, "TRL0015").is_empty());
    }
}
