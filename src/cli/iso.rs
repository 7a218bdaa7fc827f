//! `mkimage iso`: the flags as an `iso::Request` (offline or a server URL).

use std::path::PathBuf;

use super::paths::{absolute, boot_config_or_default};

/// `mkimage iso`.
#[derive(Debug, Clone, clap::Args)]
pub struct IsoArgs {
    /// The directory holding the artifacts (a build output dir).
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Boot config with the profiles (default: vars/boot.yml if it exists;
    /// without one the ISO boots the basefs alone, no overlay).
    #[arg(long)]
    pub boot_config: Option<PathBuf>,
    /// Profile to put on the ISO (default: the boot config's default profile).
    #[arg(long)]
    pub profile: Option<String>,
    /// Put the basefs and overlays on the ISO; the machine needs no network.
    #[arg(long, conflicts_with = "server")]
    pub offline: bool,
    /// Without --offline: the `mkimage serve` URL the init downloads from (http://HOST:PORT).
    #[arg(long)]
    pub server: Option<String>,
    /// Bake one node of the boot config's inventory into the ISO: its
    /// profile, its static network as the init's `ip=` (no DHCP needed),
    /// and with --offline its node overlay.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The ISO file to write.
    #[arg(long)]
    pub output: PathBuf,
}

/// `mkimage iso`: the boot config defaults to vars/boot.yml when it exists, as for `serve`.
pub fn iso(a: IsoArgs) -> anyhow::Result<()> {
    let source = match (a.offline, a.server) {
        (true, _) => mkimage::iso::Source::Media,
        (false, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            mkimage::iso::Source::Server(url.trim_end_matches('/').to_string())
        }
        (false, Some(url)) => {
            return Err(mkimage::UsageError(format!(
                "--server {url}: give the URL mkimage serve answers on, http://HOST:PORT"
            ))
            .into())
        }
        (false, None) => return Err(mkimage::UsageError(
            "give --offline (the images go on the ISO) or --server URL (the init downloads them)"
                .into(),
        )
        .into()),
    };
    let boot_config = boot_config_or_default(a.boot_config.as_deref())?;
    let req = mkimage::iso::Request {
        dir: absolute(&a.dir)?,
        boot_config,
        profile: a.profile,
        node: a.node,
        source,
        output: absolute(&a.output)?,
    };
    mkimage::iso::run(&req)
}
