//! `boot-test --secure-boot [--keys DIR]`: the VM is OVMF's Secure Boot
//! build on q35 with SMM, its variable store a copy of Debian's with
//! Microsoft's keys (and, with `--keys`, the site's certificate added to
//! `db`), booting from the firmware's own PXE client (no iPXE ROM, which
//! Secure Boot would refuse). QEMU's user networking hands it the NBP from
//! QEMU's TFTP server, which boot-test fills from `mkimage serve` over HTTP:
//!
//! - factory keys: shim, Debian's signed network GRUB beside it as
//!   `grubx64.efi`, the GRUB config the server renders for this MAC
//!   (`/grub.cfg?mac=`, as `grub/grub.cfg` where that GRUB looks) and the
//!   kernel and initrd it names by content (`/sha256/HEX/NAME`);
//! - site key: the profile's UKI, built and signed with the site key into
//!   the content store, fetched back by its content URL; the firmware
//!   verifies it against the site certificate in its `db`;
//! - site key in MOK (`--mok`): the same UKI served as `grubx64.efi` beside
//!   shim, the site certificate in shim's `MokList` and not in `db`: the
//!   firmware verifies shim (Microsoft), shim verifies the UKI (MOK);
//! - on the lab's network with `--keys --http-boot`: every profile's UKI
//!   signed and indexed as `mkimage keys sign-ukis` does, the site
//!   certificate in `db`, the firmware's PXE off: its HTTP boot client asks
//!   the proxyDHCP, which offers the UKI of the VM's profile by content URL.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use super::vm::{Boot, Net, VmSpec};
use crate::artifact::Manifest;
use crate::secureboot::firmware::{self, Trust};
use crate::secureboot::{self, keys::Keys, uki};
use crate::serve::cmdline::{Cmdline, NodeOverlay, Source};
use crate::serve::ipxe::DEFAULT_CONSOLE;
use crate::serve::profiles::{self, BootConfig};
use crate::serve::ukis;

/// Where the server runs and what the VM boots.
pub struct Setup<'a> {
    pub work: &'a Path,
    pub dir: &'a Path,
    pub boot_config: &'a Path,
    pub listen: Ipv4Addr,
    pub port: u16,
    pub seen_as: Ipv4Addr,
    pub mac: &'a str,
}

/// How the site key is trusted: `Trust::Mok` boots the UKI through shim.
pub type SiteKey<'a> = Option<(&'a Path, Trust)>;

/// Check what the boot needs before anything starts.
pub fn preflight(keys: SiteKey) -> anyhow::Result<()> {
    secureboot::need(&[
        (super::vm::OVMF_SECBOOT_CODE, "ovmf"),
        (firmware::OVMF_VARS_MS, "ovmf"),
    ])?;
    match keys {
        None => secureboot::factory_chain()?,
        Some((dir, trust)) => {
            Keys::load(dir)?;
            secureboot::need(&[
                (uki::STUB, "systemd-boot-efi"),
                ("/usr/bin/sbsign", "sbsigntool"),
            ])?;
            if trust == Trust::Mok {
                secureboot::need(&[(secureboot::SHIM, "shim-signed")])?;
            }
        }
    }
    Ok(())
}

/// Set the VM up for the Secure Boot path. On the lab's layer-2 network
/// (`lab`) the firmware finds shim through the proxyDHCP (`serve
/// --uefi-boot shim`) and everything else on the server's TFTP, or with a
/// site key it boots by HTTP and the proxyDHCP offers it its UKI; with
/// user networking, fill QEMU's TFTP dir from the server.
pub fn prepare(s: &Setup, keys: SiteKey, lab: bool, spec: &mut VmSpec) -> anyhow::Result<()> {
    if lab {
        spec.uefi = true;
        spec.boot = Boot::Network { rom: false };
        let enroll = match keys {
            Some((dir, _)) => Some(http_boot(s, dir, spec)?),
            None => None,
        };
        spec.secure_boot = Some(firmware::vars(s.work, enroll.as_deref())?);
        return Ok(());
    }
    let tftp = s.work.join("tftp");
    fs::create_dir_all(tftp.join("grub"))?;
    let base = format!("http://{}:{}", s.listen, s.port);
    let (bootfile, enroll) = match keys {
        None => {
            fs::copy(secureboot::SHIM, tftp.join(secureboot::SHIM_NAME))?;
            fs::copy(secureboot::GRUB_NET, tftp.join(secureboot::GRUB_NAME))?;
            // Asked as the guest would ask (its Host), so the URLs are the guest's.
            let cfg = get_as_guest(s, &format!("/grub.cfg?mac={}", s.mac))?;
            for path in tftp_paths(&cfg) {
                download(
                    &format!("{base}{path}"),
                    &tftp.join(path.trim_start_matches('/')),
                )?;
            }
            fs::write(tftp.join("grub/grub.cfg"), &cfg)?;
            tracing::info!("Secure Boot with Microsoft's keys: shim → signed GRUB (config from {base}/grub.cfg?mac={}) → signed kernel", s.mac);
            (secureboot::SHIM_NAME.to_string(), None)
        }
        Some((dir, trust)) => {
            let keys = Keys::load(dir)?;
            let (sha, name) = site_uki(s, &keys)?;
            let url = format!("{base}/sha256/{sha}/{name}");
            let bootfile = match trust {
                Trust::Db => {
                    download(&url, &tftp.join(&name))?;
                    tracing::info!(
                        "Secure Boot with the site key {} in db: UKI /sha256/{sha}/{name}",
                        keys.cert.display()
                    );
                    name
                }
                Trust::Mok => {
                    // The layout `publish --keys` writes: shim loads its
                    // second stage by this name from beside itself (the
                    // directory of the boot file DHCP named), and verifies
                    // it against db and MokList.
                    let own = format!("uki/{}", name.trim_end_matches(".efi"));
                    fs::create_dir_all(tftp.join(&own))?;
                    fs::copy(
                        secureboot::SHIM,
                        tftp.join(&own).join(secureboot::SHIM_NAME),
                    )?;
                    download(&url, &tftp.join(&own).join(secureboot::GRUB_NAME))?;
                    tracing::info!(
                        "Secure Boot with the site key {} in MOK: shim → UKI /sha256/{sha}/{name} (as {own}/{})",
                        keys.cert.display(),
                        secureboot::GRUB_NAME
                    );
                    format!("{own}/{}", secureboot::SHIM_NAME)
                }
            };
            (bootfile, Some((keys.cert, trust)))
        }
    };
    spec.uefi = true;
    let enroll = enroll
        .as_ref()
        .map(|(cert, trust)| (cert.as_path(), *trust));
    spec.secure_boot = Some(firmware::vars_trusting(s.work, enroll)?);
    spec.tftp = Some(tftp);
    spec.net = Net::User {
        bootfile: Some(bootfile),
    };
    spec.boot = Boot::Network { rom: false };
    Ok(())
}

/// Sign and index every profile's UKI as `mkimage keys sign-ukis` does, for
/// the server the VM reaches, and turn the firmware's PXE off so it boots
/// by HTTP; the certificate to enroll in `db`.
fn http_boot(s: &Setup, dir: &Path, spec: &mut VmSpec) -> anyhow::Result<PathBuf> {
    let signed = ukis::sign(&ukis::SignRequest {
        dir: s.dir.to_path_buf(),
        boot_config: Some(s.boot_config.to_path_buf()),
        keys: dir.to_path_buf(),
        public_url: format!("http://{}:{}", s.seen_as, s.port),
    })?;
    for u in &signed {
        tracing::info!(
            "UKI of profile {} signed and indexed: /sha256/{}/{}",
            u.profile,
            u.sha256,
            u.name
        );
    }
    spec.http_boot = true;
    Ok(Keys::load(dir)?.cert)
}

/// The UKI of the profile the test boots (one per profile: no machine in
/// it), signed with `keys` and added to the content store; its sha256 and name.
fn site_uki(s: &Setup, keys: &Keys) -> anyhow::Result<(String, String)> {
    let manifest = Manifest::load(s.dir)?;
    let config = BootConfig::load(s.boot_config)?;
    // The profile this machine gets (selected by its MAC, as for a script);
    // the UKI is that profile's, with nothing of the machine in it.
    let (resolved, _) = profiles::for_known_machine(Some(&config), Some(s.mac), None, &manifest)?;
    let console = config.console.as_deref().unwrap_or(DEFAULT_CONSOLE);
    let base_url = format!("http://{}:{}", s.seen_as, s.port);
    // One UKI per profile: no `BOOTIF=`, no boot token.
    let cmdline = Cmdline {
        resolved: &resolved,
        source: Source::Server(base_url),
        servers: &[],
        bootif: None,
        reports: true,
        token: None,
        // The node overlay the boot script names, if its signature by the
        // node-signing key (whose certificate the UKI carries) verifies.
        node_overlay: NodeOverlay::Signed,
        console,
    }
    .render();
    let (sha, name) = uki::for_profile(
        s.dir,
        &crate::serve::publish::uki_profile(&resolved),
        &cmdline,
        keys,
    )?;
    tracing::info!(
        "UKI for profile {}: sha256 {sha}, command line: {cmdline}",
        resolved.profile
    );
    Ok((sha, name))
}

/// The Secure Boot path on the lab's network, from `mkimage serve`'s log:
/// shim, GRUB, this machine's GRUB config and its kernel went over the
/// server's TFTP (the firmware may take shim's name from the proxyDHCP or
/// from the site's offer, which names the same file and server).
pub fn judge_lab(serve_log: &str, mac: &str) -> Vec<super::lab::Verdict> {
    let seen = |needles: &[&str]| {
        serve_log
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    };
    // GRUB asks with a leading slash, the firmware and shim without.
    let cfg = format!("grub/grub.cfg-{mac} status=ok");
    let checks = [
        (
            "the firmware loaded shim over TFTP".to_string(),
            seen(&[
                "tftp",
                &format!("path={} ", secureboot::SHIM_NAME),
                "status=ok",
            ]),
        ),
        (
            "shim loaded Debian's signed GRUB over TFTP".to_string(),
            seen(&[
                "tftp",
                &format!("path={} ", secureboot::GRUB_NAME),
                "status=ok",
            ]),
        ),
        (
            format!("GRUB read the config made for {mac} over TFTP"),
            seen(&["tftp", &cfg, "status=ok"]),
        ),
        (
            "GRUB loaded the kernel by content over TFTP".to_string(),
            seen(&["tftp", "sha256/", "vmlinuz status=ok"]),
        ),
    ];
    checks
        .into_iter()
        .map(|(what, ok)| {
            let v = if ok {
                Ok(())
            } else {
                Err(format!(
                    "not in the server's log; its last lines:\n{}",
                    super::vm::tail(serve_log, 15)
                ))
            };
            (what, v)
        })
        .collect()
}

/// The HTTP boot path on the lab's network, from `mkimage serve`'s log:
/// the proxyDHCP offered the firmware's HTTP boot client a signed UKI by
/// content URL, the firmware fetched it whole over HTTP, and nothing went
/// over TFTP (no PXE, no shim).
pub fn judge_http_boot(serve_log: &str, mac: &str) -> Vec<super::lab::Verdict> {
    let offer = serve_log.lines().find(|l| {
        l.contains("proxy-dhcp: offer")
            && l.contains(&format!("mac={mac}"))
            && l.contains("client=uefi-http")
    });
    let uki = offer
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("file=")))
        .and_then(|url| url.find("/sha256/").map(|at| url[at..].to_string()))
        .filter(|path| path.ends_with(".efi"));
    let fetched = uki.as_ref().is_some_and(|path| {
        serve_log.lines().any(|l| {
            l.contains("method=GET")
                && l.contains(&format!("path={path} "))
                && l.contains("status=200")
                && l.contains("complete=true")
        })
    });
    let no_tftp = !serve_log
        .lines()
        .any(|l| l.contains("tftp") && l.contains(" path="));
    let why = |what: &str| {
        format!(
            "{what}; the server log's last lines:\n{}",
            super::vm::tail(serve_log, 15)
        )
    };
    vec![
        (
            "proxyDHCP offered the firmware's UEFI HTTP boot client its profile's signed UKI (option 60 HTTPClient)".to_string(),
            uki.as_ref().map(drop).ok_or_else(|| why("no such offer")),
        ),
        (
            format!(
                "the firmware fetched the UKI over HTTP ({})",
                uki.as_deref().unwrap_or("-")
            ),
            fetched.then_some(()).ok_or_else(|| why("not fetched whole")),
        ),
        (
            "nothing went over TFTP (no PXE, no shim)".to_string(),
            no_tftp.then_some(()).ok_or_else(|| why("a TFTP transfer")),
        ),
    ]
}

/// The `/sha256/…` paths a GRUB config loads over TFTP (kernel, initrd).
fn tftp_paths(cfg: &str) -> Vec<String> {
    cfg.lines()
        .filter_map(|l| {
            l.strip_prefix("linux ")
                .or_else(|| l.strip_prefix("initrd "))
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|p| p.starts_with("/sha256/") && !p.contains(".."))
        .map(str::to_string)
        .collect()
}

/// GET `path` from the server with the Host header the guest would send.
fn get_as_guest(s: &Setup, path: &str) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect((s.listen, s.port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
        s.seen_as, s.port
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("GET {path}: {}", text.lines().next().unwrap_or("no reply")),
    }
}

fn download(url: &str, to: &Path) -> anyhow::Result<PathBuf> {
    let mut reply = ureq::get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = fs::File::create(to)?;
    std::io::copy(&mut reply.body_mut().as_reader(), &mut file)
        .with_context(|| format!("GET {url}"))?;
    if fs::metadata(to)?.len() == 0 {
        bail!("GET {url}: empty");
    }
    Ok(to.to_path_buf())
}

#[cfg(test)]
mod tests {
    #[test]
    fn judges_the_http_boot_path_from_the_log() {
        let mac = "52:54:00:12:34:56";
        let uki = "/sha256/96a7/discovery-debug.efi";
        let log = format!(
            " INFO proxy-dhcp: offer mac={mac} client=uefi-http port=67 file=http://10.9.0.1:1{uki} to=255.255.255.255:68\n\
             \x20INFO http client=10.9.0.158:1 mac=- method=HEAD path={uki} status=200 bytes=0 ms=1 complete=true\n\
             \x20INFO http client=10.9.0.158:2 mac=- method=GET path={uki} status=200 bytes=9 ms=5 complete=true\n"
        );
        let failed = |log: &str| -> Vec<String> {
            super::judge_http_boot(log, mac)
                .into_iter()
                .filter(|(_, r)| r.is_err())
                .map(|(w, _)| w)
                .collect()
        };
        assert!(failed(&log).is_empty(), "{:?}", failed(&log));
        let with_tftp = format!("{log} INFO tftp client=10.9.0.158:3 path=shimx64.efi status=ok\n");
        assert_eq!(failed(&with_tftp).len(), 1);
        let head_only: String = log.lines().filter(|l| !l.contains("GET")).collect();
        assert_eq!(failed(&head_only).len(), 1);
        // iPXE instead of a UKI: neither the offer nor the fetch.
        let ipxe = log.replace(uki, "/ipxe/ipxe.efi");
        assert_eq!(failed(&ipxe).len(), 2);
    }

    #[test]
    fn finds_the_files_grub_loads() {
        let cfg = "set timeout=0\nlinux /sha256/aa/vmlinuz BOOTIF=01-x\ninitrd /sha256/bb/initrd.initrd\nboot\n";
        assert_eq!(
            super::tftp_paths(cfg),
            ["/sha256/aa/vmlinuz", "/sha256/bb/initrd.initrd"]
        );
    }
}
