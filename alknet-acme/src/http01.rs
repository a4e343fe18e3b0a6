//! The HTTP-01 responder: answers `GET /.well-known/acme-challenge/TOKEN`
//! with the key authorization while a challenge is open, 404 otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::AcmeError;

const PREFIX: &str = "/.well-known/acme-challenge/";
/// A request head larger than this is not a validator's.
const MAX_HEAD: usize = 8 * 1024;

/// Open HTTP-01 challenges: token → key authorization.
pub(crate) type Tokens = Arc<RwLock<HashMap<String, String>>>;

/// Binds `addr` and answers challenges from `tokens` until the runtime ends.
pub(crate) async fn serve(addr: SocketAddr, tokens: Tokens) -> Result<(), AcmeError> {
    let listener = TcpListener::bind(addr).await.map_err(|error| {
        AcmeError::Config(format!("cannot listen for HTTP-01 on {addr}: {error}"))
    })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), answer(stream, &tokens)).await;
            });
        }
    });
    Ok(())
}

async fn answer(mut stream: TcpStream, tokens: &Tokens) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = response_for(&head, tokens);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The whole response to one request head.
fn response_for(head: &[u8], tokens: &Tokens) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let found = match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => path.strip_prefix(PREFIX).and_then(|token| {
            tokens
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(token)
                .cloned()
        }),
        _ => None,
    };
    match found {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_open_tokens_only() {
        let tokens = Tokens::default();
        tokens
            .write()
            .unwrap()
            .insert("abc".into(), "abc.thumb".into());
        let ok = response_for(
            b"GET /.well-known/acme-challenge/abc HTTP/1.1\r\n\r\n",
            &tokens,
        );
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\nabc.thumb"));
        for other in [
            &b"GET /.well-known/acme-challenge/zzz HTTP/1.1\r\n\r\n"[..],
            b"POST /.well-known/acme-challenge/abc HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"\xff\xfe garbage",
        ] {
            assert!(response_for(other, &tokens).starts_with("HTTP/1.1 404"));
        }
    }
}
