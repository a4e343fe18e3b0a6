//! An HTTP proxy port, for programs that read `HTTPS_PROXY`/`HTTP_PROXY`
//! rather than speak SOCKS5: `CONNECT host:port` becomes a tunnel (HTTPS,
//! or anything else), and an absolute-form request (`GET http://host/…`)
//! is sent on to its server through one, the answer streamed back. Every
//! connection goes through a [`StreamOpener`], as with SOCKS5; names are
//! resolved by whoever dials (the server, in alknet).
//!
//! HTTP itself is hyper's: this module only decides where requests go.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::{OpenError, OpenErrorKind, ProxyError, StreamOpener, TargetAddr, relay};

type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that concern one hop only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Serves HTTP proxy clients through a [`StreamOpener`].
#[derive(Clone)]
pub struct HttpProxyServer {
    opener: Arc<dyn StreamOpener>,
    open_timeout: Duration,
}

impl HttpProxyServer {
    /// A proxy that opens every connection through `opener`.
    pub fn new(opener: Arc<dyn StreamOpener>) -> Self {
        Self {
            opener,
            open_timeout: Duration::from_secs(30),
        }
    }

    /// Accepts and serves clients until the returned future is dropped;
    /// dropping it also ends every connection it started.
    pub async fn serve(&self, listener: TcpListener) {
        crate::accept_loop::serve_each(&listener, "HTTP proxy listener", |stream| {
            let server = self.clone();
            async move {
                if let Err(error) = server.handle(stream).await {
                    tracing::debug!(%error, "HTTP proxy connection ended");
                }
            }
        })
        .await;
    }

    /// Serves one client connection (keep-alive: many requests) to its end.
    pub async fn handle<S>(&self, client: S) -> Result<(), ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, hyper::Error>(server.answer(request).await) }
        });
        hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .title_case_headers(true)
            .serve_connection(TokioIo::new(client), service)
            .with_upgrades()
            .await
            .map_err(|error| ProxyError::Http(error.to_string()))
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() == Method::CONNECT {
            self.connect(request).await
        } else {
            self.forward(request).await
        }
    }

    /// `CONNECT host:port`: 200, then the connection is the tunnel.
    async fn connect(&self, request: Request<Incoming>) -> Response<Body> {
        let Some(target) = request
            .uri()
            .authority()
            .and_then(|authority| Some((authority.host(), authority.port_u16()?)))
            .map(|(host, port)| TargetAddr::from_host_port(host, port))
        else {
            return failure(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let mut remote = match self.open(&target).await {
            Ok(remote) => remote,
            Err(error) => return open_failure(&error),
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let _ = relay(&mut client, &mut remote).await;
                }
                Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
            }
        });
        Response::new(empty())
    }

    /// `GET http://host/path`: sent on in origin form, the answer returned.
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("http") {
            return failure(
                StatusCode::BAD_REQUEST,
                "expected CONNECT or an absolute http:// URL",
            );
        }
        let Some(authority) = uri.authority().cloned() else {
            return failure(StatusCode::BAD_REQUEST, "the URL names no host");
        };
        let target =
            TargetAddr::from_host_port(authority.host(), authority.port_u16().unwrap_or(80));
        let remote = match self.open(&target).await {
            Ok(remote) => remote,
            Err(error) => return open_failure(&error),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(remote)).await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "HTTP proxy: no HTTP/1.1 to the target");
                    return failure(StatusCode::BAD_GATEWAY, "the target did not speak HTTP");
                }
            };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let origin_form = uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .parse()
            .unwrap_or_default();
        *request.uri_mut() = origin_form;
        let headers = request.headers_mut();
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, host);
        }
        match sender.send_request(request).await {
            Ok(mut response) => {
                for name in HOP_BY_HOP {
                    response.headers_mut().remove(name);
                }
                response.map(BodyExt::boxed)
            }
            Err(error) => {
                tracing::debug!(%error, "HTTP proxy: the target's answer failed");
                failure(StatusCode::BAD_GATEWAY, "the target's answer failed")
            }
        }
    }

    async fn open(&self, target: &TargetAddr) -> Result<crate::BoxStream, OpenError> {
        tokio::time::timeout(self.open_timeout, self.opener.open(target))
            .await
            .unwrap_or_else(|_| Err(OpenError::new(OpenErrorKind::TimedOut)))
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn failure(status: StatusCode, why: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{why}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

/// The status a client is told when the target was not reached: 403 for
/// policy, 504 for time, 502 for the rest (as proxies answer).
fn open_failure(error: &OpenError) -> Response<Body> {
    match error.kind() {
        OpenErrorKind::NotAllowed => failure(StatusCode::FORBIDDEN, "the target is not allowed"),
        OpenErrorKind::TimedOut => failure(
            StatusCode::GATEWAY_TIMEOUT,
            "the target did not answer in time",
        ),
        OpenErrorKind::NameNotResolved => {
            failure(StatusCode::BAD_GATEWAY, "the target's name did not resolve")
        }
        OpenErrorKind::ConnectionRefused => {
            failure(StatusCode::BAD_GATEWAY, "the target refused the connection")
        }
        OpenErrorKind::TunnelDown => failure(StatusCode::SERVICE_UNAVAILABLE, "the tunnel is down"),
        _ => failure(StatusCode::BAD_GATEWAY, "the target could not be reached"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Opens every target as an in-memory HTTP server answering `hello`.
    struct Hello;

    #[async_trait::async_trait]
    impl StreamOpener for Hello {
        async fn open(&self, target: &TargetAddr) -> Result<BoxStream, OpenError> {
            if matches!(target, TargetAddr::Domain(host, _) if host == "blocked.example") {
                return Err(OpenError::new(OpenErrorKind::NotAllowed));
            }
            let (ours, mut theirs) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let mut request = vec![0u8; 1024];
                let n = theirs.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]).to_string();
                let body = if head.starts_with("GET /path?q=1 HTTP/1.1")
                    && !head.contains("Proxy-Connection")
                {
                    "hello request"
                } else {
                    "wrong request"
                };
                let _ = theirs
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
            Ok(Box::new(ours))
        }
    }

    /// Sends `request`; reads the answer until `until` shows up.
    async fn exchange(request: &str, until: &str) -> String {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let proxy = HttpProxyServer::new(Arc::new(Hello));
        tokio::spawn(async move { proxy.handle(server_side).await });
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let mut read = 0;
        // The connection stays open (keep-alive): no end of stream to wait for.
        while !String::from_utf8_lossy(&answer[..read]).contains(until) {
            let n = client.read(&mut answer[read..]).await.unwrap();
            if n == 0 {
                break;
            }
            read += n;
        }
        String::from_utf8_lossy(&answer[..read]).into_owned()
    }

    #[tokio::test]
    async fn absolute_form_requests_go_on_in_origin_form() {
        let answer = exchange(
            "GET http://example.com/path?q=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\n\r\n",
            "request",
        )
        .await;
        // The target saw origin form without the proxy's own headers.
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello request"), "{answer}");
    }

    #[tokio::test]
    async fn refusals_get_proxy_status_codes() {
        let answer = exchange(
            "CONNECT blocked.example:443 HTTP/1.1\r\nHost: blocked.example:443\r\n\r\n",
            "allowed\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        let answer = exchange(
            "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "URL\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}
