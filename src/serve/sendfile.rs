//! Zero-copy file bodies: `sendfile(2)` from the opened file straight to the
//! client's socket, instead of copying every byte through user space.
//!
//! tiny_http hands a handler its connection only as a boxed `Write`. So for
//! a large body we find the connection's socket among the process's own
//! descriptors — a TCP socket on our HTTP port whose peer is the request's
//! client address — and take a duplicate of it, which keeps it from being
//! closed or its number reused under us, then check the duplicate again.
//! The response head goes through tiny_http's writer (flushed) first, so
//! bytes stay in order; if no socket is found the caller copies as before.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt, SockType};

/// A duplicate of the connection's socket, if it can be found.
pub fn find_socket(peer: SocketAddr, local_port: u16) -> Option<OwnedFd> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        match std::fs::read_link(entry.path()) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => {}
            _ => continue,
        }
        // SAFETY: the descriptor is only borrowed for the dup below; if it
        // was closed meanwhile the dup fails (EBADF), and if its number was
        // reused the checks on the duplicate reject it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(dup) = borrowed.try_clone_to_owned() else { continue };
        if is_connection(&dup, peer, local_port) {
            return Some(dup);
        }
    }
    None
}

fn is_connection(fd: &OwnedFd, peer: SocketAddr, local_port: u16) -> bool {
    if getsockopt(fd, sockopt::SockType).ok() != Some(SockType::Stream) {
        return false;
    }
    let Ok(dup) = fd.try_clone() else { return false };
    let stream = TcpStream::from(dup);
    stream.peer_addr().ok() == Some(peer) && stream.local_addr().ok().map(|a| a.port()) == Some(local_port)
}

/// Send `len` bytes of `file` from `offset` on `socket`; `sent` counts what
/// went out, also on error. The socket's send timeout bounds each stall.
pub fn send(socket: &OwnedFd, file: &File, offset: u64, len: u64, sent: &mut u64) -> io::Result<()> {
    let mut off = offset as libc::off64_t;
    while *sent < len {
        let want = (len - *sent).min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile64(socket.as_fd(), file.as_fd(), Some(&mut off), want) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while serving it")),
            Ok(n) => *sent += n as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn finds_the_connection_and_sends_a_file_range() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert!(find_socket("127.0.0.1:1".parse().unwrap(), port).is_none());
        let socket = find_socket(peer, port).expect("the accepted socket");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let mut sent = 0;
        send(&socket, &file, 2, 5, &mut sent).unwrap();
        assert_eq!(sent, 5);
        drop(socket);
        drop(_server_side);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "23456");
    }
}
