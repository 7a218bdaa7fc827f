//! `mkimage publish OUT`: the boot server's answers written out as a static
//! tree, so any static web server or object store can boot machines while
//! mkimage is not running. Layout (all paths relative, URLs under
//! `--public-url`):
//!
//! - `sha256/HEX/NAME`: every artifact a profile names, by content (the
//!   same paths `mkimage serve` uses, so the same caches work);
//! - `boot/MAC.ipxe` (MAC as `aa-bb-cc-dd-ee-ff`): a script for every MAC
//!   the boot config names (`macs:`, `hosts:` and the inventory's `nodes:`);
//! - `node/MAC/HEX/node.cpio.gz`: each inventory node's overlay (its
//!   script names it; a static server cannot keep it from other machines);
//! - `default.ipxe`: the default profile's script;
//! - `boot.ipxe`: a dispatcher — the machine's own script, else the default
//!   (needs nothing from the server but files);
//! - `nginx.conf`: a server block serving the tree (immutable artifacts,
//!   scripts never cached);
//! - with `--secure-boot` and `--keys DIR`: shim, GRUB and its configs, and
//!   each profile's signed UKI (see `serve::publish_secure`).
//!
//! Artifacts are hard-linked when OUT is on the served dir's filesystem,
//! else copied; each is checked against its sha256 first. Scripts are
//! replaced by rename, artifacts never change once written, so republishing
//! over a tree machines are booting from is safe.
//!
//! A republish also tidies the tree: the script of a MAC the boot config no
//! longer names is removed (the machine gets the default), and an artifact
//! no script names any more is marked (`sha256/HEX/.superseded`, whose
//! mtime says since when) and removed by the first publish after it has
//! been superseded for the grace period (`--grace`, default 1 h), so a
//! machine that fetched its script just before can still finish its boot.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use super::cmdline::encode_path;
use super::identity;
use super::ipxe::{Scripts, DEFAULT_CONSOLE};
use super::profiles::{for_machine, normalize_mac, BootConfig, Resolved};
use super::publish_secure as secure;
pub use super::publish_secure::uki_profile;
use super::servers::check_public_url as check_url;
use crate::artifact::{objects, sha256_file, write_atomic, Manifest};

/// `mkimage publish`, paths absolute.
#[derive(Debug, Clone)]
pub struct Request {
    /// The build output dir (what `mkimage serve --dir` serves).
    pub dir: PathBuf,
    /// Where the static tree goes.
    pub out: PathBuf,
    pub boot_config: Option<PathBuf>,
    /// The URL the tree will be served at (written into the scripts).
    pub public_url: String,
    pub ipxe_template: Option<PathBuf>,
    /// How long an artifact no script names stays in the tree.
    pub grace: Duration,
    /// Write the Secure Boot path with factory keys: shim, Debian's signed
    /// GRUB, a GRUB config per machine.
    pub secure_boot: bool,
    /// Sign each profile's UKI with the site key in this dir.
    pub keys: Option<PathBuf>,
}

/// The dispatcher at the tree's root: relative URLs, resolved by iPXE
/// against this script's own URL.
const DISPATCHER: &str = include_str!("../../ipxe/dispatcher.ipxe.j2");

/// The server block written as `OUT/nginx.conf`.
const NGINX_CONF: &str = include_str!("../../nginx/publish.conf.j2");

/// Marks an object dir that no script of the tree names; its mtime is
/// when a publish first found it so.
const SUPERSEDED: &str = ".superseded";

/// What was written, and what the tidying did.
#[derive(Debug)]
pub struct Published {
    pub artifacts: usize,
    pub machines: usize,
    /// Scripts of MACs the boot config no longer names, removed.
    pub scripts_removed: usize,
    /// Artifacts no script names, kept for the grace period.
    pub superseded: usize,
    /// Artifacts superseded for longer than the grace period, removed.
    pub dropped: usize,
    /// Signed UKIs, one per profile (with `keys`).
    pub ukis: Vec<secure::Uki>,
}

pub fn run(req: &Request) -> anyhow::Result<Published> {
    let base = check_url(&req.public_url)?;
    if req.out.starts_with(&req.dir) || req.dir.starts_with(&req.out) {
        bail!("publish: {} and the build dir {} must not contain each other; pick an output dir outside it", req.out.display(), req.dir.display());
    }
    let keys = secure::preflight(req.secure_boot, req.keys.as_deref())?;
    let manifest = Manifest::load(&req.dir)?;
    let config = req
        .boot_config
        .as_deref()
        .map(BootConfig::load)
        .transpose()?;
    // A static tree has no node registry to report to.
    let scripts = Scripts::new(req.ipxe_template.as_deref())?.without_reports();
    let console = config
        .as_ref()
        .and_then(|c| c.console.clone())
        .unwrap_or_else(|| DEFAULT_CONSOLE.to_string());
    let default =
        for_machine(config.as_ref(), None, &manifest).context("publish: the default profile")?;
    let machines = machines(req, config.as_ref(), &manifest, &base)?;
    // Artifacts first, so no script names an object not yet in place.
    let resolved = std::iter::once(&default).chain(machines.iter().map(|(_, r)| r));
    let mut done = place_artifacts(req, resolved)?;
    let servers = config
        .as_ref()
        .map(|c| c.servers.clone())
        .unwrap_or_default();
    let tree = secure::Tree {
        dir: &req.dir,
        out: &req.out,
        base: &base,
        servers: &servers,
        console: &console,
    };
    let ukis = match &keys {
        Some(keys) => {
            let profiles = secure::every_profile(config.as_ref(), &default, &manifest)
                .context("publish --keys")?;
            place_ukis(&tree, keys, &profiles, &mut done)?
        }
        None => Vec::new(),
    };
    let render =
        |r: &Resolved, mac: Option<&str>| scripts.render(r, &base, &servers, mac, &console, None);
    for (mac, resolved) in &machines {
        let script = render(resolved, Some(mac))?;
        write_atomic(&req.out.join("boot"), &script_name(mac), |f| {
            f.write_all(script.as_bytes())
        })?;
    }
    let script = render(&default, None)?;
    write_atomic(&req.out, "default.ipxe", |f| f.write_all(script.as_bytes()))?;
    let dispatcher = render_builtin(DISPATCHER, minijinja::context! {})?;
    write_atomic(&req.out, "boot.ipxe", |f| {
        f.write_all(dispatcher.as_bytes())
    })?;
    if req.secure_boot {
        secure::write_grub(&tree, &default, &machines)?;
    }
    if keys.is_some() {
        secure::link_ukis(&req.out, &ukis)?;
    }
    let conf = nginx_conf(&req.out, &base)?;
    write_atomic(&req.out, "nginx.conf", |f| f.write_all(conf.as_bytes()))?;

    let named: BTreeSet<String> = machines.iter().map(|(mac, _)| script_name(mac)).collect();
    let scripts_removed = remove_scripts_except(&req.out.join("boot"), &named)?;
    let live: BTreeSet<&str> = done.iter().map(|(sha, _)| sha.as_str()).collect();
    let (superseded, dropped) = prune_objects(&req.out.join("sha256"), &live, req.grace)?;
    Ok(Published {
        artifacts: done.len(),
        machines: machines.len(),
        scripts_removed,
        superseded,
        dropped,
        ukis,
    })
}

/// Each machine the boot config names, resolved, and its node overlay
/// written into the tree (at the path its script names).
fn machines(
    req: &Request,
    config: Option<&BootConfig>,
    manifest: &Manifest,
    base: &str,
) -> anyhow::Result<Vec<(String, Resolved)>> {
    let macs = named_macs(config);
    let mut machines = Vec::new();
    let node_overlays = identity::Cache::default();
    let mut personal = Vec::new();
    for mac in &macs {
        let mut resolved = for_machine(config, Some(mac), manifest)
            .with_context(|| format!("publish: machine {mac}"))?;
        if let (Some(c), Some(path)) = (config, &req.boot_config) {
            let made = identity::personalize(&mut resolved, &node_overlays, c, path, mac, base)
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
            personal.extend(made.map(|art| (mac.clone(), art.sha256)));
        }
        machines.push((mac.clone(), resolved));
    }
    fs::create_dir_all(&req.out).with_context(|| format!("cannot create {}", req.out.display()))?;
    // Node overlays, each at the path its machine's script names.
    for (mac, sha) in &personal {
        if let Some(bytes) = node_overlays.get(mac, sha) {
            let dir = req.out.join(format!("node/{mac}/{sha}"));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            write_atomic(&dir, identity::FILE, |f| f.write_all(&bytes))?;
        }
    }
    Ok(machines)
}

/// Every MAC the boot config names: `macs:`, `hosts:` and the inventory's
/// `nodes:`.
fn named_macs(config: Option<&BootConfig>) -> BTreeSet<String> {
    config
        .iter()
        .flat_map(|c| {
            c.profiles
                .iter()
                .flat_map(|p| p.macs.iter())
                .chain(c.hosts.keys())
                .cloned()
                .chain(c.nodes.values().filter_map(|n| normalize_mac(&n.mac)))
        })
        .collect()
}

/// Place every local artifact the profiles name in the tree, once each;
/// returns them as (sha256, file).
fn place_artifacts<'a>(
    req: &Request,
    profiles: impl Iterator<Item = &'a Resolved>,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut done = BTreeSet::new();
    for resolved in profiles {
        for art in [&resolved.kernel, &resolved.initrd, &resolved.basefs]
            .into_iter()
            .chain(&resolved.overlays)
        {
            if art.remote.is_none() && done.insert((art.sha256.clone(), art.file.clone())) {
                place(&req.dir, &req.out, &art.file, &art.sha256)?;
            }
        }
    }
    Ok(done)
}

/// Build and sign each profile's UKI and place it in the tree by content
/// (recorded in `done`, so the tidying keeps it).
fn place_ukis(
    tree: &secure::Tree,
    keys: &crate::secureboot::keys::Keys,
    profiles: &[Resolved],
    done: &mut BTreeSet<(String, String)>,
) -> anyhow::Result<Vec<secure::Uki>> {
    let ukis = secure::build_ukis(&tree.signing(), keys, &profiles.iter().collect::<Vec<_>>())
        .context("publish --keys")?;
    for u in &ukis {
        place(tree.dir, tree.out, &u.name, &u.sha256)?;
        done.insert((u.sha256.clone(), u.name.clone()));
    }
    Ok(ukis)
}

/// `boot/aa-bb-cc-dd-ee-ff.ipxe`'s file name.
fn script_name(mac: &str) -> String {
    format!("{}.ipxe", mac.replace(':', "-"))
}

/// Remove the machine scripts in `boot` other than `keep`.
fn remove_scripts_except(boot: &Path, keep: &BTreeSet<String>) -> anyhow::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(boot)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ipxe") && !name.starts_with('.') && !keep.contains(&name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Mark the object dirs under `objects` that `live` does not name, unmark
/// the ones it names again, and remove those marked longer than `grace`
/// (`artifact::grace`). Returns (still kept as superseded, removed).
fn prune_objects(
    objects: &Path,
    live: &BTreeSet<&str>,
    grace: Duration,
) -> anyhow::Result<(usize, usize)> {
    let swept = crate::artifact::grace::sweep(objects, &|n| live.contains(n), grace, &mut Marked)?;
    Ok((swept.kept.len(), swept.dropped.len()))
}

/// A published tree's superseded object dirs: marked by a file whose mtime
/// says since when.
struct Marked;

impl crate::artifact::grace::Superseded for Marked {
    fn holds(&self, entry: &Path) -> bool {
        entry.is_dir()
    }

    fn live(&mut self, entry: &Path) {
        let _ = fs::remove_file(entry.join(SUPERSEDED));
    }

    /// Since the marker's mtime; a dir found superseded for the first time
    /// gets its marker and stays until the next publish.
    fn since(&mut self, _: &str, entry: &Path, _: SystemTime) -> io::Result<Option<SystemTime>> {
        let marker = entry.join(SUPERSEDED);
        match fs::metadata(&marker).and_then(|m| m.modified()) {
            Ok(t) => Ok(Some(t)),
            Err(_) => fs::File::create(&marker).map(|_| None),
        }
    }

    fn remove(&mut self, entry: &Path) -> io::Result<bool> {
        fs::remove_dir_all(entry).map(|()| true)
    }
}

/// Put the artifact `file` (sha256 `sha`) at `out/sha256/HEX/NAME`: from the
/// content store, else the file itself once its bytes hash to `sha`.
fn place(dir: &Path, out: &Path, file: &str, sha: &str) -> anyhow::Result<()> {
    let dest_dir = out.join("sha256").join(sha);
    let name = encode_path(file);
    let dest = dest_dir.join(&name);
    if dest.is_file() {
        return Ok(()); // written by an earlier publish: objects never change
    }
    let stored = objects::path(dir, sha)?;
    let source = if stored.is_file() {
        stored
    } else {
        dir.join(file)
    };
    let (_, got) = sha256_file(&source)
        .with_context(|| format!("publish: cannot read {}", source.display()))?;
    if got != sha {
        bail!("publish: {} has sha256 {got}, manifest.json says {sha} (a build in progress? publish again when it is done)", source.display());
    }
    fs::create_dir_all(&dest_dir)
        .with_context(|| format!("cannot create {}", dest_dir.display()))?;
    objects::link_atomic(&source, &dest, true).with_context(|| {
        format!(
            "publish: cannot link or copy {} to {}",
            source.display(),
            dest.display()
        )
    })
}

/// A server block for nginx's `http { }` serving the tree at `base`'s port.
fn nginx_conf(out: &Path, base: &str) -> anyhow::Result<String> {
    let authority = base
        .split_once("://")
        .map_or("", |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let port = match authority.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p,
        _ if base.starts_with("https") => "443",
        _ => "80",
    };
    // Inside nginx's double quotes only `\` and `"` need escaping.
    let root = out
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    render_builtin(NGINX_CONF, minijinja::context! { port, root })
}

/// One of publish's built-in templates, rendered.
fn render_builtin(source: &str, ctx: minijinja::Value) -> anyhow::Result<String> {
    crate::template::environment()
        .render_str(source, ctx)
        .context("publish: a built-in template (ipxe/, nginx/) does not render")
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_url_is_checked() {
        assert_eq!(
            super::check_url("http://10.0.0.5:8081/").unwrap(),
            "http://10.0.0.5:8081"
        );
        assert!(super::check_url("http://a b").is_err());
        assert!(super::check_url("ftp://x").is_err());
        assert!(super::check_url("http://x/$y").is_err());
        let conf =
            |out: &str, base: &str| super::nginx_conf(std::path::Path::new(out), base).unwrap();
        assert!(conf("/t", "http://h:81/x").contains("listen 81;"));
        assert!(conf("/t", "http://h").contains("listen 80;"));
        assert!(conf("/t a/\"b", "http://h").contains("    root \"/t a/\\\"b\";\n"));
        let d = super::render_builtin(super::DISPATCHER, minijinja::context! {}).unwrap();
        assert!(
            d.starts_with("#!ipxe\n# Written by `mkimage publish`"),
            "{d}"
        );
        assert!(d.ends_with("|| shell\n"), "{d}");
    }
}
