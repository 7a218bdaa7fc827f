//! nginx for tests: started with a minimal config of its own (own prefix,
//! pid file, temp dirs, error log) around a server block the test gives,
//! on a free loopback port, stopped by its pid on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    pub child: Child,
    pub addr: SocketAddr,
    pub prefix: PathBuf,
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Nginx {
    /// Run nginx in the foreground with `http_body` (directives and server
    /// blocks for `http { }`) in a prefix under `work`; `addr` is the
    /// address its server block listens on.
    pub fn start(work: &Path, addr: SocketAddr, http_body: &str) -> Nginx {
        let prefix = work.join("nginx");
        for d in ["logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(d)).expect("nginx prefix");
        }
        let conf = mkimage::boottest::front::nginx_conf(&prefix, http_body);
        std::fs::write(prefix.join("nginx.conf"), conf).expect("nginx.conf");
        let check = Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .output()
            .expect("run nginx -t");
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            child,
            addr,
            prefix,
        };
        // Wait for the listening socket (nginx has bound it once it accepts).
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr}: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGQUIT: graceful stop, the master waits for its workers.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `nginx/mkimage-cache.conf` with its three site values replaced: the
/// upstream, the listen address and the cache dir. Panics if the file no
/// longer holds one of them (the README tells users to change those).
pub fn cache_conf(upstream: SocketAddr, listen: SocketAddr, cache_dir: &Path) -> String {
    let conf = include_str!("../../nginx/mkimage-cache.conf");
    let mut out = conf.to_string();
    for (from, to) in [
        ("server 127.0.0.1:8080;", format!("server {upstream};")),
        ("listen 8081;", format!("listen {listen};")),
        (
            "/var/cache/nginx/mkimage ",
            format!("{} ", cache_dir.display()),
        ),
    ] {
        assert!(
            out.contains(from),
            "nginx/mkimage-cache.conf no longer contains `{from}`"
        );
        out = out.replace(from, &to);
    }
    out
}
