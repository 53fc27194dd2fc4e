//! A small client of etcd's v3 gRPC API: ranges, transactions, watches and leases, over one
//! lazily connected channel (tonic reconnects it when etcd comes back).

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::EtcdError;
use crate::wire::*;

/// Responses may carry a whole resource list; etcd itself bounds a request at its
/// `--max-request-bytes`.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// One page of a long range read.
const PAGE: i64 = 1000;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `https://host:port` (or `http://` on loopback for a demo); several for an etcd cluster.
    pub endpoints: Vec<String>,
    /// PEM of the CA that signed etcd's serving certificate.
    pub ca_pem: Option<String>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub client_identity: Option<(String, String)>,
    /// Every key Trellis writes starts with this.
    pub prefix: String,
    /// Bound on each call.
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct EtcdClient {
    grpc: tonic::client::Grpc<Channel>,
    endpoints: String,
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(method)
}

/// The exclusive end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdClient {
    pub fn connect(config: &EtcdConfig) -> Result<Self, EtcdError> {
        let shown = config.endpoints.join(",");
        if config.endpoints.is_empty() {
            return Err(EtcdError::Config("no etcd endpoint given".into()));
        }
        let mut endpoints = Vec::new();
        for url in &config.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| EtcdError::Config(format!("etcd endpoint {url}: {e}")))?
                .connect_timeout(config.timeout)
                .timeout(config.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new();
                if let Some(ca) = &config.ca_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &config.client_identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| EtcdError::Config(format!("etcd endpoint {url}: TLS: {e}")))?;
            }
            endpoints.push(endpoint);
        }
        let channel = if endpoints.len() == 1 {
            endpoints.remove(0).connect_lazy()
        } else {
            Channel::balance_list(endpoints.into_iter())
        };
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(EtcdClient { grpc, endpoints: shown })
    }

    fn status(&self, call: &'static str, status: tonic::Status) -> EtcdError {
        EtcdError::Call {
            endpoints: self.endpoints.clone(),
            call,
            status,
        }
    }

    async fn unary<Req, Resp>(&self, call: &'static str, method: &'static str, request: Req) -> Result<Resp, EtcdError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| self.status(call, tonic::Status::unavailable(e.to_string())))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(tonic::Request::new(request), path(method), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status(call, status))
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.unary("range", "/etcdserverpb.KV/Range", request).await
    }

    /// Every key and value under `prefix` as of `revision` (0: now), read page by page at one
    /// revision so the pages agree; returns them with the revision read.
    pub async fn range_prefix(&self, prefix: &[u8], revision: i64) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let end = prefix_end(prefix);
        let mut key = prefix.to_vec();
        let mut revision = revision;
        let mut all = Vec::new();
        loop {
            let page = self
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: PAGE,
                    revision,
                    keys_only: false,
                })
                .await?;
            if revision == 0 {
                revision = page.header.as_ref().map(|h| h.revision).unwrap_or(0);
            }
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                key = last.key.clone();
                key.push(0);
            }
            all.extend(page.kvs);
            if !more {
                return Ok((revision, all));
            }
        }
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.unary("txn", "/etcdserverpb.KV/Txn", request).await
    }

    /// Puts `key` = `value` under `lease` unless the key exists (how a lock or an election is
    /// taken); when it exists the answer holds it as read (`succeeded` false).
    pub async fn put_if_absent(&self, key: Vec<u8>, value: Vec<u8>, lease: i64) -> Result<TxnResponse, EtcdError> {
        self.txn(TxnRequest {
            compare: vec![Compare {
                result: COMPARE_EQUAL,
                target: TARGET_VERSION,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::Version(0)),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: key.clone(),
                    value,
                    lease,
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::Range(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        })
        .await
    }

    /// Drops the history before `revision` (etcd keeps every version until compacted).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let _: CompactionResponse = self
            .unary(
                "compact",
                "/etcdserverpb.KV/Compact",
                CompactionRequest {
                    revision,
                    physical: false,
                },
            )
            .await?;
        Ok(())
    }

    /// The current revision of the whole keyspace.
    pub async fn current_revision(&self) -> Result<i64, EtcdError> {
        let response = self
            .range(RangeRequest {
                key: vec![0],
                limit: 1,
                keys_only: true,
                ..Default::default()
            })
            .await?;
        Ok(response.header.map(|h| h.revision).unwrap_or(0))
    }

    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let response: LeaseGrantResponse = self
            .unary(
                "lease grant",
                "/etcdserverpb.Lease/LeaseGrant",
                LeaseGrantRequest { ttl: ttl_secs, id: 0 },
            )
            .await?;
        if !response.error.is_empty() {
            return Err(EtcdError::Lease(response.error));
        }
        Ok(response.id)
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: LeaseRevokeResponse = self
            .unary(
                "lease revoke",
                "/etcdserverpb.Lease/LeaseRevoke",
                LeaseRevokeRequest { id },
            )
            .await?;
        Ok(())
    }

    /// Renews lease `id` once; returns the seconds it has left (0: it is gone).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, EtcdError> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| self.status("lease keep-alive", tonic::Status::unavailable(e.to_string())))?;
        let codec = tonic_prost::ProstCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default();
        let requests = tokio_stream::once(LeaseKeepAliveRequest { id });
        let mut responses = grpc
            .streaming(
                tonic::Request::new(requests),
                path("/etcdserverpb.Lease/LeaseKeepAlive"),
                codec,
            )
            .await
            .map_err(|status| self.status("lease keep-alive", status))?
            .into_inner();
        match responses.next().await {
            Some(Ok(response)) => Ok(response.ttl),
            Some(Err(status)) => Err(self.status("lease keep-alive", status)),
            None => Ok(0),
        }
    }

    /// Watches the keys in `[key, range_end)` from `start_revision` on. The stream ends or fails
    /// when etcd goes away; the caller watches again from the last revision it saw.
    pub async fn watch(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> Result<tonic::Streaming<WatchResponse>, EtcdError> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| self.status("watch", tonic::Status::unavailable(e.to_string())))?;
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key,
                range_end,
                start_revision,
                progress_notify: false,
            })),
        };
        // The request stream stays open: etcd ends a watch whose client closed its side.
        let requests = tokio_stream::once(create).chain(tokio_stream::pending());
        grpc.streaming(tonic::Request::new(requests), path("/etcdserverpb.Watch/Watch"), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status("watch", status))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/trellis/"), b"/trellis0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
