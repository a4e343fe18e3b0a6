//! HTTP/2 visitors (ALPN `h2`, as nginx offers it): served by hyper, each
//! request answered with nginx's 404 or passed to the backend over HTTP/1.1
//! (a fresh backend connection per request, as nginx's default
//! `proxy_http_version 1.0`-style upstreams do without keepalive).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::Backend;
use crate::idle::Activity;
use crate::nginx;

type Body = BoxBody<Bytes, Box<dyn StdError + Send + Sync>>;

/// Streams a visitor may have open at once (nginx's
/// `http2_max_concurrent_streams`).
const MAX_STREAMS: u32 = 128;
/// nginx's SETTINGS and first WINDOW_UPDATE, so the connection preface
/// looks like nginx's: a 64 KiB stream window (`http2_body_preread_size`),
/// the largest frame size, and the connection window opened to 2^31 - 1.
const STREAM_WINDOW: u32 = 65_536;
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
const MAX_FRAME: u32 = (1 << 24) - 1;

/// Headers that belong to one HTTP/1.1 connection and are not allowed in
/// HTTP/2 (RFC 9113 §8.2.2).
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Serves an HTTP/2 connection until the visitor leaves or nothing moves
/// on it for `idle_timeout`.
pub(crate) async fn serve<S>(stream: S, backend: Option<Backend>, idle_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let stream = activity.watch(stream);
    let service = hyper::service::service_fn(move |request| {
        let backend = backend.clone();
        async move {
            Ok::<_, Infallible>(match backend {
                Some(backend) => pass_on(request, &backend).await,
                None => nginx_page(StatusCode::NOT_FOUND),
            })
        }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = activity.quiet_for(idle_timeout) => {}
    }
}

/// nginx's page for `status`, over HTTP/2.
fn nginx_page(status: StatusCode) -> Response<Body> {
    let page = nginx::page(&status_line(status));
    let mut response = Response::new(
        Full::new(Bytes::from(page))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("nginx"));
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        headers.insert(header::DATE, date);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// Sends one HTTP/2 request to the backend as HTTP/1.1 and streams the
/// answer back.
async fn pass_on(request: Request<Incoming>, backend: &Backend) -> Response<Body> {
    let Ok(site) = backend.connect().await else {
        return nginx_page(StatusCode::BAD_GATEWAY);
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(site)).await
    else {
        return nginx_page(StatusCode::BAD_GATEWAY);
    };
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one.
    let cookies: Vec<&[u8]> = parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if cookies.len() > 1
        && let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..]))
    {
        parts.headers.insert(header::COOKIE, joined);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".parse(), |path| path.as_str().parse())
        .unwrap_or_default();
    parts.version = hyper::Version::HTTP_11;
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for name in CONNECTION_HEADERS {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, body.map_err(Into::into).boxed())
        }
        Err(_) => nginx_page(StatusCode::BAD_GATEWAY),
    }
}
