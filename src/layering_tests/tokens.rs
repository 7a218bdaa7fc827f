//! Rust source as the tokens the layering test reads: identifiers, `::`,
//! braces, commas and semicolons, without comments, strings and
//! characters.

#[derive(Clone, PartialEq, Debug)]
pub(super) enum Tok {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Rust source as tokens, without comments, strings and characters.
pub(super) fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or('\0');
        if ch == '/' && (next == '/' || next == '*') {
            i = comment_end(&c, i);
        } else if (ch == 'r' || (ch == 'b' && next == 'r'))
            && matches!(c.get(i + 1 + usize::from(ch == 'b')), Some('#') | Some('"'))
            && raw_string_end(&c, i + 1 + usize::from(ch == 'b')).is_some()
        {
            i = raw_string_end(&c, i + 1 + usize::from(ch == 'b')).unwrap_or(c.len());
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A character literal, or a lifetime.
            if next == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Other);
        } else {
            out.push(match ch {
                ':' if next == ':' => {
                    i += 1;
                    Tok::Path
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    out
}

/// Where a raw string starting at `i` (at its `#`s or `"`) ends, if it is one.
fn raw_string_end(c: &[char], mut i: usize) -> Option<usize> {
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    if c.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < c.len() {
        if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    None
}

/// Where the comment starting at `i` (`//` or `/*`, nested) ends.
fn comment_end(c: &[char], mut i: usize) -> usize {
    if c.get(i + 1) == Some(&'/') {
        while i < c.len() && c[i] != '\n' {
            i += 1;
        }
        return i;
    }
    let mut depth = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}
