//! The single settings registry. Each entry names a Gunicorn setting, its CLI flags, how a
//! value is parsed and validated, its default and its documentation. The CLI parser, the
//! config-file loader, `GUNICORN_CMD_ARGS`, `--print-config` and `docs/settings.md` are all
//! derived from [`REGISTRY`].

use std::collections::HashMap;
use std::ffi::OsString;

mod registry;
pub use registry::REGISTRY;

/// How a setting's value is written and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer; `min` is the smallest value accepted.
    Int { min: i64 },
    /// Like `Int`, but also accepts `0o22`, `022` and `0x12` (Gunicorn's `auto_int`).
    AutoInt,
    /// A flag that sets the value to true (`store_true`).
    Flag,
    /// A flag that sets the value to false (`--no-sendfile`).
    NegFlag,
    /// A string, possibly absent.
    Str,
    /// A string from a fixed set of choices.
    Choice(&'static [&'static str]),
    /// A repeatable string option (`-b a -b b`), stored as a list.
    List,
    /// A Python object that only a config file can set (hooks, dicts, classes).
    Python,
}

/// A parsed setting value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
    /// Set from the config file to a Python object; the text is its repr, for printing.
    Python(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::Str(s) => write!(f, "{s}"),
            Value::List(l) => write!(f, "{l:?}"),
            Value::Python(r) => f.write_str(r),
        }
    }
}

/// One entry of the registry.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    /// CLI flags, e.g. `["-b", "--bind"]`; empty for config-file-only settings.
    pub flags: &'static [&'static str],
    pub metavar: &'static str,
    pub kind: Kind,
    /// The default, written as it would be on the command line ("" = None / empty).
    pub default: &'static str,
    pub section: &'static str,
    pub doc: &'static str,
}

/// A setting that could not be applied; the message names the setting and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("Invalid value for {name}: {value:?}: {why}")]
    Invalid { name: String, value: String, why: String },
    /// A well-formed value the setting refuses (an integer below its minimum): Gunicorn
    /// reports these after parsing the command line, with exit code 1, where a value of
    /// the wrong type is argparse's exit code 2.
    #[error("Invalid value for {name}: {value:?}: {why}")]
    OutOfRange { name: String, value: String, why: String },
    #[error("Unknown setting {name:?}{}", did_you_mean.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    Unknown { name: String, did_you_mean: Option<String> },
    #[error("{0}")]
    Usage(String),
}

/// Where a value came from (lowest precedence first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    ConfigFile,
    EnvArgs,
    CommandLine,
}

impl Def {
    /// Parses a value written as text (CLI, env args, the default column).
    pub fn parse(&self, text: &str) -> Result<Value, SettingError> {
        let invalid = |why: String| SettingError::Invalid {
            name: self.name.to_string(),
            value: text.to_string(),
            why,
        };
        match self.kind {
            Kind::Int { min } => {
                let n: i64 = text.trim().parse().map_err(|_| invalid("not an integer".into()))?;
                if n < min {
                    return Err(SettingError::OutOfRange {
                        name: self.name.to_string(),
                        value: text.to_string(),
                        why: format!("must be at least {min}"),
                    });
                }
                Ok(Value::Int(n))
            }
            Kind::AutoInt => parse_auto_int(text)
                .map(Value::Int)
                .ok_or_else(|| invalid("not a non-negative integer".into())),
            Kind::Flag | Kind::NegFlag => parse_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| invalid("not a boolean".into())),
            // Gunicorn's validate_string strips the value.
            Kind::Str | Kind::Python if text.trim().is_empty() => Ok(Value::None),
            Kind::Str | Kind::Python => Ok(Value::Str(text.trim().to_string())),
            Kind::Choice(choices) => {
                let text = text.trim();
                // Gunicorn 27's boolean spellings of its on/off choices (the form older
                // configs used): `proxy_protocol = True` is `auto`.
                let named = choices.iter().any(|c| c.eq_ignore_ascii_case(text));
                let text = match (parse_bool(text), choices) {
                    _ if named => text,
                    (Some(true), c) if c.contains(&"v1") => "auto",
                    (Some(true), c) if c.contains(&"prior-knowledge") => "prior-knowledge",
                    (Some(false), c) if c.contains(&"off") => "off",
                    _ => text,
                };
                if let Some(c) = choices.iter().find(|c| c.eq_ignore_ascii_case(text)) {
                    Ok(Value::Str(c.to_string()))
                } else {
                    Err(invalid(format!("must be one of {}", choices.join(", "))))
                }
            }
            Kind::List if text.is_empty() => Ok(Value::List(Vec::new())),
            Kind::List => Ok(Value::List(vec![text.to_string()])),
        }
    }

    pub fn default_value(&self) -> Value {
        match self.kind {
            Kind::Flag if self.default.is_empty() => Value::Bool(false),
            Kind::NegFlag if self.default.is_empty() => Value::Bool(true),
            // The registry's defaults are covered by a unit test, so this cannot fail at run time.
            _ => self.parse(self.default).unwrap_or(Value::None),
        }
    }

    /// The flag used in messages: the long one when there is one.
    pub fn flag(&self) -> Option<&'static str> {
        self.flags
            .iter()
            .copied()
            .find(|f| f.starts_with("--"))
            .or_else(|| self.flags.first().copied())
    }
}

/// Gunicorn's `auto_int`: decimal, `0o`/`0x`/`0b` prefixes, or a leading 0 meaning octal.
pub fn parse_auto_int(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let n = if let Some(r) = t.strip_prefix("0o") {
        i64::from_str_radix(r, 8).ok()?
    } else if let Some(r) = t.strip_prefix("0x") {
        i64::from_str_radix(r, 16).ok()?
    } else if let Some(r) = t.strip_prefix("0b") {
        i64::from_str_radix(r, 2).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse().ok()?
    };
    (n >= 0).then_some(n)
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

pub fn lookup(name: &str) -> Option<&'static Def> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// The closest registry name, for "did you mean" messages.
pub fn suggest(name: &str) -> Option<String> {
    nearest(name).filter(|(_, dist)| *dist <= 3).map(|(n, _)| n.to_string())
}

/// The registry name closest to `name`, and its edit distance.
pub fn nearest(name: &str) -> Option<(&'static str, usize)> {
    REGISTRY
        .iter()
        .map(|d| (d.name, strsim(name, d.name)))
        .min_by_key(|(_, dist)| *dist)
}

/// Levenshtein distance; the registry is small, so the quadratic cost is irrelevant.
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The resolved settings, with the source of each value.
#[derive(Debug, Clone)]
pub struct Settings {
    values: HashMap<&'static str, (Value, Source)>,
    /// The positional `APP_MODULE` arguments.
    pub app_uri: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

impl Settings {
    pub fn new() -> Self {
        let values = REGISTRY
            .iter()
            .map(|d| (d.name, (d.default_value(), Source::Default)))
            .collect();
        Self { values, app_uri: None }
    }

    /// Defaults that Gunicorn derives from the process environment.
    pub fn apply_env_defaults(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), SettingError> {
        if let Some(port) = env("PORT").filter(|p| !p.is_empty()) {
            self.values
                .insert("bind", (Value::List(vec![format!("0.0.0.0:{port}")]), Source::Default));
        }
        if let Some(n) = env("WEB_CONCURRENCY").filter(|p| !p.is_empty()) {
            let v = lookup_def("workers")?.parse(&n)?;
            self.values.insert("workers", (v, Source::Default));
        }
        // Set but empty trusts no proxy, as in Gunicorn (an empty list).
        if let Some(ips) = env("FORWARDED_ALLOW_IPS") {
            self.values
                .insert("forwarded_allow_ips", (Value::Str(ips), Source::Default));
        }
        // Gunicorn's dynamic defaults: the current user and group, and the start directory.
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        self.values
            .insert("user", (Value::Str(uid.to_string()), Source::Default));
        self.values
            .insert("group", (Value::Str(gid.to_string()), Source::Default));
        if let Some(cwd) = start_dir(env("PWD")) {
            self.values.insert("chdir", (Value::Str(cwd), Source::Default));
        }
        if let Some(s) = env("SENDFILE") {
            let on = matches!(s.to_ascii_lowercase().as_str(), "y" | "1" | "yes" | "true");
            self.values.insert("sendfile", (Value::Bool(on), Source::Default));
        }
        Ok(())
    }

    /// Sets a value if `source` is at least as strong as the one already there.
    pub fn set(&mut self, name: &str, value: Value, source: Source) -> Result<(), SettingError> {
        let def = lookup_def(name)?;
        if let Some((_, old)) = self.values.get(def.name) {
            if *old > source {
                return Ok(());
            }
        }
        self.values.insert(def.name, (value, source));
        Ok(())
    }

    pub fn get(&self, name: &str) -> &Value {
        debug_assert!(lookup(name).is_some(), "unknown setting {name}");
        self.values.get(name).map_or(&Value::None, |(v, _)| v)
    }

    pub fn source(&self, name: &str) -> Source {
        self.values.get(name).map_or(Source::Default, |(_, s)| *s)
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(i) => *i,
            Value::Bool(b) => i64::from(*b),
            _ => 0,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Python(_) => true,
            Value::None => false,
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Value::List(l) => l.clone(),
            Value::Str(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// A comma-separated setting (`--pythonpath a,b`), split and trimmed.
    pub fn comma_list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `  name: value` lines in registry order, for the master's debug log (Gunicorn's
    /// "Current configuration:").
    pub fn render_current(&self) -> String {
        REGISTRY
            .iter()
            .map(|d| format!("  {}: {}", d.name, python_display(d, self.get(d.name))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `name = value` lines sorted by name, as `--print-config` shows them.
    pub fn render(&self) -> String {
        let mut names: Vec<&&str> = self.values.keys().collect();
        names.sort();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        for n in names {
            let value = self.get(n);
            let shown = match (*n, value) {
                // Gunicorn's default is None; `SENDFILE` and `--no-sendfile` apply later.
                ("sendfile", _) if self.source(n) == Source::Default => "None".to_string(),
                _ => lookup(n).map_or_else(|| value.to_string(), |d| python_display(d, value)),
            };
            out.push_str(&format!("{:width$} = {}\n", n, shown));
        }
        out
    }

    /// Parses command-line style arguments (`argv` without the program name) and applies
    /// the options given explicitly. Returns what the caller must act on at once.
    pub fn apply_args(&mut self, args: &[OsString], source: Source) -> Result<ArgsOutcome, SettingError> {
        let matches = match cli_command()
            .try_get_matches_from(std::iter::once(OsString::from("ferricorn")).chain(args.iter().cloned()))
        {
            Ok(m) => m,
            Err(e) => {
                return match e.kind() {
                    clap::error::ErrorKind::DisplayHelp => Ok(ArgsOutcome::Help(e.render().to_string())),
                    clap::error::ErrorKind::DisplayVersion => Ok(ArgsOutcome::Version),
                    _ => {
                        // One line, like argparse: clap's first line without its prefix.
                        let text = e.render().to_string();
                        let first = text.lines().next().unwrap_or("invalid arguments");
                        let first = first.strip_prefix("error: ").unwrap_or(first);
                        Err(SettingError::Usage(format!("{first} (see --help)")))
                    }
                };
            }
        };
        if matches.get_flag("version") {
            return Ok(ArgsOutcome::Version);
        }
        for def in REGISTRY.iter().filter(|d| !d.flags.is_empty()) {
            if matches.value_source(def.name) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let value = match def.kind {
                Kind::Flag => Value::Bool(true),
                Kind::NegFlag => Value::Bool(false),
                Kind::List => Value::List(
                    matches
                        .get_many::<String>(def.name)
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default(),
                ),
                _ => match matches.get_one::<String>(def.name) {
                    // argparse's words for an integer option given something else.
                    Some(text) => def.parse(text).map_err(|e| match (e, def.kind) {
                        (SettingError::Invalid { .. }, Kind::Int { .. }) => SettingError::Usage(format!(
                            "argument {}: invalid int value: '{text}'",
                            def.flags.join("/")
                        )),
                        (e, _) => e,
                    })?,
                    None => continue,
                },
            };
            self.set(def.name, value, source)?;
        }
        if let Some(app) = matches.get_one::<String>("APP_MODULE") {
            self.app_uri = Some(app.clone());
        }
        Ok(ArgsOutcome::Run)
    }
}

/// The working directory as Gunicorn reports it: `$PWD` when it names the same directory
/// as `getcwd()` (so symlinked deploy directories keep their name), else `getcwd()`.
fn start_dir(pwd: Option<String>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let cwd = std::env::current_dir().ok()?;
    if let (Some(pwd), Ok(a)) = (pwd, std::fs::metadata(&cwd)) {
        if let Ok(b) = std::fs::metadata(&pwd) {
            if a.dev() == b.dev() && a.ino() == b.ino() {
                return Some(pwd);
            }
        }
    }
    Some(cwd.display().to_string())
}

/// A value as Gunicorn's `--print-config` shows it (Python's `str()` of the setting).
pub fn python_display(def: &Def, value: &Value) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    match value {
        Value::List(items) => format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")),
        Value::None if def.section.ends_with("Hooks") => {
            // Gunicorn shows its default hook objects as `<OnStarting.on_starting()>`.
            let camel: String = def
                .name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            // A few of Gunicorn's class names do not follow the setting's name.
            let class = match def.name {
                "nworkers_changed" => "NumWorkersChanged".to_string(),
                "post_fork" => "Postfork".to_string(),
                "pre_fork" => "Prefork".to_string(),
                "ssl_context" => "NewSSLContext".to_string(),
                _ => camel,
            };
            format!("<{class}.{}()>", def.name)
        }
        Value::None if def.name == "logconfig_dict" => "{}".into(),
        // Gunicorn's string defaults that are empty rather than None.
        Value::None if matches!(def.name, "dogstatsd_tags" | "statsd_prefix" | "root_path") => String::new(),
        // Gunicorn's default: the effective user and group.
        // SAFETY: geteuid/getegid cannot fail.
        Value::None if def.name == "user" => unsafe { libc::geteuid() }.to_string(),
        Value::None if def.name == "group" => unsafe { libc::getegid() }.to_string(),
        Value::None if def.name == "control_socket" => {
            format!("{}/.gunicorn/gunicorn.ctl", std::env::var("HOME").unwrap_or_default())
        }
        // Comma-separated on the command line, lists once Gunicorn has validated them.
        Value::Str(s)
            if matches!(
                def.name,
                "forwarded_allow_ips" | "proxy_allow_ips" | "uwsgi_allow_ips" | "forwarder_headers" | "http_protocols"
            ) =>
        {
            let items: Vec<String> = s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(&quote)
                .collect();
            format!("[{}]", items.join(", "))
        }
        Value::Str(s) if def.name == "statsd_host" && !s.starts_with("unix:") => {
            // Gunicorn keeps a parsed (host, port) address.
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (h, p),
                _ => (s.as_str(), "8125"),
            };
            format!(
                "({}, {port})",
                quote(host.trim_start_matches('[').trim_end_matches(']'))
            )
        }
        Value::None if def.name == "secure_scheme_headers" => {
            "{'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': 'https', 'X-FORWARDED-SSL': 'on'}".into()
        }
        other => other.to_string(),
    }
}

/// What parsing the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsOutcome {
    Run,
    Help(String),
    Version,
}

fn lookup_def(name: &str) -> Result<&'static Def, SettingError> {
    lookup(name).ok_or_else(|| SettingError::Unknown {
        name: name.to_string(),
        did_you_mean: suggest(name),
    })
}

/// The clap command, derived from the registry.
pub fn cli_command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let mut cmd = Command::new("ferricorn")
        .about("A Rust HTTP server for Python WSGI and ASGI applications, compatible with Gunicorn.")
        .override_usage("ferricorn [OPTIONS] [APP_MODULE]")
        // argparse: a repeated option's last value wins (`-w 2 -w 5` is 5).
        .args_override_self(true)
        // argparse's allow_abbrev: `--timeo 5` is `--timeout 5` when no other flag
        // starts with `--timeo`.
        .infer_long_args(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("show program's version number and exit"),
        )
        .arg(Arg::new("APP_MODULE").help("the application, as module:callable"));
    for def in REGISTRY.iter().filter(|d| !d.flags.is_empty()) {
        let mut arg = Arg::new(def.name)
            .help(first_sentence(def.doc))
            .help_heading(def.section);
        let mut longs = def.flags.iter().filter_map(|f| f.strip_prefix("--"));
        if let Some(long) = longs.next() {
            arg = arg.long(long);
        }
        for alias in longs {
            arg = arg.visible_alias(alias);
        }
        if let Some(short) = def.flags.iter().find(|f| f.len() == 2 && !f.starts_with("--")) {
            arg = arg.short(short.chars().nth(1).unwrap_or('?'));
        }
        arg = match def.kind {
            Kind::Flag => arg.action(ArgAction::SetTrue),
            Kind::NegFlag => arg.action(ArgAction::SetFalse),
            Kind::List => arg.action(ArgAction::Append).value_name(def.metavar),
            Kind::Choice(c) if def.name == "proxy_protocol" => arg
                .action(ArgAction::Set)
                .num_args(0..=1)
                .default_missing_value("auto")
                .value_name(def.metavar)
                .hide_possible_values(c.is_empty()),
            _ => arg
                .action(ArgAction::Set)
                .value_name(def.metavar)
                .allow_hyphen_values(true),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

fn first_sentence(doc: &'static str) -> &'static str {
    doc.split_once(". ").map_or(doc, |(s, _)| s)
}

/// The settings reference in Markdown (`docs/settings.md` is generated from this).
pub fn markdown_reference() -> String {
    let mut out =
        String::from("# Settings\n\nGenerated from the settings registry by `make docs`; do not edit by hand. Settings marked\n\"ferricorn:\" are ferricorn additions; every other name is Gunicorn's.\n");
    let mut section = "";
    for d in REGISTRY.iter() {
        if d.section != section {
            section = d.section;
            out.push_str(&format!("\n## {section}\n"));
        }
        let flags = if d.flags.is_empty() {
            "config file only".to_string()
        } else {
            format!("`{}`", d.flags.join("`, `"))
        };
        let default = if d.default.is_empty() {
            "None".to_string()
        } else {
            format!("`{}`", d.default)
        };
        out.push_str(&format!(
            "\n### `{}`\n\n{} · default {}\n\n{}\n",
            d.name, flags, default, d.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn values_are_read_as_gunicorn_reads_them() {
        let parse = |name: &str, text: &str| lookup(name).unwrap().parse(text).unwrap();
        let s = |v: &str| Value::Str(v.to_string());
        // validate_string strips.
        assert_eq!(parse("worker_class", " sync \n"), s("sync"));
        assert_eq!(parse("loglevel", " warning "), s("warning"));
        assert_eq!(parse("header_map", "drop\n"), s("drop"));
        // Boolean spellings of on/off choices (configs written for Gunicorn < 27).
        for (text, want) in [
            ("True", "auto"),
            ("1", "auto"),
            ("false", "off"),
            ("0", "off"),
            ("v1", "v1"),
        ] {
            assert_eq!(parse("proxy_protocol", text), s(want), "{text}");
        }
        assert_eq!(parse("http2_cleartext", "true"), s("prior-knowledge"));
        assert_eq!(parse("asgi_lifespan", "on"), s("on"));
        assert_eq!(parse("asgi_lifespan", "off"), s("off"));
    }

    #[test]
    fn empty_forwarded_allow_ips_trusts_nobody() {
        let mut st = Settings::default();
        st.apply_env_defaults(&|k| (k == "FORWARDED_ALLOW_IPS").then(String::new))
            .unwrap();
        assert_eq!(st.str("forwarded_allow_ips").unwrap_or(""), "");
    }

    #[test]
    fn every_default_parses_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in REGISTRY.iter() {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            if !matches!(d.kind, Kind::Flag | Kind::NegFlag) {
                d.parse(d.default).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            }
        }
        cli_command().debug_assert();
    }

    #[test]
    fn cli_and_precedence() {
        let mut s = Settings::new();
        assert_eq!(s.list("bind"), vec!["127.0.0.1:8000"]);
        s.set("workers", Value::Int(3), Source::ConfigFile).unwrap();
        s.apply_args(
            &args(&["-w", "5", "-b", "a:1", "--bind", "b:2", "--preload", "app:x"]),
            Source::EnvArgs,
        )
        .unwrap();
        assert_eq!(s.int("workers"), 5);
        s.set("workers", Value::Int(9), Source::ConfigFile).unwrap();
        assert_eq!(s.int("workers"), 5, "config file must not override env args");
        assert_eq!(s.list("bind"), vec!["a:1", "b:2"]);
        assert!(s.bool("preload_app"));
        assert_eq!(s.app_uri.as_deref(), Some("app:x"));
        s.apply_args(
            &args(&["--limit-request-field_size", "100", "--no-sendfile", "-m", "0o22"]),
            Source::CommandLine,
        )
        .unwrap();
        assert_eq!(s.int("limit_request_field_size"), 100);
        assert!(!s.bool("sendfile"));
        assert_eq!(s.int("umask"), 0o22);
    }

    #[test]
    fn errors_name_the_setting() {
        let mut s = Settings::new();
        let e = s.apply_args(&args(&["-w", "lots"]), Source::CommandLine).unwrap_err();
        assert!(
            e.to_string().contains("workers") && e.to_string().contains("lots"),
            "{e}"
        );
        let e = s.set("worker", Value::Int(1), Source::ConfigFile).unwrap_err();
        assert!(e.to_string().contains("did you mean \"workers\""), "{e}");
        assert!(matches!(
            s.apply_args(&args(&["--help"]), Source::CommandLine).unwrap(),
            ArgsOutcome::Help(_)
        ));
        assert_eq!(
            s.apply_args(&args(&["--version"]), Source::CommandLine).unwrap(),
            ArgsOutcome::Version
        );
    }

    #[test]
    fn env_defaults() {
        let mut s = Settings::new();
        s.apply_env_defaults(&|k| match k {
            "PORT" => Some("9999".into()),
            "WEB_CONCURRENCY" => Some("4".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.list("bind"), vec!["0.0.0.0:9999"]);
        assert_eq!(s.int("workers"), 4);
    }

    #[test]
    fn auto_int() {
        assert_eq!(parse_auto_int("022"), Some(0o22));
        assert_eq!(parse_auto_int("0x12"), Some(0x12));
        assert_eq!(parse_auto_int("18"), Some(18));
        assert_eq!(parse_auto_int("-1"), None);
    }
}
