//! A file range on a socket by `sendfile(2)`, each step within the
//! timeout: the one loop behind a file body, whichever runtime runs it.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes per `sendfile` call: a slow client shows progress well within any
/// timeout, and a task yields to the others between calls, so a boot script
/// request is answered in milliseconds beside 64 streaming downloads.
const STEP: usize = 256 * 1024;

/// `len` bytes of `file` from `start`, by sendfile; `sent` counts them.
pub(super) async fn send_file(
    stream: &TcpStream,
    file: &File,
    start: u64,
    len: u64,
    timeout: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let mut offset = start as libc::off64_t;
    while *sent < len {
        let want = ((len - *sent) as usize).min(STEP);
        let n = within(timeout, async {
            loop {
                stream.writable().await?;
                let step = stream.try_io(Interest::WRITABLE, || {
                    nix::sys::sendfile::sendfile64(
                        stream.as_fd(),
                        file.as_fd(),
                        Some(&mut offset),
                        want,
                    )
                    .map_err(io::Error::from)
                });
                match step {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
        })
        .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while serving it",
            ));
        }
        *sent += n as u64;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// `io` if it finishes within `timeout`, else a TimedOut error.
pub(super) async fn within<T>(
    timeout: Duration,
    io: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(timeout, io).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client took no data for {timeout:?}"),
        )),
    }
}
