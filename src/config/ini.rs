//! Lossless INI document: every line is kept verbatim (with its own line
//! ending) next to its parsed meaning, so rendering an unmodified document
//! gives back the input byte for byte.

use std::fmt;
use std::path::Path;

use super::ConfigError;

const BOM: char = '\u{feff}';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    /// Last line of a file without a trailing newline.
    None,
    Lf,
    CrLf,
}

impl Eol {
    fn as_str(self) -> &'static str {
        match self {
            Eol::None => "",
            Eol::Lf => "\n",
            Eol::CrLf => "\r\n",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Blank,
    Comment,
    Section(String),
    Entry {
        key: String,
        value: String,
        /// Byte offset of the value in the raw text; editing replaces the
        /// tail from here so the operator's `key = ` spacing survives.
        value_start: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    text: String,
    eol: Eol,
    kind: Kind,
}

/// A parsed INI file that remembers its exact text.
///
/// Section names are case-sensitive, keys are not. When a key (or a section)
/// appears several times the last occurrence wins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IniDocument {
    lines: Vec<Line>,
}

/// What is wrong with a line that is neither blank, a comment, a section header nor an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum SyntaxError {
    #[error("unexpected text after ']' in section header")]
    TextAfterHeader,
    #[error("unterminated section header: missing ']'")]
    UnterminatedHeader,
    #[error("empty section name")]
    EmptySection,
    #[error("expected \"key = value\", a [section] header or a comment")]
    NotAnEntry,
    #[error("missing key before '='")]
    MissingKey,
    #[error("key = value line before any [section] header")]
    EntryBeforeSection,
}

/// Classifies one raw line (without its line ending).
fn classify(raw: &str) -> Result<Kind, SyntaxError> {
    let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c == BOM);
    if trimmed.is_empty() {
        return Ok(Kind::Blank);
    }
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Ok(Kind::Comment);
    }
    if let Some(inner) = trimmed.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(if inner.contains(']') {
                SyntaxError::TextAfterHeader
            } else {
                SyntaxError::UnterminatedHeader
            });
        };
        let name = inner.trim();
        if name.is_empty() {
            return Err(SyntaxError::EmptySection);
        }
        return Ok(Kind::Section(name.to_string()));
    }
    let Some(eq) = raw.find('=') else {
        return Err(SyntaxError::NotAnEntry);
    };
    let key = raw[..eq].trim_matches(|c: char| c.is_whitespace() || c == BOM);
    if key.is_empty() {
        return Err(SyntaxError::MissingKey);
    }
    let after = &raw[eq + 1..];
    let value_start = eq + 1 + (after.len() - after.trim_start().len());
    Ok(Kind::Entry {
        key: key.to_string(),
        value: after.trim().to_string(),
        value_start,
    })
}

impl IniDocument {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<IniDocument, ConfigError> {
        let (doc, errors) = Self::parse_lenient(text, path);
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(doc),
        }
    }

    /// Parses `text`, keeping going past syntax errors: every one is returned, and its line
    /// is kept in the document as an ignored line (line numbers stay right). For reports
    /// only: such a document is not meant to be written back.
    pub fn parse_lenient(text: &str, path: &Path) -> (IniDocument, Vec<ConfigError>) {
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        let mut in_section = false;
        let mut rest = text;
        let mut number = 0usize;
        while !rest.is_empty() {
            number += 1;
            let (raw, eol, next) = match rest.find('\n') {
                Some(i) => {
                    let head = &rest[..i];
                    match head.strip_suffix('\r') {
                        Some(h) => (h, Eol::CrLf, &rest[i + 1..]),
                        None => (head, Eol::Lf, &rest[i + 1..]),
                    }
                }
                None => (rest, Eol::None, ""),
            };
            let classified = match classify(raw) {
                Ok(Kind::Entry { .. }) if !in_section => Err(SyntaxError::EntryBeforeSection),
                other => other,
            };
            let kind = match classified {
                Ok(kind) => kind,
                Err(e) => {
                    errors.push(ConfigError::Syntax {
                        path: path.to_path_buf(),
                        line: number,
                        message: e.to_string(),
                    });
                    Kind::Comment
                }
            };
            if let Kind::Section(_) = kind {
                in_section = true;
            }
            lines.push(Line {
                text: raw.to_string(),
                eol,
                kind,
            });
            rest = next;
        }
        (IniDocument { lines }, errors)
    }

    /// Entries with their 0-based line index and section name, in file order.
    fn entries(&self) -> impl Iterator<Item = (usize, &str, &str, &str)> {
        let mut section: Option<&str> = None;
        self.lines
            .iter()
            .enumerate()
            .filter_map(move |(i, line)| match &line.kind {
                Kind::Section(name) => {
                    section = Some(name);
                    None
                }
                Kind::Entry { key, value, .. } => {
                    section.map(|s| (i, s, key.as_str(), value.as_str()))
                }
                _ => None,
            })
    }

    /// Last occurrence of `section.key`: (1-based line, trimmed value).
    pub(crate) fn lookup(&self, section: &str, key: &str) -> Option<(usize, &str)> {
        self.entries()
            .filter(|(_, s, k, _)| *s == section && k.eq_ignore_ascii_case(key))
            .last()
            .map(|(i, _, _, v)| (i + 1, v))
    }

    /// Trimmed value of `key` in `section` (last occurrence wins).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.lookup(section, key).map(|(_, v)| v)
    }

    /// 1-based line number of the effective `key` in `section`.
    pub fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        self.lookup(section, key).map(|(l, _)| l)
    }

    /// 1-based line number of the first `[section]` header.
    pub fn section_line(&self, section: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| matches!(&l.kind, Kind::Section(n) if n == section))
            .map(|i| i + 1)
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.section_line(section).is_some()
    }

    /// Distinct section names in order of first appearance.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        for line in &self.lines {
            if let Kind::Section(name) = &line.kind
                && !seen.contains(&name.as_str())
            {
                seen.push(name);
            }
        }
        seen.into_iter()
    }

    /// Distinct keys of `section` (first spelling seen), in file order.
    pub fn keys(&self, section: &str) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        for (_, s, k, _) in self.entries() {
            if s == section && !seen.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                seen.push(k);
            }
        }
        seen.into_iter()
    }

    /// Line ending used for inserted lines: follow the file's own style.
    fn default_eol(&self) -> Eol {
        self.lines
            .iter()
            .map(|l| l.eol)
            .find(|e| *e != Eol::None)
            .unwrap_or(Eol::Lf)
    }

    /// Builds a line from text that must classify as `expected`, so that an
    /// edit can never produce a document that re-parses differently.
    fn checked_line(
        text: String,
        expected: &Kind,
        eol: Eol,
        section: &str,
        key: &str,
    ) -> Result<Line, ConfigError> {
        let edit_error = |message: &str| ConfigError::Edit {
            section: section.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        let kind = classify(&text).map_err(|e| edit_error(&e.to_string()))?;
        let same = match (&kind, expected) {
            (Kind::Section(a), Kind::Section(b)) => a == b,
            (
                Kind::Entry {
                    key: ka, value: va, ..
                },
                Kind::Entry {
                    key: kb, value: vb, ..
                },
            ) => ka == kb && va == vb,
            _ => false,
        };
        if !same {
            return Err(edit_error("the name or value cannot be written as INI"));
        }
        Ok(Line { text, eol, kind })
    }

    /// Sets `key` in `section`: edits the effective line in place, else adds
    /// the key after the section's last entry, else appends a new section.
    /// Names and value are trimmed (as `get` would return them).
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        let (section, key, value) = (section.trim(), key.trim(), value.trim());
        if [section, key, value]
            .iter()
            .any(|s| s.contains(['\n', '\r']))
        {
            return Err(ConfigError::Edit {
                section: section.to_string(),
                key: key.to_string(),
                message: "line breaks are not allowed".to_string(),
            });
        }
        if key.is_empty() || section.is_empty() {
            return Err(ConfigError::Edit {
                section: section.to_string(),
                key: key.to_string(),
                message: "empty section or key name".to_string(),
            });
        }
        let expected_entry = Kind::Entry {
            key: key.to_string(),
            value: value.to_string(),
            value_start: 0,
        };
        let eol = self.default_eol();
        let new_entry = Self::checked_line(
            format!("{key} = {value}"),
            &expected_entry,
            eol,
            section,
            key,
        )?;
        let header = Self::checked_line(
            format!("[{section}]"),
            &Kind::Section(section.to_string()),
            eol,
            section,
            key,
        )?;

        let mut current: Option<&str> = None;
        let mut existing = None;
        let mut insert_after = None;
        for (i, line) in self.lines.iter().enumerate() {
            match &line.kind {
                Kind::Section(name) => {
                    current = Some(name);
                    if name == section {
                        insert_after = Some(i);
                    }
                }
                Kind::Entry { key: k, .. } if current == Some(section) => {
                    insert_after = Some(i);
                    if k.eq_ignore_ascii_case(key) {
                        existing = Some(i);
                    }
                }
                _ => {}
            }
        }

        if let Some(i) = existing {
            let line = &self.lines[i];
            if let Kind::Entry {
                key: orig_key,
                value_start,
                ..
            } = &line.kind
            {
                let expected = Kind::Entry {
                    key: orig_key.clone(),
                    value: value.to_string(),
                    value_start: 0,
                };
                let text = format!("{}{value}", &line.text[..*value_start]);
                self.lines[i] = Self::checked_line(text, &expected, line.eol, section, key)?;
            }
            return Ok(());
        }

        if let Some(i) = insert_after {
            if self.lines[i].eol == Eol::None {
                self.lines[i].eol = eol;
            }
            self.lines.insert(i + 1, new_entry);
            return Ok(());
        }

        if let Some(last) = self.lines.last_mut() {
            if last.eol == Eol::None {
                last.eol = eol;
            }
            // A blank separator keeps appended sections readable.
            if last.kind != Kind::Blank {
                self.lines.push(Line {
                    text: String::new(),
                    eol,
                    kind: Kind::Blank,
                });
            }
        }
        self.lines.push(header);
        self.lines.push(new_entry);
        Ok(())
    }

    /// Replaces the value of every occurrence of `key` in `section` by `f(value)`, in place
    /// (e.g. to hide secrets in what is shown).
    pub fn map_values(
        &mut self,
        section: &str,
        key: &str,
        mut f: impl FnMut(&str) -> String,
    ) -> Result<(), ConfigError> {
        let targets: Vec<usize> = self
            .entries()
            .filter(|(_, s, k, _)| *s == section && k.eq_ignore_ascii_case(key))
            .map(|(i, ..)| i)
            .collect();
        for i in targets {
            let line = &self.lines[i];
            if let Kind::Entry {
                key: orig_key,
                value,
                value_start,
            } = &line.kind
            {
                let new = f(value);
                if new.contains(['\n', '\r']) {
                    return Err(ConfigError::Edit {
                        section: section.to_string(),
                        key: key.to_string(),
                        message: "line breaks are not allowed".to_string(),
                    });
                }
                let expected = Kind::Entry {
                    key: orig_key.clone(),
                    value: new.trim().to_string(),
                    value_start: 0,
                };
                let text = format!("{}{}", &line.text[..*value_start], new.trim());
                self.lines[i] = Self::checked_line(text, &expected, line.eol, section, key)?;
            }
        }
        Ok(())
    }

    /// Removes every occurrence of `key` in `section` (removing only the last
    /// one would resurrect an older value). Returns whether anything went.
    pub fn unset(&mut self, section: &str, key: &str) -> bool {
        let doomed: Vec<usize> = self
            .entries()
            .filter(|(_, s, k, _)| *s == section && k.eq_ignore_ascii_case(key))
            .map(|(i, ..)| i)
            .collect();
        for i in doomed.iter().rev() {
            self.lines.remove(*i);
        }
        !doomed.is_empty()
    }

    /// Appends a `# comment` line (used for generated headers).
    pub fn push_comment(&mut self, text: &str) {
        let eol = self.default_eol();
        if let Some(last) = self.lines.last_mut()
            && last.eol == Eol::None
        {
            last.eol = eol;
        }
        // Line breaks in a comment would create unparsed lines: flatten them.
        let flat: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let text = if flat.is_empty() {
            "#".to_string()
        } else {
            format!("# {flat}")
        };
        self.lines.push(Line {
            text,
            eol,
            kind: Kind::Comment,
        });
    }

    /// Appends an empty line.
    pub fn push_blank(&mut self) {
        let eol = self.default_eol();
        if let Some(last) = self.lines.last_mut()
            && last.eol == Eol::None
        {
            last.eol = eol;
        }
        self.lines.push(Line {
            text: String::new(),
            eol,
            kind: Kind::Blank,
        });
    }
}

impl fmt::Display for IniDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            f.write_str(&line.text)?;
            f.write_str(line.eol.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn p() -> &'static Path {
        Path::new("/etc/opensvc/node.conf")
    }

    fn parse(text: &str) -> IniDocument {
        match IniDocument::parse(text, p()) {
            Ok(d) => d,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    const SAMPLE: &str = concat!(
        "# comment\n",
        "; other comment\n",
        "[node]\n",
        "nodename = node1\n",
        "\n",
        "[cluster]\n",
        "name = prod1\n",
        "   secret=3f9c   \n",
        "nodes = node1 node2 node3\n",
        "\n",
        "[unknown stuff]\n",
        "whatever = keep me = really\n",
        "\t\n",
        "[listener]\n",
        "addr = 0.0.0.0\n",
        "port = 1214\n",
        "\n",
        "[node.node2]\n",
        "addr = 127.0.0.2\n",
    );

    #[test]
    fn round_trip_is_byte_exact() {
        let doc = parse(SAMPLE);
        assert_eq!(doc.to_string(), SAMPLE);
        for text in [
            "",
            "\n",
            "[a]\nk=v",
            "[a]\r\nk = v\r\n# c\r\n",
            "\u{feff}[a]\nk = v\n",
            "  [ spaced ]  \n  k  =  v  \n",
            "[a]\nk =\n",
        ] {
            assert_eq!(parse(text).to_string(), text, "{text:?}");
        }
    }

    #[test]
    fn get_trims_ignores_key_case_and_last_wins() {
        let doc = parse(SAMPLE);
        assert_eq!(doc.get("cluster", "secret"), Some("3f9c"));
        assert_eq!(doc.get("cluster", "SECRET"), Some("3f9c"));
        assert_eq!(
            doc.get("unknown stuff", "whatever"),
            Some("keep me = really")
        );
        assert_eq!(
            doc.get("Cluster", "secret"),
            None,
            "sections are case-sensitive"
        );
        assert_eq!(doc.get("cluster", "nope"), None);

        let doc = parse("[a]\nk = 1\n[b]\nk = x\n[a]\nK = 2\n");
        assert_eq!(doc.get("a", "k"), Some("2"));
        assert_eq!(doc.line_of("a", "k"), Some(6));
        assert_eq!(doc.line_of("b", "k"), Some(4));
        assert_eq!(doc.section_line("a"), Some(1));
        assert_eq!(doc.sections().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(doc.keys("a").collect::<Vec<_>>(), ["k"]);
    }

    #[test]
    fn line_of_counts_from_one() {
        let doc = parse(SAMPLE);
        assert_eq!(doc.line_of("listener", "port"), Some(16));
        assert_eq!(doc.line_of("node", "nodename"), Some(4));
        assert_eq!(doc.line_of("listener", "nope"), None);
    }

    #[test]
    fn sections_and_keys_list_unknown_ones_too() {
        let doc = parse(SAMPLE);
        assert_eq!(
            doc.sections().collect::<Vec<_>>(),
            ["node", "cluster", "unknown stuff", "listener", "node.node2"]
        );
        assert_eq!(
            doc.keys("cluster").collect::<Vec<_>>(),
            ["name", "secret", "nodes"]
        );
        assert_eq!(doc.keys("missing").count(), 0);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let cases = [
            (
                "[node]\nnodename = a\njunk\n",
                3,
                "expected \"key = value\"",
            ),
            ("# c\n[node\n", 2, "unterminated section header"),
            ("[node] trailing\n", 1, "unexpected text after ']'"),
            ("[ ]\n", 1, "empty section name"),
            ("[a]\n = v\n", 2, "missing key"),
            ("\n# c\nk = v\n[a]\n", 3, "before any [section]"),
        ];
        for (text, line, needle) in cases {
            match IniDocument::parse(text, p()) {
                Err(e @ ConfigError::Syntax { line: l, .. }) => {
                    assert_eq!(l, line, "{text:?}");
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!("/etc/opensvc/node.conf:{line}: ")),
                        "{msg}"
                    );
                    assert!(msg.contains(needle), "{msg}");
                }
                other => panic!("{text:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn set_edits_in_place_and_keeps_everything_else() {
        let mut doc = parse(SAMPLE);
        doc.set("listener", "PORT", "1215").unwrap();
        doc.set("cluster", "secret", "abcd").unwrap();
        let expected = SAMPLE
            .replace("port = 1214", "port = 1215")
            .replace("   secret=3f9c   ", "   secret=abcd");
        assert_eq!(doc.to_string(), expected);
        assert_eq!(doc, parse(&expected));
    }

    #[test]
    fn set_edits_the_effective_duplicate() {
        let mut doc = parse("[a]\nk = 1\nk = 2\n");
        doc.set("a", "k", "3").unwrap();
        assert_eq!(doc.to_string(), "[a]\nk = 1\nk = 3\n");
    }

    #[test]
    fn set_new_key_goes_after_the_last_entry_of_the_section() {
        let mut doc = parse(SAMPLE);
        doc.set("node", "env", "PRD").unwrap();
        let expected = SAMPLE.replace("nodename = node1\n", "nodename = node1\nenv = PRD\n");
        assert_eq!(doc.to_string(), expected);

        let mut doc = parse("[a]\n# only a comment\n\n[b]\n");
        doc.set("a", "k", "v").unwrap();
        assert_eq!(doc.to_string(), "[a]\nk = v\n# only a comment\n\n[b]\n");
    }

    #[test]
    fn set_new_section_appends_at_end() {
        let mut doc = parse(SAMPLE);
        doc.set("hb", "interval", "5s").unwrap();
        assert_eq!(doc.to_string(), format!("{SAMPLE}\n[hb]\ninterval = 5s\n"));

        let mut doc = parse("[a]\r\nk = v");
        doc.set("b", "x", "y").unwrap();
        assert_eq!(doc.to_string(), "[a]\r\nk = v\r\n\r\n[b]\r\nx = y\r\n");

        let mut doc = IniDocument::new();
        doc.set("a", "k", "v").unwrap();
        assert_eq!(doc.to_string(), "[a]\nk = v\n");
    }

    #[test]
    fn set_rejects_text_that_would_not_round_trip() {
        let mut doc = parse(SAMPLE);
        for (s, k, v) in [
            ("node", "k", "a\nb"),
            ("node", "a=b", "v"),
            ("node", "#k", "v"),
            ("node", "[k", "v"),
            ("x\ny", "k", "v"),
            ("", "k", "v"),
            ("node", "", "v"),
        ] {
            assert!(
                matches!(doc.set(s, k, v), Err(ConfigError::Edit { .. })),
                "{s:?} {k:?} {v:?}"
            );
        }
        assert_eq!(doc.to_string(), SAMPLE);
    }

    #[test]
    fn lenient_parse_reports_every_syntax_error_and_keeps_line_numbers() {
        let (doc, errors) = IniDocument::parse_lenient("k = 0\n[a]\njunk\nk = 1\n[b\nx = 2\n", p());
        let lines: Vec<usize> = errors
            .iter()
            .map(|e| match e {
                ConfigError::Syntax { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, [1, 3, 5]);
        assert_eq!(doc.line_of("a", "k"), Some(4));
        assert_eq!(
            doc.line_of("a", "x"),
            Some(6),
            "a broken header opens no section"
        );
        let strict = IniDocument::parse("[a]\njunk\n[b\n", p()).unwrap_err();
        assert!(
            matches!(strict, ConfigError::Syntax { line: 2, .. }),
            "{strict:?}"
        );
    }

    #[test]
    fn map_values_edits_every_occurrence_in_place() {
        let mut doc = parse("[c]\nsecret = a\n[d]\nsecret = z\n[c]\n  SECRET=b  \n");
        doc.map_values("c", "secret", |v| format!("<{v}>")).unwrap();
        assert_eq!(
            doc.to_string(),
            "[c]\nsecret = <a>\n[d]\nsecret = z\n[c]\n  SECRET=<b>\n"
        );
        assert!(doc.map_values("c", "secret", |_| "x\ny".into()).is_err());
    }

    #[test]
    fn unset_removes_all_occurrences() {
        let mut doc = parse("[a]\nk = 1\nx = y\n[a]\nK = 2\n");
        assert!(doc.unset("a", "k"));
        assert_eq!(doc.to_string(), "[a]\nx = y\n[a]\n");
        assert!(!doc.unset("a", "k"));
        assert!(!doc.unset("b", "x"));
    }

    #[test]
    fn push_comment_and_blank() {
        let mut doc = IniDocument::new();
        doc.push_comment("hello\nworld");
        doc.push_blank();
        doc.set("a", "k", "v").unwrap();
        assert_eq!(doc.to_string(), "# hello world\n\n[a]\nk = v\n");
        assert_eq!(parse(&doc.to_string()), doc);
    }

    #[derive(Debug, Clone)]
    enum Item {
        Section(String),
        Entry(String, String, usize),
        Comment(String),
        Blank(String),
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            "[a-zA-Z0-9_.]{1,8}".prop_map(Item::Section),
            ("[a-zA-Z][a-zA-Z0-9_@]{0,6}", "[ -~]{0,12}", 0usize..4)
                .prop_map(|(k, v, s)| Item::Entry(k, v, s)),
            "[#;][ -~]{0,12}".prop_map(Item::Comment),
            "[ \t]{0,3}".prop_map(Item::Blank),
        ]
    }

    fn render(
        first: &str,
        items: &[Item],
        crlf: bool,
    ) -> (String, HashMap<(String, String), String>) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = format!("[{first}]{nl}");
        let mut section = first.to_string();
        let mut last = HashMap::new();
        for it in items {
            match it {
                Item::Section(s) => {
                    text.push_str(&format!("[{s}]{nl}"));
                    section = s.clone();
                }
                Item::Entry(k, v, spaces) => {
                    let pad = " ".repeat(*spaces);
                    text.push_str(&format!("{k}{pad}={pad}{v}{nl}"));
                    last.insert(
                        (section.clone(), k.to_ascii_lowercase()),
                        v.trim().to_string(),
                    );
                }
                Item::Comment(c) => text.push_str(&format!("{c}{nl}")),
                Item::Blank(b) => text.push_str(&format!("{b}{nl}")),
            }
        }
        (text, last)
    }

    proptest! {
        #[test]
        fn prop_parse_render_round_trip(
            first in "[a-z]{1,6}",
            items in prop::collection::vec(item(), 0..40),
            crlf in any::<bool>(),
        ) {
            let (text, last) = render(&first, &items, crlf);
            let doc = IniDocument::parse(&text, p()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(doc.to_string(), text.clone());
            let again = IniDocument::parse(&doc.to_string(), p()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&again, &doc);
            for ((s, k), v) in &last {
                prop_assert_eq!(doc.get(s, &k.to_ascii_uppercase()), Some(v.as_str()));
            }
        }

        #[test]
        fn prop_set_then_get_and_reparse(
            first in "[a-z]{1,6}",
            items in prop::collection::vec(item(), 0..20),
            sets in prop::collection::vec(
                ("[a-c]{1,2}", "[a-cA-C]{1,2}", "[ -~]{0,10}"), 1..20),
        ) {
            let (text, _) = render(&first, &items, false);
            let mut doc = IniDocument::parse(&text, p()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut expected: HashMap<(String, String), String> = HashMap::new();
            for (s, k, v) in &sets {
                doc.set(s, k, v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                expected.insert((s.clone(), k.to_ascii_lowercase()), v.trim().to_string());
            }
            for ((s, k), v) in &expected {
                prop_assert_eq!(doc.get(s, k), Some(v.as_str()));
            }
            let again = IniDocument::parse(&doc.to_string(), p()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, doc);
        }
    }
}
