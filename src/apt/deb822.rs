//! The deb822 format (RFC 822-style paragraphs) that apt's `.sources` files,
//! `apt-cache show` and dpkg's status file all use: paragraphs separated by
//! blank lines, `Field: value` lines, continuation lines that start with a
//! space or tab, `#` comment lines. Field names are case-insensitive.

/// One paragraph: its fields in order, continuation lines joined with `\n`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of a field (case-insensitive name), trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every paragraph of a deb822 text, in order.
pub fn parse(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut current = Paragraph::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.fields.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            current
                .fields
                .push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.fields.is_empty() {
        out.push(current);
    }
    out
}

/// A field of the first paragraph (e.g. of `apt-cache show` output).
pub fn first_field(text: &str, name: &str) -> Option<String> {
    parse(text)
        .first()
        .and_then(|p| p.get(name))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text = "# comment\nTypes: deb\nuris: http://a.invalid/debian\n\n\nPackage: x\nDescription: short\n long line\n .\nStatus: install ok installed\n";
        let p = parse(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("URIs"), Some("http://a.invalid/debian"));
        assert_eq!(p[1].get("description"), Some("short\nlong line\n."));
        assert_eq!(p[1].get("Status"), Some("install ok installed"));
        assert_eq!(first_field(text, "Types").as_deref(), Some("deb"));
        assert_eq!(first_field("", "Types"), None);
    }
}
