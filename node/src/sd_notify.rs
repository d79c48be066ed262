//! systemd's readiness protocol (`sd_notify(3)`) for `conclave run` and `join` under a
//! `Type=notify` unit: the datagram to `$NOTIFY_SOCKET` (a path, or `@name` in Linux's abstract
//! namespace). What is sent when (`READY=1` once the node really serves, `STATUS=...` lines,
//! `STOPPING=1`) is decided by `service_report`, which systemd shares with the Windows service.
//!
//! It must never be fatal: without `$NOTIFY_SOCKET` (not under systemd, or on Windows) it does
//! nothing, and a failed send is logged and otherwise ignored.

/// A connection to the service manager's notification socket, or nothing.
pub struct Notifier {
    target: Option<socket::Target>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a no-op notifier when it is unset or empty.
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::new(&v.to_string_lossy()),
            _ => Self { target: None },
        }
    }

    /// Notifies `socket` (a path, or `@name` for an abstract socket).
    pub fn new(socket: &str) -> Self {
        match socket::Target::open(socket) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(e) => {
                tracing::warn!(socket, error = %e, "NOTIFY_SOCKET is not usable; not notifying systemd");
                Self { target: None }
            }
        }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (newline-separated `KEY=value` assignments). Never fails: the service
    /// manager is told about the node, the node does not depend on it.
    pub fn notify(&self, message: &str) {
        if let Some(target) = &self.target
            && let Err(e) = target.send(message.as_bytes())
        {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// Elsewhere there is no notify socket: a target can never be opened.
#[cfg(not(unix))]
mod socket {
    pub(super) enum Target {}

    impl Target {
        pub(super) fn open(_spec: &str) -> std::io::Result<Self> {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "sd_notify exists on Unix only",
            ))
        }

        pub(super) fn send(&self, _message: &[u8]) -> std::io::Result<()> {
            match *self {}
        }
    }
}

#[cfg(unix)]
mod socket {
    use std::io;
    use std::os::unix::net::UnixDatagram;

    /// The socket to send to, and an unbound socket to send from.
    pub(super) struct Target {
        socket: UnixDatagram,
        address: Address,
    }

    enum Address {
        Path(std::path::PathBuf),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Abstract(std::os::unix::net::SocketAddr),
    }

    impl Target {
        pub(super) fn open(spec: &str) -> io::Result<Self> {
            let address = match spec.strip_prefix('@') {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                Some(name) => {
                    #[cfg(target_os = "android")]
                    use std::os::android::net::SocketAddrExt;
                    #[cfg(target_os = "linux")]
                    use std::os::linux::net::SocketAddrExt;
                    Address::Abstract(std::os::unix::net::SocketAddr::from_abstract_name(
                        name.as_bytes(),
                    )?)
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "abstract sockets exist on Linux only",
                    ));
                }
                None => Address::Path(spec.into()),
            };
            Ok(Self {
                socket: UnixDatagram::unbound()?,
                address,
            })
        }

        pub(super) fn send(&self, message: &[u8]) -> io::Result<()> {
            let sent = match &self.address {
                Address::Path(path) => self.socket.send_to(message, path)?,
                #[cfg(any(target_os = "linux", target_os = "android"))]
                Address::Abstract(addr) => self.socket.send_to_addr(message, addr)?,
            };
            if sent == message.len() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::net::UnixDatagram;

    use super::Notifier;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap());
        assert!(notifier.is_enabled());
        notifier.notify("READY=1\nSTATUS=serving");
        assert_eq!(received(&listener), "READY=1\nSTATUS=serving");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("conclave-test-notify-{}", rand::random::<u64>());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}")).notify("STOPPING=1");
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("absent.sock").to_str().unwrap());
        // Sending fails (nobody listens) and is only logged.
        notifier.notify("READY=1");
    }
}
