//! A raw SOCKS5 client, to look at reply codes curl only summarises.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{Result, XtaskError};

/// Performs a no-auth SOCKS5 CONNECT to `host:port` through `proxy` and
/// returns the reply code (0 = succeeded, 5 = connection refused, …).
pub fn socks5_connect_reply(proxy: SocketAddr, host: &str, port: u16) -> Result<u8> {
    socks5_connect(proxy, host, port).map(|(reply, _)| reply)
}

/// Like [`socks5_connect_reply`], also returning the stream for further use.
/// Every read is bounded by a 30 s timeout.
pub fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> Result<(u8, TcpStream)> {
    let io = |what: &str| XtaskError::io(format!("SOCKS5 {what}"));
    let mut stream =
        TcpStream::connect_timeout(&proxy, Duration::from_secs(10)).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("setup"))?;
    stream.set_nodelay(true).map_err(io("setup"))?;
    let host_bytes = host.as_bytes();
    let host_len = u8::try_from(host_bytes.len())
        .map_err(|_| XtaskError::Failed("host name too long".into()))?;
    // The greeting, then the request once the proxy has answered it, as
    // curl and browsers do (curl 7.88 sends nothing more until then).
    stream.write_all(&[5, 1, 0]).map_err(io("write"))?;
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).map_err(io("method reply"))?;
    if method != [5, 0] {
        return Err(XtaskError::Failed(format!(
            "SOCKS5 method reply {method:?}"
        )));
    }
    let mut request = vec![5, 1, 0, 3, host_len];
    request.extend_from_slice(host_bytes);
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).map_err(io("write"))?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).map_err(io("reply"))?;
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).map_err(io("reply"))?;
            usize::from(len[0]) + 2
        }
        other => {
            return Err(XtaskError::Failed(format!(
                "SOCKS5 reply address type {other}"
            )));
        }
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).map_err(io("reply"))?;
    Ok((head[1], stream))
}
