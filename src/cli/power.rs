//! `mkimage power`, `mkimage reprovision` and `mkimage nodes NODE`: their
//! flags, resolved into the `power` module's requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use mkimage::inventory::Lab;
use mkimage::power::registry::Registry;
use mkimage::power::{self, reprovision, targets, Action, Credentials};
use mkimage::serve::nodes::Stage;
use mkimage::UsageError;

use mkimage::config::absolute;

/// Where the lab is described and where the server keeps its state.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// The boot config with the `nodes:` inventory and `credentials_file:`.
    #[arg(long, default_value = mkimage::serve::DEFAULT_BOOT_CONFIG)]
    pub boot_config: PathBuf,
    /// The served dir (its state: next-boot profiles, node records), on the server's host.
    #[arg(long, default_value = "builds")]
    pub dir: PathBuf,
    /// Use this `mkimage serve`'s node API (http://HOST:PORT) instead of --dir.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: the server's admin token file (default:
    /// DIR/.state/admin.token, if this host has it).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub admin_token_file: Option<PathBuf>,
    /// Seconds one BMC request may take.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub bmc_timeout: u64,
    /// At most this many nodes at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
}

/// `mkimage power NODE… on|off|cycle|status`.
#[derive(Debug, Clone, clap::Args)]
pub struct PowerArgs {
    /// Nodes (name, MAC, tag:TAG or a glob over names), then on, off, cycle or status.
    #[arg(required = true, num_args = 2.., value_name = "NODE… ACTION")]
    pub words: Vec<String>,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// `mkimage reprovision NODE…`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReprovisionArgs {
    /// Nodes: a name, a MAC, tag:TAG or a glob over names.
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
    /// The profile to boot next (default: what the boot config selects).
    #[arg(long)]
    pub profile: Option<String>,
    /// Keep --profile for every boot until changed (default: the next boot only).
    #[arg(long, requires = "profile")]
    pub persist: bool,
    /// Follow each node until this stage (script, kernel, initrd, network,
    /// download, verified, mounted, switch-root, booted, inventory).
    #[arg(long, default_value = "booted")]
    pub wait: String,
    /// How long each node may take to get there: 90s, 10m, 1h.
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    pub timeout: String,
    #[command(flatten)]
    pub lab: LabArgs,
}

struct Loaded {
    lab: Lab,
    credentials: Option<Credentials>,
    registry: Option<Registry>,
}

/// The admin token for `--server`: `--admin-token-file`, else the served
/// dir's own when this is the server's host, else none (the server says 401).
fn admin_token(a: &LabArgs) -> anyhow::Result<Option<String>> {
    let default = absolute(&a.dir)?.join(mkimage::serve::admin::ADMIN_TOKEN);
    let path = match &a.admin_token_file {
        Some(f) => absolute(f)?,
        None if default.is_file() => default,
        None => return Ok(None),
    };
    mkimage::serve::admin::read_token(&path)
        .map(Some)
        .map_err(|e| UsageError(e).into())
}

fn load(a: &LabArgs, need_registry: bool) -> anyhow::Result<Loaded> {
    let boot_config = absolute(&a.boot_config)?;
    if !boot_config.is_file() {
        return Err(UsageError(format!(
            "--boot-config {}: no such file (the boot config with the `nodes:` inventory)",
            boot_config.display()
        ))
        .into());
    }
    // The whole file as the server reads it (unknown keys are errors), then its inventory.
    mkimage::serve::profiles::BootConfig::load(&boot_config)
        .map_err(|e| UsageError(e.to_string()))?;
    let lab = Lab::load(&boot_config)?;
    let credentials = lab
        .credentials_file
        .as_deref()
        .map(Credentials::load)
        .transpose()?;
    let registry = match &a.server {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(Registry::server(url, admin_token(a)?))
        }
        Some(url) => {
            return Err(UsageError(format!("--server {url}: give http://HOST:PORT")).into())
        }
        None => {
            let dir = absolute(&a.dir)?;
            match (dir.is_dir(), need_registry) {
                (true, _) => Some(Registry::dir(dir)),
                (false, false) => None,
                (false, true) => {
                    return Err(UsageError(format!(
                        "--dir {}: not a directory (the dir `mkimage serve --dir` serves), or give --server URL",
                        dir.display()
                    ))
                    .into())
                }
            }
        }
    };
    Ok(Loaded {
        lab,
        credentials,
        registry,
    })
}

pub fn power(a: &PowerArgs) -> anyhow::Result<()> {
    let (words, last) = a.words.split_at(a.words.len() - 1);
    let action = Action::parse(&last[0]).ok_or_else(|| {
        UsageError(format!(
            "`{}`: the last word is the action: on, off, cycle or status",
            last[0]
        ))
    })?;
    let l = load(&a.lab, false)?;
    let targets = targets::select(&l.lab, words)?;
    let results = reprovision::power(
        &targets,
        action,
        l.credentials.as_ref(),
        l.registry.as_ref(),
        a.lab.parallel,
        Duration::from_secs(a.lab.bmc_timeout.max(1)),
    );
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(state) => println!("{name}: {state}"),
            Err(e) => {
                println!("{name}: error: {e}");
                failed.push(name.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "power {}: {} of {} nodes failed ({})",
            action.name(),
            failed.len(),
            results.len(),
            failed.join(", ")
        ))
    }
}

pub fn reprovision(a: &ReprovisionArgs) -> anyhow::Result<()> {
    let wait = Stage::ALL
        .into_iter()
        .find(|s| s.name() == a.wait && *s != Stage::Failed)
        .ok_or_else(|| UsageError(format!("--wait {}: one of script, kernel, initrd, network, download, verified, mounted, switch-root, booted, inventory", a.wait)))?;
    let timeout = mkimage::cache_cmd::parse_age(&a.timeout)
        .map_err(|e| UsageError(format!("--timeout {e}")))?;
    let l = load(&a.lab, true)?;
    if let Some(profile) = &a.profile {
        check_profile(&absolute(&a.lab.boot_config)?, profile)?;
    }
    let targets = targets::select(&l.lab, &a.nodes)?;
    let registry = l.registry.ok_or_else(|| anyhow!("no registry"))?;
    let req = reprovision::Request {
        targets,
        profile: a.profile.clone(),
        once: !a.persist,
        wait,
        timeout,
        parallel: a.lab.parallel.max(1),
        bmc_timeout: Duration::from_secs(a.lab.bmc_timeout.max(1)),
    };
    let names: Vec<String> = req.targets.iter().map(|t| t.name.clone()).collect();
    let view = power::view::for_nodes(&names);
    let outcomes = reprovision::run(&req, l.credentials.as_ref(), &registry, view.as_ref());
    drop(view);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| format!("  {}", o.line()))
        .collect();
    if failed.is_empty() {
        println!(
            "reprovision: {} node(s) reached {}",
            outcomes.len(),
            wait.name()
        );
        Ok(())
    } else {
        Err(anyhow!(
            "reprovision: {} of {} node(s) did not reach {}:\n{}",
            failed.len(),
            outcomes.len(),
            wait.name(),
            failed.join("\n")
        ))
    }
}

/// The profile must be one the boot config has.
fn check_profile(boot_config: &Path, profile: &str) -> anyhow::Result<()> {
    let config = mkimage::serve::profiles::BootConfig::load(boot_config)
        .map_err(|e| UsageError(e.to_string()))?;
    if config.profiles.iter().any(|p| p.name == profile) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--profile {profile}: {} has no such profile (it has: {})",
        boot_config.display(),
        config
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .into())
}

/// `mkimage nodes NODE`: one machine's record as text, its last boot as a timeline.
pub fn node(dir: &Path, word: &str, boot_config: Option<&Path>) -> anyhow::Result<()> {
    let lab = boot_config
        .filter(|p| p.is_file())
        .map(Lab::load)
        .transpose()?
        .unwrap_or_default();
    let (mac, name) = match mkimage::inventory::normalize_mac(word) {
        Some(mac) => {
            let name = lab.by_mac(&mac).map(|(n, _)| n.to_string());
            (mac, name)
        }
        None => match lab.nodes.get(word) {
            Some(n) => (n.mac.clone(), Some(word.to_string())),
            None => {
                return Err(UsageError(format!(
                    "`{word}` is neither a MAC nor a node of the boot config's inventory"
                ))
                .into())
            }
        },
    };
    let store = mkimage::serve::nodes::Store::new(dir);
    match store.get(&mac)? {
        Some(r) => {
            print!(
                "{}",
                mkimage::serve::nodes::timeline::text(&r, name.as_deref())
            );
            Ok(())
        }
        None => Err(UsageError(format!(
            "no record of {mac} in {}",
            dir.join(mkimage::serve::nodes::NODES).display()
        ))
        .into()),
    }
}
