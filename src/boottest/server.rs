//! What the VM boots from: `mkimage serve` on `--dir` (with nginx's cache
//! in front of it for `--via-nginx`), or a published tree served by nginx
//! alone (`--published`). Each runs until the test ends and is stopped by
//! its pid.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::network::Network;
use super::ports::{free_port, wait_for_port};
use super::request::Request;
use super::{front, published, vm};
use crate::exec::Cmd;

/// Where and what for the server starts.
pub(super) struct Setup<'a> {
    pub req: &'a Request,
    pub net: &'a Network,
    /// boot-test's scratch dir.
    pub work: &'a Path,
    /// The boot config for the test (the checker overlay added).
    pub boot_yml: &'a Path,
    /// The server's log.
    pub log: PathBuf,
    /// The VM's MAC, lower case.
    pub mac: String,
}

/// The running server: the URL of the VM's boot script, the children to
/// stop, and `mkimage serve`'s port (none for a published tree).
pub(super) struct Served {
    pub script_url: String,
    _server: Option<Guard>,
    pub front: Option<front::Front>,
    pub port: Option<u16>,
}

/// Start what `at.req` asks the VM to boot from.
pub(super) fn start(at: &Setup) -> anyhow::Result<Served> {
    let (req, mac) = (at.req, &at.mac);
    let listen = at.net.listen();
    let seen_as = Network::seen_as(req.proxy_dhcp);
    if req.published {
        let (tree, url) = published::start(at.work, &req.dir, at.boot_yml, listen, seen_as)?;
        return Ok(Served {
            script_url: url,
            _server: None,
            front: Some(tree),
            port: None,
        });
    }
    let port = free_port(listen)?;
    let nginx_port = req
        .via_nginx
        .as_ref()
        .map(|_| free_port(listen))
        .transpose()?;
    let server = Guard(serve_cmd(at, port, nginx_port)?.spawn(
        std::process::Stdio::null(),
        std::process::Stdio::from(std::fs::File::create(&at.log)?),
    )?);
    wait_for_port(listen, port, "mkimage serve")
        .with_context(|| vm::tail(&std::fs::read_to_string(&at.log).unwrap_or_default(), 20))?;
    let front = req
        .via_nginx
        .as_deref()
        .zip(nginx_port)
        .map(|(conf, n)| front::start(at.work, conf, (listen, n), port))
        .transpose()?;
    let entry = front.as_ref().map_or(port, |f| f.port);
    Ok(Served {
        script_url: format!("http://{seen_as}:{entry}/boot.ipxe?mac={mac}"),
        _server: Some(server),
        front,
        port: Some(port),
    })
}

/// `mkimage serve` on `port`, as the test needs it.
fn serve_cmd(at: &Setup, port: u16, nginx_port: Option<u16>) -> anyhow::Result<Cmd> {
    let req = at.req;
    let (listen, seen_as) = (at.net.listen(), Network::seen_as(req.proxy_dhcp));
    let exe = std::env::current_exe().context("cannot find the mkimage binary")?;
    // A signed UKI takes a node overlay only with its signature.
    let node_key = match (req.secure_boot, req.site_key()) {
        (true, Some((dir, _))) => vec![
            std::ffi::OsString::from("--node-signing-key"),
            crate::secureboot::keys::Keys::load(dir)?
                .node_signer()
                .0
                .into(),
        ],
        _ => vec![],
    };
    // The server keeps its state (content store, nodes) under --dir, as `serve` does.
    Ok(Cmd::new(&exe)
        .args(["serve", "--http", &format!("{listen}:{port}")])
        .args(at.net.serve_args())
        // nginx's requests come from `listen`: its X-Forwarded-For
        // counts. On the lab's network the proxyDHCP hands out the
        // server's URL: nginx's, so the whole boot goes through it.
        .args(match (nginx_port, req.proxy_dhcp) {
            (Some(n), true) => vec![
                "--trusted-proxy".to_string(),
                format!("{listen}/32"),
                "--public-url".to_string(),
                format!("http://{seen_as}:{n}"),
            ],
            (Some(_), false) => vec!["--trusted-proxy".to_string(), format!("{listen}/32")],
            (None, _) => vec![],
        })
        .args(match (req.secure_boot, req.proxy_dhcp) {
            (true, true) => &["--uefi-boot", "shim"][..],
            _ => &[][..],
        })
        .args(node_key)
        .arg("--dir")
        .arg(&req.dir)
        .arg("--boot-config")
        .arg(at.boot_yml)
        .inherit_env()
        .die_with_parent())
}

/// Stops the server child by pid when the test ends, however it ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        vm::stop_child(&mut self.0);
    }
}
