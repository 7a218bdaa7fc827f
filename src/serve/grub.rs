//! GRUB configs for the Secure Boot path with factory keys: shim →
//! Debian's signed GRUB network image → Debian's signed kernel → the
//! initrd. The profile is picked and resolved exactly as for an iPXE
//! script (`script::render`); only the rendering differs: that GRUB has no
//! HTTP, so the kernel and initrd are named by TFTP path (the same
//! content-addressed `/sha256/HEX/NAME` the HTTP server answers), while the
//! basefs and overlays keep their HTTP URLs, which the init fetches and
//! verifies. The command line is `serve::cmdline`'s, as for every boot.

use minijinja::{context, Environment, UndefinedBehavior};

use super::cmdline::encode_path;
use super::cmdline::{bootif, Cmdline, Source};
use super::profiles::{Art, Resolved};

/// The per-machine config template (the file in the repository).
pub const TEMPLATE: &str = include_str!("../../grub/netboot.cfg.j2");
/// The config for a machine no boot can be made for yet.
pub const RETRY_TEMPLATE: &str = include_str!("../../grub/retry.cfg.j2");

/// Quote one command-line word for GRUB's script parser when it needs it
/// (GRUB expands `$` and splits on its operators, as a shell does).
fn grub_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,:/=+@%".contains(c);
    if word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Text for a GRUB `echo '…'`: one line, no quotes.
fn echo_text(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\'' || c.is_control() { '_' } else { c })
        .take(400)
        .collect()
}

/// The GRUB config that boots `resolved` on `mac` (or any machine).
pub fn render(
    resolved: &Resolved,
    base_url: &str,
    servers: &[String],
    mac: Option<&str>,
    console: &str,
    token: Option<&str>,
) -> Result<String, minijinja::Error> {
    render_with(resolved, base_url, servers, mac, console, (true, token))
}

/// The config for a static tree (`mkimage publish`): no node registry to
/// report to, so no `mkimage.api=` and no token; otherwise `render`'s.
pub fn render_static(
    resolved: &Resolved,
    base_url: &str,
    servers: &[String],
    mac: Option<&str>,
    console: &str,
) -> Result<String, minijinja::Error> {
    render_with(resolved, base_url, servers, mac, console, (false, None))
}

fn render_with(
    resolved: &Resolved,
    base_url: &str,
    servers: &[String],
    mac: Option<&str>,
    console: &str,
    (reports, token): (bool, Option<&str>),
) -> Result<String, minijinja::Error> {
    let first = servers.first().map_or(base_url, String::as_str);
    let args = Cmdline {
        resolved,
        source: Source::Server(first.to_string()),
        servers,
        bootif: mac.map(bootif),
        reports,
        token,
        node_overlay: super::cmdline::NodeOverlay::Absent,
        console,
    }
    .render();
    let args: Vec<String> = args.split_whitespace().map(grub_word).collect();
    let tftp = |a: &Art| format!("/sha256/{}/{}", a.sha256, encode_path(&a.file));
    env()?.get_template("grub.cfg")?.render(context! {
        profile => echo_text(&resolved.profile),
        mac => mac,
        server => echo_text(first),
        kernel => tftp(&resolved.kernel),
        initrd => tftp(&resolved.initrd),
        args => args.join(" "),
    })
}

/// The GRUB config for a machine no boot can be made for yet: says why,
/// waits, reads its config again.
pub fn retry(reason: &str, mac: Option<&str>, delay_secs: u64) -> Result<String, minijinja::Error> {
    env()?.get_template("retry.cfg")?.render(context! {
        reason => echo_text(reason),
        mac => mac,
        delay => delay_secs.max(1),
    })
}

fn env() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template("grub.cfg", TEMPLATE)?;
    env.add_template("retry.cfg", RETRY_TEMPLATE)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::cmdline::fixtures::{self, art};

    fn resolved() -> Resolved {
        fixtures::resolved(vec![art("discovery.cpio.gz", 'e')])
    }

    #[test]
    fn config_names_kernel_by_tftp_path_and_the_rest_by_url() {
        let r = resolved();
        let cfg = render(
            &r,
            "http://10.0.2.2:8080",
            &[],
            Some("52:54:00:12:34:56"),
            "console=ttyS0,115200",
            Some("0a1b"),
        )
        .unwrap();
        let linux = cfg.lines().find(|l| l.starts_with("linux ")).unwrap();
        assert!(linux.starts_with(&format!("linux /sha256/{}/vmlinuz BOOTIF=01-52-54-00-12-34-56 mkimage.api=http://10.0.2.2:8080 mkimage.token=0a1b basefs=http://10.0.2.2:8080/sha256/{}/basefs.squashfs", "a".repeat(64), "b".repeat(64))), "{linux}");
        assert!(linux.contains(&format!("basefs.verity={}:4096", "d".repeat(64))));
        assert!(linux.contains(&format!("overlayfs.sha256={}", "e".repeat(64))));
        assert!(
            linux.ends_with("console=ttyS0,115200 rootsize=2G quiet"),
            "{linux}"
        );
        assert!(cfg.contains(&format!(
            "\ninitrd /sha256/{}/initrd.initrd\nboot\n",
            "c".repeat(64)
        )));
    }

    #[test]
    fn odd_words_are_quoted() {
        assert_eq!(grub_word("a=$(x)"), "'a=$(x)'");
        assert_eq!(grub_word("console=ttyS0,115200"), "console=ttyS0,115200");
        let retry = retry("no 'basefs'", None, 0).unwrap();
        assert!(
            retry.contains("echo 'mkimage: cannot boot this machine yet: no _basefs_'"),
            "{retry}"
        );
        assert!(retry.contains("sleep 1\n"));
    }
}
