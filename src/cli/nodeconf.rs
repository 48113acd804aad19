//! `nodemgr set/get/print/validate/edit config`: node.conf as written and as in force, checked
//! against the keyword registry (`config::keywords`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Map, Value};

use super::nodemgr::Format;
use super::output::{json_line, say};
use crate::config::keywords::{self, KEYWORDS};
use crate::config::{self, ConfigError, IniDocument, Param};
use crate::wire::Fingerprint;

#[derive(Subcommand, Debug)]
pub(crate) enum PrintCmd {
    /// node.conf as written, or with --eval every keyword with its value in force (defaults
    /// included). Secrets are shown by their fingerprint unless --show-secrets
    Config {
        /// Every keyword with its effective value
        #[arg(long)]
        eval: bool,
        /// Show cluster.secret and cluster.alt_secret themselves
        #[arg(long)]
        show_secrets: bool,
    },
    /// The keyword reference (Markdown): type, default and help of every keyword
    Keywords,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ValidateCmd {
    /// Check node.conf: every problem as `path:line: section.key: message`, exit 1 if any
    Config,
}

/// `nodemgr set`: refuses an unknown keyword and a value the file would not validate with;
/// without a node.conf, writes the default one first.
pub(super) fn set(path: &Path, param: &str, value: &str) -> Result<ExitCode> {
    let (conf, created) = config::set_param(path, param, value)?;
    if created {
        eprintln!(
            "nodemgr: created {} (cluster {:?}, generated secret, {} the only node), then set {param}",
            path.display(),
            conf.cluster.name,
            conf.nodename,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A failed read of node.conf; when there is none yet, with what writes one.
fn hinted<T>(r: Result<T, ConfigError>) -> Result<T> {
    r.map_err(|e| {
        if e.is_not_found() {
            anyhow::Error::new(e).context(
                "no node.conf yet (`nodemgr set` or `nodemgr daemon run` writes the default one)",
            )
        } else {
            e.into()
        }
    })
}

fn read(path: &Path) -> Result<String> {
    hinted(std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e)))
}

/// `nodemgr get`: the value as written, or with `eval` the value in force. A secret is shown
/// too: it is what was asked for, by its name (`print config` hides them).
pub(super) fn get(path: &Path, param: &str, eval: bool, format: Format) -> Result<ExitCode> {
    let p = Param::parse(param)?;
    let (doc, _) = hinted(config::load(path))?;
    let written = doc.get(&p.section, &p.key);
    if let (Some(v), false) = (written, eval) {
        say(format, v);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(unknown) = keywords::check_known(&p.section, &p.key) {
        return Err(ConfigError::UnknownParam { unknown }.into());
    }
    let effective = keywords::effective_value(&doc, &p.section, &p.key);
    if eval {
        // No value (e.g. metrics.addr, not served): nothing printed, null in JSON.
        match (effective, format) {
            (Some(v), _) => say(format, &v),
            (None, Format::Json) => println!(
                "{}",
                json_line(&serde_json::json!({"data": null, "status": 0}))
            ),
            (None, Format::Table) => {}
        }
        return Ok(ExitCode::SUCCESS);
    }
    match effective {
        Some(v) => bail!(
            "{param} is not set in {}; in force: {v} (`nodemgr get --eval`)",
            path.display(),
        ),
        None => bail!("{param} is not set in {}", path.display()),
    }
}

/// A value as shown: a secret by its fingerprint, unless `show_secrets`.
fn shown(doc: &IniDocument, section: &str, key: &str, value: &str, show_secrets: bool) -> String {
    if show_secrets || !keywords::lookup(section, key).is_some_and(|k| k.is_secret()) {
        return value.to_string();
    }
    let cluster = keywords::effective_value(doc, "cluster", "name").unwrap_or_default();
    format!(
        "<hidden, fingerprint {}>",
        Fingerprint::of(value.as_bytes(), &cluster)
    )
}

/// `nodemgr print config [--eval] [--show-secrets]`, as INI or JSON.
pub(super) fn print_config(
    path: &Path,
    format: Format,
    eval: bool,
    show_secrets: bool,
) -> Result<ExitCode> {
    let text = read(path)?;
    if eval {
        // What is in force: only a file that loads is.
        let doc = IniDocument::parse(&text, path)?;
        config::NodeConfig::from_document(&doc, path)?;
        print!("{}", render_effective(&doc, format, show_secrets));
        return Ok(ExitCode::SUCCESS);
    }
    // As written, even with syntax errors (`validate config` names them).
    let (mut doc, _) = IniDocument::parse_lenient(&text, path);
    if !show_secrets {
        let plain = doc.clone();
        for section in plain.sections() {
            for key in plain.keys(section) {
                if keywords::lookup(section, key).is_some_and(|k| k.is_secret()) {
                    doc.map_values(section, key, |v| shown(&plain, section, key, v, false))?;
                }
            }
        }
    }
    match format {
        Format::Table => {
            let text = doc.to_string();
            // A file may end without a newline; the terminal's prompt should not follow it.
            if text.ends_with('\n') || text.is_empty() {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
        Format::Json => {
            let mut out = Map::new();
            for section in doc.sections() {
                let keys: Map<String, Value> = doc
                    .keys(section)
                    .filter_map(|k| Some((k.to_string(), doc.get(section, k)?.into())))
                    .collect();
                out.insert(section.to_string(), Value::Object(keys));
            }
            println!("{}", json_line(&out));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every keyword in force, registry order; a pattern's keywords once per section of the file
/// that matches it.
fn render_effective(doc: &IniDocument, format: Format, show_secrets: bool) -> String {
    let mut sections: Vec<String> = Vec::new();
    for k in KEYWORDS {
        let names: Vec<String> = match k.placeholder {
            None => vec![k.section.to_string()],
            Some(_) => doc
                .sections()
                .filter(|s| k.in_section(s))
                .map(str::to_string)
                .collect(),
        };
        for n in names {
            if !sections.contains(&n) {
                sections.push(n);
            }
        }
    }
    let value = |section: &str, key: &str| {
        keywords::effective_value(doc, section, key)
            .map(|v| shown(doc, section, key, &v, show_secrets))
    };
    let keys = |section: &str| -> Vec<&'static str> {
        KEYWORDS
            .iter()
            .filter(|k| k.in_section(section))
            .map(|k| k.key)
            .collect()
    };
    match format {
        Format::Table => {
            let mut out = String::new();
            for (i, section) in sections.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&format!("[{section}]\n"));
                for key in keys(section) {
                    match value(section, key) {
                        Some(v) => out.push_str(&format!("{key} = {v}\n")),
                        None => out.push_str(&format!("# {key} = (none)\n")),
                    }
                }
            }
            out
        }
        Format::Json => {
            let mut out = Map::new();
            for section in &sections {
                let values: Map<String, Value> = keys(section)
                    .into_iter()
                    .map(|key| (key.to_string(), value(section, key).into()))
                    .collect();
                out.insert(section.clone(), Value::Object(values));
            }
            format!("{}\n", json_line(&out))
        }
    }
}

/// `nodemgr print keywords`: Markdown, or one JSON object per keyword.
pub(super) fn print_keywords(format: Format) -> Result<ExitCode> {
    match format {
        Format::Table => print!("{}", keywords::reference_markdown()),
        Format::Json => {
            let all: Vec<Value> = KEYWORDS
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "keyword": k.name(),
                        "type": k.ty.describe(),
                        "default": k.default.to_string(),
                        "help": k.help,
                    })
                })
                .collect();
            println!("{}", json_line(&all));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nodemgr validate config`: every problem on its own line, exit 1 if any.
pub(super) fn validate(path: &Path, format: Format) -> Result<ExitCode> {
    let text = read(path)?;
    let problems = keywords::validate(&text, path);
    match format {
        Format::Json => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            println!(
                "{}",
                json_line(
                    &serde_json::json!({"path": path.display().to_string(), "problems": list})
                )
            );
        }
        Format::Table if problems.is_empty() => println!("{}: ok", path.display()),
        Format::Table => {
            for p in &problems {
                println!("{p}");
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Edits a copy, refuses it on any problem `validate config` would report, and only then
/// replaces node.conf (atomically, with a backup).
pub(super) fn edit(path: &Path) -> Result<ExitCode> {
    super::common::edit_file(path, |text| {
        let problems = keywords::validate(text, path);
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            bail!("{}", lines.join("\n"));
        }
        let doc = IniDocument::parse(text, path)?;
        config::write_atomic(path, &doc)?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
