//! Roles: `provisioners/<role>/tasks.yml` (plus `files/`, `templates/` and
//! optional `defaults.yml`), run task by task in the build chroot.
//!
//! A task is rendered with the build's variables (and `item` in a loop)
//! right before it runs, so `when:` and `loop:` see the same variables the
//! module does. A failing task names the role, the task, the command, its
//! exit status and the last lines of its output.

pub mod chroot;
mod file_tasks;
mod key;
pub mod layers;
pub mod paths;
mod role;
pub mod stack;
mod system;
pub mod task;

use std::path::Path;

use serde_yaml_ng::Value as Yaml;

use crate::progress::Progress;
use crate::template::Templater;
use crate::yaml;
pub use chroot::{Chroot, ChrootOptions};
pub(crate) use role::Run;
pub use role::{load_role, Context, Role, TaskError};
use task::Task;

impl Role {
    /// The variables this role reads: in its tasks (strings, `when`,
    /// `loop`), its templates and its defaults.
    pub fn reads(&self) -> std::collections::BTreeSet<String> {
        use crate::template::{expression_reads, reads, yaml_reads};
        let mut out = std::collections::BTreeSet::new();
        for (raw, _) in &self.tasks {
            let Yaml::Mapping(map) = raw else { continue };
            for (k, v) in map {
                match (k.as_str(), v) {
                    (Some("when" | "loop"), Yaml::String(expr)) => {
                        out.extend(expression_reads(expr))
                    }
                    _ => out.extend(yaml_reads(v)),
                }
            }
        }
        out.extend(self.defaults.values().flat_map(yaml_reads));
        let templates = self.dir.join("templates");
        if let Ok(items) = crate::archive::walk(&templates) {
            for item in items.iter().filter(|i| i.meta.is_file()) {
                out.extend(
                    std::fs::read_to_string(&item.abs)
                        .map(|t| reads(&t))
                        .unwrap_or_default(),
                );
            }
        }
        out
    }

    fn label(&self, index: usize, task: &Task) -> String {
        task.name
            .clone()
            .unwrap_or_else(|| format!("#{} {}", index + 1, task::module_names(task).join("")))
    }

    fn place(&self, index: usize, sub: &[&str]) -> String {
        let path: Vec<String> = std::iter::once(index.to_string())
            .chain(sub.iter().map(|s| s.to_string()))
            .collect();
        let (line, col) = yaml::locate(&self.text, &path);
        format!("{}:{line}:{col}", self.tasks_file.display())
    }

    /// Variable `name` as this role's tasks see it (the build's, else the
    /// role's default), when it is a string.
    pub fn var(&self, name: &str, build: &minijinja::Value) -> Option<String> {
        let value = self.vars(build).get_attr(name).ok()?;
        value.as_str().map(str::to_string)
    }

    /// The variables a task sees: role defaults, then the build's.
    fn vars(&self, build: &minijinja::Value) -> minijinja::Value {
        if self.defaults.is_empty() {
            return build.clone();
        }
        let defaults = minijinja::Value::from_serialize(&self.defaults);
        minijinja::context! { ..build.clone(), ..defaults }
    }

    /// Run every task in order in the chroot at `ctx.root`.
    pub fn run(&self, ctx: &Context) -> Result<(), TaskError> {
        self.walk(
            ctx.root,
            ctx.sys,
            ctx.vars,
            ctx.progress,
            &ctx.templater,
            false,
        )
    }

    /// Validate without building: `when`/`loop` evaluate, module arguments
    /// render and parse, `copy`/`template` sources exist, templates render.
    pub fn check(&self, vars: &minijinja::Value) -> Result<(), TaskError> {
        let progress = Progress::quiet();
        self.walk(
            Path::new("/nonexistent"),
            &crate::sys::REAL,
            vars,
            &progress,
            &Templater::default(),
            true,
        )
    }

    fn walk(
        &self,
        root: &Path,
        sys: &dyn crate::sys::Sys,
        build_vars: &minijinja::Value,
        progress: &Progress,
        t: &Templater,
        dry: bool,
    ) -> Result<(), TaskError> {
        for index in 0..self.tasks.len() {
            self.prepare(index, build_vars, t)?
                .run(root, sys, progress, t, dry)?;
        }
        Ok(())
    }

    /// How many tasks the role has.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Task `index`, ready to run: `loop` evaluated, `when` decided and every
    /// remaining item rendered with the build's variables (role defaults
    /// under them).
    pub fn prepare(
        &self,
        index: usize,
        build_vars: &minijinja::Value,
        t: &Templater,
    ) -> Result<Prepared<'_>, TaskError> {
        let vars = self.vars(build_vars);
        let (raw, task) = &self.tasks[index];
        let label = self.label(index, task);
        let fail = |detail: String| TaskError {
            role: self.name.clone(),
            task: label.clone(),
            detail,
        };
        let loop_values = match &task.loop_items {
            None => vec![None],
            Some(spec) => loop_items(t, spec, &vars)
                .map_err(|e| fail(format!("{}: loop: {e}", self.place(index, &["loop"]))))?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let mut items = Vec::new();
        for item in loop_values {
            let ctx = match &item {
                Some(item) => minijinja::context! { item => item.clone(), ..vars.clone() },
                None => vars.clone(),
            };
            if let Some(cond) = &task.when {
                let go = t.eval_bool(cond, &ctx).map_err(|e| {
                    fail(format!(
                        "{}: when: {}",
                        self.place(index, &["when"]),
                        e.detail
                    ))
                })?;
                if !go {
                    continue;
                }
            }
            let (rendered, parsed) = render_task(t, raw, &ctx)
                .map_err(|(key, e)| fail(format!("{}: {e}", self.place(index, &[&key]))))?;
            let shown = match &item {
                Some(i) => format!("{label} ({i})"),
                None => label.clone(),
            };
            items.push(Item {
                shown,
                ctx,
                rendered,
                task: parsed,
            });
        }
        let cache = items.iter().all(|i| i.task.cache.unwrap_or(true));
        Ok(Prepared {
            role: self,
            label,
            cache,
            items,
        })
    }
}

/// One task of a role, ready to run: each loop item for which `when`
/// holds, rendered.
pub struct Prepared<'r> {
    pub role: &'r Role,
    /// The task's name, or `#N module`.
    pub label: String,
    /// False when the task says `cache: false`.
    pub cache: bool,
    items: Vec<Item>,
}

/// One loop item of a prepared task.
struct Item {
    /// The label with the item, for the log.
    shown: String,
    ctx: minijinja::Value,
    /// The task as rendered (for the cache key) and parsed.
    rendered: Yaml,
    task: Task,
}

impl Prepared<'_> {
    /// True when `when` ruled out every item: the task does nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Run every item in the chroot at `root` (`dry`: check only).
    pub fn run(
        &self,
        root: &Path,
        sys: &dyn crate::sys::Sys,
        progress: &Progress,
        t: &Templater,
        dry: bool,
    ) -> Result<(), TaskError> {
        for item in &self.items {
            if !dry {
                progress.step(format!("{} | {}", self.role.name, item.shown));
            }
            let run = Run {
                root,
                sys,
                role: self.role,
                ctx: item.ctx.clone(),
                env: item
                    .task
                    .environment
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                progress,
                templater: t,
                dry,
            };
            dispatch(&run, &item.task).map_err(|e| TaskError {
                role: self.role.name.clone(),
                task: self.label.clone(),
                detail: crate::progress::format_error(&e),
            })?;
        }
        Ok(())
    }
}

/// Evaluate `loop:`: a YAML list (items rendered) or a template that
/// evaluates to a list.
fn loop_items(
    t: &Templater,
    spec: &Yaml,
    vars: &minijinja::Value,
) -> Result<Vec<minijinja::Value>, String> {
    match spec {
        Yaml::Sequence(items) => items
            .iter()
            .map(|v| match v {
                Yaml::String(s) => t
                    .render(s, vars)
                    .map(minijinja::Value::from)
                    .map_err(|e| e.detail),
                other => Ok(minijinja::Value::from_serialize(other)),
            })
            .collect(),
        Yaml::String(expr) => {
            let value = t.eval(expr, vars).map_err(|e| e.detail)?;
            let iter = value
                .try_iter()
                .map_err(|_| format!("`{expr}` is not a list"))?;
            Ok(iter.collect())
        }
        _ => Err("expected a list or a template that gives one".into()),
    }
}

/// Render every string of a task except `when`/`loop`, then parse it.
fn render_task(
    t: &Templater,
    raw: &Yaml,
    ctx: &minijinja::Value,
) -> Result<(Yaml, Task), (String, String)> {
    let Yaml::Mapping(map) = raw else {
        return Err((String::new(), "a task must be a mapping".into()));
    };
    let mut out = serde_yaml_ng::Mapping::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default().to_string();
        let value = if key == "when" || key == "loop" {
            v.clone()
        } else {
            let no_place = |_: &[String]| String::new();
            crate::template::render_yaml(t, v, ctx, &no_place)
                .map_err(|e| (key.clone(), e.0.trim_start_matches(": ").to_string()))?
        };
        out.insert(k.clone(), value);
    }
    let rendered = Yaml::Mapping(out);
    let task =
        serde_yaml_ng::from_value(rendered.clone()).map_err(|e| (String::new(), e.to_string()))?;
    Ok((rendered, task))
}

/// Run the task's module (the one `Task::modules` finds).
fn dispatch(run: &Run, task: &Task) -> anyhow::Result<()> {
    use task::Module;
    match task.modules().first() {
        Some(Module::Apt(a)) => system::apt(run, a),
        Some(Module::Copy(c)) => file_tasks::copy(run, c),
        Some(Module::Template(c)) => file_tasks::template(run, c),
        Some(Module::File(f)) => file_tasks::file(run, f),
        Some(Module::LineInFile(l)) => file_tasks::lineinfile(run, l),
        Some(Module::Shell(s)) => system::shell(run, s),
        Some(Module::Command(c)) => system::command(run, c),
        Some(Module::User(u)) => system::user(run, u),
        Some(Module::Service(s)) => system::service(run, s),
        Some(Module::Debconf(d)) => system::debconf(run, d),
        None => anyhow::bail!("no module"),
    }
}
