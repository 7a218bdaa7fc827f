//! File bodies on a runtime of their own. During a boot storm hundreds of
//! connections stream the basefs; if their `sendfile` loops shared the
//! workers that accept connections and answer boot scripts, a new
//! `/boot.ipxe` would wait for every streaming task ahead of it in the run
//! queue, once per step of its request (accept, head, handler, reply).
//! Here the request side stays on the server's runtime, whose workers are
//! then idle and wake at once, and each file body is sent by a task on
//! this runtime, on a duplicate of the connection's descriptor (the same
//! socket; the connection gets it back for its next request when the body
//! is out). Its threads run at a lower priority (nice +5): when the cores
//! are short, bytes wait, boot scripts do not.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::TcpStream;

/// Lower than the request side's threads (nice 0), as nginx's
/// `worker_priority` would set a whole worker.
const NICE: i32 = 5;

fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mkimage-bulk")
            .on_thread_start(|| {
                // This thread only (Linux: PRIO_PROCESS with 0 is the calling thread).
                // SAFETY: setpriority has no memory-safety preconditions.
                unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, NICE) };
            })
            .enable_all()
            .build()
    });
    built
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the file-body runtime: {e}")))
}

/// `len` bytes of `file` from `start` on `stream`'s socket, sent by a task
/// on the bulk runtime; `sent` counts them.
pub async fn send_file(
    stream: &TcpStream,
    file: File,
    start: u64,
    len: u64,
    timeout: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let rt = runtime()?;
    let dup = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    dup.set_nonblocking(true)?;
    let task = rt.spawn(async move {
        let mut n = 0;
        let result = match TcpStream::from_std(dup) {
            Ok(s) => super::sendfile::send_file(&s, &file, start, len, timeout, &mut n).await,
            Err(e) => Err(e),
        };
        (result, n)
    });
    let (result, n) = task.await.map_err(io::Error::other)?;
    *sent += n;
    result
}
