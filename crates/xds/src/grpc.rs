//! The ADS gRPC service by hand, in place of tonic's generated server.
//!
//! tonic encodes all the responses of a stream into one growing buffer that keeps the capacity
//! of the largest response it ever held for as long as the stream lives: with a thousand
//! VirtualDestinations the first CDS response is hundreds of KiB, so every connected proxy
//! pinned that much for nothing. Here each response is encoded into a buffer of its own exact
//! size ([`encode`]), which is freed once h2 has written it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::Frame;
use tokio::sync::mpsc;
use tonic::codegen::{BoxFuture, Bytes, Service, StdError, http};
use tonic::{Code, Status};

use crate::DeltaState;
use crate::server::{AdsServer, SnapshotSource};
use crate::stream::StreamState;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const STREAM_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What a stream task hands to its response body: one encoded gRPC message, or the status that
/// ends the stream (boxed: a `Status` is large, and the channel allocates slots for it).
pub(crate) type Outgoing = Result<Bytes, Box<Status>>;

/// The ADS server as a tonic service (`Server::builder().add_service(ads.into_service())`).
pub struct AdsService<S: SnapshotSource> {
    server: Arc<AdsServer<S>>,
}

impl<S: SnapshotSource> Clone for AdsService<S> {
    fn clone(&self) -> Self {
        AdsService {
            server: self.server.clone(),
        }
    }
}

impl<S: SnapshotSource> AdsService<S> {
    pub(crate) fn new(server: AdsServer<S>) -> Self {
        AdsService {
            server: Arc::new(server),
        }
    }
}

impl<S: SnapshotSource> tonic::server::NamedService for AdsService<S> {
    const NAME: &'static str = SERVICE;
}

impl<S, B> Service<http::Request<B>> for AdsService<S>
where
    S: SnapshotSource,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let responses = match request.uri().path() {
            STREAM_PATH => Some(self.server.start::<StreamState, B>(request)),
            DELTA_PATH => Some(self.server.start::<DeltaState, B>(request)),
            _ => None,
        };
        Box::pin(async move {
            Ok(match responses {
                Some(responses) => response(ResponseBody {
                    responses,
                    ended: false,
                }),
                None => Status::new(Code::Unimplemented, "no such ADS method").into_http(),
            })
        })
    }
}

fn response(body: ResponseBody) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// One response as a gRPC message: the uncompressed flag, the length, the protobuf, in a buffer
/// of exactly that size.
pub(crate) fn encode(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// The response stream of one ADS call: the stream task's messages as they come, then the
/// trailers with its final status.
struct ResponseBody {
    responses: mpsc::Receiver<Outgoing>,
    ended: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match self.responses.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(message))) => return Poll::Ready(Some(Ok(Frame::data(message)))),
            Poll::Ready(Some(Err(status))) => *status,
            Poll::Ready(None) => Status::new(Code::Ok, ""),
        };
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(error) = status.add_header(&mut trailers) {
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    use super::*;

    #[test]
    fn a_message_is_framed_with_its_length_in_a_buffer_of_its_size() {
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "7".into(),
            ..Default::default()
        };
        let framed = encode(&response);
        assert_eq!(framed[0], 0, "not compressed");
        let len = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, framed.len() - 5);
        assert_eq!(DiscoveryResponse::decode(&framed[5..]).unwrap(), response);
    }
}
