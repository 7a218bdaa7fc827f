//! minijinja templating with strict undefined: a missing variable is an
//! error, never an empty string. One environment factory for every template
//! mkimage renders — vars strings, role templates, `when` expressions and
//! `loop` lists, the initrd's `init`, iPXE boot scripts — with a `shquote`
//! filter for values that land in a shell script (`X={{ v | shquote }}`).

use minijinja::{Environment, UndefinedBehavior, Value};
use serde_yaml_ng::Value as Yaml;

/// A template that failed to render or evaluate.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct TemplateError {
    pub detail: String,
}

impl From<minijinja::Error> for TemplateError {
    fn from(err: minijinja::Error) -> Self {
        // minijinja's Display carries the kind and the detail; add the
        // offending line when it knows it.
        let mut detail = match err.detail() {
            Some(d) => format!("{}: {d}", kind_text(&err)),
            None => err.to_string(),
        };
        if let Some(line) = err.line() {
            detail.push_str(&format!(" (template line {line})"));
        }
        TemplateError { detail }
    }
}

fn kind_text(err: &minijinja::Error) -> &'static str {
    match err.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined variable",
        minijinja::ErrorKind::SyntaxError => "template syntax error",
        minijinja::ErrorKind::UnknownFilter => "unknown filter",
        minijinja::ErrorKind::UnknownFunction => "unknown function",
        _ => "template error",
    }
}

/// The templating environment: strict undefined, no auto-escaping, and
/// trailing newlines kept (role templates are config files).
pub struct Templater {
    env: Environment<'static>,
}

/// The environment every mkimage template renders in: strict undefined,
/// trailing newlines kept, no auto-escaping, and the `shquote` filter.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("shquote", |v: Value| {
        crate::exec::shell_quote(&v.to_string())
    });
    env
}

impl Default for Templater {
    fn default() -> Self {
        Templater { env: environment() }
    }
}

impl Templater {
    /// Render a template string against a context.
    pub fn render(&self, source: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_string());
        }
        self.env
            .render_str(source, ctx)
            .map_err(|e| self.explain(e, source, ctx))
    }

    /// Name the missing variables of an undefined-value error.
    fn explain(&self, err: minijinja::Error, source: &str, ctx: &Value) -> TemplateError {
        if err.kind() == minijinja::ErrorKind::UndefinedError {
            if let Ok(tmpl) = self.env.template_from_str(source) {
                let mut missing: Vec<String> = tmpl
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|name| ctx.get_attr(name).map_or(true, |v| v.is_undefined()))
                    .collect();
                missing.sort();
                if !missing.is_empty() {
                    let names = missing
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return TemplateError {
                        detail: format!(
                            "undefined variable {names} (define it under `vars:` or pass --var)"
                        ),
                    };
                }
            }
            return TemplateError {
                detail: "undefined variable or attribute".into(),
            };
        }
        err.into()
    }

    /// Evaluate an expression (`when:`), accepting `{{ expr }}` too.
    pub fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let inner = strip_braces(expr);
        let compiled = self.env.compile_expression(inner)?;
        let value = compiled.eval(ctx)?;
        if value.is_undefined() {
            return Err(TemplateError {
                detail: format!("undefined variable in `{inner}`"),
            });
        }
        Ok(value)
    }

    /// Evaluate a condition: the expression's truthiness.
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, ctx)?.is_true())
    }
}

/// The variables a template reads (top-level names: `item.src` reads `item`).
pub fn reads(source: &str) -> Vec<String> {
    if !source.contains("{{") && !source.contains("{%") {
        return Vec::new();
    }
    match environment().template_from_str(source) {
        Ok(t) => t.undeclared_variables(false).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// The variables an expression (`when:`, `loop:`) reads.
pub fn expression_reads(expr: &str) -> Vec<String> {
    reads(&format!("{{{{ {} }}}}", strip_braces(expr)))
}

/// The variables every string inside a YAML value reads.
pub fn yaml_reads(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(s) => reads(s),
        Yaml::Sequence(items) => items.iter().flat_map(yaml_reads).collect(),
        Yaml::Mapping(map) => map.values().flat_map(yaml_reads).collect(),
        _ => Vec::new(),
    }
}

/// `{{ x }}` → `x`; anything else unchanged.
pub fn strip_braces(expr: &str) -> &str {
    let t = expr.trim();
    match t.strip_prefix("{{").and_then(|s| s.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner.trim(),
        _ => t,
    }
}

/// Render every string inside a YAML value; `place` turns a sub key path
/// into `FILE:LINE:COL` for errors.
pub fn render_yaml(
    t: &Templater,
    value: &Yaml,
    ctx: &minijinja::Value,
    place: &dyn Fn(&[String]) -> String,
) -> Result<Yaml, crate::ConfigError> {
    Ok(match value {
        Yaml::String(s) => {
            let out = t.render(s, ctx).map_err(|e| {
                crate::ConfigError(format!("{}: {}: in `{s}`", place(&[]), e.detail))
            })?;
            Yaml::String(out)
        }
        Yaml::Sequence(items) => Yaml::Sequence(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    render_yaml(t, v, ctx, &|sub: &[String]| {
                        place(&[vec![i.to_string()], sub.to_vec()].concat())
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = serde_yaml_ng::Mapping::new();
            for (k, v) in map {
                let key = crate::yaml::yaml_key(k);
                out.insert(
                    k.clone(),
                    render_yaml(t, v, ctx, &|sub: &[String]| {
                        place(&[vec![key.clone()], sub.to_vec()].concat())
                    })?,
                );
            }
            Yaml::Mapping(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn renders_and_rejects_undefined() {
        let t = Templater::default();
        let ctx = context! { suite => "bookworm" };
        assert_eq!(t.render("{{ suite }}-x", &ctx).unwrap(), "bookworm-x");
        let err = t.render("{{ sutie }}", &ctx).unwrap_err();
        assert!(err.detail.contains("undefined"), "{}", err.detail);
        let err = t
            .render("{{ a.b }}", &context! { a => context!{} })
            .unwrap_err();
        assert!(err.detail.contains("undefined"), "{}", err.detail);
    }

    #[test]
    fn conditions() {
        let t = Templater::default();
        let ctx = context! { n => 3, on => true };
        assert!(t.eval_bool("n > 2", &ctx).unwrap());
        assert!(t.eval_bool("{{ on }}", &ctx).unwrap());
        assert!(t.eval_bool("missing", &ctx).is_err());
    }

    #[test]
    fn shquote_filter_quotes_for_the_shell() {
        let t = Templater::default();
        let out = t
            .render(
                "X={{ v | shquote }} Y={{ w | shquote }}",
                &context! { v => "it's $(rm -rf /)", w => "50%" },
            )
            .unwrap();
        assert_eq!(out, r"X='it'\''s $(rm -rf /)' Y=50%");
        let sh = crate::exec::Cmd::new("sh")
            .args(["-c", &format!("{out}; printf %s \"$X\"")])
            .run()
            .unwrap();
        assert_eq!(sh.stdout.trim_end(), "it's $(rm -rf /)");
    }

    #[test]
    fn what_templates_read() {
        let mut r = reads("{{ item.src }} {% if on %}{{ name | upper }}{% endif %}");
        r.sort();
        assert_eq!(r, ["item", "name", "on"]);
        assert_eq!(
            expression_reads("extra_packages | length > 0"),
            ["extra_packages"]
        );
        assert!(reads("plain").is_empty());
    }

    #[test]
    fn no_html_escaping() {
        let t = Templater::default();
        assert_eq!(
            t.render("{{ s }}", &context! { s => "<a&b>" }).unwrap(),
            "<a&b>"
        );
    }
}
