//! iPXE boot scripts: a resolved profile rendered through the script
//! template (`ipxe/boot.ipxe.j2`, built in; `--ipxe-template` overrides) with
//! content-addressed URLs (`/sha256/HEX/NAME`) on the address the client
//! used to reach the server; and the retry script (`ipxe/retry.ipxe.j2`)
//! for a machine that asks before a boot script can be made.

use std::path::Path;

use minijinja::{context, Environment, UndefinedBehavior};
use serde::Serialize;

use super::cmdline::{bootif, location, Cmdline, Source};
use super::profiles::{Art, Resolved};

/// The built-in script template (the file in the repository).
pub const DEFAULT_TEMPLATE: &str = include_str!("../../ipxe/boot.ipxe.j2");

/// The retry script template.
pub const RETRY_TEMPLATE: &str = include_str!("../../ipxe/retry.ipxe.j2");

/// Console arguments when the boot config names none.
pub const DEFAULT_CONSOLE: &str = "console=tty0 console=ttyS0,115200";

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read iPXE template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("iPXE template: {0:#}")]
    Template(#[from] minijinja::Error),
}

/// A compiled script template.
pub struct Scripts {
    env: Environment<'static>,
    /// Scripts send the init's stage reports to their server (`mkimage.api=`).
    reports: bool,
}

/// One artifact as a template sees it (for templates of an older shape;
/// the built-in one uses each server's `cmdline`).
#[derive(Serialize)]
struct Link {
    file: String,
    sha256: String,
    verity: Option<String>,
    url: String,
}

impl Scripts {
    /// Compile the template (the built-in one when `path` is None).
    pub fn new(path: Option<&Path>) -> Result<Scripts, ScriptError> {
        let source = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ScriptError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => DEFAULT_TEMPLATE.to_string(),
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_template_owned("boot.ipxe", source)?;
        env.add_template("retry.ipxe", RETRY_TEMPLATE)?;
        Ok(Scripts { env, reports: true })
    }

    /// Scripts for servers without the node registry's API (a static tree):
    /// no `mkimage.api=`, so the init sends no reports there.
    pub fn without_reports(self) -> Scripts {
        Scripts {
            reports: false,
            ..self
        }
    }

    /// The script for a machine no boot script can be made for yet: prints
    /// `reason` on its console and fetches its script again after `delay_secs`.
    pub fn retry(
        &self,
        reason: &str,
        base_url: &str,
        mac: Option<&str>,
        delay_secs: u64,
    ) -> Result<String, ScriptError> {
        let template = self.env.get_template("retry.ipxe")?;
        Ok(template.render(context! {
            reason => console_text(reason),
            mac => mac,
            self_url => self_url(base_url, mac),
            delay => delay_secs.max(1),
        })?)
    }

    /// Render the script for `resolved`; `base_url` has no trailing slash.
    /// `servers` (base URLs, tried in order; empty: `base_url` alone) each
    /// get a try at the kernel and initrd, with a command line
    /// (`serve::cmdline`) naming that server's URLs; the init gets them all
    /// as `mkimage.servers=` when there is more than one. `token` is the
    /// machine's boot token (`serve::tokens`; published trees have none).
    pub fn render(
        &self,
        resolved: &Resolved,
        base_url: &str,
        servers: &[String],
        mac: Option<&str>,
        console: &str,
        token: Option<&str>,
    ) -> Result<String, ScriptError> {
        let own = [base_url.to_string()];
        let servers = if servers.is_empty() {
            &own[..]
        } else {
            servers
        };
        let bootif = match mac {
            Some(m) => bootif(m),
            None => "BOOTIF=01-${netX/mac:hexhyp}".to_string(),
        };
        let on: Vec<Server> = servers
            .iter()
            .map(|s| {
                let source = Source::Server(s.clone());
                let cmdline = Cmdline {
                    resolved,
                    source: source.clone(),
                    servers,
                    bootif: Some(bootif.clone()),
                    reports: self.reports,
                    token,
                    node_overlay: super::cmdline::NodeOverlay::Absent,
                    console,
                };
                Server {
                    url: s.clone(),
                    kernel: location(&resolved.kernel, &source),
                    initrd: location(&resolved.initrd, &source),
                    basefs: location(&resolved.basefs, &source),
                    overlays: resolved
                        .overlays
                        .iter()
                        .map(|o| location(o, &source))
                        .collect(),
                    cmdline: cmdline.render(),
                }
            })
            .collect();
        let first = Source::Server(servers[0].clone());
        let link = |a: &'_ Art| Link {
            file: a.file.clone(),
            sha256: a.sha256.clone(),
            verity: a.verity.clone(),
            url: location(a, &first),
        };
        let overlays: Vec<Link> = resolved.overlays.iter().map(link).collect();
        let template = self.env.get_template("boot.ipxe")?;
        Ok(template.render(context! {
            profile => resolved.profile,
            mac => mac,
            base_url => base_url,
            self_url => self_url(base_url, mac),
            bootif => bootif,
            console => console,
            args => resolved.args,
            kernel => link(&resolved.kernel),
            initrd => link(&resolved.initrd),
            basefs => link(&resolved.basefs),
            overlays => overlays,
            servers => on,
            reports => self.reports,
            token => token,
        })?)
    }
}

/// The artifact URLs on one server.
#[derive(Serialize)]
struct Server {
    url: String,
    kernel: String,
    initrd: String,
    basefs: String,
    overlays: Vec<String>,
    /// The whole kernel command line for a boot from this server.
    cmdline: String,
}

/// Where the machine fetches its script again.
fn self_url(base_url: &str, mac: Option<&str>) -> String {
    match mac {
        Some(m) => format!("{base_url}/boot.ipxe?mac={m}"),
        None => format!("{base_url}/boot.ipxe"),
    }
}

/// Text that an iPXE `echo` prints as it is: one line, no setting
/// expansion (`${…}`), no `||`/`&&` operators; at most 400 characters.
fn console_text(s: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || " .,:;/_-+=@()[]<>`'*#%!?".contains(c);
    s.chars()
        .map(|c| if keep(c) { c } else { '_' })
        .take(400)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(f: &str) -> Art {
        Art {
            file: f.into(),
            sha256: format!("{f}sha"),
            verity: None,
            remote: None,
            size: None,
        }
    }

    #[test]
    fn renders_the_boot_contract() {
        let r = Resolved {
            profile: "raid".into(),
            kernel: art("vmlinuz"),
            initrd: art("initrd.img"),
            basefs: art("base.squashfs"),
            overlays: vec![
                art("a.cpio.gz"),
                art("b c.cpio.gz"),
                Art {
                    remote: Some("http://10.0.2.2:9/c.cpio.gz".into()),
                    ..art("c.cpio.gz")
                },
            ],
            args: "rootsize=2G".into(),
        };
        let s = Scripts::new(None)
            .unwrap()
            .render(
                &r,
                "http://10.0.2.2:8080",
                &[],
                Some("52:54:00:12:34:56"),
                DEFAULT_CONSOLE,
                Some("t0k"),
            )
            .unwrap();
        assert!(s.starts_with("#!ipxe\n"), "{s}");
        let kernel = s.lines().find(|l| l.starts_with("kernel ")).unwrap();
        for want in [
            "kernel http://10.0.2.2:8080/sha256/vmlinuzsha/vmlinuz ",
            " BOOTIF=01-52-54-00-12-34-56 ",
            " mkimage.api=http://10.0.2.2:8080 mkimage.token=t0k ",
            " basefs=http://10.0.2.2:8080/sha256/base.squashfssha/base.squashfs basefs.sha256=base.squashfssha ",
            " overlayfs=http://10.0.2.2:8080/sha256/a.cpio.gzsha/a.cpio.gz,http://10.0.2.2:8080/sha256/b c.cpio.gzsha/b%20c.cpio.gz,http://10.0.2.2:9/c.cpio.gz overlayfs.sha256=a.cpio.gzsha,b c.cpio.gzsha,c.cpio.gzsha ",
            " console=tty0 console=ttyS0,115200 rootsize=2G || goto failed",
        ] {
            assert!(kernel.contains(want), "{want} not in {kernel}");
        }
        assert!(s.contains("\ninitrd --name initrd http://10.0.2.2:8080/sha256/initrd.imgsha/initrd.img || goto failed\n"), "{s}");
        assert!(!kernel.contains("basefs.verity="), "{kernel}");
        let verity = Art {
            verity: Some("abc:4096".into()),
            ..art("base.squashfs")
        };
        let none = Scripts::new(None)
            .unwrap()
            .render(
                &Resolved {
                    overlays: vec![],
                    basefs: verity,
                    ..r.clone()
                },
                "http://h",
                &[],
                None,
                "",
                None,
            )
            .unwrap();
        assert!(
            none.contains(" basefs.sha256=base.squashfssha basefs.verity=abc:4096"),
            "{none}"
        );
        assert!(
            !none.contains("overlayfs=") && !none.contains("token"),
            "{none}"
        );
        assert!(none.contains("BOOTIF=01-${netX/mac:hexhyp}"), "{none}");
    }

    #[test]
    fn every_server_gets_a_try_and_the_init_gets_the_list() {
        let r = Resolved {
            profile: "p".into(),
            kernel: art("vmlinuz"),
            initrd: art("initrd.img"),
            basefs: art("base.squashfs"),
            overlays: vec![art("a.cpio.gz")],
            args: String::new(),
        };
        let servers = ["http://a:1".to_string(), "http://b:2".to_string()];
        let s = Scripts::new(None)
            .unwrap()
            .render(&r, "http://a:1", &servers, None, "", None)
            .unwrap();
        let kernels: Vec<&str> = s.lines().filter(|l| l.starts_with("kernel ")).collect();
        assert_eq!(kernels.len(), 2, "{s}");
        assert!(
            kernels[0].starts_with("kernel http://a:1/sha256/vmlinuzsha/vmlinuz ")
                && kernels[0].ends_with(" || goto server1"),
            "{s}"
        );
        assert!(
            kernels[1].contains(" mkimage.api=http://b:2 "),
            "the init reports to the server it boots from: {s}"
        );
        assert!(
            kernels[1].contains(" basefs=http://b:2/sha256/")
                && kernels[1].contains(" overlayfs=http://b:2/sha256/")
                && kernels[1].ends_with(" || goto failed"),
            "{s}"
        );
        assert!(
            kernels
                .iter()
                .all(|k| k.contains(" mkimage.servers=http://a:1,http://b:2")),
            "{s}"
        );
        assert!(s.contains("\ninitrd --name initrd http://a:1/sha256/initrd.imgsha/initrd.img || goto server1\n"), "{s}");
        assert!(
            s.contains(
                "\n:server1\necho mkimage: server http://a:1 failed, falling back to http://b:2\n"
            ),
            "{s}"
        );
        let one = Scripts::new(None)
            .unwrap()
            .render(&r, "http://a:1", &[], None, "", None)
            .unwrap();
        assert!(
            !one.contains("mkimage.servers=") && !one.contains(":server1"),
            "{one}"
        );
        let quiet = Scripts::new(None)
            .unwrap()
            .without_reports()
            .render(&r, "http://a:1", &[], None, "", None)
            .unwrap();
        assert!(
            !quiet.contains("mkimage.api=")
                && quiet.contains(" BOOTIF=01-${netX/mac:hexhyp} basefs="),
            "{quiet}"
        );
    }

    #[test]
    fn retry_script_prints_the_reason_safely_and_asks_again() {
        let scripts = Scripts::new(None).unwrap();
        let s = scripts
            .retry(
                "manifest.json has no basefs; build one first\n${evil} || shell",
                "http://h:1",
                Some("52:54:00:12:34:56"),
                7,
            )
            .unwrap();
        assert!(s.starts_with("#!ipxe\n"), "{s}");
        assert!(s.contains("echo mkimage: cannot boot 52:54:00:12:34:56 yet: manifest.json has no basefs; build one first___evil_ __ shell\n"), "{s}");
        assert!(
            s.contains("\nsleep 7\n")
                && s.contains(
                    "\nchain --replace http://h:1/boot.ipxe?mac=52:54:00:12:34:56 || goto retry\n"
                ),
            "{s}"
        );
    }
}
