//! The docs against the code (no root): the generated references are what
//! the code generates, every `mkimage …` command line in README.md and
//! docs/ parses (run with `--help` appended), and every config example
//! marked as one (```` ```yaml vars ````, `boot-config`, `role`) passes
//! `mkimage check` or the boot config loader. docs/README.md describes the
//! conventions.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};

/// README.md and every page under docs/, as (path relative to the repo, text).
fn pages() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(repo()).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// A fenced code block: its info string, its first line's number, its text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(page: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in page.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(info), None) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: i + 2,
                    text: String::new(),
                })
            }
            (Some(_), Some(b)) => out.push(b),
            (None, Some(mut b)) => {
                b.text.push_str(line);
                b.text.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    out
}

/// Every command line in a page: (line number, the words after `mkimage`).
fn command_lines(page: &str) -> Vec<(usize, Vec<String>)> {
    let mut candidates: Vec<(usize, String)> = Vec::new();
    for b in blocks(page).iter().filter(|b| !b.info.starts_with("yaml")) {
        for (i, l) in b.text.lines().enumerate() {
            candidates.push((b.line + i, l.to_string()));
        }
    }
    let span = regex::Regex::new(r"`((?:target/release/)?mkimage [^`]+)`").unwrap();
    let mut in_block = false;
    for (i, l) in page.lines().enumerate() {
        if l.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            for c in span.captures_iter(l) {
                candidates.push((i + 1, c[1].to_string()));
            }
        }
    }
    let mut out = Vec::new();
    for (line, text) in candidates {
        for piece in text.split("&&").flat_map(|p| p.split(';')) {
            let piece = piece.split(" | ").next().unwrap_or("");
            let piece = piece.split(['#', '>']).next().unwrap_or("");
            let words = words(piece);
            let is_mkimage = |w: &String| w == "mkimage" || w.ends_with("/mkimage");
            if words.first().is_some_and(is_mkimage) && words.len() > 1 {
                out.push((line, words[1..].to_vec()));
            }
        }
    }
    out
}

/// Shell-like words; a synopsis's `[…]` brackets are dropped, `a|b` is `a`,
/// `…`/`...` are dropped.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quote, mut any) = (String::new(), None, false);
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, '[' | ']') => {}
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|w| w.trim_end_matches("...").trim_end_matches('…').to_string())
        .map(|w| match w.starts_with('-') || w.contains('/') {
            true => w,
            false => w.split('|').next().unwrap_or("").to_string(),
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A placeholder a doc writes for a value (`N`, `SECS`, `NODE`).
fn placeholder(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn generated_references_match_the_code() {
    let o = mkimage()
        .args(["docs", "--check", "--dir"])
        .arg(repo().join("docs"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\nregenerate with `cargo run --release -- docs` (from the repository root) and commit the result",
        stderr(&o)
    );
}

#[test]
fn every_command_line_in_the_docs_parses() {
    let mut failures = Vec::new();
    let mut count = 0;
    let named_value = regex::Regex::new(r"invalid value '([^']*)'").unwrap();
    for (path, text) in pages() {
        if path == "docs/reference/cli.md" {
            continue; // generated from the definitions themselves
        }
        for (line, args) in command_lines(&text) {
            count += 1;
            let o = mkimage()
                .current_dir(repo())
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            let err = stderr(&o);
            // A flag mentioned without its value, or with a placeholder: the
            // flag exists (clap says "unexpected argument" for one that does not).
            let placeholder_value = named_value
                .captures(&err)
                .is_some_and(|c| placeholder(&c[1]));
            if !o.status.success() && !err.contains("a value is required") && !placeholder_value {
                let first = err.lines().next().unwrap_or("").to_string();
                failures.push(format!(
                    "{path}:{line}: mkimage {}: {first}",
                    args.join(" ")
                ));
            }
        }
    }
    assert!(
        count > 50,
        "only {count} command lines found: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} command lines in the docs do not parse (fix the doc, or the CLI):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The file a block names in its first line (`# vars/raid.yml: …`), if any.
fn named_file(b: &Block) -> Option<String> {
    let first = b.text.lines().next()?.trim().strip_prefix('#')?.trim();
    let name = first.split_whitespace().next()?.trim_end_matches(':');
    name.ends_with(".yml").then(|| name.to_string())
}

/// A project with the repository's vars/common.yml, initrd/ and roles, and
/// the roles a page defines (```` ```yaml role ```` blocks).
fn project_for(page: &[Block]) -> Project {
    let p = Project::new();
    std::fs::copy(
        repo().join("vars/common.yml"),
        p.path().join("vars/common.yml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(repo().join("initrd"), p.path().join("initrd")).unwrap();
    for role in ["base", "discovery"] {
        std::os::unix::fs::symlink(
            repo().join("provisioners").join(role),
            p.path().join("provisioners").join(role),
        )
        .unwrap();
    }
    let src = regex::Regex::new(r"src:\s*([^,}\s]+)").unwrap();
    for b in page.iter().filter(|b| b.info == "yaml role") {
        let file = named_file(b).unwrap_or("provisioners/example/tasks.yml".into());
        let role = p.write(&file, &b.text);
        let dir = role.parent().unwrap();
        for c in src.captures_iter(&b.text) {
            for sub in ["files", "templates"] {
                let f = dir.join(sub).join(&c[1]);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(f, "").unwrap();
            }
        }
    }
    p
}

fn check_vars(p: &Project, file: &str) -> Option<String> {
    let o = p.run(&["check", "--vars", file]);
    (!o.status.success()).then(|| stderr(&o))
}

#[test]
fn every_marked_config_example_checks() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (path, text) in pages() {
        let page = blocks(&text);
        let p = project_for(&page);
        for b in &page {
            count += 1;
            let failure = match b.info.as_str() {
                "yaml vars" => {
                    let file = named_file(b).unwrap_or("vars/example.yml".into());
                    p.write(&file, &b.text);
                    check_vars(&p, &file)
                }
                "yaml role" => {
                    let file = named_file(b).unwrap_or("provisioners/example/tasks.yml".into());
                    let role = file.split('/').nth(1).unwrap_or("example").to_string();
                    let used = regex::Regex::new(&format!(r"provisioners:.*\b{role}\b")).unwrap();
                    if page
                        .iter()
                        .any(|v| v.info == "yaml vars" && used.is_match(&v.text))
                    {
                        continue; // checked with the variables the page's vars file gives it
                    }
                    let vars =
                        format!("name: rolecheck\ninclude: common.yml\nprovisioners: [{role}]\n");
                    p.write("vars/rolecheck.yml", &vars);
                    check_vars(&p, "vars/rolecheck.yml")
                }
                "yaml boot-config" => {
                    let file = p.write("boot-example.yml", &b.text);
                    mkimage::serve::profiles::BootConfig::load(&file)
                        .err()
                        .map(|e| e.to_string())
                }
                _ => {
                    count -= 1;
                    None
                }
            };
            if let Some(why) = failure {
                failures.push(format!("{path}:{}: ```{} example: {why}", b.line, b.info));
            }
        }
    }
    assert!(
        count >= 8,
        "only {count} marked examples found: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} config examples in the docs fail their check:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_extraction_reads_synopses_and_spans() {
    let page = "Run `mkimage serve --dir builds` now.\n\n```sh\nscripts/x && target/release/mkimage play a.yml # go\nmkimage power NODE… on|off\n```\n";
    let got = command_lines(page);
    let want: Vec<(usize, Vec<String>)> = vec![
        (4, vec!["play".into(), "a.yml".into()]),
        (5, vec!["power".into(), "NODE".into(), "on".into()]),
        (1, vec!["serve".into(), "--dir".into(), "builds".into()]),
    ];
    assert_eq!(got, want);
    assert_eq!(
        words("reprovision NODE [--wait STAGE] --var 'a=b c'"),
        ["reprovision", "NODE", "--wait", "STAGE", "--var", "a=b c"]
    );
}

#[test]
fn man_pages_are_written_for_every_command() {
    let p = Project::new();
    let dir = p.path().join("man1");
    let o = mkimage()
        .arg("man")
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "mkimage man: {}", stderr(&o));
    for cmd in [
        "mkimage",
        "mkimage-serve",
        "mkimage-play",
        "mkimage-boot-test",
        "mkimage-man",
    ] {
        let page = std::fs::read_to_string(dir.join(format!("{cmd}.1")))
            .unwrap_or_else(|e| panic!("{cmd}.1: {e}"));
        assert!(
            page.contains("\n.TH "),
            "{cmd}.1 is not a man page:\n{page}"
        );
    }
    assert!(
        !dir.join("mkimage-docs.1").exists(),
        "the hidden `docs` command has no man page"
    );
}
