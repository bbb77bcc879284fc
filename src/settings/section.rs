//! `[[jwt.issuer]]` tables: the one part of a settings file that is not a
//! flag. Each table binds key files to the issuer whose tokens they verify,
//! and stands for values of the flags that do the same, so the command line,
//! the environment, `--print-config` and the checks all see flags:
//!
//! ```toml
//! [[jwt.issuer]]
//! issuer = "https://a.example.com"
//! public_key_file = "/etc/revocd/a.pem"        # --jwt-issuer-key https://a.example.com=/etc/revocd/a.pem
//!
//! [[jwt.issuer]]
//! issuer = "https://b.example.com"
//! jwks_file = "/etc/revocd/b.jwks.json"        # --jwt-issuer-key https://b.example.com=/etc/revocd/b.jwks.json
//! hs256_secret_file = "/run/secrets/b-hs256"   # --jwt-issuer-hs256-secret-file https://b.example.com=/run/secrets/b-hs256
//! ```
//!
//! A file field takes a path or an array of paths. The values join those
//! of the flag's own key in the same place of the file (top level, or a
//! subcommand's table), and are replaced as a whole by the flag, its
//! variable, or that key in the subcommand's table, as any list is.

use toml::de::{DeTable, DeValue};

use super::Error;

/// The top-level key of the tables: `jwt`, holding the array `issuer`.
pub(super) const ROOT: &str = "jwt";
/// The array of tables under [`ROOT`].
const ARRAY: &str = "issuer";
/// The field that names the issuer.
const ISSUER: &str = "issuer";
/// The file fields, and the setting (a flag's file key) each one's values
/// go to, as `ISSUER=PATH`.
const FIELDS: [(&str, &str); 3] = [
    ("public_key_file", "jwt_issuer_key"),
    ("jwks_file", "jwt_issuer_key"),
    ("hs256_secret_file", "jwt_issuer_hs256_secret_file"),
];

/// One value a table gives a setting.
#[derive(Debug)]
pub(super) struct Binding {
    /// The setting (flag's file key) the value is for.
    pub(super) setting: &'static str,
    /// The field as written, for errors: `jwt.issuer.public_key_file`.
    pub(super) field: String,
    /// The field's byte offset in the file, for its line.
    pub(super) offset: usize,
    /// `ISSUER=PATH`, as the flag takes it.
    pub(super) value: String,
}

/// What went wrong in a table, and where.
pub(super) struct Mistake {
    /// Byte offset in the file.
    pub(super) offset: usize,
    /// For a person to fix.
    pub(super) detail: String,
}

type Spanned<'i> = toml::Spanned<DeValue<'i>>;

/// The bindings the value of [`ROOT`] holds, in file order.
///
/// # Errors
/// A [`Mistake`] for anything but arrays of tables of known fields, each
/// naming an issuer and at least one file.
pub(super) fn bindings(root: &Spanned<'_>) -> Result<Vec<Binding>, Mistake> {
    let table = as_table(root, "`jwt` holds only [[jwt.issuer]] tables")?;
    let mut bindings = Vec::new();
    for (key, value) in table {
        if key.get_ref().as_ref() != ARRAY {
            return Err(Mistake {
                offset: key.span().start,
                detail: format!(
                    "unknown key `jwt.{}`: `jwt` holds only [[jwt.issuer]] tables",
                    key.get_ref()
                ),
            });
        }
        let Some(entries) = value.get_ref().as_array() else {
            return Err(Mistake {
                offset: key.span().start,
                detail: format!(
                    "`jwt.issuer` must be an array of tables ([[jwt.issuer]]), not {}",
                    value.get_ref().type_str()
                ),
            });
        };
        for entry in entries {
            bindings.extend(entry_bindings(entry)?);
        }
    }
    Ok(bindings)
}

/// The bindings of one `[[jwt.issuer]]` table.
fn entry_bindings(entry: &Spanned<'_>) -> Result<Vec<Binding>, Mistake> {
    let table = as_table(entry, "each [[jwt.issuer]] entry must be a table")?;
    let issuer = issuer_of(entry, table)?;
    let mut bindings = Vec::new();
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        if name == ISSUER {
            continue;
        }
        let Some((_, setting)) = FIELDS.iter().find(|(field, _)| *field == name) else {
            let known: Vec<&str> = FIELDS.iter().map(|(field, _)| *field).collect();
            return Err(Mistake {
                offset: key.span().start,
                detail: format!(
                    "unknown key `{name}`: the keys are `issuer`, `{}`",
                    known.join("`, `")
                ),
            });
        };
        for path in paths(name, value)? {
            bindings.push(Binding {
                setting,
                field: format!("{ROOT}.{ARRAY}.{name}"),
                offset: key.span().start,
                value: format!("{issuer}={path}"),
            });
        }
    }
    if bindings.is_empty() {
        let known: Vec<&str> = FIELDS.iter().map(|(field, _)| *field).collect();
        return Err(Mistake {
            offset: entry.span().start,
            detail: format!("issuer {issuer:?} has no key: give {}", known.join(", ")),
        });
    }
    Ok(bindings)
}

/// The issuer a table names: a non-empty string without `=` (which ends
/// the issuer in `ISSUER=PATH`).
fn issuer_of<'a>(entry: &Spanned<'_>, table: &'a DeTable<'_>) -> Result<&'a str, Mistake> {
    let Some((key, value)) = table
        .iter()
        .find(|(key, _)| key.get_ref().as_ref() == ISSUER)
    else {
        return Err(Mistake {
            offset: entry.span().start,
            detail: "a [[jwt.issuer]] table needs `issuer`, the `iss` its keys verify".into(),
        });
    };
    match value.get_ref().as_str() {
        Some(issuer) if !issuer.trim().is_empty() && !issuer.contains('=') => Ok(issuer),
        Some(_) => Err(Mistake {
            offset: key.span().start,
            detail: "`issuer` must be non-empty and hold no `=`".into(),
        }),
        None => Err(Mistake {
            offset: key.span().start,
            detail: format!(
                "`issuer` must be a string, not {}",
                value.get_ref().type_str()
            ),
        }),
    }
}

/// The paths of a file field: a string, or an array of strings; none empty.
fn paths<'a>(name: &str, value: &'a Spanned<'_>) -> Result<Vec<&'a str>, Mistake> {
    let mistake = |found: &str| Mistake {
        offset: value.span().start,
        detail: format!("`{name}` must be a path or an array of paths, not {found}"),
    };
    let paths: Vec<&str> = match value.get_ref() {
        DeValue::String(path) => vec![path.as_ref()],
        DeValue::Array(items) => items
            .iter()
            .map(|item| {
                item.get_ref()
                    .as_str()
                    .ok_or_else(|| mistake(item.get_ref().type_str()))
            })
            .collect::<Result<_, _>>()?,
        other => return Err(mistake(other.type_str())),
    };
    if paths.iter().any(|path| path.trim().is_empty()) {
        return Err(mistake("an empty path"));
    }
    Ok(paths)
}

fn as_table<'a, 'i>(value: &'a Spanned<'i>, detail: &str) -> Result<&'a DeTable<'i>, Mistake> {
    value.get_ref().as_table().ok_or_else(|| Mistake {
        offset: value.span().start,
        detail: format!("{detail}, not {}", value.get_ref().type_str()),
    })
}

impl Mistake {
    /// The error for this mistake in the file `path` holding `text`.
    pub(super) fn into_error(self, path: &str, text: &str) -> Error {
        Error::IssuerTable {
            at: super::Location::of(path, text, self.offset),
            detail: self.detail,
        }
    }
}
