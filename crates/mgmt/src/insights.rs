//! `GET /api/v1/insights` and the silences of `trellis insights silence|unsilence`; the
//! `trellis_mgmt_insights` gauge. The checks themselves live in the pure `trellis-insights`
//! crate; this file gathers their input ([`super::insights_snapshot`]) and serves the output.
//!
//! | method | path | what | RBAC (trellis.io) |
//! |---|---|---|---|
//! | GET | /api/v1/insights[?all=true] | active insights; `all` adds silenced ones | get insights |
//! | GET | /api/v1/insights/silences | the silences | list insightsilences |
//! | POST | /api/v1/insights/silences | `{code, target?}`: silence a code (on one target) | create insightsilences |
//! | DELETE | /api/v1/insights/silences?code=&target= | lift a silence | delete insightsilences |

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use trellis_insights::{Insight, Severity, Silence};
use trellis_store::SilenceRecord;

use super::Mgmt;
use super::api_auth::Identity;

/// A silence is a code and a target: a request body of more is not one.
const MAX_SILENCE_BODY: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceQuery {
    code: String,
    target: Option<String>,
}

/// The insights the mesh gives rise to now, silences applied. Reads the store: call it off the
/// async runtime.
pub fn current(mgmt: &Mgmt) -> anyhow::Result<Vec<Insight>> {
    let snapshot = super::insights_snapshot::build(mgmt, trellis_support::unix_now())?;
    let mut insights = trellis_insights::evaluate(&snapshot);
    let mut silences: Vec<Silence> = mgmt
        .store
        .silences()?
        .into_iter()
        .map(|r| Silence {
            code: r.code,
            target: r.target,
        })
        .collect();
    // Gloo's InsightsConfig `disabledInsights`: a code disabled there is silenced everywhere.
    for resource in mgmt.stored()?.iter() {
        if let trellis_api::Spec::InsightsConfig(spec) = &resource.spec {
            silences.extend(spec.disabled_insights.iter().map(|code| Silence {
                code: code.clone(),
                target: None,
            }));
        }
    }
    trellis_insights::apply_silences(&mut insights, &silences);
    Ok(insights)
}

/// Sets `trellis_mgmt_insights{code,severity}` to the count of active, unsilenced insights;
/// a code that cleared disappears from the family rather than lingering at its last count.
pub fn refresh_gauge(mgmt: &Mgmt) {
    let insights = match current(mgmt) {
        Ok(insights) => insights,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot evaluate insights for /metrics");
            return;
        }
    };
    let gauge = &mgmt.metrics.insights;
    gauge.clear();
    for insight in insights.iter().filter(|i| !i.silenced) {
        gauge
            .get_or_create(&super::metrics::InsightLabel {
                code: insight.code.to_string(),
                severity: insight.severity.as_str().to_string(),
            })
            .inc();
    }
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(error: impl std::fmt::Display) -> Response {
    // The cause goes to the log; the client learns only that it was not its fault.
    tracing::error!(%error, "insights request failed");
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the management server log",
    )
}

pub async fn list(State(mgmt): State<Arc<Mgmt>>, Query(query): Query<ListQuery>) -> Response {
    let insights = match tokio::task::spawn_blocking(move || current(&mgmt)).await {
        Ok(Ok(insights)) => insights,
        Ok(Err(error)) => return internal(format!("{error:#}")),
        Err(error) => return internal(error),
    };
    let active: Vec<&Insight> = insights.iter().filter(|i| !i.silenced).collect();
    let count = |severity| active.iter().filter(|i| i.severity == severity).count();
    let (errors, warnings, infos) = (count(Severity::Error), count(Severity::Warning), count(Severity::Info));
    let silenced = insights.len() - active.len();
    let shown: Vec<&Insight> = insights.iter().filter(|i| query.all || !i.silenced).collect();
    Json(json!({
        "insights": shown,
        "errors": errors,
        "warnings": warnings,
        "infos": infos,
        "silenced": silenced,
    }))
    .into_response()
}

pub async fn silences(State(mgmt): State<Arc<Mgmt>>) -> Response {
    match tokio::task::spawn_blocking(move || mgmt.store.silences()).await {
        Ok(Ok(silences)) => Json(json!({ "silences": silences })).into_response(),
        Ok(Err(error)) => internal(error),
        Err(error) => internal(error),
    }
}

pub async fn silence(State(mgmt): State<Arc<Mgmt>>, Extension(identity): Extension<Identity>, body: Bytes) -> Response {
    if body.len() > MAX_SILENCE_BODY {
        return failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a silence is at most {MAX_SILENCE_BODY} bytes: {{\"code\": \"TRL0018\", \"target\": \"Kind/namespace/name\"}}"
            ),
        );
    }
    let silence: Silence = match serde_json::from_slice(&body) {
        Ok(silence) => silence,
        Err(error) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"code\": \"TRLnnnn\", \"target\": \"...\"}} (target optional): {error}"),
            );
        }
    };
    if let Err(error) = silence.validate() {
        return failure(StatusCode::BAD_REQUEST, error.to_string());
    }
    let record = SilenceRecord {
        code: silence.code,
        target: silence.target,
        created_by: identity.user.clone(),
        created_at: trellis_support::unix_now(),
    };
    let storing = record.clone();
    match tokio::task::spawn_blocking(move || mgmt.store.put_silence(&storing)).await {
        Ok(Ok(())) => {
            tracing::info!(user = %identity.user, code = %record.code, target = ?record.target, "insight silenced");
            Json(json!({ "silence": record })).into_response()
        }
        Ok(Err(error)) => internal(error),
        Err(error) => internal(error),
    }
}

pub async fn unsilence(State(mgmt): State<Arc<Mgmt>>, Query(query): Query<SilenceQuery>) -> Response {
    let silence = Silence {
        code: query.code,
        target: query.target,
    };
    if let Err(error) = silence.validate() {
        return failure(StatusCode::BAD_REQUEST, error.to_string());
    }
    let (code, target) = (silence.code.clone(), silence.target.clone());
    match tokio::task::spawn_blocking(move || mgmt.store.delete_silence(&code, target.as_deref())).await {
        Ok(Ok(true)) => Json(json!({ "deleted": silence })).into_response(),
        Ok(Ok(false)) => failure(
            StatusCode::NOT_FOUND,
            format!(
                "no silence of {} on {}: `trellis insights silences` lists them",
                silence.code,
                silence.target.as_deref().unwrap_or("every target")
            ),
        ),
        Ok(Err(error)) => internal(error),
        Err(error) => internal(error),
    }
}
