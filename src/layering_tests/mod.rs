//! Keeps ARCHITECTURE.md's layering true: reads every file under `src/`,
//! resolves each module path it names (`use crate::…`, `crate::x::y`,
//! `super::…`, `self::…`, a child module's name, the binary's `mkimage::…`)
//! to the file that holds the module, and fails on a cycle between files
//! or on an import of a module listed above the importer in [`LAYERS`].
//! Declaring a module (`mod x;`) is not an import; naming it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod tokens;

use tokens::{tokens, Tok};

/// The layers, lowest first: a file may import its own layer and the ones
/// before it, never one after. A file belongs to the longest module path
/// here that is a prefix of its own. The same table, in the same order, is
/// ARCHITECTURE.md's "Modules, lowest first".
pub(crate) const LAYERS: &[&[&str]] = &[
    &["error"],
    &["hex"],
    &["progress", "timings"],
    &["suite"],
    &["exec"],
    &["yaml"],
    &["template"],
    &["flock"],
    &["sys"],
    &["archive"],
    &["kmod"],
    &["artifact"],
    &["apt"],
    &["lockfile"],
    &["tree_tar"],
    &["config"],
    &["provision"],
    &["bootstrap"],
    &["initramfs"],
    &["image"],
    &["inspect", "inspect_summary", "cache_cmd"],
    &["secureboot"],
    &["inventory"],
    &["serve"],
    &["power"],
    &["iso"],
    &["boottest"],
    &["cli", "main"],
];

/// A module: which crate (the library, or the binary's `main.rs` + `cli/`)
/// and its path in it.
type Module = (Crate, Vec<String>);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Crate {
    Lib,
    Bin,
}

/// Every source file and the module it holds.
fn files(src: &Path) -> BTreeMap<PathBuf, Module> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a readable entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.starts_with(src.join("layering_tests"))
            {
                found.push(path);
            }
        }
    }
    let mut out = BTreeMap::new();
    for path in found {
        let rel = path.strip_prefix(src).expect("under src/");
        let mut parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts
            .last()
            .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
        {
            parts.pop();
        }
        let krate = if rel == Path::new("main.rs") || rel.starts_with("cli") {
            Crate::Bin
        } else {
            Crate::Lib
        };
        out.insert(path, (krate, parts));
    }
    // `#[path = "x.rs"] mod name;` puts x.rs at the declaring module's `name`.
    let declared: Vec<(PathBuf, Module)> = out
        .iter()
        .flat_map(|(path, (krate, module))| {
            let text = std::fs::read_to_string(path).expect("a readable source file");
            let mut moved = Vec::new();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                let Some(rest) = line.trim().strip_prefix("#[path = \"") else {
                    continue;
                };
                let file = rest.trim_end_matches("\"]");
                let decl = lines.next().unwrap_or_default().trim();
                let name = decl.trim_start_matches("pub ").trim_start_matches("mod ");
                let name = name.trim_end_matches(';').to_string();
                let target = path.parent().expect("a parent dir").join(file);
                let mut at = module.clone();
                at.push(name);
                moved.push((target, (*krate, at)));
            }
            moved
        })
        .collect();
    out.extend(declared);
    out
}

/// The file-level import graph: each file and the files it names.
fn graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = files(src);
    let by_module: BTreeMap<&Module, &PathBuf> = files.iter().map(|(f, m)| (m, f)).collect();
    let mut out = BTreeMap::new();
    for (file, (krate, module)) in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let toks = tokens(&text);
        let mut reader = Reader {
            toks: &toks,
            krate: *krate,
            scope: module.clone(),
            by_module: &by_module,
            aliases: BTreeMap::new(),
            targets: BTreeSet::new(),
        };
        reader.read();
        let mut targets = reader.targets;
        targets.remove(file);
        out.insert(file.clone(), targets);
    }
    out
}

struct Reader<'a> {
    toks: &'a [Tok],
    krate: Crate,
    /// The module the tokens being read are in (the file's, or an inline one).
    scope: Vec<String>,
    by_module: &'a BTreeMap<&'a Module, &'a PathBuf>,
    /// Names `use` brought in that are modules.
    aliases: BTreeMap<String, Module>,
    targets: BTreeSet<PathBuf>,
}

impl Reader<'_> {
    fn ident(&self, i: usize) -> Option<&str> {
        match self.toks.get(i) {
            Some(Tok::Ident(s)) => Some(s),
            _ => None,
        }
    }

    fn is_module(&self, m: &Module) -> bool {
        self.by_module.contains_key(m)
    }

    fn read(&mut self) {
        // Inline modules (`mod tests { … }`): the brace depth each opened at.
        let mut inline: Vec<usize> = Vec::new();
        let mut depth = 0;
        let mut i = 0;
        while i < self.toks.len() {
            match &self.toks[i] {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth -= 1;
                    if inline.last() == Some(&depth) {
                        inline.pop();
                        self.scope.pop();
                    }
                }
                Tok::Ident(k) if k == "mod" => {
                    if let (Some(name), Some(Tok::Open)) = (self.ident(i + 1), self.toks.get(i + 2))
                    {
                        self.scope.push(name.to_string());
                        inline.push(depth);
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
                Tok::Ident(k) if k == "use" => {
                    i = self.use_tree(i + 1, None);
                    continue;
                }
                Tok::Ident(_)
                    if (i == 0 || self.toks[i - 1] != Tok::Path)
                        && self.toks.get(i + 1) == Some(&Tok::Path) =>
                {
                    let mut segs = Vec::new();
                    let mut j = i;
                    while let Some(s) = self.ident(j) {
                        segs.push(s.to_string());
                        if self.toks.get(j + 1) != Some(&Tok::Path) {
                            break;
                        }
                        j += 2;
                    }
                    self.resolve(&segs);
                    i = j + 1;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Reads a use tree from `i`, under `prefix` (inside braces); returns
    /// the index after it.
    fn use_tree(&mut self, mut i: usize, prefix: Option<&[String]>) -> usize {
        let mut segs: Vec<String> = prefix.map(<[String]>::to_vec).unwrap_or_default();
        if self.toks.get(i) == Some(&Tok::Path) {
            i += 1; // `use ::x` names an external crate
            segs.push("::".into());
        }
        loop {
            match self.toks.get(i) {
                Some(Tok::Ident(s)) if s == "as" => {
                    let alias = self.ident(i + 1).map(str::to_string);
                    if let (Some(alias), Some(m)) = (alias, self.resolve(&segs)) {
                        self.aliases.insert(alias, m);
                    }
                    return self.skip_to_end(i + 2);
                }
                Some(Tok::Ident(s)) => {
                    segs.push(s.clone());
                    i += 1;
                }
                Some(Tok::Path) => i += 1,
                Some(Tok::Open) => {
                    i += 1;
                    while i < self.toks.len() && self.toks[i] != Tok::Close {
                        i = self.use_tree(i, Some(&segs));
                        if self.toks.get(i) == Some(&Tok::Comma) {
                            i += 1;
                        }
                    }
                    i += 1;
                    return if prefix.is_none() { i + 1 } else { i };
                }
                _ => {
                    if let Some(m) = self.resolve(&segs) {
                        if m.1.last() == segs.last() && segs.last().is_some_and(|s| s != "self") {
                            self.aliases
                                .insert(segs.last().cloned().unwrap_or_default(), m);
                        } else if segs.last().is_some_and(|s| s == "self") && segs.len() > 1 {
                            self.aliases.insert(segs[segs.len() - 2].clone(), m);
                        }
                    }
                    return if prefix.is_none() {
                        self.skip_to_end(i)
                    } else {
                        i
                    };
                }
            }
        }
    }

    fn skip_to_end(&self, mut i: usize) -> usize {
        while i < self.toks.len() && !matches!(self.toks[i], Tok::Comma | Tok::Close | Tok::Semi) {
            i += 1;
        }
        if self.toks.get(i) == Some(&Tok::Semi) {
            i + 1
        } else {
            i
        }
    }

    /// The module a path names (its longest module prefix), recorded as a
    /// target; `None` for a path outside this crate's modules.
    fn resolve(&mut self, segs: &[String]) -> Option<Module> {
        let first = segs.first()?;
        let (mut at, rest): (Module, &[String]) = match first.as_str() {
            "crate" => ((self.krate, vec![]), &segs[1..]),
            "mkimage" if self.krate == Crate::Bin => ((Crate::Lib, vec![]), &segs[1..]),
            "self" => ((self.krate, self.scope.clone()), &segs[1..]),
            "super" => {
                let mut scope = self.scope.clone();
                let mut n = 0;
                while segs.get(n).is_some_and(|s| s == "super") {
                    scope.pop();
                    n += 1;
                }
                ((self.krate, scope), &segs[n..])
            }
            name => {
                let mut child = self.scope.clone();
                child.push(name.to_string());
                if self.is_module(&(self.krate, child)) {
                    ((self.krate, self.scope.clone()), segs)
                } else if let Some(m) = self.aliases.get(name) {
                    (m.clone(), &segs[1..])
                } else {
                    return None;
                }
            }
        };
        for seg in rest {
            let mut next = at.1.clone();
            next.push(seg.clone());
            if !self.is_module(&(at.0, next.clone())) {
                break;
            }
            at.1 = next;
        }
        // An inline module's file is the file it is written in.
        let mut file_module = at.clone();
        while !self.is_module(&file_module) && !file_module.1.is_empty() {
            file_module.1.pop();
        }
        if let Some(file) = self.by_module.get(&file_module) {
            self.targets.insert((*file).clone());
        }
        Some(at)
    }
}

fn layer_of(src: &Path, file: &Path) -> (usize, String) {
    let rel = file
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    if rel == Path::new("lib") {
        // The crate root declares the modules and re-exports `error`'s types.
        return (0, "lib".into());
    }
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut best = (usize::MAX, String::new(), 0);
    for (n, layer) in LAYERS.iter().enumerate() {
        for name in *layer {
            let want: Vec<&str> = name.split("::").collect();
            if want.len() <= parts.len()
                && want.iter().zip(&parts).all(|(a, b)| a == b)
                && want.len() > best.2
            {
                best = (n, name.to_string(), want.len());
            }
        }
    }
    (best.0, best.1)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn show(src: &Path, f: &Path) -> String {
    f.strip_prefix(src).unwrap_or(f).display().to_string()
}

/// Tarjan's strongly connected components of the file graph.
struct Tarjan<'a> {
    g: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    index: BTreeMap<&'a PathBuf, usize>,
    low: BTreeMap<&'a PathBuf, usize>,
    stack: Vec<&'a PathBuf>,
    on: BTreeSet<&'a PathBuf>,
    /// The components of more than one file.
    sccs: Vec<Vec<&'a PathBuf>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, v: &'a PathBuf) {
        let n = self.index.len();
        self.index.insert(v, n);
        self.low.insert(v, n);
        self.stack.push(v);
        self.on.insert(v);
        for w in self.g.get(v).into_iter().flatten() {
            let reached = if !self.index.contains_key(w) {
                self.visit(w);
                self.low[w]
            } else if self.on.contains(w) {
                self.index[w]
            } else {
                continue;
            };
            let lv = self.low.get_mut(v).expect("visited");
            *lv = (*lv).min(reached);
        }
        if self.low[v] == self.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                self.sccs.push(scc);
            }
        }
    }
}

/// Each cycle between files, as a path that comes back to where it starts:
/// one (a shortest) in each strongly connected component.
fn cycles(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        sccs: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.sccs.iter().map(|scc| cycle_in(g, scc)).collect()
}

/// A shortest cycle through the first file of the component `scc`.
fn cycle_in(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>, scc: &[&PathBuf]) -> Vec<PathBuf> {
    let members: BTreeSet<&PathBuf> = scc.iter().copied().collect();
    let start = *members.iter().next().expect("not empty");
    // Shortest way back to `start` inside the component.
    let mut prev: BTreeMap<&PathBuf, &PathBuf> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut end = start;
    'search: while let Some(v) = queue.pop_front() {
        for w in g.get(v).into_iter().flatten() {
            if w == start {
                end = v;
                break 'search;
            }
            if members.contains(w) && !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start.clone()];
    let mut v = end;
    while v != start {
        path.push(v.clone());
        v = prev[v];
    }
    path.push(start.clone());
    let n = path.len();
    path[1..n - 1].reverse();
    path
}

#[test]
fn no_import_cycles_between_files() {
    let src = src_dir();
    let g = graph(&src);
    let found: Vec<String> = cycles(&g)
        .iter()
        .map(|c| {
            c.iter()
                .map(|f| show(&src, f))
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "{} import cycles between files:\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn no_upward_imports() {
    let src = src_dir();
    let mut found = Vec::new();
    for (file, targets) in graph(&src) {
        let (from, from_name) = layer_of(&src, &file);
        assert!(
            from != usize::MAX,
            "{} is in no layer: add its module to LAYERS (and ARCHITECTURE.md)",
            show(&src, &file)
        );
        for target in targets {
            let (to, to_name) = layer_of(&src, &target);
            if to > from && to != usize::MAX {
                found.push(format!(
                    "{} ({from_name}) imports {} ({to_name})",
                    show(&src, &file),
                    show(&src, &target)
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} upward imports (against the order in LAYERS and ARCHITECTURE.md):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn comments_and_strings_are_not_read() {
    let toks = tokens(
        "use crate::{a::{b, c as d}, e}; // crate::z\n fn f() { super::g::h(\"crate::y\"); }",
    );
    let idents: Vec<&Tok> = toks
        .iter()
        .filter(|t| **t == Tok::Ident("z".into()) || **t == Tok::Ident("y".into()))
        .collect();
    assert!(idents.is_empty(), "comments and strings are not read");
}

#[test]
fn architecture_md_lists_the_layers_in_order() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md is readable");
    let table = text
        .split("## Modules, lowest first")
        .nth(1)
        .expect("ARCHITECTURE.md has \"## Modules, lowest first\"");
    let rows: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let first = l.split('|').nth(1).unwrap_or_default();
            first
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let want: Vec<Vec<String>> = LAYERS
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    assert_eq!(
        rows, want,
        "ARCHITECTURE.md's module table and LAYERS differ"
    );
}
