//! The knock: how a client proves, inside an ordinary-looking HTTP/1.1
//! request, that it may open a tunnel on a listener that requires a token.
//!
//! The exchange, right after the TLS handshake:
//!
//! ```text
//! client → GET / HTTP/1.1\r\n
//!          Host: <host>\r\n
//!          User-Agent: Mozilla/5.0 …\r\n
//!          Connection: Upgrade\r\n
//!          Upgrade: websocket\r\n
//!          Sec-WebSocket-Version: 13\r\n
//!          Sec-WebSocket-Key: <base64 of 16 random bytes>\r\n
//!          Cookie: alknet=<token>\r\n
//!          \r\n
//! server → HTTP/1.1 101 Switching Protocols\r\n
//!          Server: nginx\r\n
//!          Date: <HTTP date>\r\n
//!          Connection: upgrade\r\n
//!          Upgrade: websocket\r\n
//!          Sec-WebSocket-Accept: <base64 SHA-1 of key + RFC 6455 GUID>\r\n
//!          \r\n
//! then SSH, both ways, on the same stream (no WebSocket framing).
//! ```
//!
//! `<token>` is an alknet token (`base64url(key_id || timestamp ||
//! signature)`), checked by the server's [`TokenGate`](crate::TokenGate):
//! each is accepted once, within its time window. A request whose token is
//! missing, unknown, stale or replayed is not a knock: it is passed on,
//! byte for byte, to whatever answers everyone else (the backend site, or
//! nginx's 404), so a probe learns nothing a visitor would not.
//!
//! The server recognises a knock by the method `GET`, an `Upgrade:
//! websocket` header, a `Sec-WebSocket-Key` and an `alknet` cookie (among
//! others, `;`-separated); header names are matched without regard to case.
//! Everything here is pure byte handling but [`knock`], which runs the
//! client's side over a stream.

use std::io;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Replay;
use crate::nginx::{self, MAX_HEAD};

/// The cookie that carries the token.
pub const KNOCK_COOKIE: &str = "alknet";

/// RFC 6455 §1.3: appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a browser would send as its user agent; the request should not
/// stand out in a backend's logs either.
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The client's knock: `host` as the `Host` header (with `:port` when the
/// port is not 443), `token` the alknet token, `websocket_key` the base64
/// of 16 random bytes.
pub fn knock_request(host: &str, token: &str, websocket_key: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {websocket_key}\r\n\
         Cookie: {KNOCK_COOKIE}={token}\r\n\r\n"
    )
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(hasher.finalize())
}

/// The server's answer to an accepted knock.
pub fn switching_protocols(websocket_key: &str, now: SystemTime) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nServer: nginx\r\nDate: {}\r\nConnection: upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        httpdate::fmt_http_date(now),
        websocket_accept(websocket_key)
    )
    .into_bytes()
}

/// A knock's parts, as read from a complete request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knock<'a> {
    /// The alknet token.
    pub token: &'a str,
    /// `Sec-WebSocket-Key`, to answer.
    pub websocket_key: &'a str,
}

/// The knock in a complete request head, if it is one. Says nothing about
/// whether the token is good.
pub fn parse_knock(head: &[u8]) -> Option<Knock<'_>> {
    nginx::parse(head)?;
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    if !lines.next()?.starts_with("GET ") {
        return None;
    }
    let (mut token, mut websocket_key, mut upgrade) = (None, None, false);
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            websocket_key = Some(value);
        } else if name.eq_ignore_ascii_case("cookie") {
            let found = value.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == KNOCK_COOKIE).then_some(value)
            });
            token = token.or(found);
        }
    }
    Some(Knock {
        token: token.filter(|token| !token.is_empty())?,
        websocket_key: websocket_key.filter(|key| !key.is_empty())?,
    })
    .filter(|_| upgrade)
}

/// Why a knock did not open the way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnockError {
    /// The server answered, but not with the upgrade: it does not know the
    /// token (unknown key, clock skew, replay) or is not an alknet server.
    #[error(
        "the server answered the stealth knock with {status:?} instead of an upgrade: \
         it does not accept this key's token (is the key in its authorized_keys, \
         is this machine's clock right?) or it is not an alknet server with \
         --stealth-require-token"
    )]
    Refused {
        /// The status line the server sent.
        status: String,
    },
    /// The answer was not HTTP, or was cut off.
    #[error("the server's answer to the stealth knock is not HTTP: {0}")]
    Garbled(&'static str),
    /// Reading or writing failed.
    #[error("stealth knock: {0}")]
    Io(#[from] io::Error),
}

/// Runs the client's side of the knock on `stream`: sends the request and
/// reads the answer's head. On `101` with the right accept value, returns
/// the stream (with anything the server sent after the head put back in
/// front) ready for SSH.
pub async fn knock<S>(
    mut stream: S,
    host: &str,
    token: &str,
    websocket_key: &str,
) -> Result<Replay<S>, KnockError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(knock_request(host, token, websocket_key).as_bytes())
        .await?;
    stream.flush().await?;
    let mut received = Vec::with_capacity(512);
    let head_len = loop {
        if let Some(end) = nginx::head_end(&received) {
            break end;
        }
        if received.len() > MAX_HEAD {
            return Err(KnockError::Garbled("the answer's head is over 8 KiB"));
        }
        let mut chunk = [0u8; 1024];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(KnockError::Garbled("the server closed before answering"));
        }
        received.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&received[..head_len])
        .map_err(|_| KnockError::Garbled("the answer is not text"))?;
    let status = head.lines().next().unwrap_or_default().trim_end();
    if !status.starts_with("HTTP/1.1 101 ") {
        return Err(KnockError::Refused {
            status: status.to_owned(),
        });
    }
    let expected = websocket_accept(websocket_key);
    let accepted = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if !accepted {
        return Err(KnockError::Garbled(
            "the upgrade does not carry the expected Sec-WebSocket-Accept",
        ));
    }
    received.drain(..head_len);
    Ok(Replay::new(received, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_rfc_6455_example_key_is_accepted_as_the_rfc_says() {
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn test_vector_request_and_answer() {
        let request = knock_request("example.com", "TOKEN", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            request,
            "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; \
             rv:128.0) Gecko/20100101 Firefox/128.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Cookie: alknet=TOKEN\r\n\r\n"
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", at)).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nServer: nginx\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
             Connection: upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(
            parse_knock(request.as_bytes()),
            Some(Knock {
                token: "TOKEN",
                websocket_key: "dGhlIHNhbXBsZSBub25jZQ=="
            })
        );
    }

    #[test]
    fn a_knock_needs_get_the_upgrade_the_key_and_the_cookie() {
        let parts = [
            "Host: x\r\n",
            "upgrade: WebSocket\r\n",
            "sec-websocket-key: k\r\n",
            "cookie: theme=dark; alknet=T; lang=en\r\n",
        ];
        let head = |skip: Option<usize>, method: &str| {
            let mut head = format!("{method} / HTTP/1.1\r\n");
            for (index, part) in parts.iter().enumerate() {
                if Some(index) != skip {
                    head.push_str(part);
                }
            }
            head + "\r\n"
        };
        assert_eq!(
            parse_knock(head(None, "GET").as_bytes()),
            Some(Knock {
                token: "T",
                websocket_key: "k"
            })
        );
        assert_eq!(parse_knock(head(None, "POST").as_bytes()), None);
        for missing in 0..parts.len() {
            assert_eq!(
                parse_knock(head(Some(missing), "GET").as_bytes()),
                None,
                "{missing}"
            );
        }
        assert_eq!(parse_knock(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), None);
        assert_eq!(
            parse_knock(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nCookie: xalknet=T\r\n\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn the_client_side_keeps_what_follows_the_upgrade_and_reports_a_refusal() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let (client, mut server) = tokio::io::duplex(8192);
        let serve = tokio::spawn(async move {
            let mut head = vec![0u8; knock_request("h", "T", key).len()];
            server.read_exact(&mut head).await.unwrap();
            let mut answer = switching_protocols(key, SystemTime::now());
            answer.extend_from_slice(b"SSH-2.0-alknet\r\n");
            server.write_all(&answer).await.unwrap();
            server
        });
        let mut replay = knock(client, "h", "T", key).await.unwrap();
        let mut banner = [0u8; 16];
        replay.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0-alknet\r\n");
        drop(serve.await.unwrap());

        let (client, mut server) = tokio::io::duplex(8192);
        tokio::spawn(async move {
            let mut head = vec![0u8; knock_request("h", "T", key).len()];
            server.read_exact(&mut head).await.unwrap();
            let answer = b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n";
            server.write_all(answer).await.unwrap();
        });
        let error = knock(client, "h", "T", key).await.unwrap_err();
        assert!(
            error.to_string().contains("\"HTTP/1.1 404 Not Found\""),
            "{error}"
        );
    }
}
