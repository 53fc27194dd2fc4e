//! Certificate expiry. `trellis check` judges certificates with the same [`expiry`].

use crate::codes::CERT_EXPIRY;
use crate::{Insight, MeshSnapshot, Severity};

/// A certificate Trellis does not renew itself is due for attention this long before expiry.
pub const EXPIRY_WARNING_SECS: u64 = 7 * 86400;

/// Where a certificate stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Expired {
        ago: u64,
    },
    /// Close to expiry; `late_renewal`: Trellis renews it and has not.
    Soon {
        left: u64,
        late_renewal: bool,
    },
    Valid {
        left: u64,
    },
}

/// A certificate valid from `not_before` to `not_after` (Unix seconds) at `now`. One Trellis
/// renews (at two thirds of its life) is late once under a quarter of its life is left; any
/// other is due once under [`EXPIRY_WARNING_SECS`] is left.
pub fn expiry((not_before, not_after): (u64, u64), now: u64, renewed: bool) -> Expiry {
    if not_after <= now {
        return Expiry::Expired { ago: now - not_after };
    }
    let left = not_after - now;
    let threshold = if renewed {
        not_after.saturating_sub(not_before) / 4
    } else {
        EXPIRY_WARNING_SECS
    };
    if left < threshold {
        Expiry::Soon {
            left,
            late_renewal: renewed,
        }
    } else {
        Expiry::Valid { left }
    }
}

/// A duration as people say it: `3 days`, `5h 2m`, `4m 10s`.
pub fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s >= 2 * 86400 => format!("{} days", s / 86400),
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}m {}s", s / 60, s % 60),
    }
}

pub fn check(snapshot: &MeshSnapshot, out: &mut Vec<Insight>) {
    for cert in &snapshot.certificates {
        let (severity, summary) = match expiry((cert.not_before, cert.not_after), snapshot.now, cert.renewed) {
            Expiry::Valid { .. } => continue,
            Expiry::Expired { ago } => (
                Severity::Error,
                format!("the {} expired {} ago", cert.name, human_duration(ago)),
            ),
            Expiry::Soon { left, late_renewal } => {
                let why = if late_renewal {
                    " and was not renewed in time"
                } else {
                    ""
                };
                (
                    Severity::Warning,
                    format!("the {} expires in {}{why}", cert.name, human_duration(left)),
                )
            }
        };
        let fix = if cert.renewed {
            "Trellis renews it while the agent is connected: check that the agent runs and reaches the relay (`trellis check`), or rotate the cluster (`trellis cluster rotate`)"
        } else {
            "replace it before it expires (for a CA, add the new one beside the old in trust bundles first)"
        };
        out.push(Insight::new(CERT_EXPIRY, severity, cert.target.clone(), summary, fix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertificateInfo;
    use crate::checks::testing::of;

    const DAY: u64 = 86400;

    #[test]
    fn expiry_by_time_left() {
        // (validity, now, renewed by Trellis, expected)
        let cases = [
            ((0, 100), 100, false, Expiry::Expired { ago: 0 }),
            (
                (0, 100 + 6 * DAY),
                100,
                false,
                Expiry::Soon {
                    left: 6 * DAY,
                    late_renewal: false,
                },
            ),
            ((0, 100 + 8 * DAY), 100, false, Expiry::Valid { left: 8 * DAY }),
            // A 24 h certificate renewed at 16 h: fine at 20 h left, late at 5 h left.
            ((0, DAY), DAY - 20 * 3600, true, Expiry::Valid { left: 20 * 3600 }),
            (
                (0, DAY),
                DAY - 5 * 3600,
                true,
                Expiry::Soon {
                    left: 5 * 3600,
                    late_renewal: true,
                },
            ),
        ];
        for (validity, now, renewed, expected) in cases {
            assert_eq!(expiry(validity, now, renewed), expected, "{validity:?} at {now}");
        }
    }

    #[test]
    fn a_certificate_near_expiry_is_reported_until_replaced() {
        let mut mesh = MeshSnapshot {
            now: 1000 * DAY,
            certificates: vec![CertificateInfo {
                name: "relay server certificate".into(),
                target: "mgmt/relay".into(),
                not_before: 0,
                not_after: 1003 * DAY,
                renewed: false,
            }],
            ..Default::default()
        };
        let found = of(&mesh, "TRL0004");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(found[0].summary.contains("expires in 3 days"), "{}", found[0].summary);
        mesh.certificates[0].not_after = 990 * DAY;
        assert_eq!(of(&mesh, "TRL0004")[0].severity, Severity::Error);
        mesh.certificates[0].not_after = 2000 * DAY;
        assert!(of(&mesh, "TRL0004").is_empty());
    }
}
