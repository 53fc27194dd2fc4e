//! A minimal HTTP/1.1 client on hyper: the CLI talks to the API with it, the demo frontend calls
//! through its sidecar with it, and tests send traffic with it. Optional forward proxy: the
//! request then goes to the proxy in absolute form, as `curl -x` does.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request. `url` is `http://host[:port]/path`; with `proxy` the TCP connection goes
/// to the proxy and the URL is sent in absolute form.
pub async fn request(
    method: &str,
    url: &str,
    proxy: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    tokio::time::timeout(timeout, send(method, url, proxy, headers, body))
        .await
        .map_err(|_| anyhow::anyhow!("{method} {url}: no answer within {timeout:?}"))?
}

async fn send(
    method: &str,
    url: &str,
    proxy: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<Response> {
    let uri: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("bad URL {url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("URL {url} has no host"))?
        .clone();
    let connect_to = match proxy {
        Some(proxy) => proxy.to_string(),
        None => format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
    };
    let stream = tokio::net::TcpStream::connect(&connect_to)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {connect_to}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let target = if proxy.is_some() {
        uri.to_string()
    } else {
        uri.path_and_query().map(|p| p.to_string()).unwrap_or("/".into())
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", authority.as_str());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = match body {
        Some((content_type, bytes)) => builder
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(bytes)))?,
        None => builder.body(Full::new(Bytes::new()))?,
    };
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<Response> {
    request("GET", url, None, &[], None, timeout).await
}
