//! The command line: clap's argument types live here and nowhere else. Each
//! command is parsed raw, resolved into the library's request (every path
//! made absolute once, against the directory mkimage was started in), and
//! run; the error is printed once as `mkimage: …` with exit code 2 for a
//! usage or config mistake and 1 for a failed build.

mod args;
mod docs;
mod power;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::{CheckCmd, Cli, Command};
use mkimage::image::check::Target;
use mkimage::image::{BuildOptions, BuildRequest, Kind, PlayRequest};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    mkimage::progress::init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mkimage: {}", mkimage::progress::format_error(&err));
            ExitCode::from(mkimage::exit_code(&err) as u8)
        }
    }
}

/// A path from the command line, made absolute against the current directory.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(mkimage::config::absolute(path)?)
}

fn build(
    kind: Kind,
    a: args::BuildArgs,
    stages: (Option<PathBuf>, Option<PathBuf>),
) -> anyhow::Result<()> {
    let mut options = build_options(&a.cache);
    options.save = stages.0.as_deref().map(absolute).transpose()?;
    options.from = stages.1.as_deref().map(absolute).transpose()?;
    let req = BuildRequest {
        kind,
        vars: absolute(&a.vars)?,
        overrides: a.vars_override,
        out: absolute(&a.out)?,
        keep_build_dir: a.keep_build_dir,
        options,
    };
    mkimage::image::run(&req)
}

fn build_options(f: &args::CacheFlags) -> BuildOptions {
    BuildOptions {
        force: f.force || f.no_cache,
        no_cache: f.no_cache,
        ..Default::default()
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Basefs(a) => build(Kind::Basefs, a.build, (a.save, a.from)),
        Command::Overlay(a) => build(Kind::Overlay, a, (None, None)),
        Command::Initrd(a) => build(Kind::Initrd, a, (None, None)),
        Command::Play(a) => {
            let options = build_options(&a.cache);
            let req = PlayRequest {
                playbook: absolute(&a.playbook)?,
                overrides: a.vars_override,
                out: absolute(&a.out)?,
                keep_build_dir: a.keep_build_dir,
                options,
            };
            mkimage::image::play(&req)
        }
        Command::Check(CheckCmd {
            boot_config: Some(file),
            ..
        }) => {
            let s = mkimage::serve::identity::check::boot_config(&file)?;
            println!(
                "{}: ok ({} profiles, {} nodes, {} node files rendered)",
                file.display(),
                s.profiles,
                s.nodes,
                s.files
            );
            Ok(())
        }
        Command::Check(CheckCmd { builds: a, .. }) => {
            let target = target(a.vars, a.playbook)?;
            mkimage::image::check(&target, &a.vars_override, &absolute(&a.out)?)
        }
        Command::Lock(a) => {
            let b = a.builds;
            let req = mkimage::image::lock::LockRequest {
                target: target(b.vars, b.playbook)?,
                overrides: b.vars_override,
                out: absolute(&b.out)?,
                output: a.output.as_deref().map(absolute).transpose()?,
                keep_build_dir: a.keep_build_dir,
            };
            mkimage::image::lock::run(&req)
        }
        Command::Serve(a) => serve(&a),
        Command::Nodes(a) => nodes(&a),
        Command::Publish(a) => publish(&a),
        Command::Inspect { file, summary } => mkimage::inspect::run(&absolute(&file)?, summary),
        Command::BootTest(a) => boot_test(a),
        Command::Iso(a) => iso(a),
        Command::Keys {
            command: args::KeysCommand::Init { dir },
        } => keys_init(&absolute(&dir)?),
        Command::Keys {
            command:
                args::KeysCommand::SignUkis {
                    keys,
                    dir,
                    boot_config,
                    public_url,
                },
        } => sign_ukis(&mkimage::serve::ukis::SignRequest {
            dir: absolute(&dir)?,
            boot_config: boot_config_or_default(boot_config.as_deref())?,
            keys: absolute(&keys)?,
            public_url,
        }),
        Command::Power(a) => power::power(&a),
        Command::Reprovision(a) => power::reprovision(&a),
        Command::Man(a) => docs::man(&a),
        Command::Docs(a) => docs::docs(&a),
        Command::Cache(a) => {
            let usage = |e: String| mkimage::UsageError(e);
            let req = mkimage::cache::Request {
                cache_dir: match &a.cache_dir {
                    Some(d) => absolute(d)?,
                    None => absolute(&a.dir)?.join(".cache"),
                },
                older_than: a
                    .older_than
                    .as_deref()
                    .map(mkimage::cache::parse_age)
                    .transpose()
                    .map_err(|e| usage(format!("--older-than {e}")))?,
                max_size: a
                    .max_size
                    .as_deref()
                    .map(mkimage::cache::parse_size)
                    .transpose()
                    .map_err(|e| usage(format!("--max-size {e}")))?,
                dry_run: a.dry_run,
            };
            mkimage::cache::run(&req)
        }
    }
}

/// `--vars FILE` or `PLAYBOOK`, exactly one.
fn target(vars: Option<PathBuf>, playbook: Option<PathBuf>) -> anyhow::Result<Target> {
    match (vars, playbook) {
        (Some(v), None) => Ok(Target::Vars(absolute(&v)?)),
        (None, Some(p)) => Ok(Target::Playbook(absolute(&p)?)),
        _ => Err(mkimage::UsageError("give either --vars FILE or a PLAYBOOK".into()).into()),
    }
}

fn boot_test(a: args::BootTestArgs) -> anyhow::Result<()> {
    let nic = mkimage::boottest::Nic::parse(&a.nic)
        .ok_or_else(|| mkimage::UsageError(format!("--nic {}: use virtio or e1000", a.nic)))?;
    let req = mkimage::boottest::Request {
        playbook: a.playbook.as_deref().map(absolute).transpose()?,
        overrides: a.vars_override,
        dir: absolute(&a.dir)?,
        boot_config_is_default: a.boot_config == Path::new(mkimage::serve::DEFAULT_BOOT_CONFIG),
        boot_config: absolute(&a.boot_config)?,
        profile: a.profile,
        mac: a.mac,
        nic,
        memory: a.memory,
        timeout: a.timeout,
        uefi: a.uefi,
        proxy_dhcp: a.proxy_dhcp,
        append: a.append,
        serial_log: a.serial_log.as_deref().map(absolute).transpose()?,
        via_nginx: a.via_nginx.as_deref().map(absolute).transpose()?,
        published: a.published,
        iso: a.iso.as_deref().map(absolute).transpose()?,
        secure_boot: a.secure_boot,
        keys: a.keys.as_deref().map(absolute).transpose()?,
        mok: a.mok,
        http_boot: a.http_boot,
    };
    mkimage::boottest::run(&req)
}

/// `mkimage keys init`: the key, and how a site makes machines trust it.
fn keys_init(dir: &Path) -> anyhow::Result<()> {
    let keys = mkimage::secureboot::keys::init(dir)?;
    println!(
        "site key:    {} (mode 0600; keep it off the boot server's served dir)",
        keys.key.display()
    );
    println!(
        "certificate: {} (PEM), {} (DER)",
        keys.cert.display(),
        keys.der.display()
    );
    println!(
        "enroll it in each machine's db (firmware setup or BMC), or in MOK: mokutil --import {}",
        keys.der.display()
    );
    Ok(())
}

/// `mkimage keys sign-ukis`: each profile's UKI, and where the index is.
fn sign_ukis(req: &mkimage::serve::ukis::SignRequest) -> anyhow::Result<()> {
    for u in mkimage::serve::ukis::sign(req)? {
        println!(
            "UKI of profile {}: /sha256/{}/{}",
            u.profile, u.sha256, u.name
        );
    }
    println!(
        "index: {} (mkimage serve --uefi-boot shim offers these to UEFI HTTP boot clients)",
        req.dir.join(mkimage::serve::ukis::INDEX).display()
    );
    Ok(())
}

/// `mkimage nodes`: the registry's summaries, as a table or JSON.
fn nodes(a: &args::NodesArgs) -> anyhow::Result<()> {
    let dir = absolute(&a.dir)?;
    if !dir.is_dir() {
        return Err(mkimage::UsageError(format!(
            "--dir {}: not a directory (the dir `mkimage serve --dir` serves)",
            dir.display()
        ))
        .into());
    }
    if let Some(node) = &a.node {
        return power::node(
            &dir,
            node,
            boot_config_or_default(a.boot_config.as_deref())?.as_deref(),
        );
    }
    let nodes = mkimage::serve::nodes::list(&dir)?;
    match a.json {
        true => println!("{}", mkimage::serve::nodes::show::json(&nodes)),
        false if nodes.is_empty() => eprintln!(
            "no machine recorded in {} yet",
            dir.join(mkimage::serve::nodes::NODES).display()
        ),
        false => print!("{}", mkimage::serve::nodes::show::table(&nodes)),
    }
    Ok(())
}

/// `mkimage publish`: the flags as a publish request, paths absolute.
fn publish(a: &args::PublishArgs) -> anyhow::Result<()> {
    let req = mkimage::serve::publish::Request {
        dir: absolute(&a.dir)?,
        out: absolute(&a.out)?,
        boot_config: boot_config_or_default(a.boot_config.as_deref())?,
        public_url: a.public_url.clone(),
        ipxe_template: a.ipxe_template.as_deref().map(absolute).transpose()?,
        grace: Duration::from_secs(a.grace),
        secure_boot: a.secure_boot,
        keys: a.keys.as_deref().map(absolute).transpose()?,
    };
    let done = mkimage::serve::publish::run(&req)?;
    println!(
        "published {} artifacts, {} machine scripts and the default to {}",
        done.artifacts,
        done.machines,
        req.out.display()
    );
    if req.secure_boot {
        println!("Secure Boot (factory keys): shimx64.efi, grubx64.efi and {} GRUB configs plus the default under grub/ (serve them over TFTP from the tree)", done.machines);
    }
    for u in &done.ukis {
        println!(
            "UKI of profile {}: sha256/{}/{} (uki/{}, uki/{}/shimx64.efi)",
            u.profile, u.sha256, u.name, u.name, u.profile
        );
    }
    if done.scripts_removed + done.superseded + done.dropped > 0 {
        println!(
            "removed {} scripts of machines the boot config no longer names; {} artifacts no script names kept for --grace {}s, {} older ones removed",
            done.scripts_removed, done.superseded, a.grace, done.dropped
        );
    }
    Ok(())
}

/// The boot config given, else vars/boot.yml when it exists (as `serve` does).
fn boot_config_or_default(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    mkimage::serve::boot_config_or_default(given)
        .map(|p| absolute(&p))
        .transpose()
}

/// `mkimage iso`: the boot config defaults to vars/boot.yml when it exists, as for `serve`.
fn iso(a: args::IsoArgs) -> anyhow::Result<()> {
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

/// `mkimage serve`: the flags as the server's options, paths absolute.
fn serve(a: &args::ServeArgs) -> anyhow::Result<()> {
    let mut o = mkimage::serve::ServeOptions::new(&absolute(&a.dir)?);
    o.http = a.http.clone();
    o.tftp = (a.tftp != "off").then(|| a.tftp.clone());
    o.boot_config = a.boot_config.as_deref().map(absolute).transpose()?;
    o.public_url = a.public_url.clone();
    o.ipxe_dir = absolute(&a.ipxe_dir)?;
    o.proxy_dhcp = a.proxy_dhcp.clone();
    o.ipxe_template = a.ipxe_template.as_deref().map(absolute).transpose()?;
    o.uefi_boot = match a.uefi_boot.as_str() {
        "shim" => mkimage::serve::UefiBoot::Shim,
        _ => mkimage::serve::UefiBoot::Ipxe,
    };
    o.workers = a.workers.unwrap_or(o.workers);
    o.timeout = Duration::from_secs(a.timeout.max(1));
    o.grace = Duration::from_secs(a.grace);
    o.retry_delay = Duration::from_secs(a.retry_delay.max(1));
    o.admin_token_file = a.admin_token_file.as_deref().map(absolute).transpose()?;
    o.public_status = a.public_status;
    o.trusted_proxies = a.trusted_proxy.clone();
    mkimage::serve::run(&o)
}
