//! The inputs of each kind of build, recorded in its manifest entry (see
//! `artifact::inputs`): every build has the tool version, the plan's keys
//! that apply to its kind, the files of its roles and the package index (or
//! lock file) it installs from; an overlay adds the sha256 of its basefs and
//! parents; an initrd the basefs's kernel hash and the init's files; a
//! basefs built `--from` an archive that archive's sha256. Tables built
//! into mkimage that shape what a build makes (the default module
//! selection, what never ships, the initrd's default drivers and helper
//! packages) are inputs too (`defaults:NAME`), so changing one in the code
//! rebuilds what it shapes.

use std::path::Path;

use crate::apt::AptSource;
use crate::artifact::inputs::Inputs;
use crate::artifact::lookup::Input;
use crate::config::{keys, Plan};

/// Plan keys that change how a build runs, never what it makes (the lock
/// file counts by its content, as the `lock:` part).
const NOT_INPUTS: &[&str] = &[
    "apt_proxy",
    "cache_dir",
    "bootstrap_cache",
    "build_dir",
    "include",
    "lock",
];

/// The private apt of a plan: its mirror, suite, components, proxy, cache.
pub fn apt_source(plan: &Plan) -> AptSource {
    let mut apt = AptSource::new(&plan.suite, &plan.cache_dir);
    apt.mirror = Some(plan.mirror.clone());
    apt.components = plan.components.clone();
    apt.apt_proxy = plan.apt_proxy.clone();
    apt
}

/// Where the build's packages come from, as one input part: the mirror's
/// index (`index:SUITE/COMPONENTS`), or the lock file that pins them.
pub fn packages(plan: &Plan) -> anyhow::Result<(String, String)> {
    if let Some(lock) = &plan.lock {
        let name = lock.file_name().unwrap_or_default().to_string_lossy();
        return Ok((
            format!("lock:{name}"),
            crate::artifact::sha256_file(lock)?.1,
        ));
    }
    let src = apt_source(plan);
    Ok((
        crate::apt::index::part_name(&src),
        crate::apt::index::digest(&src)?,
    ))
}

/// What every build has: tool, plan, roles, packages.
pub fn common(plan: &Plan) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::new();
    let applies = |k: &str| {
        keys::get(k).is_none_or(|key| key.kinds.contains(&plan.kind)) && !NOT_INPUTS.contains(&k)
    };
    if let Ok(names) = plan.context.try_iter() {
        for name in names {
            let key = name.to_string();
            if applies(&key) {
                let value = plan.context.get_attr(&key).unwrap_or_default();
                inputs.add_bytes(format!("plan:{key}"), &serde_json::to_vec(&value)?);
            }
        }
    }
    inputs.add_bytes(
        "plan:source_date_epoch",
        plan.source_date_epoch.to_string().as_bytes(),
    );
    let label = dir_label(&plan.provisioners_dir, "provisioners");
    for role in &plan.provisioners {
        inputs.add_tree(
            &format!("{label}/{role}"),
            &plan.provisioners_dir.join(role),
        )?;
    }
    let (name, hash) = packages(plan)?;
    inputs.add(name, hash);
    Ok(inputs)
}

/// One `defaults:NAME` part per built-in table.
fn add_defaults(inputs: &mut Inputs, tables: &[(&str, &[&str])]) {
    for (name, table) in tables {
        inputs.add_bytes(format!("defaults:{name}"), table.join("\n").as_bytes());
    }
}

/// What never ships in a basefs or an overlay.
const NEVER_SHIP: [(&str, &[&str]); 3] = [
    ("never_ship", crate::image::never_ship::NEVER_SHIP),
    (
        "empty_files_under",
        crate::image::never_ship::EMPTY_FILES_UNDER,
    ),
    ("emptied", crate::image::never_ship::EMPTIED),
];

/// A basefs: `from` is the stage archive it starts from, if any.
pub fn basefs(plan: &Plan, from: Option<&Path>) -> anyhow::Result<Inputs> {
    let mut inputs = common(plan)?;
    add_defaults(&mut inputs, &NEVER_SHIP);
    add_defaults(
        &mut inputs,
        &[
            ("kernel_modules.drop", crate::config::modules::DEFAULT_DROP),
            ("kernel_modules.keep", crate::config::modules::DEFAULT_KEEP),
        ],
    );
    if let Some(archive) = from {
        let name = archive.file_name().unwrap_or_default().to_string_lossy();
        inputs.add(
            format!("from:{name}"),
            crate::artifact::sha256_file(archive)?.1,
        );
    }
    Ok(inputs)
}

/// An overlay: the basefs and parent overlays it is built on.
pub fn overlay(plan: &Plan, base: &Input, parents: &[Input]) -> anyhow::Result<Inputs> {
    let mut inputs = common(plan)?;
    add_defaults(&mut inputs, &NEVER_SHIP);
    for input in std::iter::once(base).chain(parents) {
        let r = input.reference()?;
        inputs.add(format!("parent:{}", r.file), r.sha256);
    }
    Ok(inputs)
}

/// An initrd: the kernel, modules and firmware of its basefs (the whole
/// basefs when it was built without a kernel hash), and the init's files.
pub fn initrd(plan: &Plan, base: &Input) -> anyhow::Result<Inputs> {
    let mut inputs = common(plan)?;
    add_defaults(
        &mut inputs,
        &[
            ("initrd.modules", crate::initramfs::DEFAULT_MODULES),
            ("initrd.dmsetup", crate::initramfs::dmsetup::PACKAGES),
            ("initrd.inflate", crate::initramfs::inflate::PACKAGES),
            ("initrd.keyutils", crate::initramfs::keyutils::PACKAGES),
        ],
    );
    let r = base.reference()?;
    match base.entry.as_ref().and_then(|e| e.kernel_hash.clone()) {
        Some(kernel) => inputs.add(format!("kernel:{}", r.file), kernel),
        None => inputs.add(format!("parent:{}", r.file), r.sha256),
    }
    if let Some(dir) = plan.initrd.init_template.parent() {
        inputs.add_tree(&dir_label(dir, "initrd"), dir)?;
    }
    Ok(inputs)
}

/// How a project dir is named in input names: its own name.
fn dir_label(dir: &Path, fallback: &str) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.to_string())
}
