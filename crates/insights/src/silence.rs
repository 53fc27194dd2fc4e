//! Silences: an admin's decision that an insight is known and accepted. A silence names a code
//! and, optionally, one target; without a target it silences the code everywhere.

use serde::{Deserialize, Serialize};

use crate::Insight;

/// Longest target a silence may name: targets are `Kind/namespace/name` of DNS names.
const MAX_TARGET_BYTES: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsightsError {
    #[error("unknown insight code {0:?}: run `trellis insights --all` to see the codes in use (TRL0001...)")]
    UnknownCode(String),
    #[error(
        "silence target is {0} bytes; at most {MAX_TARGET_BYTES}: name one `Kind/namespace/name` or `cluster/NAME`"
    )]
    TargetTooLong(usize),
    #[error("silence target {0:?} holds a control character; give it as `trellis insights` prints it")]
    TargetUnprintable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Silence {
    pub code: String,
    /// `None`: every target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Silence {
    /// Refuses a code Trellis does not have and a target no insight could have.
    pub fn validate(&self) -> Result<(), InsightsError> {
        if crate::code_info(&self.code).is_none() {
            return Err(InsightsError::UnknownCode(self.code.clone()));
        }
        if let Some(target) = &self.target {
            if target.len() > MAX_TARGET_BYTES {
                return Err(InsightsError::TargetTooLong(target.len()));
            }
            if target.chars().any(char::is_control) {
                return Err(InsightsError::TargetUnprintable(target.clone()));
            }
        }
        Ok(())
    }

    /// The key it is stored under: one silence per code and target.
    pub fn key(&self) -> String {
        format!("{}|{}", self.code, self.target.as_deref().unwrap_or("*"))
    }

    pub fn covers(&self, insight: &Insight) -> bool {
        self.code == insight.code && self.target.as_ref().is_none_or(|t| *t == insight.target)
    }
}

/// Marks every insight a silence covers.
pub fn apply_silences(insights: &mut [Insight], silences: &[Silence]) {
    for insight in insights {
        insight.silenced = silences.iter().any(|s| s.covers(insight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn insight(code: &'static str, target: &str) -> Insight {
        Insight::new(code, Severity::Warning, target, "s", "f")
    }

    #[test]
    fn a_silence_covers_its_code_and_target_only() {
        let mut insights = vec![
            insight("TRL0018", "AccessPolicy/demo/a"),
            insight("TRL0018", "AccessPolicy/demo/b"),
            insight("TRL0019", "WorkspaceSettings/demo/a"),
        ];
        let one = Silence {
            code: "TRL0018".into(),
            target: Some("AccessPolicy/demo/a".into()),
        };
        apply_silences(&mut insights, std::slice::from_ref(&one));
        assert_eq!(
            insights.iter().map(|i| i.silenced).collect::<Vec<_>>(),
            [true, false, false]
        );
        let all = Silence {
            code: "TRL0018".into(),
            target: None,
        };
        apply_silences(&mut insights, &[all]);
        assert_eq!(
            insights.iter().map(|i| i.silenced).collect::<Vec<_>>(),
            [true, true, false]
        );
        apply_silences(&mut insights, &[]);
        assert!(
            insights.iter().all(|i| !i.silenced),
            "lifting the silence shows them again"
        );
    }

    #[test]
    fn silences_of_unknown_codes_or_odd_targets_are_refused() {
        let silence = |code: &str, target: Option<&str>| Silence {
            code: code.into(),
            target: target.map(str::to_string),
        };
        assert_eq!(silence("TRL0001", None).validate(), Ok(()));
        assert!(matches!(
            silence("TRL9999", None).validate(),
            Err(InsightsError::UnknownCode(_))
        ));
        assert!(matches!(
            silence("TRL0001", Some(&"x".repeat(600))).validate(),
            Err(InsightsError::TargetTooLong(600))
        ));
        assert!(matches!(
            silence("TRL0001", Some("a\nb")).validate(),
            Err(InsightsError::TargetUnprintable(_))
        ));
    }
}
