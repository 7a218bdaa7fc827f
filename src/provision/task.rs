//! The task schema of `tasks.yml`: common keys plus exactly one module.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

/// One task as written in `tasks.yml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub name: Option<String>,
    /// A minijinja expression; the task runs only when it is true.
    pub when: Option<String>,
    /// A list (or a template evaluating to one); the task runs once per
    /// item, with the item as `{{ item }}`.
    #[serde(rename = "loop")]
    pub loop_items: Option<Yaml>,
    /// Extra environment for commands this task runs.
    pub environment: Option<BTreeMap<String, String>>,
    /// `false`: never reuse this task's result from the layer cache (e.g. a
    /// `shell` task that downloads from the network); it runs every build.
    pub cache: Option<bool>,
    pub apt: Option<Apt>,
    pub copy: Option<Copy>,
    pub template: Option<Copy>,
    pub file: Option<File>,
    pub shell: Option<Shell>,
    pub command: Option<Command>,
    pub user: Option<User>,
    pub lineinfile: Option<LineInFile>,
    pub service: Option<Service>,
    pub debconf: Option<Debconf>,
}

/// A task's module, with its arguments.
pub enum Module<'a> {
    Apt(&'a Apt),
    Copy(&'a Copy),
    Template(&'a Copy),
    File(&'a File),
    Shell(&'a Shell),
    Command(&'a Command),
    User(&'a User),
    LineInFile(&'a LineInFile),
    Service(&'a Service),
    Debconf(&'a Debconf),
}

impl Task {
    /// The one table of task modules: each module's name (as `tasks.yml`
    /// spells it), with its arguments when this task sets it.
    fn table(&self) -> [(&'static str, Option<Module<'_>>); 10] {
        [
            ("apt", self.apt.as_ref().map(Module::Apt)),
            ("copy", self.copy.as_ref().map(Module::Copy)),
            ("template", self.template.as_ref().map(Module::Template)),
            ("file", self.file.as_ref().map(Module::File)),
            ("shell", self.shell.as_ref().map(Module::Shell)),
            ("command", self.command.as_ref().map(Module::Command)),
            ("user", self.user.as_ref().map(Module::User)),
            (
                "lineinfile",
                self.lineinfile.as_ref().map(Module::LineInFile),
            ),
            ("service", self.service.as_ref().map(Module::Service)),
            ("debconf", self.debconf.as_ref().map(Module::Debconf)),
        ]
    }

    /// The modules this task sets (exactly one in a task that loaded).
    pub fn modules(&self) -> Vec<Module<'_>> {
        self.table().into_iter().filter_map(|(_, m)| m).collect()
    }
}

/// The modules a task sets, by name (for messages) — exactly one.
pub fn module_names(task: &Task) -> Vec<&'static str> {
    task.table()
        .into_iter()
        .filter_map(|(n, m)| m.map(|_| n))
        .collect()
}

/// Every module name, for "unknown module" hints.
pub fn all_modules() -> Vec<&'static str> {
    Task::default().table().map(|(n, _)| n).to_vec()
}

pub use crate::yaml::OneOrMany as Strings;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PkgState {
    #[default]
    Present,
    Absent,
    Latest,
}

/// `apt:` install or remove packages (`name` or `name=version`), refresh lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apt {
    #[serde(alias = "name")]
    pub pkg: Option<Strings>,
    #[serde(default)]
    pub state: PkgState,
    /// Run `apt-get update` first.
    #[serde(default)]
    pub update: bool,
    /// With state absent: purge config files too.
    #[serde(default)]
    pub purge: bool,
}

/// `copy:` (from the role's `files/`) and `template:` (from `templates/`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    pub src: String,
    pub dest: String,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A file mode: `0644`, `"0644"` or `420`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Mode {
    Num(u32),
    Text(String),
}

impl Mode {
    /// YAML reads `0644` as decimal 644; both `0644` and `"0644"` mean octal.
    pub fn bits(&self) -> Result<u32, String> {
        let text = match self {
            Mode::Num(n) => n.to_string(),
            Mode::Text(s) => s.trim().trim_start_matches("0o").to_string(),
        };
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("mode `{text}` is not an octal file mode such as \"0644\""))
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Change mode/owner of an existing path.
    #[default]
    File,
    Directory,
    Touch,
    Link,
    Absent,
}

/// `file:` directory, symlink, mode, owner, absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(alias = "dest", alias = "name")]
    pub path: String,
    #[serde(default)]
    pub state: FileState,
    /// For `state: link`: the link target.
    pub src: Option<String>,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// `shell:` a script for `/bin/sh -c`, or `{cmd, chdir, creates}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Shell {
    Script(String),
    Full(ShellFull),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellFull {
    pub cmd: String,
    pub chdir: Option<String>,
    /// Skip when this path exists in the tree.
    pub creates: Option<String>,
}

/// `command:` an argv list or a line split on white space (no shell).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Line(String),
    Argv(Vec<String>),
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// `user:` add a user (and its groups), password hash, shell, sudo.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    /// Primary group (created if missing; default: a group named like the user).
    pub group: Option<String>,
    /// Supplementary groups (created if missing).
    pub groups: Option<Vec<String>>,
    pub shell: Option<String>,
    pub home: Option<String>,
    /// A crypt(3) hash, as in /etc/shadow.
    pub password: Option<String>,
    #[serde(default)]
    pub system: bool,
    /// Passwordless sudo via /etc/sudoers.d/NAME.
    #[serde(default)]
    pub sudo: bool,
    #[serde(default)]
    pub state: Presence,
}

/// `lineinfile:` ensure a line is (or is not) in a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineInFile {
    #[serde(alias = "dest")]
    pub path: String,
    pub line: Option<String>,
    /// Replace the last line matching this regular expression (whole-line
    /// substring match with `^`/`$` anchors supported).
    pub regexp: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// Create the file when missing (default true).
    pub create: Option<bool>,
    pub mode: Option<Mode>,
}

/// `service:` enable/disable/mask systemd units, offline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: Strings,
    pub enabled: Option<bool>,
    pub masked: Option<bool>,
}

/// `debconf:` preseed one answer before apt.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debconf {
    /// The package owning the question.
    pub name: String,
    pub question: String,
    pub vtype: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::Num(644).bits().unwrap(), 0o644);
        assert_eq!(Mode::Text("0755".into()).bits().unwrap(), 0o755);
        assert!(Mode::Num(999).bits().is_err());
    }

    #[test]
    fn parses_tasks() {
        let tasks: Vec<Task> = serde_yaml_ng::from_str(
            "- name: a\n  apt: {pkg: [curl, 'jq=1.6']}\n- shell: echo hi\n- command: [ls, -l]\n- file: {path: /opt/x, state: directory, mode: '0755'}\n",
        )
        .unwrap();
        assert_eq!(tasks.len(), 4);
        assert_eq!(module_names(&tasks[0]), ["apt"]);
        assert!(serde_yaml_ng::from_str::<Vec<Task>>("- aptt: {pkg: x}\n").is_err());
    }
}
