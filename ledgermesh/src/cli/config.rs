//! Config files. Every role reads, lowest first: its flags' defaults, a
//! TOML file (`--config FILE`), `LEDGERMESH_…` environment variables, then
//! the flags on the command line. Every flag has a file key: its long name
//! with `_` for `-` (`--max-streams` is `max_streams`); a flag that may be
//! repeated takes an array.
//!
//! ```text
//!   argv ──clap (lenient: the file may give what a flag did not)──► RoleArgs (typed)
//!   file ─┐                                       each value checked by its flag's parser
//!   env  ─┴─figment─► key → value ──────────────────────────────┐
//!   figment: RoleArgs ◄─ file and env values under the flags ◄──┘ ──► check_together
//! ```
//!
//! The role structs (`args.rs`) are clap's and serde's at once; `conf.rs`
//! says how each field is written. `config check` prints the merged
//! struct, and `config sample` writes a documented file from its defaults
//! and the flags' help.

use super::{Cli, Command, VpnArgs};
use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
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
    ("vpn", &["vpn"]),
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

/// A command line read with its config file and environment.
#[derive(Debug)]
pub struct Loaded {
    /// The command, a role's settings merged from every layer.
    pub cli: Cli,
    /// The subcommand, when it takes `--config`.
    pub role: Option<&'static str>,
    /// The subcommand's name.
    pub name: String,
    /// Which keys the file and the environment set.
    pub origins: BTreeMap<String, Origin>,
    /// The role's command line as parsed (where the other values came from).
    matches: Option<clap::ArgMatches>,
}

/// Why a command line was not read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line itself (clap says how; `--help` is one too).
    #[error("{0}")]
    Clap(#[from] clap::Error),
    /// The config file or the environment.
    #[error("{0:#}")]
    Settings(#[from] anyhow::Error),
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

/// A lenient first parse of a role's command line (required values may
/// come from the file): the role, the lenient command, the whole line's
/// matches. `None` for a command that is no role.
fn parse_leniently(
    argv: &[OsString],
) -> Option<(
    &'static str,
    clap::Command,
    Result<clap::ArgMatches, clap::Error>,
)> {
    let role = argv
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| ROLES.iter().find(|(r, _)| *r == a))
        .map(|(r, _)| *r)?;
    let lenient = Cli::command().mut_subcommand(role, |s| {
        s.mut_args(|a| match a.get_long() {
            // A flag (a file key) may come from the file; a positional may not.
            Some(_) => a
                .required(false)
                .required_unless_present(clap::builder::Resettable::<clap::Id>::Reset),
            None => a,
        })
    });
    let matches = lenient.clone().try_get_matches_from(argv);
    Some((role, lenient, matches))
}

/// The file keys of a role: its flags by long name with `_` for `-`;
/// hidden ones (test hooks) and `--config` itself have none.
fn file_keys(sub: &clap::Command) -> BTreeMap<String, &clap::Arg> {
    sub.get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "config")
        .filter_map(|a| a.get_long().map(|l| (l.replace('-', "_"), a)))
        .filter(|(k, _)| k != "help")
        .collect()
}

/// Reads `argv`, and for a role its config file (`--config FILE` or
/// `$LEDGERMESH_CONFIG`) and the `LEDGERMESH_…` environment, into the
/// command's typed settings: lowest first the defaults, the file, the
/// environment, the flags. Each value from the file or the environment is
/// checked with its flag's own parser first, so an error names the key,
/// the file and what the flag would have said.
pub fn load(argv: &[OsString]) -> Result<Loaded, LoadError> {
    let Some((role, lenient, matches)) = parse_leniently(argv) else {
        let matches = Cli::command().try_get_matches_from(argv)?;
        return Ok(Loaded {
            cli: Cli::from_arg_matches(&matches)?,
            role: None,
            name: matches.subcommand_name().unwrap_or_default().to_string(),
            origins: BTreeMap::new(),
            matches: None,
        });
    };
    // What even the lenient parse refuses, clap reports as it would.
    let matches = matches.or_else(|_| Cli::command().try_get_matches_from(argv))?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let (_, sub_matches) = matches.subcommand().expect("a role is a subcommand");
    let config = sub_matches.get_one::<PathBuf>("config").cloned();
    let sub = lenient
        .find_subcommand(role)
        .expect("the role is a subcommand");
    let args = file_keys(sub);
    let (layer, origins) = layer_of(role, &lenient, sub_matches, &args, config.as_deref())?;
    cli.command = with_layer(cli.command, layer)?;
    check_together(&cli.command)?;
    Ok(Loaded {
        cli,
        role: Some(role),
        name: role.to_string(),
        origins,
        matches: Some(sub_matches.clone()),
    })
}

/// The values the file and the environment give for `role`'s keys that
/// the command line did not, each checked with its flag's parser, and
/// where each came from.
fn layer_of(
    role: &str,
    lenient: &clap::Command,
    sub_matches: &clap::ArgMatches,
    args: &BTreeMap<String, &clap::Arg>,
    config: Option<&Path>,
) -> anyhow::Result<(figment::value::Dict, BTreeMap<String, Origin>)> {
    let file_name = config.map(|p| p.display().to_string()).unwrap_or_default();
    let (figment, settings) = read_settings(config, args, &file_name)?;
    // A file for another role is the first thing to say.
    if config.is_some() {
        check_role_key(&settings, role, &file_name)?;
    }
    // One value alone is checked with nothing else required (nc's stream).
    let one_value = lenient
        .clone()
        .mut_subcommand(role, |s| s.mut_args(|a| a.required(false)));
    let mut origins = BTreeMap::new();
    let mut layer = figment::value::Dict::new();
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
            anyhow::anyhow!(
                "{place}: expected a string, number, boolean or an array of them \
                 (or, for `peer`, tables with `id` and `allowed_ips`)"
            )
        })?;
        layer.insert(
            key.clone(),
            checked(&one_value, role, arg, &place, &tokens)?,
        );
        origins.insert(key, origin);
    }
    Ok((layer, origins))
}

/// The role's typed settings with `layer` (file and environment values,
/// already checked) over what the command line gave.
fn with_layer(command: Command, layer: figment::value::Dict) -> anyhow::Result<Command> {
    fn merged<T: Serialize + DeserializeOwned>(
        typed: T,
        layer: figment::value::Dict,
    ) -> anyhow::Result<T> {
        Figment::from(Serialized::defaults(typed))
            .merge(Serialized::defaults(layer))
            .extract()
            .map_err(|e| {
                anyhow::anyhow!("the settings cannot be read back (a path that is not UTF-8?): {e}")
            })
    }
    if layer.is_empty() {
        return Ok(command);
    }
    Ok(match command {
        Command::Relay(a) => Command::Relay(merged(a, layer)?),
        Command::Provide(a) => Command::Provide(merged(a, layer)?),
        Command::Echo(a) => Command::Echo(merged(a, layer)?),
        Command::Consume(a) => Command::Consume(merged(a, layer)?),
        Command::Nc(a) => Command::Nc(merged(a, layer)?),
        Command::Vpn(a) => Command::Vpn(VpnArgs {
            command: a.command,
            run: Box::new(merged(*a.run, layer)?),
        }),
        other => other,
    })
}

/// What clap checks of a whole command line, checked again once the file
/// may have given what the line did not: the values a role needs, and
/// the flags that exclude each other.
fn check_together(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Consume(a) if a.want.is_empty() => {
            anyhow::bail!("`ledgermesh consume` needs a stream to buy: --want (key `want`)")
        }
        Command::Consume(a) if a.out.is_none() && a.listen_local.is_none() => anyhow::bail!(
            "`ledgermesh consume` needs somewhere to put it: --out or --listen-local \
             (key `out` or `listen_local`)"
        ),
        Command::Relay(a) if a.open && a.allow.is_some() => anyhow::bail!(
            "--open (key `open`) and --allow (key `allow`) exclude each other: \
             open lifts the limits for everyone, allow for the peers it lists"
        ),
        Command::Vpn(a) => check_exit(&a.run),
        _ => Ok(()),
    }
}

/// The exit's flags that need `--exit PEER_ID`, and the one that needs
/// `--exit` alone.
fn check_exit(a: &super::VpnRunArgs) -> anyhow::Result<()> {
    use ledgermesh_node::roles::vpn::ExitFlag;
    let via = matches!(a.exit, Some(ExitFlag::Via(_)));
    let client_only = [
        ("--kill-switch (key `kill_switch`)", a.kill_switch),
        (
            "--exit-routes (key `exit_routes`)",
            !a.exit_routes.is_empty(),
        ),
    ];
    for (flag, given) in client_only {
        if given && !via {
            anyhow::bail!("{flag} needs --exit PEER_ID: the exit to send traffic through");
        }
    }
    let client_pays = [
        ("--deposit (key `deposit`)", a.deposit.is_some()),
        (
            "--max-price-per-mib (key `max_price_per_mib`)",
            a.max_price_per_mib.is_some(),
        ),
    ];
    for (flag, given) in client_pays {
        if given && !via {
            anyhow::bail!("{flag} needs --exit PEER_ID: it pays the exit traffic goes through");
        }
    }
    if a.price.price_per_hour > 0 {
        anyhow::bail!("--price-per-hour (key `price_per_hour`): an exit charges per MiB only");
    }
    if a.price.priced() && a.exit != Some(ExitFlag::Gateway) {
        anyhow::bail!(
            "--price-per-mib (key `price_per_mib`) needs --exit alone: it prices this exit"
        );
    }
    if a.exit_lan && a.exit != Some(ExitFlag::Gateway) {
        anyhow::bail!(
            "--exit-lan (key `exit_lan`) needs --exit alone: it opens this exit's LAN to its peers"
        );
    }
    Ok(())
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

/// A key's value `tokens` (at `place`) checked with the flag's own parser,
/// as the value the typed settings read: a switch's boolean, or its
/// value(s) as typed.
fn checked(
    one_value: &clap::Command,
    role: &str,
    arg: &clap::Arg,
    place: &str,
    tokens: &[String],
) -> anyhow::Result<figment::value::Value> {
    use figment::value::Value;
    let long = arg.get_long().expect("keyed by long name");
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match tokens {
            [t] if ["true", "1", "yes", "on"].contains(&t.as_str()) => Ok(Value::from(true)),
            [t] if ["false", "0", "no", "off"].contains(&t.as_str()) => Ok(Value::from(false)),
            _ => anyhow::bail!("{place}: expected true or false"),
        };
    }
    let many = matches!(arg.get_action(), ArgAction::Append);
    if tokens.len() != 1 && !many {
        anyhow::bail!("{place}: takes one value, not {}", tokens.len());
    }
    // An empty list would be what no command line can say (`--listen`
    // takes at least one address): no listener at all, silently.
    let least = arg.get_num_args().map_or(1, |r| r.min_values());
    if tokens.len() < least {
        anyhow::bail!("{place}: takes at least {least} value(s), not none");
    }
    for t in tokens {
        // The value alone, through the flag's own parser.
        one_value
            .clone()
            .try_get_matches_from(["ledgermesh", role, &format!("--{long}={t}")])
            .map_err(|e| {
                let msg = e.to_string();
                let msg = msg.trim().trim_start_matches("error: ");
                let msg = msg.lines().next().unwrap_or_default().to_string();
                anyhow::anyhow!("{place}: {msg}")
            })?;
    }
    Ok(match many {
        true => Value::from(tokens.to_vec()),
        false => Value::from(tokens[0].clone()),
    })
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
    // A `[[peer]]` table (`id`, `allowed_ips`) is the flag's `ID=NET,NET`.
    fn table(v: &serde_json::Value) -> Option<String> {
        let t = v.as_object()?;
        let id = t.get("id")?.as_str()?;
        if t.keys().any(|k| k != "id" && k != "allowed_ips") {
            return None;
        }
        let nets: Vec<String> = match t.get("allowed_ips") {
            None => vec![],
            Some(serde_json::Value::Array(a)) => a.iter().map(scalar).collect::<Option<_>>()?,
            Some(other) => vec![scalar(other)?],
        };
        Some(match nets.is_empty() {
            true => id.to_string(),
            false => format!("{id}={}", nets.join(",")),
        })
    }
    let json = serde_json::to_value(value).ok()?;
    match &json {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| scalar(v).or_else(|| table(v)))
            .collect(),
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
                     (or provide, consume, nc, echo, vpn)",
                    file.display()
                )
            })?;
        let sub = ROLES
            .iter()
            .find(|(_, names)| names.contains(&role))
            .map(|(r, _)| *r)
            .with_context(|| {
                format!(
                    "{}: key `role`: `{role}` is not a role (relay, provide, consume, nc, echo, vpn)",
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

/// A role's typed settings as JSON, by key (flattened groups inline).
fn typed_settings(command: &Command) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let value = match command {
        Command::Relay(a) => serde_json::to_value(a),
        Command::Provide(a) | Command::Echo(a) => serde_json::to_value(a),
        Command::Consume(a) => serde_json::to_value(a),
        Command::Nc(a) => serde_json::to_value(a),
        Command::Vpn(a) => serde_json::to_value(&a.run),
        _ => Ok(serde_json::Value::Null),
    };
    match value.context("the settings cannot be shown (a path that is not UTF-8?)")? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Ok(serde_json::Map::new()),
    }
}

/// One row of `config check`: a key, its value as typed, where it came from.
type Row = (String, String, Origin);

/// The settings by key as `config check --json` prints them.
type Settings = serde_json::Map<String, serde_json::Value>;

/// Each setting of the loaded role, from its typed settings, with where it
/// came from: as JSON, and as rows to print. Secrets are shown redacted.
fn settings_of(loaded: &Loaded, role: &str) -> anyhow::Result<(Settings, Vec<Row>)> {
    let typed = typed_settings(&loaded.cli.command)?;
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(role).expect("a role");
    let sub_matches = loaded.matches.as_ref().expect("a role's matches");
    let mut settings = serde_json::Map::new();
    let mut rows = Vec::new();
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || long == "help" {
            continue;
        }
        let key = long.replace('-', "_");
        let origin = match loaded.origins.get(&key) {
            Some(origin) => *origin,
            None => match sub_matches.value_source(arg.get_id().as_str()) {
                None => continue,
                Some(ValueSource::DefaultValue) => Origin::Default,
                Some(ValueSource::EnvVariable) => Origin::Env,
                Some(_) => Origin::Flag,
            },
        };
        // As typed: a scalar as a string, a repeatable flag as an array.
        let as_text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let values: Vec<String> = match typed.get(&key) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::Array(items)) => items.iter().map(as_text).collect(),
            Some(v) => vec![as_text(v)],
        };
        let shown = if is_secret(&key) {
            vec!["[redacted]".to_string()]
        } else {
            values
        };
        let many = matches!(arg.get_action(), ArgAction::Append);
        let value = match shown.as_slice() {
            [one] if !many => serde_json::json!(one),
            _ => serde_json::json!(shown),
        };
        settings.insert(
            key.clone(),
            serde_json::json!({"value": value, "from": origin}),
        );
        rows.push((key, shown.join(" "), origin));
    }
    Ok((settings, rows))
}

/// `ledgermesh config …`.
pub fn run(command: super::ConfigCommand) -> anyhow::Result<i32> {
    match command {
        super::ConfigCommand::Check {
            file,
            json,
            command,
        } => check(file, command, json),
        super::ConfigCommand::Sample { role } => {
            print!("{}", sample(&role)?);
            Ok(0)
        }
    }
}

/// `ledgermesh config check`: checks a config file (its `role` key says
/// for which role) or a whole command line, and prints the effective
/// settings with where each came from. Secrets are redacted.
pub fn check(file: Option<PathBuf>, command: Vec<String>, json: bool) -> anyhow::Result<i32> {
    let loaded = load(&check_argv(file, command)?).map_err(|e| match e {
        LoadError::Clap(e) => {
            anyhow::anyhow!("{}", e.to_string().trim_start_matches("error: ").trim())
        }
        LoadError::Settings(e) => e,
    })?;
    let Some(role) = loaded.role else {
        // A command without a config file (devchain, keygen, …): its
        // command line is checked as clap parses it.
        let name = &loaded.name;
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
    let (settings, rows) = settings_of(&loaded, role)?;
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

/// Settings a sample file sets (the rest it shows commented out, at their
/// defaults): the key, and the example value when it is not the default.
const SAMPLE_SET: &[(&str, &str, Option<&str>)] = &[
    ("relay", "listen", None),
    ("relay", "open", None),
    ("relay", "max_reservations_per_ip", None),
    ("relay", "max_circuits_per_ip", None),
    ("relay", "max_connections", None),
    ("relay", "max_connections_per_peer", None),
    ("relay", "json", None),
    ("provide", "ledger", None),
    (
        "provide",
        "stream",
        Some(r#"["ticks=exec:while true; do date +%s.%N; sleep 1; done", "sample=random:8M:7"]"#),
    ),
    ("provide", "reservations", None),
    ("provide", "listen", None),
    ("provide", "max_streams", None),
    ("provide", "max_streams_per_peer", None),
    ("provide", "live_buffer", None),
    ("provide", "json", None),
    ("consume", "ledger", None),
    (
        "consume",
        "want",
        Some(r#"["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/sample"]"#),
    ),
    ("consume", "out", Some(r#""received""#)),
    ("consume", "listen", None),
    ("consume", "max_price_per_mib", None),
    ("consume", "json", None),
];

/// Examples shown (commented out) for keys that have no default.
const SAMPLE_EXAMPLES: &[(&str, &str)] = &[
    ("key", r#""/var/lib/ledgermesh/node.key""#),
    ("ledger_key", r#""/var/lib/ledgermesh/ledger.key""#),
    ("audit_log", r#""/var/log/ledgermesh/audit.jsonl""#),
    ("data_dir", r#""/var/lib/ledgermesh/data""#),
    (
        "relay",
        r#"["/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]"#,
    ),
    (
        "observer",
        r#"["/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]"#,
    ),
    ("external", r#"["/ip4/198.51.100.7/tcp/4001"]"#),
    ("allow", r#""relay-allow.toml""#),
    ("acl", r#""provider-acl.toml""#),
    ("api", r#""127.0.0.1:7070""#),
    ("api_token", r#""at least sixteen characters""#),
    (
        "provider_addr",
        r#"["/ip4/203.0.113.20/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]"#,
    ),
    ("listen_local", r#""127.0.0.1:7000""#),
    ("events", r#""events.jsonl""#),
    ("until", r#""1M""#),
    ("api_host", r#"["node.example.org"]"#),
    ("claim_at", r#""5000000000000000""#),
    ("deposit", r#""10000000000000000""#),
    (
        "ledger",
        r#""evm:http://127.0.0.1:8545@0x5FbDB2315678afecb367f032d93F642f64180aa3""#,
    ),
    ("max_circuit_bytes", "1099511627776"),
    ("max_circuit_secs", "3600"),
    ("max_deposit", r#""10000000000000000""#),
    ("max_memory", r#""4G""#),
    ("max_relay_price_per_mib", r#""1000000000000""#),
    ("max_spend", r#""100000000000000000""#),
    ("quorum", "3"),
    ("relay_deposit", r#""10000000000000000""#),
    ("stream", r#"["ticks=exec:date +%s", "sample=random:8M:7"]"#),
    (
        "peer",
        r#"["12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7=10.7.0.2/32"]"#,
    ),
    ("address_v4", r#""10.7.0.1/24""#),
    (
        "exit",
        r#""12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7""#,
    ),
    ("exit_routes", r#"["0.0.0.0/0", "::/0"]"#),
    ("max_price_per_mib", r#""1000000000000""#),
    (
        "peer_addr",
        r#"["/ip4/203.0.113.30/udp/4001/quic-v1/p2p/12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7"]"#,
    ),
];

/// A value from the typed settings as TOML: a number as a number where
/// TOML can hold it, everything else as a string, an array as an array.
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s.parse::<i64>().is_ok_and(|n| n >= 0) => s.clone(),
        // A JSON string is a TOML basic string (the same escapes).
        serde_json::Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A flag's help as comment lines, wrapped at 78 columns.
fn comment(help: &str) -> String {
    let mut out = String::new();
    for para in help.split("\n\n") {
        let mut line = String::from("#");
        for word in para.split_whitespace() {
            if line.len() + 1 + word.len() > 78 && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `ledgermesh config sample ROLE`: a config file for the role with every
/// key, each under its flag's help: set where the sample sets it, else
/// commented out at its default (or an example). The files in `config/`
/// are these.
pub fn sample(role: &str) -> anyhow::Result<String> {
    let (role, names) = ROLES
        .iter()
        .find(|(r, names)| *r == role || names.contains(&role))
        .with_context(|| {
            format!("{role:?} is not a role (relay, provide, consume, nc, echo, vpn)")
        })?;
    let mut argv: Vec<OsString> = vec!["ledgermesh".into(), (*role).into()];
    if *role == "nc" {
        argv.push("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/sample".into());
    }
    let matches = parse_leniently(&argv)
        .and_then(|(_, _, m)| m.ok())
        .context("the role's defaults parse")?;
    let defaults = typed_settings(&Cli::from_arg_matches(&matches)?.command)?;
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(role).expect("a role");
    let file = format!("{}.toml", names.last().expect("a name"));
    let mut out = format!(
        "# `ledgermesh {role} --config {file}` (written by `ledgermesh config sample {role}`).\n\
         # Every flag of `ledgermesh {role} --help` has a key here: its long name with `_`\n\
         # for `-`. LEDGERMESH_<KEY> variables override the file; flags override both.\n\
         # Check a file and see the effective settings: `ledgermesh config check {file}`.\n\
         role = \"{role}\"\n"
    );
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || long == "help" || arg.get_id() == "config" {
            continue;
        }
        let key = long.replace('-', "_");
        let help = (arg.get_long_help().or(arg.get_help()))
            .map(|h| h.to_string())
            .unwrap_or_default();
        let set = SAMPLE_SET
            .iter()
            .find(|(r, k, _)| r == role && *k == key)
            .map(|(_, _, example)| *example);
        let default = match defaults.get(&key) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(a)) if a.is_empty() => None,
            Some(v) => Some(toml_value(v)),
        };
        let example = || {
            SAMPLE_EXAMPLES
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        let line = match set {
            Some(Some(example)) => format!("{key} = {example}"),
            Some(None) => format!("{key} = {}", default.clone().unwrap_or_default()),
            None => match default.or_else(example) {
                Some(v) => format!("# {key} = {v}"),
                None => format!("# {key} ="),
            },
        };
        out.push('\n');
        out.push_str(&comment(&help));
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role's settings read back from what they serialize to (the
    /// figment merge does exactly this whenever a file or the environment
    /// gives a value).
    fn round_trip(argv: &[&str]) {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let cli = load(&argv).expect("the line parses").cli;
        let before = format!("{:?}", cli.command);
        let after = with_layer(cli.command, figment::value::Dict::new()).unwrap();
        assert_eq!(
            before,
            format!("{after:?}"),
            "nothing changes without a layer"
        );
        // Through serde and figment, with a layer that changes nothing.
        let mut layer = figment::value::Dict::new();
        layer.insert("json".into(), true.into());
        let cli = load(&argv).unwrap().cli;
        let merged = with_layer(cli.command, layer).unwrap();
        assert_eq!(
            before.replace("json: false", "json: true"),
            format!("{merged:?}"),
            "{argv:?}"
        );
    }

    #[test]
    fn every_kind_of_setting_survives_the_merge() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        round_trip(&[
            "ledgermesh",
            "relay",
            "--listen",
            "/ip4/127.0.0.1/tcp/4001",
            "--max-circuit-bytes",
            "77",
            "--bill",
            "source",
            "--noise-cipher",
            "chachapoly",
            "--audit-max-bytes",
            "3K",
            "--max-memory",
            "1536",
            "--price-per-mib",
            "100000000000000000000000",
            "--api",
            "127.0.0.1:7001",
            "--api-host",
            "a.example",
        ]);
        round_trip(&[
            "ledgermesh",
            "consume",
            "--want",
            &format!("{peer}/a"),
            "--want",
            &format!("{peer}/b"),
            "--out",
            "o",
            "--until",
            "1500ms",
            "--from",
            "4096",
            "--max-bytes",
            "5G",
            "--deposit",
            "9",
            "--hard-nat",
            "off",
            "--quorum",
            "2",
        ]);
        round_trip(&[
            "ledgermesh",
            "consume",
            "--want",
            &format!("{peer}/a"),
            "--listen-local",
            "127.0.0.1:0",
            "--until",
            "64K",
        ]);
        round_trip(&[
            "ledgermesh",
            "nc",
            &format!("{peer}/a"),
            "--from",
            "live",
            "--until",
            "30s",
        ]);
        round_trip(&[
            "ledgermesh",
            "provide",
            "--stream",
            "a=random:1M:1",
            "--live-buffer",
            "7",
            "--fault-flip-live-byte",
            "9",
            "--ledger",
            "memory",
        ]);
    }
}
