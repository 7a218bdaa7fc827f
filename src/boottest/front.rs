//! `boot-test --via-nginx CONF`: nginx between the VM and `mkimage serve`,
//! inside boot-test's network namespace, run from the given cache-tier
//! config (`nginx/mkimage-cache.conf`) with its site values pointed at the
//! test's server, its own prefix, pid file and cache dir; stopped by its pid.
//! After the checked boot, a second VM boots until its basefs is verified
//! and mkimage's `/metrics` must show one basefs download for both: the
//! second came from nginx's cache.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Child;

use anyhow::{bail, Context};

use crate::exec::Cmd;

/// The running nginx; stopped by its pid on drop.
pub struct Front {
    child: Child,
    pub port: u16,
}

impl Drop for Front {
    fn drop(&mut self) {
        super::vm::stop_child(&mut self.child);
    }
}

/// Start nginx in `work` from `conf` (the cache-tier config) on
/// `listen`:`port`, in front of mkimage on `listen`:`upstream`.
pub fn start(
    work: &Path,
    conf: &Path,
    (listen, port): (Ipv4Addr, u16),
    upstream: u16,
) -> anyhow::Result<Front> {
    need_nginx("--via-nginx")?;
    let text = std::fs::read_to_string(conf)
        .with_context(|| format!("cannot read --via-nginx {}", conf.display()))?;
    let prefix = work.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let mut site = text;
    for (from, to) in [
        (
            "server 127.0.0.1:8080;",
            format!("server {listen}:{upstream};"),
        ),
        ("listen 8081;", format!("listen {listen}:{port};")),
        (
            "/var/cache/nginx/mkimage ",
            format!("{} ", prefix.join("cache").display()),
        ),
    ] {
        if !site.contains(from) {
            bail!(crate::UsageError(format!("--via-nginx {}: expected `{from}` (the site values of nginx/mkimage-cache.conf) to point at the test's server", conf.display())));
        }
        site = site.replace(from, &to);
    }
    spawn(&prefix, &site, listen, port)
}

/// A usage error naming `flag` when nginx is not installed.
pub fn need_nginx(flag: &str) -> anyhow::Result<()> {
    if !crate::exec::have("nginx") {
        bail!(crate::UsageError(format!(
            "{flag} needs `nginx`: apt-get install -y nginx"
        )));
    }
    Ok(())
}

/// Run nginx in the foreground from `site` (a server block listening on
/// `listen`:`port`) under `prefix` (with `logs/`), and wait until it accepts.
pub fn spawn(prefix: &Path, site: &str, listen: Ipv4Addr, port: u16) -> anyhow::Result<Front> {
    std::fs::write(prefix.join("nginx.conf"), nginx_conf(prefix, site))?;
    let log = std::fs::File::create(prefix.join("logs/stderr.log"))?;
    let child = Cmd::new("nginx")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .die_with_parent()
        .spawn(std::process::Stdio::null(), std::process::Stdio::from(log))?;
    let front = Front { child, port };
    super::ports::wait_for_port(listen, port, "nginx").with_context(|| {
        std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
    })?;
    Ok(front)
}

/// A whole nginx.conf around `http_body` (directives and server blocks for
/// `http { }`) that keeps everything under `prefix`: pid file, logs and
/// temp dirs (`logs/` must exist; nginx makes the temp dirs), so it runs beside any other
/// nginx, as any user.
pub fn nginx_conf(prefix: &Path, http_body: &str) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n access_log {p}/logs/access.log;\n default_type application/octet-stream;\n client_body_temp_path {p}/tmp;\n\
         proxy_temp_path {p}/tmp;\n fastcgi_temp_path {p}/tmp;\n uwsgi_temp_path {p}/tmp;\n scgi_temp_path {p}/tmp;\n{http_body}\n}}\n"
    )
}

/// `mkimage_artifact_downloads_total{kind="basefs"}` of mkimage on `ip`:`port`.
pub fn basefs_downloads(ip: Ipv4Addr, port: u16) -> anyhow::Result<u64> {
    let (_, text) = super::node::http_get(ip, port, "/metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("mkimage_artifact_downloads_total{kind=\"basefs\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}
