//! Config files. Every role reads, lowest first: its flags' defaults, a
//! TOML file (`--config FILE`), `LEDGERMESH_…` environment variables, then
//! the flags on the command line. Every flag has a file key: its long name
//! with `_` for `-` (`--max-streams` is `max_streams`); a flag that may be
//! repeated takes an array. The layers are merged by figment and handed to
//! clap as flags, so a value from a file is parsed and checked exactly as
//! the same flag would be, and an error names the key and the file.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The subcommands that take `--config`, and the `role` values a file may
/// name for each (`provider` is `provide`'s, and so on).
const ROLES: &[(&str, &[&str])] = &[
    ("relay", &["relay"]),
    ("provide", &["provide", "provider"]),
    ("consume", &["consume", "consumer"]),
    ("nc", &["nc"]),
    ("echo", &["echo"]),
];

/// Environment variables that are not a flag's value: the ledger key
/// itself (not its file), the config file, test fault injection.
const ENV_NOT_FLAGS: &[&str] = &["ledger_key", "config", "failpoint"];

/// File keys whose values are never printed.
fn is_secret(key: &str) -> bool {
    ["token", "secret", "password"]
        .iter()
        .any(|s| key.contains(s))
}

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The flag's default.
    Default,
    /// The config file.
    File,
    /// A `LEDGERMESH_…` environment variable.
    Env,
    /// The command line.
    Flag,
}

/// A command line with the config file and environment folded in.
#[derive(Debug)]
pub struct Layered {
    /// The command line to parse: the original one plus a `--key=value`
    /// for each setting the file or the environment gave and no flag did.
    pub argv: Vec<OsString>,
    /// The subcommand, when it takes `--config`.
    pub role: Option<&'static str>,
    /// Which keys the file and the environment set.
    pub origins: BTreeMap<String, Origin>,
}

/// The settings of the config file (if any) and of the `LEDGERMESH_`
/// variables clap does not read itself, by key, with where each came from.
fn read_settings(
    config: Option<&std::path::Path>,
    args: &BTreeMap<String, &clap::Arg>,
    file_name: &str,
) -> anyhow::Result<(Figment, BTreeMap<String, figment::value::Value>)> {
    let mut figment = Figment::new();
    if let Some(path) = config {
        check_readable(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    // Environment variables clap reads itself (`env = …` on the flag) stay
    // clap's; the others join here.
    let env_keys: Vec<&str> = args
        .iter()
        .filter(|(k, a)| a.get_env().is_none() && !ENV_NOT_FLAGS.contains(&k.as_str()))
        .map(|(k, _)| k.as_str())
        .collect();
    figment = figment.merge(Env::prefixed("LEDGERMESH_").only(&env_keys));
    let settings: BTreeMap<String, figment::value::Value> = figment
        .extract()
        .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
    Ok((figment, settings))
}

/// A lenient first parse of a role's command line: what it gives, and
/// where the config file is (required values may come from the file).
/// `None` for a command that is no role, or a line even this refuses.
fn parse_leniently(argv: &[OsString]) -> Option<(&'static str, clap::Command, clap::ArgMatches)> {
    let role = argv
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| ROLES.iter().find(|(r, _)| *r == a))
        .map(|(r, _)| *r)?;
    let lenient = crate::cli::Cli::command().mut_subcommand(role, |s| {
        s.mut_args(|a| {
            a.required(false)
                .required_unless_present(clap::builder::Resettable::<clap::Id>::Reset)
        })
    });
    let matches = lenient.clone().try_get_matches_from(argv).ok()?;
    let (_, sub_matches) = matches.subcommand()?;
    Some((role, lenient, sub_matches.clone()))
}

/// Folds `--config FILE` (or `$LEDGERMESH_CONFIG`) and the `LEDGERMESH_…`
/// environment into `argv`. A command line that does not parse is handed
/// back as it is, for clap to report.
pub fn layer(argv: Vec<OsString>) -> anyhow::Result<Layered> {
    let unchanged = |argv| Layered {
        argv,
        role: None,
        origins: BTreeMap::new(),
    };
    let Some((role, lenient, sub_matches)) = parse_leniently(&argv) else {
        return Ok(unchanged(argv));
    };
    let config = sub_matches.get_one::<PathBuf>("config").cloned();
    let sub = lenient
        .find_subcommand(role)
        .expect("the role is a subcommand")
        .clone();
    let mut out = Layered {
        argv,
        role: Some(role),
        origins: BTreeMap::new(),
    };
    // The flags by file key; hidden ones (test hooks) have none.
    let args: BTreeMap<String, &clap::Arg> = sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "config")
        .filter_map(|a| a.get_long().map(|l| (l.replace('-', "_"), a)))
        .filter(|(k, _)| k != "help")
        .collect();
    let file_name = config
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (figment, settings) = read_settings(config.as_deref(), &args, &file_name)?;
    // A file for another role is the first thing to say.
    if config.is_some() {
        check_role_key(&settings, role, &file_name)?;
    }
    for (key, value) in settings {
        let from_env = figment
            .find_metadata(&key)
            .is_some_and(|m| m.name.contains("environment"));
        let origin = if from_env { Origin::Env } else { Origin::File };
        let place = match origin {
            Origin::Env => format!("LEDGERMESH_{}", key.to_uppercase()),
            _ => format!("{file_name}: key `{key}`"),
        };
        if key == "role" && origin == Origin::File {
            continue;
        }
        let Some(arg) = args.get(&key) else {
            let known: Vec<&str> = args.keys().map(String::as_str).collect();
            anyhow::bail!(
                "{place}: unknown key for `ledgermesh {role}`; its keys are: {}",
                known.join(", ")
            );
        };
        // The command line wins, then clap's own environment variables.
        let given = sub_matches.value_source(arg.get_id().as_str());
        if matches!(
            given,
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue;
        }
        let tokens = tokens_of(&value, origin).ok_or_else(|| {
            anyhow::anyhow!("{place}: expected a string, number, boolean or an array of them")
        })?;
        out.argv
            .extend(as_flags(&lenient, role, arg, &place, &tokens)?);
        out.origins.insert(key, origin);
    }
    Ok(out)
}

/// A file's `role` key must name the role it is run as.
fn check_role_key(
    settings: &BTreeMap<String, figment::value::Value>,
    role: &str,
    file_name: &str,
) -> anyhow::Result<()> {
    let Some(named) = settings.get("role") else {
        return Ok(());
    };
    let named = named.as_str().unwrap_or_default();
    let fits = (ROLES.iter())
        .find(|(r, _)| *r == role)
        .is_some_and(|(_, names)| names.contains(&named));
    if !fits {
        anyhow::bail!(
            "{file_name}: key `role`: this file is for `{named}`, not `ledgermesh {role}` \
             (remove the key or run the role it names)"
        );
    }
    Ok(())
}

/// The flags a key's value `tokens` (at `place`) stands for: a switch, or
/// each value through the flag's own parser.
fn as_flags(
    lenient: &clap::Command,
    role: &str,
    arg: &clap::Arg,
    place: &str,
    tokens: &[String],
) -> anyhow::Result<Vec<OsString>> {
    let mut flags: Vec<OsString> = vec![];
    let long = arg.get_long().expect("keyed by long name");
    let flag_only = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    if flag_only {
        let on = match tokens {
            [t] if ["true", "1", "yes", "on"].contains(&t.as_str()) => true,
            [t] if ["false", "0", "no", "off"].contains(&t.as_str()) => false,
            _ => anyhow::bail!("{place}: expected true or false"),
        };
        if on {
            flags.push(format!("--{long}").into());
        }
    } else {
        let many = matches!(arg.get_action(), ArgAction::Append);
        if tokens.len() != 1 && !many {
            anyhow::bail!("{place}: takes one value, not {}", tokens.len());
        }
        for t in tokens {
            // The value alone, through the flag's own parser.
            lenient
                .clone()
                .try_get_matches_from(["ledgermesh", role, &format!("--{long}={t}")])
                .map_err(|e| {
                    let msg = e.to_string();
                    let msg = msg.trim().trim_start_matches("error: ");
                    let msg = msg.lines().next().unwrap_or_default().to_string();
                    anyhow::anyhow!("{place}: {msg}")
                })?;
            flags.push(format!("--{long}={t}").into());
        }
    }
    Ok(flags)
}

/// A config file must exist and be readable; say so before figment does
/// (it treats a missing file as empty).
fn check_readable(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("--config {}: cannot read it", path.display()))
}

/// A setting's values as command-line tokens.
fn tokens_of(value: &figment::value::Value, origin: Origin) -> Option<Vec<String>> {
    fn scalar(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let json = serde_json::to_value(value).ok()?;
    match &json {
        serde_json::Value::Array(items) => items.iter().map(scalar).collect(),
        // A list in one environment variable: comma-separated.
        serde_json::Value::String(s) if origin == Origin::Env && s.contains(',') => Some(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
        ),
        v => scalar(v).map(|s| vec![s]),
    }
}

/// What is accepted but will not do what a person likely means.
fn warnings(settings: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = vec![];
    if settings
        .get("ledger")
        .is_some_and(|l| l["value"] == "memory")
    {
        out.push(
            "ledger = \"memory\" lives inside this one process: nodes started as separate \
             processes never hear each other through it (and `status` shows no ledger peers); \
             use evm:RPC_URL@CONTRACT (`ledgermesh devchain` prints one)"
                .to_string(),
        );
    }
    out
}

/// The command line `config check` checks: the role a file names with
/// `--config FILE`, or the command given after `--` (with the file, when
/// given too).
fn check_argv(file: Option<PathBuf>, command: Vec<String>) -> anyhow::Result<Vec<OsString>> {
    let mut argv: Vec<OsString> = vec!["ledgermesh".into()];
    if command.is_empty() {
        let file = file.context("give a config file, or a command line after `--`")?;
        check_readable(&file)?;
        let text = std::fs::read_to_string(&file)?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let role = table
            .get("role")
            .and_then(|r| r.as_str())
            .with_context(|| {
                format!(
                    "{}: no `role` key; say which role the file is for: role = \"relay\" \
                     (or provide, consume, nc, echo)",
                    file.display()
                )
            })?;
        let sub = ROLES
            .iter()
            .find(|(_, names)| names.contains(&role))
            .map(|(r, _)| *r)
            .with_context(|| {
                format!(
                    "{}: key `role`: `{role}` is not a role (relay, provide, consume, nc, echo)",
                    file.display()
                )
            })?;
        argv.push(sub.into());
        argv.push("--config".into());
        argv.push(file.into_os_string());
    } else {
        let mut command = command.into_iter();
        // `-- ledgermesh relay …` and `-- relay …` both work.
        let first = command.next().unwrap_or_default();
        if first != "ledgermesh" && !first.ends_with("/ledgermesh") {
            argv.push(first.into());
        }
        argv.extend(command.map(OsString::from));
        if let Some(file) = file {
            argv.push("--config".into());
            argv.push(file.into_os_string());
        }
    }
    Ok(argv)
}

/// Each setting of `sub` as parsed, with where it came from: as JSON, and
/// as rows to print. Secrets are shown redacted.
#[allow(clippy::type_complexity)]
fn settings_of(
    sub: &clap::Command,
    sub_matches: &clap::ArgMatches,
    layered: &Layered,
) -> (
    serde_json::Map<String, serde_json::Value>,
    Vec<(String, String, Origin)>,
) {
    let mut settings = serde_json::Map::new();
    let mut rows = Vec::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || long == "help" {
            continue;
        }
        let key = long.replace('-', "_");
        let origin = match sub_matches.value_source(id) {
            _ if layered.origins.contains_key(&key) => layered.origins[&key],
            None => continue,
            Some(ValueSource::DefaultValue) => Origin::Default,
            Some(ValueSource::EnvVariable) => Origin::Env,
            Some(_) => *layered.origins.get(&key).unwrap_or(&Origin::Flag),
        };
        let values: Vec<String> = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                vec![sub_matches.get_flag(id).to_string()]
            }
            _ => sub_matches
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default(),
        };
        let shown = if is_secret(&key) {
            vec!["[redacted]".to_string()]
        } else {
            values
        };
        settings.insert(
            key.clone(),
            serde_json::json!({"value": if shown.len() == 1 && !matches!(arg.get_action(), ArgAction::Append) { serde_json::json!(shown[0]) } else { serde_json::json!(shown) }, "from": origin}),
        );
        rows.push((key, shown.join(" "), origin));
    }
    (settings, rows)
}

/// `ledgermesh config check`: checks a config file (its `role` key says
/// for which role) or a whole command line, and prints the effective
/// settings with where each came from. Secrets are redacted.
pub fn check(file: Option<PathBuf>, command: Vec<String>, json: bool) -> anyhow::Result<i32> {
    let layered = layer(check_argv(file, command)?)?;
    let Some(role) = layered.role else {
        // A command without a config file (devchain, keygen, …): its
        // command line is checked as clap parses it.
        let matches = crate::cli::Cli::command()
            .try_get_matches_from(&layered.argv)
            .map_err(|e| {
                anyhow::anyhow!("{}", e.to_string().trim_start_matches("error: ").trim())
            })?;
        let name = matches.subcommand_name().unwrap_or_default().to_string();
        if json {
            ledgermesh_node::events::print_json_line(&serde_json::json!({
                "ok": true,
                "role": name,
                "settings": {},
            }));
        } else {
            println!("ok: `ledgermesh {name}` accepts this command line (it takes no config file)");
        }
        return Ok(0);
    };
    let matches = crate::cli::Cli::command()
        .try_get_matches_from(&layered.argv)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_start_matches("error: ").trim()))?;
    let (_, sub_matches) = matches.subcommand().expect("a role was parsed");
    let cmd = crate::cli::Cli::command();
    let sub = cmd.find_subcommand(role).expect("a role");
    let (settings, rows) = settings_of(sub, sub_matches, &layered);
    let warnings = warnings(&settings);
    if json {
        ledgermesh_node::events::print_json_line(&serde_json::json!({
            "ok": true,
            "role": role,
            "settings": settings,
            "warnings": warnings,
        }));
    } else {
        println!("ok: `ledgermesh {role}` accepts these settings");
        for w in &warnings {
            println!("warning: {w}");
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (key, value, origin) in rows {
            let origin = serde_json::to_value(origin).expect("an origin serializes");
            println!(
                "  {key:<width$}  {value}  ({})",
                origin.as_str().unwrap_or_default()
            );
        }
    }
    Ok(0)
}
