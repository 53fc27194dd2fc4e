//! The checks, by what they look at. Each pushes its insights; none reads another's output.

pub mod addons;
pub mod certificates;
pub mod config;
pub mod names;
pub mod platform;
pub mod traffic;
pub mod workloads;

/// Severity that rises to error in a production profile.
fn strict(snapshot: &crate::MeshSnapshot) -> crate::Severity {
    match snapshot.settings.profile {
        crate::Profile::Production => crate::Severity::Error,
        crate::Profile::Dev => crate::Severity::Warning,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::{Insight, MeshSnapshot};

    /// The insights of `code` that `snapshot` gives rise to.
    pub fn of(snapshot: &MeshSnapshot, code: &str) -> Vec<Insight> {
        crate::evaluate(snapshot)
            .into_iter()
            .filter(|i| i.code == code)
            .collect()
    }
}
