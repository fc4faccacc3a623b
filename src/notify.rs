//! systemd's readiness protocol (sd_notify): one datagram such as `READY=1` to the unix socket
//! named by `$NOTIFY_SOCKET`, so that a `Type=notify` unit is started only once the mount is
//! live and shows when it is stopping.
//!
//! Written here rather than taken from a crate: it is a dozen lines, and the only subtlety is
//! the abstract socket namespace (a name starting with `@` stands for a leading NUL byte).

use std::os::unix::net::UnixDatagram;

/// Name of the variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tell systemd the mount is live. Nothing happens outside systemd.
pub fn ready() {
    send("READY=1");
}

/// Tell systemd the mount is going away (uploads in flight still finish).
pub fn stopping() {
    send("STOPPING=1");
}

/// Send one state message; failures are logged and otherwise ignored, as a lost notification
/// only makes systemd time out, and a mount that works is worth more than that.
pub fn send(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    if let Err(e) = send_to(&socket, state) {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

fn send_to(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let path = socket.as_encoded_bytes();
    match path.strip_prefix(b"@") {
        Some(name) => send_abstract(&sock, name, state),
        None => sock.send_to(state.as_bytes(), socket).map(drop),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(drop)
}

/// Abstract sockets exist only on Linux, and so does systemd.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("supamount-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
