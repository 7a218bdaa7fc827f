//! `boot-test --published`: boot from a static tree with no `mkimage serve`
//! running. The build dir is `mkimage publish`ed (with the test's boot
//! config) into the test's scratch dir, for the URL the guest reaches, and
//! nginx serves only that tree, from the `nginx.conf` publish wrote (its
//! `listen` pointed at the test's address). The VM is handed the tree's
//! dispatcher, `/boot.ipxe`, as a lab's DHCP server would hand it out.
//! Afterwards nginx's access log must show the whole boot came from the
//! tree: the dispatcher, a pre-rendered script, and the kernel, initrd and
//! basefs by content.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};

use super::front::{self, Front};
use super::lab::Verdict;
use crate::serve::publish;

/// Where the tree goes under the scratch dir.
const TREE: &str = "published";

/// Publish `dir` for `http://SEEN_AS:PORT` and start nginx on `listen`:PORT
/// serving only the tree. Returns nginx and the dispatcher's URL.
pub fn start(
    work: &Path,
    dir: &Path,
    boot_config: &Path,
    listen: Ipv4Addr,
    seen_as: Ipv4Addr,
) -> anyhow::Result<(Front, String)> {
    front::need_nginx("--published")?;
    let port = super::ports::free_port(listen)?;
    let public_url = format!("http://{seen_as}:{port}");
    let tree = work.join(TREE);
    let req = publish::Request {
        dir: dir.to_path_buf(),
        out: tree.clone(),
        boot_config: Some(boot_config.to_path_buf()),
        public_url: public_url.clone(),
        ipxe_template: None,
        grace: crate::serve::GRACE,
        secure_boot: false,
        keys: None,
    };
    let done = publish::run(&req).context("boot-test --published: mkimage publish")?;
    tracing::info!(
        "published {} artifacts to {}; nginx serves only that tree",
        done.artifacts,
        tree.display()
    );
    // nginx's workers run as an unprivileged user: the scratch dir must let them in.
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755))?;
    let conf =
        std::fs::read_to_string(tree.join("nginx.conf")).context("publish wrote no nginx.conf")?;
    let listen_line = format!("listen {port};");
    if !conf.contains(&listen_line) {
        bail!("boot-test --published: publish's nginx.conf has no `{listen_line}`:\n{conf}");
    }
    let prefix = work.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let nginx = front::spawn(
        &prefix,
        &conf.replace(&listen_line, &format!("listen {listen}:{port};")),
        listen,
        port,
    )?;
    Ok((nginx, format!("{public_url}/boot.ipxe")))
}

/// What nginx's access log shows of the boot: every step came from the tree.
pub fn judge(work: &Path, mac: &str) -> Vec<Verdict> {
    let log = std::fs::read_to_string(work.join("nginx/logs/access.log")).unwrap_or_default();
    let served = |path: &str| {
        log.lines()
            .any(|l| l.contains(&format!("\"GET {path}")) && l.contains("\" 200 "))
    };
    let own = format!("/boot/{}.ipxe", mac.replace(':', "-"));
    let mut verdicts: Vec<Verdict> = vec![
        (
            "nginx served the tree's dispatcher /boot.ipxe".into(),
            check(served("/boot.ipxe"), "no `GET /boot.ipxe` answered 200"),
        ),
        (
            format!("nginx served a pre-rendered script ({own} or /default.ipxe)"),
            check(
                served(&own) || served("/default.ipxe"),
                "the dispatcher chained no script of the tree",
            ),
        ),
    ];
    for name in ["kernel", "initrd", "basefs"] {
        let by_content = published_names(work, name).iter().any(|p| served(p));
        verdicts.push((
            format!("nginx served the {name} from the tree by content (/sha256/HEX/NAME)"),
            check(by_content, "not in nginx's access log"),
        ));
    }
    verdicts
}

/// The `/sha256/HEX/NAME` paths the tree's scripts name for `what`:
/// `kernel` (the `kernel` line's URL), `initrd` (the `initrd` line's URL)
/// or `basefs` (the `basefs=` kernel argument).
fn published_names(work: &Path, what: &str) -> Vec<String> {
    let mut scripts = vec![work.join(TREE).join("default.ipxe")];
    if let Ok(dir) = std::fs::read_dir(work.join(TREE).join("boot")) {
        scripts.extend(dir.flatten().map(|e| e.path()));
    }
    let texts: Vec<String> = scripts
        .iter()
        .filter_map(|s| std::fs::read_to_string(s).ok())
        .collect();
    let urls = texts.iter().flat_map(|t| t.lines()).filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (what, words.as_slice()) {
            ("basefs", _) => words.iter().find_map(|w| w.strip_prefix("basefs=")),
            ("kernel", ["kernel", url, ..]) => Some(*url),
            ("initrd", ["initrd", "--name", _, url, ..]) => Some(*url),
            _ => None,
        }
    });
    urls.filter_map(|u| {
        u.split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
    })
    .filter(|p| p.starts_with("/sha256/"))
    .collect()
}

fn check(ok: bool, why: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why.to_string())
    }
}
