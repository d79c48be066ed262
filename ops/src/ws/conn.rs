//! One WebSocket connection to one node: building the `ws://…/api/v1/ws` (or `wss://`) URL
//! from a server address, the TCP connect, the TLS handshake for `wss://` (trusting only the
//! given cluster root), the upgrade (with an optional `Origin` header), and [`WsConn`], a thin typed
//! wrapper that protocol tests use to send anything (bad frames included) and to observe
//! exactly how the server closes.
//!
//! This module never retries, reconnects or interprets frames beyond decoding them; that is
//! `ws::session`'s job. It must never print and never put the token in a URL.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{WebSocketStream, tungstenite};

use crate::error::{CloseInfo, WsError, api_error_from_body};
use crate::servers::{display_server, endpoint, normalize_server};
use crate::tls::{TrustRoot, certificate_problem, server_name};
use api::ws::{ClientFrame, Hello, ServerFrame};

/// A raw WebSocket message (text, binary, ping, pong, close), for tests that need to send
/// what the typed frames cannot express.
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The byte stream under a WebSocket: plain TCP or TLS over TCP. Boxed so that `ws://` and
/// `wss://` connections are one type to the session task.
pub(crate) trait WsIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> WsIo for T {}

pub(crate) type WsStream = WebSocketStream<Box<dyn WsIo>>;

/// The path of the WebSocket endpoint on every node.
const WS_PATH: [&str; 3] = ["api", "v1", "ws"];
/// docs/protocol.md: `auth` must arrive within 10 s; `hello` follows at once.
const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The WebSocket URL of a server: `ws://host:port[/prefix]/api/v1/ws`, or `wss://` for an
/// `https://` server.
///
/// Accepts what [`crate::Client::new`] accepts (`http(s)://host:port`, bare `host:port`, a
/// base URL with a path prefix) and also a complete `ws://` or `wss://` URL, which is used as
/// it is.
pub fn ws_url(server: &str) -> Result<String, WsError> {
    let trimmed = server.trim();
    if trimmed.starts_with("ws://") || trimmed.starts_with("wss://") {
        return Ok(trimmed.to_owned());
    }
    let base = normalize_server(trimmed).map_err(|e| WsError::InvalidServer {
        url: server.to_owned(),
        reason: e.to_string(),
    })?;
    let mut url = endpoint(&base, &WS_PATH);
    let scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    // http -> ws is allowed by the URL standard (both are "special" schemes); failing here
    // would be a bug in `normalize_server`, reported rather than panicked on.
    url.set_scheme(scheme)
        .map_err(|()| WsError::InvalidServer {
            url: server.to_owned(),
            reason: "cannot derive a ws:// URL".to_owned(),
        })?;
    Ok(url.to_string())
}

/// The `host:port` a server address points at (for messages such as "connected to node 2
/// (127.0.0.2:8080)").
pub(crate) fn host_port(server: &str) -> String {
    match normalize_server(server) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => display_server(&url),
        },
        Err(_) => server.to_owned(),
    }
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct WsConnectOptions {
    /// An `Origin` header for the upgrade request (browsers send one; non-browser clients
    /// normally do not, and the server accepts them without).
    pub origin: Option<String>,
    /// More headers for the upgrade request.
    pub headers: Vec<(String, String)>,
    /// Bound on TCP connect, TLS handshake and upgrade handshake together.
    pub connect_timeout: Duration,
    /// The cluster root that `wss://` servers are checked against. Without one no `wss://`
    /// server is trusted.
    pub tls: Option<TrustRoot>,
}

impl Default for WsConnectOptions {
    fn default() -> Self {
        WsConnectOptions {
            origin: None,
            headers: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        }
    }
}

/// TCP connect, then for `wss://` the TLS handshake against the trusted root, checking the
/// certificate against the host in the URL.
async fn connect_stream(url: &str, tls: Option<&TrustRoot>) -> Result<Box<dyn WsIo>, WsError> {
    let connect_failed = |reason: String| WsError::Connect {
        url: url.to_owned(),
        reason,
    };
    let parsed =
        reqwest::Url::parse(url).map_err(|e| connect_failed(format!("invalid URL: {e}")))?;
    let secure = parsed.scheme() == "wss";
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Err(connect_failed("the URL has no host".to_owned()));
    };
    // A wss:// URL without a root to check it against can only fail; say why before dialling.
    let tls = match (secure, tls) {
        (false, _) => None,
        (true, Some(root)) => Some(root),
        (true, None) => {
            return Err(WsError::CertificateNotTrusted {
                url: url.to_owned(),
                reason: "no CA root given to check the server against".to_owned(),
            });
        }
    };
    let tcp = TcpStream::connect(format!("{host}:{port}"))
        .await
        .map_err(|e| connect_failed(e.to_string()))?;
    let Some(root) = tls else {
        return Ok(Box::new(tcp));
    };
    // Every frame is small and latency-bound; the plain path keeps tungstenite's default.
    let _ = tcp.set_nodelay(true);
    let name = server_name(&parsed)
        .ok_or_else(|| connect_failed(format!("'{host}' is not a valid TLS server name")))?;
    match root.ws_connector().connect(name, tcp).await {
        Ok(stream) => Ok(Box::new(stream)),
        Err(e) => Err(match certificate_problem(&e) {
            Some(reason) => WsError::CertificateNotTrusted {
                url: url.to_owned(),
                reason,
            },
            None => connect_failed(format!("TLS handshake failed: {e}")),
        }),
    }
}

/// Opens a WebSocket to `url` (already a `ws://` or `wss://` URL).
pub(crate) async fn open(url: &str, opts: &WsConnectOptions) -> Result<WsStream, WsError> {
    let connect_failed = |reason: String| WsError::Connect {
        url: url.to_owned(),
        reason,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| connect_failed(format!("invalid request: {e}")))?;
    let mut extra: Vec<(&str, &str)> = opts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(origin) = &opts.origin {
        extra.push(("origin", origin.as_str()));
    }
    for (name, value) in extra {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| connect_failed(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| connect_failed(format!("invalid header value {value:?}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    let handshake = async {
        let io = connect_stream(url, opts.tls.as_ref()).await?;
        Ok::<_, WsError>(tokio_tungstenite::client_async(request, io).await)
    };
    let (stream, _response) = match tokio::time::timeout(opts.connect_timeout, handshake).await {
        Err(_) => {
            return Err(connect_failed(format!(
                "timed out after {} ms",
                opts.connect_timeout.as_millis()
            )));
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(tungstenite::Error::Http(response)))) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let (code, message) = match api_error_from_body(status, body) {
                crate::ClientError::Api { code, message, .. } => (code, message),
                other => (format!("http_{status}"), other.to_string()),
            };
            return Err(WsError::Rejected {
                url: url.to_owned(),
                status,
                code,
                message,
            });
        }
        Ok(Ok(Err(e))) => return Err(connect_failed(describe(&e))),
        Ok(Ok(Ok(pair))) => pair,
    };
    Ok(stream)
}

/// The innermost cause of a tungstenite error ("Connection refused (os error 111)").
pub(crate) fn describe(err: &tungstenite::Error) -> String {
    let mut root: &dyn std::error::Error = err;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

/// How a close frame reads as [`CloseInfo`].
pub(crate) fn close_info(frame: Option<&CloseFrame>) -> CloseInfo {
    match frame {
        Some(frame) => CloseInfo {
            code: Some(u16::from(frame.code)),
            reason: frame.reason.to_string(),
        },
        // A close frame without a body: RFC 6455 reports that as 1005 "no status received".
        None => CloseInfo {
            code: Some(1005),
            reason: String::new(),
        },
    }
}

/// The end of a connection on a read error.
pub(crate) fn close_info_from_error(err: &tungstenite::Error) -> CloseInfo {
    CloseInfo {
        code: None,
        reason: describe(err),
    }
}

/// A close frame to send.
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// One raw connection to one node, for protocol tests and tools. No reconnects, no
/// bookkeeping: what the server sends is what the caller reads.
///
/// Reading also answers the server's WebSocket pings (tungstenite queues the pong and sends
/// it with the next read or write), so a caller that stops reading is a slow consumer and a
/// dead client at once, which is what such tests want.
pub struct WsConn {
    stream: WsStream,
    url: String,
    closed: Option<CloseInfo>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("url", &self.url)
            .field("closed", &self.closed)
            .finish()
    }
}

impl WsConn {
    /// Connects to `server` (see [`ws_url`] for the accepted forms) without an `Origin`.
    pub async fn connect(server: &str) -> Result<WsConn, WsError> {
        WsConn::connect_with(server, &WsConnectOptions::default()).await
    }

    /// Connects to `server` checking `wss://` servers against `root`.
    pub async fn connect_trusting(
        server: &str,
        root: Option<TrustRoot>,
    ) -> Result<WsConn, WsError> {
        let opts = WsConnectOptions {
            tls: root,
            ..WsConnectOptions::default()
        };
        WsConn::connect_with(server, &opts).await
    }

    /// Connects with an `Origin` header (or none): shorthand for [`WsConn::connect_with`].
    pub async fn connect_with_origin(server: &str, origin: &str) -> Result<WsConn, WsError> {
        let opts = WsConnectOptions {
            origin: Some(origin.to_owned()),
            ..WsConnectOptions::default()
        };
        WsConn::connect_with(server, &opts).await
    }

    /// Connects with explicit options. An HTTP answer instead of an upgrade (e.g. 403
    /// `forbidden_origin`) is [`WsError::Rejected`].
    pub async fn connect_with(server: &str, opts: &WsConnectOptions) -> Result<WsConn, WsError> {
        let url = ws_url(server)?;
        let stream = open(&url, opts).await?;
        Ok(WsConn {
            stream,
            url,
            closed: None,
        })
    }

    /// The `ws://` URL this connection went to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref()
    }

    /// The close code, once the connection has ended with one.
    pub fn close_code(&self) -> Option<u16> {
        self.closed.as_ref().and_then(|c| c.code)
    }

    /// Sends any WebSocket message as it is.
    pub async fn send_message(&mut self, msg: WsMessage) -> Result<(), WsError> {
        if let Some(info) = &self.closed {
            return Err(WsError::Closed(info.clone()));
        }
        self.stream
            .send(msg)
            .await
            .map_err(|e| WsError::Transport(describe(&e)))
    }

    /// Sends one text frame (need not be valid JSON).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), WsError> {
        self.send_message(WsMessage::text(text.into())).await
    }

    /// Sends one binary frame (a protocol error for the server: close 4000).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), WsError> {
        self.send_message(WsMessage::binary(bytes)).await
    }

    /// Sends a typed frame.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), WsError> {
        self.send_text(frame.to_json()).await
    }

    /// Sends `auth` with `token` and waits for `hello`. A close instead (4001 for a bad token)
    /// is [`WsError::AuthLost`]; another first frame is a protocol error.
    pub async fn auth(&mut self, token: &str) -> Result<Hello, WsError> {
        self.send_frame(&ClientFrame::auth(token)).await?;
        match self.next_frame(DEFAULT_AUTH_TIMEOUT).await {
            Ok(ServerFrame::Hello(hello)) => Ok(hello),
            Ok(other) => Err(WsError::Protocol(format!(
                "expected hello after auth, got {other:?}"
            ))),
            Err(WsError::Closed(info)) if info.is_auth_loss() => Err(WsError::AuthLost(info)),
            Err(e) => Err(e),
        }
    }

    /// The next message of any kind (pings and pongs included) within `timeout`. A close
    /// frame, or the end of the connection, is `Err(WsError::Closed)` and is remembered
    /// ([`WsConn::close_info`]).
    pub async fn next_message(&mut self, timeout: Duration) -> Result<WsMessage, WsError> {
        if let Some(info) = &self.closed {
            return Err(WsError::Closed(info.clone()));
        }
        let next = match tokio::time::timeout(timeout, self.stream.next()).await {
            Err(_) => return Err(WsError::Timeout(timeout)),
            Ok(next) => next,
        };
        let info = match next {
            Some(Ok(WsMessage::Close(frame))) => close_info(frame.as_ref()),
            Some(Ok(msg)) => return Ok(msg),
            Some(Err(e)) => close_info_from_error(&e),
            None => CloseInfo {
                code: None,
                reason: "connection ended".to_owned(),
            },
        };
        self.closed = Some(info.clone());
        Err(WsError::Closed(info))
    }

    /// The next text frame within `timeout` (all of it, not counting pings, pongs and binary
    /// frames, which are skipped).
    pub async fn next_text(&mut self, timeout: Duration) -> Result<String, WsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(WsError::Timeout(timeout));
            }
            match self.next_message(left).await {
                Ok(WsMessage::Text(text)) => return Ok(text.to_string()),
                Ok(_) => continue,
                Err(WsError::Timeout(_)) => return Err(WsError::Timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text frame, decoded. A frame that does not decode is a protocol error
    /// carrying its text.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, WsError> {
        let text = self.next_text(timeout).await?;
        ServerFrame::decode(&text)
            .map_err(|e| WsError::Protocol(format!("undecodable frame ({e}): {text}")))
    }

    /// Reads and discards frames until the server closes the connection (or `timeout`
    /// passes) and returns how it closed. For tests that expect a close (bad token, oversized
    /// frame, rate limit, slow consumer) regardless of what was queued before it.
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<CloseInfo, WsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(WsError::Timeout(timeout));
            }
            match self.next_message(left).await {
                Ok(_) => continue,
                Err(WsError::Closed(info)) => return Ok(info),
                Err(WsError::Timeout(_)) => return Err(WsError::Timeout(timeout)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection with `code` and `reason` and waits (briefly) for the server's
    /// answering close frame.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), WsError> {
        if self.closed.is_some() {
            return Ok(());
        }
        self.stream
            .close(Some(close_frame(code, reason)))
            .await
            .map_err(|e| WsError::Transport(describe(&e)))?;
        // The server's answering close frame ends the connection; a server that never answers
        // is not worth waiting for long.
        let _ = self.expect_close(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_from_server_addresses() {
        assert_eq!(
            ws_url("127.0.0.2:8080").unwrap(),
            "ws://127.0.0.2:8080/api/v1/ws"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/api/v1/ws"
        );
        assert_eq!(
            ws_url("http://gw.lan/conclave").unwrap(),
            "ws://gw.lan/conclave/api/v1/ws"
        );
        assert_eq!(
            ws_url("ws://127.0.0.1:8080/custom").unwrap(),
            "ws://127.0.0.1:8080/custom"
        );
        assert_eq!(
            ws_url("https://127.0.0.2:8443").unwrap(),
            "wss://127.0.0.2:8443/api/v1/ws"
        );
        assert_eq!(ws_url("wss://x:1/custom").unwrap(), "wss://x:1/custom");
        assert!(matches!(
            ws_url("ftp://x:1"),
            Err(WsError::InvalidServer { .. })
        ));
    }

    #[test]
    fn host_port_of_servers() {
        assert_eq!(host_port("http://127.0.0.2:8080"), "127.0.0.2:8080");
        assert_eq!(host_port("127.0.0.3:8080"), "127.0.0.3:8080");
        assert_eq!(host_port("http://gw.lan/conclave"), "gw.lan:80");
    }

    #[test]
    fn close_frames_map_to_close_info() {
        let info = close_info(Some(&close_frame(4008, "slow consumer")));
        assert_eq!(info.code, Some(4008));
        assert_eq!(info.reason, "slow consumer");
        assert_eq!(info.to_string(), "close 4008 (slow consumer)");
        assert!(!info.is_auth_loss());
        assert!(close_info(Some(&close_frame(4003, ""))).is_auth_loss());
        assert_eq!(close_info(None).code, Some(1005));
    }
}
