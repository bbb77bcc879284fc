//! Reading a `--config` file: each key resolved to the argument it sets,
//! each value checked by that argument's own parser, and the values
//! installed as the arguments' defaults.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

use super::{
    env_name, find_setting, is_flag, is_multiple, is_secret, section, target_command, Error,
    Location, REDACTED,
};

/// A `--config` file, checked against the command: the settings it gives
/// the subcommand being run.
#[derive(Debug)]
pub(super) struct SettingsFile {
    /// The file, as named on the command line.
    pub(super) path: String,
    /// The subcommand being run; `None` for a parser without subcommands.
    subcommand: Option<String>,
    /// The settings applied, by argument id: top-level keys, then the
    /// subcommand's table over them.
    pub(super) settings: BTreeMap<String, Setting>,
}

/// One key of the file, resolved to the argument it sets.
#[derive(Debug)]
pub(super) struct Setting {
    /// The key as written.
    key: String,
    /// Its line in the file, for errors.
    line: usize,
    /// Set on the top-level command (and propagated), not the subcommand.
    global: bool,
    /// The values as they would follow the flag.
    values: Vec<String>,
}

impl SettingsFile {
    /// Reads and checks the file at `path`: every key a setting of the
    /// subcommand its place in the file names, every value one its argument
    /// accepts.
    pub(super) fn load(
        path: &Path,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
        built: &Command,
        subcommand: Option<&str>,
    ) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let text = read(path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        let document = DeTable::parse(&text).map_err(|error| Error::Syntax {
            at: Location::of(&shown, &text, error.span().map_or(0, |span| span.start)),
            // The message only: toml's rendering quotes the line, which may
            // hold a secret.
            message: error.message().replace('\n', "; "),
        })?;
        let loader = Loader {
            path: &shown,
            text: &text,
            built,
        };
        let mut top = BTreeMap::new();
        let mut own = BTreeMap::new();
        for (key, value) in document.get_ref() {
            let table = built
                .find_subcommand(key.get_ref().as_ref())
                .zip(value.get_ref().as_table());
            match table {
                Some((sub, table)) => {
                    let settings = loader.resolve_table(Some(sub.get_name()), table)?;
                    if subcommand == Some(sub.get_name()) {
                        own = settings;
                    }
                }
                None => loader.resolve_into(&mut top, subcommand, key, value)?,
            }
        }
        // The subcommand's own table wins over the top level.
        top.extend(own);
        Ok(SettingsFile {
            path: shown,
            subcommand: subcommand.map(str::to_owned),
            settings: top,
        })
    }

    /// `command` with the file's values as the defaults of the arguments
    /// they set: clap then puts flags and environment variables over them.
    pub(super) fn apply(&self, command: Command) -> Command {
        self.settings
            .iter()
            .fold(command, |command, (id, setting)| {
                // Without clap's `string` feature, defaults are `&'static str`.
                // A process reads one file, once: the leak is small and bounded.
                let values: Vec<&'static str> = setting
                    .values
                    .iter()
                    .map(|value| &*value.clone().leak())
                    .collect();
                // Help is shown by the first pass, never with these defaults;
                // hiding them keeps secrets out of any later usage text anyway
                // (clap refuses the setting on flags, which show no default).
                let set = |arg: Arg| {
                    let hide = arg.get_action().takes_values();
                    arg.default_values(values).hide_default_value(hide)
                };
                match (&self.subcommand, setting.global) {
                    (Some(name), false) => command.mut_subcommand(name, |sub| sub.mut_arg(id, set)),
                    _ => command.mut_arg(id, set),
                }
            })
    }

    /// Whether the file's value of `arg` is the one in force: not
    /// overridden, and not an off flag (which conflicts with nothing).
    fn in_effect(&self, arg: &Arg, matches: &ArgMatches) -> Option<&Setting> {
        let id = arg.get_id().as_str();
        let setting = self.settings.get(id)?;
        let default = matches.value_source(id) == Some(ValueSource::DefaultValue);
        let off = is_flag(arg) && setting.values == ["false"];
        (default && !setting.values.is_empty() && !off).then_some(setting)
    }

    /// Conflicts clap does not see: it ignores defaults, which is what the
    /// file's values are to it.
    ///
    /// # Errors
    /// [`Error::Conflict`] for a file value in force beside an argument it
    /// conflicts with, set by a flag, the environment or the file.
    pub(super) fn check_conflicts(
        &self,
        command: &Command,
        matches: &ArgMatches,
    ) -> Result<(), Error> {
        for arg in command.get_arguments() {
            let Some(setting) = self.in_effect(arg, matches) else {
                continue;
            };
            for other in command.get_arguments() {
                let id = other.get_id();
                let conflict = command
                    .get_arg_conflicts_with(arg)
                    .iter()
                    .any(|a| a.get_id() == id)
                    || command
                        .get_arg_conflicts_with(other)
                        .iter()
                        .any(|a| a.get_id() == arg.get_id());
                if !conflict {
                    continue;
                }
                let by = match matches.value_source(id.as_str()) {
                    Some(ValueSource::CommandLine) => {
                        format!("flag --{}", other.get_long().unwrap_or_default())
                    }
                    Some(ValueSource::EnvVariable) => format!("env {}", env_name(other)),
                    _ => match self.in_effect(other, matches) {
                        Some(theirs) => format!("`{}` (line {})", theirs.key, theirs.line),
                        None => continue,
                    },
                };
                return Err(Error::Conflict {
                    at: self.at(setting),
                    key: setting.key.clone(),
                    other: by,
                });
            }
        }
        Ok(())
    }

    fn at(&self, setting: &Setting) -> Location {
        Location {
            path: self.path.clone(),
            line: setting.line,
        }
    }
}

/// What resolving keys needs: the file's text (for lines) and the command.
struct Loader<'a> {
    path: &'a str,
    text: &'a str,
    built: &'a Command,
}

type Key<'i> = toml::Spanned<toml::de::DeString<'i>>;
type Value<'i> = toml::Spanned<DeValue<'i>>;

impl Loader<'_> {
    fn at(&self, offset: usize) -> Location {
        Location::of(self.path, self.text, offset)
    }

    /// The settings of a subcommand's table, by argument id.
    fn resolve_table(
        &self,
        subcommand: Option<&str>,
        table: &DeTable<'_>,
    ) -> Result<BTreeMap<String, Setting>, Error> {
        let mut settings = BTreeMap::new();
        for (key, value) in table {
            self.resolve_into(&mut settings, subcommand, key, value)?;
        }
        Ok(settings)
    }

    /// Adds what `key` sets to `settings`: one setting, or for the root of
    /// arrays of tables (`jwt`, `ssf`) the values its tables give.
    /// Values for an argument already set in the same place are added to
    /// its values.
    fn resolve_into(
        &self,
        settings: &mut BTreeMap<String, Setting>,
        subcommand: Option<&str>,
        key: &Key<'_>,
        value: &Value<'_>,
    ) -> Result<(), Error> {
        let resolved = if let Some(kind) = section::kind(key.get_ref().as_ref()) {
            self.resolve_sections(kind, subcommand, value)?
        } else {
            vec![self.resolve(subcommand, key, value)?]
        };
        for (id, setting) in resolved {
            match settings.get_mut(&id) {
                Some(earlier) => earlier.values.extend(setting.values),
                None => {
                    settings.insert(id, setting);
                }
            }
        }
        Ok(())
    }

    /// The settings the tables of `kind` under `value` give, each value
    /// checked by its argument's own parser.
    fn resolve_sections(
        &self,
        kind: &'static section::Kind,
        subcommand: Option<&str>,
        value: &Value<'_>,
    ) -> Result<Vec<(String, Setting)>, Error> {
        let bindings = kind
            .bindings(value)
            .map_err(|mistake| mistake.into_error(self.path, self.text))?;
        bindings
            .into_iter()
            .map(|binding| {
                let at = self.at(binding.offset);
                let command = target_command(self.built, subcommand);
                let Some(arg) = find_setting(command, binding.setting) else {
                    return Err(self.unknown(subcommand, &binding.field, at));
                };
                self.setting(subcommand, arg, &binding.field, at, vec![binding.value])
            })
            .collect()
    }

    /// The argument `key` sets, with `value` as its flag's text, checked by
    /// the argument's own parser.
    fn resolve(
        &self,
        subcommand: Option<&str>,
        key: &Key<'_>,
        value: &Value<'_>,
    ) -> Result<(String, Setting), Error> {
        let at = self.at(key.span().start);
        let name = key.get_ref().as_ref();
        let command = target_command(self.built, subcommand);
        let Some(arg) = find_setting(command, name) else {
            return Err(self.unknown(subcommand, name, at));
        };
        let values =
            values_of(arg, value.get_ref()).map_err(|(expected, found)| Error::WrongType {
                at: at.clone(),
                key: name.to_owned(),
                expected,
                found,
            })?;
        self.setting(subcommand, arg, name, at, values)
    }

    /// `values` for `arg`, written as `name` at `at`: refused if they hold
    /// the redaction placeholder of a secret or if the argument's own parser
    /// rejects them.
    fn setting(
        &self,
        subcommand: Option<&str>,
        arg: &Arg,
        name: &str,
        at: Location,
        values: Vec<String>,
    ) -> Result<(String, Setting), Error> {
        if is_secret(arg) && values.iter().any(|value| value.contains(REDACTED)) {
            return Err(Error::Placeholder {
                at,
                key: name.to_owned(),
                env: env_name(arg),
            });
        }
        if !is_flag(arg) {
            if let Some(rejection) = trial(self.built, subcommand, arg, &values) {
                return Err(Error::InvalidValue {
                    at,
                    key: name.to_owned(),
                    detail: rejection_detail(&rejection, arg, &values),
                });
            }
        }
        let setting = Setting {
            key: name.to_owned(),
            line: at.line,
            global: arg.is_global_set(),
            values,
        };
        Ok((arg.get_id().to_string(), setting))
    }

    /// The error for a key that is not a setting of `subcommand`: one of
    /// another subcommand, or none at all.
    fn unknown(&self, subcommand: Option<&str>, key: &str, at: Location) -> Error {
        let owner = self
            .built
            .get_subcommands()
            .find(|sub| find_setting(sub, key).is_some());
        match owner {
            Some(owner) if subcommand.is_some() => Error::OtherCommand {
                at,
                key: key.to_owned(),
                subcommand: owner.get_name().to_owned(),
            },
            _ => Error::UnknownKey {
                at,
                key: key.to_owned(),
                command: match subcommand {
                    Some(sub) => format!("{} {sub}", self.built.get_name()),
                    None => self.built.get_name().to_owned(),
                },
            },
        }
    }
}

/// The text of a TOML scalar as it would follow a flag; `None` for arrays,
/// tables and datetimes.
pub(super) fn scalar_text(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(text) => Some(text.to_string()),
        // toml keeps the digits as written (without `_`) and their radix.
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(float) => Some(float.as_str().to_owned()),
        DeValue::Boolean(on) => Some(on.to_string()),
        DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// The values `value` gives `arg`, or what was expected and what was found.
fn values_of(arg: &Arg, value: &DeValue<'_>) -> Result<Vec<String>, (&'static str, &'static str)> {
    let found = value.type_str();
    if is_flag(arg) {
        return match value {
            DeValue::Boolean(on) => Ok(vec![on.to_string()]),
            _ => Err(("true or false", found)),
        };
    }
    match (value, is_multiple(arg)) {
        (DeValue::Array(items), true) => items
            .iter()
            .map(|item| {
                scalar_text(item.get_ref())
                    .ok_or(("an array of strings or numbers", item.get_ref().type_str()))
            })
            .collect(),
        (_, multiple) => scalar_text(value)
            .map(|text| vec![text])
            .ok_or(if multiple {
                ("a string, a number or an array of them", found)
            } else {
                ("a string, a number or a boolean", found)
            }),
    }
}

/// Runs `values` through `arg`'s own parser, by parsing a command line that
/// gives only them: clap offers no other way to call a value parser. Values
/// of the command line are parsed before environment variables are read, so
/// the first error is about these values if they are wrong.
fn trial(
    built: &Command,
    subcommand: Option<&str>,
    arg: &Arg,
    values: &[String],
) -> Option<clap::Error> {
    let long = arg.get_long()?;
    let argv = std::iter::once(built.get_name())
        .chain(subcommand)
        .map(OsString::from)
        .chain(
            values
                .iter()
                .map(|value| format!("--{long}={value}").into()),
        );
    let error = built.clone().try_get_matches_from(argv).err()?;
    let about_this = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => {
            flag.split([' ', '=']).next() == Some(&format!("--{long}"))
        }
        _ => false,
    };
    let value_error = matches!(
        error.kind(),
        ErrorKind::InvalidValue
            | ErrorKind::ValueValidation
            | ErrorKind::InvalidUtf8
            | ErrorKind::TooManyValues
            | ErrorKind::TooFewValues
            | ErrorKind::WrongNumberOfValues
    );
    (about_this && value_error).then_some(error)
}

/// Why `arg` rejected one of `values`, without the flag's name (the user
/// wrote a key, not a flag) and, for a secret, without the value.
fn rejection_detail(error: &clap::Error, arg: &Arg, values: &[String]) -> String {
    let reason = if let Some(cause) = std::error::Error::source(error) {
        cause.to_string()
    } else if let Some(ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
        format!("expected one of {}", valid.join(", "))
    } else {
        error.kind().as_str().unwrap_or("rejected").to_owned()
    };
    if is_secret(arg) {
        // A parser's message may quote its input.
        let echoes = values
            .iter()
            .any(|value| !value.is_empty() && reason.contains(value.as_str()));
        return match echoes {
            true => "invalid value (a secret, not shown)".to_owned(),
            false => format!("invalid value (a secret, not shown): {reason}"),
        };
    }
    match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => format!("invalid value {value:?}: {reason}"),
        _ => format!("invalid value: {reason}"),
    }
}
