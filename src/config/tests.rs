use std::fs;

use super::*;

/// A basefs plan for `path` (output dir /var/tmp/out).
fn load(path: &Path, overrides: &[String]) -> Result<Plan, ConfigError> {
    super::load(path, overrides, Kind::Basefs, Path::new("/var/tmp/out"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

const MIRROR: &str = "mirror: http://mirror.invalid/debian\n";

#[test]
fn include_later_keys_win_and_overrides_win_over_all() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "vars/common.yml",
        &format!("{MIRROR}suite: bookworm\nvars:\n  a: common\n  b: common\n"),
    );
    let main = write(
        d.path(),
        "vars/x.yml",
        "name: x\ninclude: common.yml\nsuite: trixie\nvars:\n  a: main\n",
    );
    let cfg = load(&main, &["b=cli".into(), "variant=buildd".into()]).unwrap();
    assert_eq!(cfg.suite, "trixie");
    assert_eq!(cfg.variant, "buildd");
    assert_eq!(cfg.vars["a"], Yaml::String("main".into()));
    assert_eq!(cfg.vars["b"], Yaml::String("cli".into()));
    assert_eq!(cfg.mirror, "http://mirror.invalid/debian");
}

#[test]
fn templates_see_top_level_and_role_vars() {
    let d = tempfile::tempdir().unwrap();
    let main = write(d.path(), "x.yml", &format!("{MIRROR}name: \"{{{{ prefix }}}}-{{{{ suite }}}}\"\nvars:\n  prefix: lab\n  motd: \"{{{{ name }}}} on {{{{ suite }}}}\"\n"));
    let cfg = load(&main, &[]).unwrap();
    assert_eq!(cfg.name, "lab-bookworm");
    assert_eq!(
        cfg.vars["motd"],
        Yaml::String("lab-bookworm on bookworm".into())
    );
}

#[test]
fn undefined_variable_names_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let main = write(
        d.path(),
        "x.yml",
        &format!("{MIRROR}name: x\nvars:\n  motd: \"{{{{ nosuch }}}}\"\n"),
    );
    let err = load(&main, &[]).unwrap_err().0;
    assert!(err.contains("x.yml:4:3"), "{err}");
    assert!(err.contains("undefined"), "{err}");
}

#[test]
fn unknown_key_in_included_file_names_that_file() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "common.yml", "packges: [a]\n");
    let main = write(d.path(), "x.yml", "name: x\ninclude: common.yml\n");
    let err = load(&main, &[]).unwrap_err().0;
    assert!(
        err.contains("common.yml:1:1: unknown field `packges`"),
        "{err}"
    );
}

#[test]
fn include_cycle_and_missing_include() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.yml", "include: b.yml\n");
    write(d.path(), "b.yml", "include: a.yml\n");
    assert!(load(&d.path().join("a.yml"), &[])
        .unwrap_err()
        .0
        .contains("include cycle"));
    let main = write(d.path(), "c.yml", "name: c\ninclude: nope.yml\n");
    let err = load(&main, &[]).unwrap_err().0;
    assert!(
        err.contains("nope.yml") && err.contains("included from"),
        "{err}"
    );
}

#[test]
fn bad_values_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let main = write(d.path(), "x.yml", "name: x\nmirror: ftp://x\n");
    assert!(load(&main, &[]).unwrap_err().0.contains("not an http"));
    let main = write(d.path(), "y.yml", &format!("{MIRROR}name: ../evil\n"));
    assert!(load(&main, &[]).unwrap_err().0.contains("name `../evil`"));
    let main = write(d.path(), "z.yml", MIRROR);
    assert!(load(&main, &[]).unwrap_err().0.contains("no `name:`"));
    assert!(load(&main, &["oops".into()])
        .unwrap_err()
        .0
        .contains("KEY=VALUE"));
}

#[test]
fn var_override_parses_yaml_values() {
    let d = tempfile::tempdir().unwrap();
    let main = write(d.path(), "x.yml", &format!("{MIRROR}name: x\n"));
    let cfg = load(&main, &["packages=[a, b]".into(), "vars.n=3".into()]).unwrap();
    assert_eq!(cfg.packages, ["a", "b"]);
    assert_eq!(cfg.vars["n"], Yaml::Number(3.into()));
}

#[test]
fn every_option_is_checked_before_building() {
    let d = tempfile::tempdir().unwrap();
    let main = write(
        d.path(),
        "vars/x.yml",
        &format!("{MIRROR}name: x\nsquashfs: {{compressor: lzo}}\n"),
    );
    let err = load(&main, &[]).unwrap_err().0;
    assert!(
        err.contains("x.yml:3:") && err.contains("lzo") && err.contains("zstd"),
        "{err}"
    );
    let main = write(
        d.path(),
        "vars/y.yml",
        &format!("{MIRROR}name: y\nsquashfs:\n  block_size: 3000\n"),
    );
    let err = load(&main, &[]).unwrap_err().0;
    assert!(
        err.contains("y.yml:3:") && err.contains("block_size 3000"),
        "{err}"
    );
    for (bad, want) in [
        ("variant: minbsae", "not a bootstrap variant"),
        ("packages: [curl, 'Bad Name']", "packages.1"),
        ("components: [main, 'no/slash']", "components.1"),
        ("cleanup: ['../etc']", "no `..`"),
        ("source_date_epoch: soon", "source_date_epoch"),
    ] {
        let main = write(d.path(), "vars/z.yml", &format!("{MIRROR}name: z\n{bad}\n"));
        let err = load(&main, &[]).unwrap_err().0;
        assert!(
            err.contains("z.yml:3:") && err.contains(want),
            "{bad}: {err}"
        );
    }
    let main = write(
        d.path(),
        "vars/i.yml",
        &format!("{MIRROR}name: i\ncompression: {{format: lz4}}\nvars:\n  rootsize: lots\n"),
    );
    let err = super::load(&main, &[], Kind::Initrd, Path::new("/var/tmp/out"))
        .unwrap_err()
        .0;
    assert!(err.contains("i.yml:3:") && err.contains("lz4"), "{err}");
}

#[test]
fn paths_are_absolute_and_relative_to_their_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("provisioners")).unwrap();
    std::fs::create_dir_all(d.path().join("initrd")).unwrap();
    std::fs::write(d.path().join("initrd/init.j2"), "#!/bin/sh\n").unwrap();
    write(
        d.path(),
        "vars/common.yml",
        &format!("{MIRROR}cache_dir: ../cache\n"),
    );
    let main = write(d.path(), "vars/x.yml", "name: x\ninclude: common.yml\n");
    let plan = super::load(&main, &[], Kind::Initrd, Path::new("relative/out")).unwrap();
    assert!(
        plan.out.is_absolute() && plan.out.ends_with("relative/out"),
        "{}",
        plan.out.display()
    );
    assert_eq!(plan.cache_dir, d.path().join("vars/../cache"));
    assert_eq!(plan.provisioners_dir, d.path().join("provisioners"));
    assert_eq!(plan.initrd.init_template, d.path().join("initrd/init.j2"));
    assert!(plan.file.is_absolute());
    // The init template is found from the config, not from provisioners_dir.
    let plan = super::load(
        &main,
        &["provisioners_dir=/elsewhere/provisioners".into()],
        Kind::Initrd,
        Path::new("o"),
    )
    .unwrap();
    assert_eq!(plan.provisioners_dir, Path::new("/elsewhere/provisioners"));
    assert_eq!(plan.initrd.init_template, d.path().join("initrd/init.j2"));
    let err = super::load(
        &main,
        &["init_template=/nonexistent/init.j2".into()],
        Kind::Initrd,
        Path::new("o"),
    )
    .unwrap_err()
    .0;
    assert!(
        err.contains("--var init_template") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    let d = tempfile::tempdir().unwrap();
    let main = write(
        d.path(),
        "x.yml",
        &format!("{MIRROR}name: x\nprovisioner: [base]\n"),
    );
    let err = load(&main, &[]).unwrap_err().0;
    assert!(
        err.contains("x.yml:3:1: unknown field `provisioner`, did you mean `provisioners`?"),
        "{err}"
    );
}
