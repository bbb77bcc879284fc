//! `--print-config`: the configuration in force, as a settings file that
//! says where each value came from and shows no secret.

use std::fmt;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use toml::de::DeValue;

use super::file::{scalar_text, SettingsFile};
use super::{env_name, is_multiple, is_secret, is_setting, key_of};
use crate::redact::redact;

/// The configuration that the command line, the environment and the file
/// add up to, as `--print-config` prints it: TOML that `--config` reads back,
/// every setting under a comment saying where its value came from (`flag`,
/// `env`, `file`, `default`, or `unset`).
///
/// Secrets are redacted and commented out; unset settings are commented
/// out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective(String);

impl Effective {
    pub(super) fn render(
        title: &str,
        command: &Command,
        matches: &ArgMatches,
        file: Option<&SettingsFile>,
    ) -> Self {
        let mut out = format!(
            "# Effective configuration of `{title}`: flag > env > file > default.\n\
             # Secrets are redacted and commented out, so this file never sets one.\n"
        );
        for arg in command.get_arguments().filter(|arg| is_setting(arg)) {
            let raw: Vec<String> = matches
                .get_raw(arg.get_id().as_str())
                .into_iter()
                .flatten()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            out.push_str(&entry(arg, &origin(arg, matches, file), &raw));
        }
        Effective(out)
    }
}

/// Where the value of `arg` came from, for its comment.
fn origin(arg: &Arg, matches: &ArgMatches, file: Option<&SettingsFile>) -> String {
    let id = arg.get_id().as_str();
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => {
            format!("flag --{}", arg.get_long().unwrap_or_default())
        }
        Some(ValueSource::EnvVariable) => format!("env {}", env_name(arg)),
        Some(ValueSource::DefaultValue) => match file.filter(|f| f.settings.contains_key(id)) {
            Some(file) => format!("file {}", file.path),
            None => "default".to_owned(),
        },
        _ => "unset".to_owned(),
    }
}

/// One setting, its `raw` values printed under the comment `origin`:
/// commented out when unset or secret.
fn entry(arg: &Arg, origin: &str, raw: &[String]) -> String {
    let key = key_of(arg);
    if raw.is_empty() {
        return format!("\n# unset\n# {key} =\n");
    }
    if is_secret(arg) {
        let redacted = raw.iter().map(|value| toml_string(&redact(value)));
        let value = toml_values(arg, redacted.collect());
        return format!("\n# {origin} (secret: redacted, commented out)\n# {key} = {value}\n");
    }
    let value = toml_values(arg, raw.iter().map(|value| toml_scalar(value)).collect());
    format!("\n# {origin}\n{key} = {value}\n")
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One value, or an array for an argument that takes several.
fn toml_values(arg: &Arg, values: Vec<String>) -> String {
    match (is_multiple(arg), values.as_slice()) {
        (false, [one]) => one.clone(),
        _ => format!("[{}]", values.join(", ")),
    }
}

/// `text` as a TOML string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `text` as TOML: bare when it is a boolean or number that reads back as
/// the same text (`true`, `100000`, `0.001`), else a string. Either way
/// [`scalar_text`] gives `text` back, so printing loses nothing.
fn toml_scalar(text: &str) -> String {
    let numeric = text.starts_with(|c: char| c.is_ascii_digit() || c == '-');
    let bare = match DeValue::parse(text).map(toml::Spanned::into_inner) {
        Ok(value @ (DeValue::Integer(_) | DeValue::Float(_))) if numeric => {
            scalar_text(&value).as_deref() == Some(text)
        }
        Ok(DeValue::Boolean(_)) => true,
        _ => false,
    };
    match bare {
        true => text.to_owned(),
        false => toml_string(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_print_bare_only_when_they_read_back_unchanged() {
        for (text, printed) in [
            ("100000", "100000"),
            ("0.001", "0.001"),
            ("true", "true"),
            ("-1", "-1"),
            ("007", "\"007\""),
            ("+5", "\"+5\""),
            ("1_000", "\"1_000\""),
            ("inf", "\"inf\""),
            ("2s", "\"2s\""),
            ("127.0.0.1:1", "\"127.0.0.1:1\""),
            ("a \"quoted\" \\ text", "'a \"quoted\" \\ text'"),
        ] {
            assert_eq!(toml_scalar(text), printed, "{text}");
            let value = DeValue::parse(printed).expect("valid TOML").into_inner();
            assert_eq!(scalar_text(&value).as_deref(), Some(text), "{printed}");
        }
    }
}
