//! Answering HTTP the way a stock nginx with `server_tokens off` and no
//! matching location does: `404 Not Found` for well-formed requests,
//! `400 Bad Request` (and close) for anything else. Pure byte handling.

use std::time::SystemTime;

/// Largest request head accepted; nginx's default large header buffers
/// are 8 KiB each.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// A parsed request head, as far as the answer depends on it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// Whether the connection stays open after the answer.
    pub(crate) keep_alive: bool,
    /// Body bytes that follow the head (to be read and discarded).
    pub(crate) body_len: usize,
    /// HEAD requests get headers only.
    pub(crate) head_only: bool,
}

/// Where the head ends (index just past the blank line), if it is complete.
pub(crate) fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| {
            buffer
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| at + 2)
        })
}

/// Whether the first line of `buffer`, once complete, is already known to
/// be bad: nginx answers 400 as soon as it has a bad request line, without
/// waiting for headers.
pub(crate) fn bad_first_line(buffer: &[u8]) -> bool {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(end) => std::str::from_utf8(&buffer[..end])
            .ok()
            .and_then(|line| request_line(line.strip_suffix('\r').unwrap_or(line)))
            .is_none(),
        None => false,
    }
}

/// Parses `METHOD target HTTP/1.x`; returns the method and whether it is HTTP/1.1.
fn request_line(line: &str) -> Option<(&str, bool)> {
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let target_ok = target.starts_with('/') || target.contains("://") || target == "*";
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    (parts.next().is_none() && method_ok && target_ok).then_some((method, http11))
}

/// Parses a complete request head; `None` if it is not well-formed HTTP/1.x.
pub(crate) fn parse(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let (method, http11) = request_line(lines.next()?)?;
    let mut keep_alive = http11;
    let mut body_len = 0;
    let mut host_seen = false;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("host") {
            host_seen = true;
        }
    }
    // HTTP/1.1 requires Host; nginx answers 400 without it.
    if http11 && !host_seen {
        return None;
    }
    Some(Request {
        keep_alive,
        body_len,
        head_only: method == "HEAD",
    })
}

/// The answer to a well-formed request.
pub(crate) fn not_found(request: &Request, now: SystemTime) -> Vec<u8> {
    response("404 Not Found", request.keep_alive, !request.head_only, now)
}

/// The answer to anything malformed; the connection is closed after it.
pub(crate) fn bad_request(now: SystemTime) -> Vec<u8> {
    response("400 Bad Request", false, true, now)
}

/// The answer to a body past `client_max_body_size`; nginx closes after it.
pub(crate) fn too_large(now: SystemTime) -> Vec<u8> {
    response("413 Request Entity Too Large", false, true, now)
}

/// The answer when the backend site cannot be reached; closed after it.
pub(crate) fn bad_gateway(now: SystemTime) -> Vec<u8> {
    response("502 Bad Gateway", false, true, now)
}

/// nginx's error page for `status` (`404 Not Found`).
pub(crate) fn page(status: &str) -> String {
    format!(
        "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

fn response(status: &str, keep_alive: bool, with_body: bool, now: SystemTime) -> Vec<u8> {
    let body = page(status);
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nServer: nginx\r\nDate: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        httpdate::fmt_http_date(now),
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_well_formed_request_gets_nginx_s_404_with_headers_in_nginx_order() {
        let request =
            parse(b"GET /anything HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n")
                .unwrap();
        assert_eq!(
            request,
            Request {
                keep_alive: true,
                body_len: 0,
                head_only: false
            }
        );
        let text = String::from_utf8(not_found(&request, at())).unwrap();
        let expected_head = "HTTP/1.1 404 Not Found\r\nServer: nginx\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
                             Content-Type: text/html\r\nContent-Length: 146\r\nConnection: keep-alive\r\n\r\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(text.ends_with("<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"));
        let body = &text[expected_head.len()..];
        assert_eq!(body.len(), 146);
        assert!(body.contains("<center><h1>404 Not Found</h1></center>"));
    }

    #[test]
    fn connection_handling_follows_the_http_version_and_header() {
        let close = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!close.keep_alive);
        let old = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!old.keep_alive);
        let old_kept = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(old_kept.keep_alive);
        let head = parse(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let answer = not_found(&head, at());
        assert!(answer.ends_with(b"\r\n\r\n"), "HEAD gets no body");
        let post = parse(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(post.body_len, 5);
    }

    #[test]
    fn malformed_requests_are_refused() {
        for head in [
            &b"garbage\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert_eq!(parse(head), None, "{:?}", String::from_utf8_lossy(head));
        }
        let answer = String::from_utf8(bad_request(at())).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"));
        assert!(answer.contains("Connection: close\r\n"));
        assert!(answer.contains("<center><h1>400 Bad Request</h1></center>"));
    }

    #[test]
    fn a_bad_request_line_is_known_before_the_headers() {
        assert!(bad_first_line(b"garbage\n"));
        assert!(bad_first_line(b"\x16\x03\x01 hello\r\n"));
        assert!(!bad_first_line(b"garbage"), "not a whole line yet");
        assert!(!bad_first_line(b"GET / HTTP/1.1\r\nHost"));
    }

    #[test]
    fn heads_end_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
    }
}
