//! Build an initrd straight from the library, before `mkimage initrd
//! --vars` is wired to the config loader (used by bench/initrd.sh).
//!
//! usage: initrd-build KERNEL OUT_DIR [NAME]
//!   KERNEL: a basefs tree or squashfs, or `pkg:linux-image-amd64`
//! The `.deb` cache is $MKIMAGE_APT_CACHE (default /var/tmp/mkimage-apt-cache).

use std::path::PathBuf;

use mkimage::apt::AptSource;
use mkimage::initramfs::{self as initrd, InitrdOptions, KernelSource};

fn main() -> anyhow::Result<()> {
    mkimage::progress::init_logging(0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kernel), Some(out)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: initrd-build KERNEL OUT_DIR [NAME]");
    };
    let name = args.get(2).map(String::as_str).unwrap_or("initrd");
    let source = match kernel.strip_prefix("pkg:") {
        Some(pkg) => KernelSource::Package {
            name: pkg.to_string(),
        },
        None => KernelSource::Basefs(PathBuf::from(kernel)),
    };
    let cache = std::env::var_os("MKIMAGE_APT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/mkimage-apt-cache".into());
    let mut apt = AptSource::new("bookworm", &cache);
    apt.apt_proxy = std::env::var("MKIMAGE_APT_PROXY").ok();
    let mut opts = InitrdOptions::new(name, source, apt, &PathBuf::from(out));
    opts.init_template = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("initrd/init.j2");
    let entries = initrd::build(&opts)?;
    mkimage::artifact::record(&opts.out_dir, &entries)?;
    for e in &entries {
        println!(
            "{} {} {} bytes, {} modules",
            e.kind,
            e.file,
            e.size,
            e.modules.len()
        );
    }
    Ok(())
}
