//! `trellis rate-limiter`: Envoy's rate limit service (`envoy.service.ratelimit.v3`), with the
//! counters in Redis: fixed windows per unit, every descriptor of a request counted in one
//! pipelined, atomic round trip. Which limit a descriptor falls under (and the envoyproxy/ratelimit
//! files of `--config`) is the pure engine's, `trellis-ratelimit`; this crate is the I/O around it.
//!
//! When Redis cannot be reached the call fails, and the Envoy filter's `failure_mode_deny`
//! decides: let the request through (fail open, the default) or refuse it (fail closed).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use trellis_ratelimit::config::RateLimitConfigs;
use trellis_ratelimit::{Limit, Unit, settle};

#[derive(Debug, Clone, clap::Args)]
pub struct RateLimiterArgs {
    /// gRPC address Envoy's rate limit filter calls.
    #[arg(long, default_value = "127.0.0.1:18081")]
    pub listen: std::net::SocketAddr,
    /// Redis holding the counters; `rediss://` for TLS.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// CA certificate (PEM) that a TLS Redis's certificate must chain to; default: the system's.
    #[arg(long)]
    pub redis_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for a TLS Redis that authenticates its clients.
    #[arg(long, requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    #[arg(long, requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
    /// Limits in the envoyproxy/ratelimit YAML format, one domain per file (repeatable); they
    /// add to what the policies of the agent's cluster define.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    #[command(flatten)]
    pub link: trellis_agent::addon_client::AgentLinkArgs,
    /// Serve Prometheus metrics at `/metrics` here (off when unset).
    #[arg(long)]
    pub admin_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DecisionLabels {
    domain: String,
    /// `ok`, `over_limit`, or `shadow_over_limit` (counted, not refused).
    code: String,
}

#[derive(Clone, Default)]
struct LimiterMetrics {
    decisions: prometheus_client::metrics::family::Family<DecisionLabels, prometheus_client::metrics::counter::Counter>,
    redis_errors: prometheus_client::metrics::counter::Counter,
}

impl LimiterMetrics {
    fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = LimiterMetrics::default();
        registry.register(
            "trellis_rate_limiter_descriptors",
            "Descriptors decided, by domain and code",
            metrics.decisions.clone(),
        );
        registry.register(
            "trellis_rate_limiter_redis_errors",
            "Calls that failed because Redis could not be reached",
            metrics.redis_errors.clone(),
        );
        metrics
    }

    fn count(&self, domain: &str, code: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                domain: domain.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// What the agent serves at `/v1/addons/rate-limiter`.
#[derive(Debug, serde::Deserialize)]
struct AgentDocument {
    #[serde(default)]
    domains: Vec<trellis_ratelimit::RateLimitDomain>,
}

pub async fn run(args: RateLimiterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.configs.is_empty() || args.link.agent.is_some(),
        "nothing to enforce: give --config files, --agent (the policies of the agent's cluster), or both"
    );
    let mut files = Vec::new();
    for path in &args.configs {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
        files.push((path.display().to_string(), text));
    }
    let from_files = RateLimitConfigs::parse(&files)?;
    let configs = Arc::new(RwLock::new(Arc::new(from_files.clone())));
    let client = redis_client(&args)?;
    let redis = redis::aio::ConnectionManager::new(client)
        .await
        .with_context(|| format!("cannot reach Redis at {}", args.redis))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    let listen = listener.local_addr()?;
    tracing::info!(listen = %listen, domains = from_files.domains(), "rate limiter started");
    let tls = trellis_agent::addon_client::AddonTls::default();
    if let Some(agent) = args.link.endpoint()? {
        let instance = args.link.instance("rate-limiter", listen);
        let credential = trellis_agent::addon_client::AgentCredential::default();
        tokio::spawn(trellis_agent::addon_client::keep_registered(
            agent.clone(),
            args.link.secret(),
            trellis_agent::AddonKind::RateLimiter,
            instance,
            credential.clone(),
        ));
        tokio::spawn(trellis_agent::addon_client::keep_identity(
            agent.clone(),
            trellis_agent::AddonKind::RateLimiter,
            credential.clone(),
            tls.clone(),
        ));
        let configs = configs.clone();
        tokio::spawn(trellis_agent::addon_client::watch_config(
            agent.clone(),
            trellis_agent::AddonKind::RateLimiter,
            credential,
            move |document: AgentDocument| {
                let merged = from_files.merged(document.domains);
                tracing::info!(domains = merged.domains(), "rate limits updated");
                *configs.write().expect("configs lock") = Arc::new(merged);
            },
        ));
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = LimiterMetrics::register(&mut registry);
    if let Some(addr) = args.admin_addr {
        let bound = trellis_support::addon_metrics::serve(addr, registry).await?;
        tracing::info!(admin = %bound, "metrics at /metrics");
    }
    let service = Limiter {
        configs,
        redis,
        metrics,
    };
    let router = tonic::transport::Server::builder().add_service(RateLimitServiceServer::new(service));
    // With an agent, mutual TLS only: anyone else who could call this port could spend (and so
    // exhaust) any user's budget.
    if args.link.agent.is_some() {
        router
            .serve_with_incoming_shutdown(
                trellis_agent::addon_client::tls_incoming(listener, tls),
                trellis_support::process::shutdown_signal(),
            )
            .await?;
    } else {
        trellis_agent::addon_client::plaintext_without_agent(trellis_agent::AddonKind::RateLimiter, listen)?;
        // Answers are small HTTP/2 frames: without TCP_NODELAY, Nagle holds each one until the
        // peer's delayed ACK, adding a millisecond or more to every check.
        router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                trellis_support::process::shutdown_signal(),
            )
            .await?;
    }
    Ok(())
}

fn redis_client(args: &RateLimiterArgs) -> anyhow::Result<redis::Client> {
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    let tls_files = args.redis_ca.is_some() || args.redis_client_cert.is_some();
    if !tls_files {
        return redis::Client::open(args.redis.as_str()).with_context(|| format!("--redis {}", args.redis));
    }
    anyhow::ensure!(
        args.redis.starts_with("rediss://"),
        "--redis-ca and --redis-client-cert need a TLS Redis: use a rediss:// URL in --redis"
    );
    let client_tls = match (&args.redis_client_cert, &args.redis_client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    let root_cert = args.redis_ca.as_ref().map(read).transpose()?;
    redis::Client::build_with_tls(args.redis.as_str(), redis::TlsCertificates { client_tls, root_cert })
        .with_context(|| format!("--redis {} with the given TLS files", args.redis))
}

struct Limiter {
    /// Swapped whole when the agent sends new limits; a check holds its own `Arc`.
    configs: Arc<RwLock<Arc<RateLimitConfigs>>>,
    redis: redis::aio::ConnectionManager,
    metrics: LimiterMetrics,
}

/// The most hits one descriptor of one call may add. Envoy sends 1 per request unless a route
/// configures a `hits_addend` action (e.g. counting a body's size in units), and no policy Trellis
/// translates does. Without a bound, one call with `hits_addend: 1000000` from anyone who reaches
/// the port exhausts a user's budget for the whole window: a lock-out for the price of a packet.
/// 1000 leaves room for weighted actions while keeping one call's damage within a few calls' worth.
pub const MAX_HITS_ADDEND: u64 = 1000;

/// The hits a descriptor adds: its own `hits_addend` when set, else the request's; 0 (proto's
/// "unset") counts as 1, as in envoyproxy/ratelimit. Above [`MAX_HITS_ADDEND`] the call is
/// refused rather than clamped, so nothing is counted: a clamped 1000 would still be a cheap way
/// to burn budgets, and a legitimate Envoy never sends it. Envoy then follows the filter's
/// `failure_mode_deny`, like any failed call.
fn hits_for(request_hits: u32, descriptor_hits: Option<u64>) -> Result<u64, Status> {
    let hits = descriptor_hits.unwrap_or(u64::from(request_hits)).max(1);
    if hits > MAX_HITS_ADDEND {
        return Err(Status::invalid_argument(format!(
            "hits_addend {hits} is over the limit of {MAX_HITS_ADDEND} per descriptor"
        )));
    }
    Ok(hits)
}

/// Descriptors one call may carry: Envoy sends one per matching rate-limit action set, a
/// handful in practice. Repeating one descriptor must not multiply the per-descriptor cap.
pub const MAX_DESCRIPTORS: usize = 64;

/// Refuses a call with too many descriptors, or whose hits add up past [`MAX_HITS_ADDEND`].
fn check_call(request: &RateLimitRequest) -> Result<(), Status> {
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "{} descriptors in one call: at most {MAX_DESCRIPTORS}",
            request.descriptors.len()
        )));
    }
    let mut total = 0u64;
    for descriptor in &request.descriptors {
        total += hits_for(request.hits_addend, descriptor.hits_addend.as_ref().map(|h| h.value))?;
    }
    if total > MAX_HITS_ADDEND {
        return Err(Status::invalid_argument(format!(
            "the call adds {total} hits over its descriptors: at most {MAX_HITS_ADDEND} in one call"
        )));
    }
    Ok(())
}

fn unit_code(unit: Unit) -> i32 {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as Proto;
    (match unit {
        Unit::Second => Proto::Second,
        Unit::Minute => Proto::Minute,
        Unit::Hour => Proto::Hour,
        Unit::Day => Proto::Day,
    }) as i32
}

#[tonic::async_trait]
impl RateLimitService for Limiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        check_call(&request)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let configs = self.configs.read().expect("configs lock").clone();
        let mut limits: Vec<Option<Limit>> = request
            .descriptors
            .iter()
            .map(|d| {
                let entries: Vec<(String, String)> =
                    d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
                configs.find(&request.domain, &entries)
            })
            .collect();
        settle(&mut limits);
        // Unlimited descriptors match (and may replace others) but are never counted.
        for slot in &mut limits {
            if slot.as_ref().is_some_and(|l| l.spec.unlimited) {
                *slot = None;
            }
        }
        // One pipelined, atomic round trip for every counted descriptor.
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut counted = Vec::new();
        for (index, limit) in limits.iter().enumerate() {
            let Some(limit) = limit else { continue };
            let window = limit.spec.unit.duration().as_secs();
            let start = now / window * window;
            let key = format!("trellis:rl:{}:{}:{start}", request.domain, limit.path);
            let hits = hits_for(
                request.hits_addend,
                request.descriptors[index].hits_addend.as_ref().map(|h| h.value),
            )?;
            pipe.incr(&key, hits).expire(&key, window as i64).ignore();
            counted.push((index, start + window));
        }
        let counts: Vec<u64> = if counted.is_empty() {
            Vec::new()
        } else {
            let mut redis = self.redis.clone();
            pipe.query_async(&mut redis).await.map_err(|error| {
                self.metrics.redis_errors.inc();
                tracing::warn!(%error, "rate limit counters unavailable");
                Status::unavailable("rate limit counters unavailable")
            })?
        };
        let mut statuses = vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            };
            request.descriptors.len()
        ];
        let mut over = false;
        for ((index, reset_at), count) in counted.into_iter().zip(counts) {
            let limit = limits[index].as_ref().expect("counted descriptors have limits");
            let exceeded = count > u64::from(limit.spec.requests_per_unit);
            if exceeded && !limit.shadow_mode {
                over = true;
            }
            self.metrics.count(
                &request.domain,
                match (exceeded, limit.shadow_mode) {
                    (false, _) => "ok",
                    (true, false) => "over_limit",
                    (true, true) => "shadow_over_limit",
                },
            );
            if exceeded {
                tracing::debug!(domain = %request.domain, path = %limit.path, count, shadow = limit.shadow_mode, "over limit");
            }
            statuses[index] = DescriptorStatus {
                code: if exceeded && !limit.shadow_mode {
                    Code::OverLimit
                } else {
                    Code::Ok
                } as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: limit.spec.requests_per_unit,
                    unit: unit_code(limit.spec.unit),
                    name: String::new(),
                }),
                limit_remaining: u64::from(limit.spec.requests_per_unit).saturating_sub(count) as u32,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: reset_at.saturating_sub(now) as i64,
                    nanos: 0,
                }),
                ..Default::default()
            };
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_addend_defaults_to_one_and_the_descriptor_overrides_the_request() {
        assert_eq!(hits_for(0, None).unwrap(), 1);
        assert_eq!(hits_for(3, None).unwrap(), 3);
        assert_eq!(hits_for(3, Some(7)).unwrap(), 7);
        assert_eq!(hits_for(3, Some(0)).unwrap(), 1);
        assert_eq!(hits_for(0, Some(MAX_HITS_ADDEND)).unwrap(), MAX_HITS_ADDEND);
    }

    #[test]
    fn refuses_an_absurd_hits_addend_instead_of_counting_it() {
        for (request, descriptor) in [
            (1_000_000, None),
            (1, Some(1_000_000)),
            (0, Some(u64::MAX)),
            (u32::MAX, None),
        ] {
            let status = hits_for(request, descriptor).expect_err("absurd hits_addend must be refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains("over the limit of 1000"),
                "{}",
                status.message()
            );
        }
        assert!(hits_for(MAX_HITS_ADDEND as u32 + 1, None).is_err());
    }

    #[test]
    fn one_call_cannot_multiply_the_cap_by_repeating_descriptors() {
        use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
        let call = |count: usize, hits: u32| RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor::default(); count],
            hits_addend: hits,
        };
        assert!(check_call(&call(4, 250)).is_ok());
        assert!(check_call(&call(5, 250)).is_err(), "1250 hits in one call");
        assert!(check_call(&call(MAX_DESCRIPTORS + 1, 1)).is_err());
        assert!(check_call(&call(MAX_DESCRIPTORS, 1)).is_ok());
    }
}
