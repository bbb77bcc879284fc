//! Arrays of tables: the parts of a settings file that are not one flag
//! each. A table describes one thing (an issuer and its keys, a Shared
//! Signals transmitter) and stands for values of the keyed flags that
//! describe the same, `NAME=VALUE` with the table's name, so the command
//! line, the environment, `--print-config` and the checks all see flags:
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
//!
//! [[ssf.transmitter]]
//! issuer = "https://tx.example.com"
//! jwks_file = "/etc/revocd/tx.jwks.json"       # --ssf-transmitter https://tx.example.com=/etc/revocd/tx.jwks.json
//! token_issuers = ["https://a.example.com"]    # --ssf-transmitter-token-issuer https://tx.example.com=https://a.example.com
//! poll_url = "https://tx.example.com/poll"     # --ssf-transmitter-poll-url https://tx.example.com=https://tx.example.com/poll
//! poll_token_file = "/run/secrets/tx-poll"     # --ssf-transmitter-poll-token-file https://tx.example.com=/run/secrets/tx-poll
//! ```
//!
//! A field takes a string or an array of strings. The values join those
//! of the flag's own key in the same place of the file (top level, or a
//! subcommand's table), and are replaced as a whole by the flag, its
//! variable, or that key in the subcommand's table, as any list is.

use toml::de::{DeTable, DeValue};

use super::Error;

/// One kind of table: `[[<root>.<array>]]`.
#[derive(Debug)]
pub(super) struct Kind {
    /// The top-level key holding the array.
    pub(super) root: &'static str,
    /// The array of tables under `root`.
    array: &'static str,
    /// What the table's `issuer` field names, for errors.
    issuer_is: &'static str,
    /// The fields, and the setting (a flag's file key) each one's values
    /// go to, as `ISSUER=VALUE`.
    fields: &'static [(&'static str, &'static str)],
    /// Fields of which a table needs at least one.
    needs_one_of: &'static [&'static str],
}

/// `[[jwt.issuer]]`: key files bound to the issuer whose tokens they
/// verify.
const JWT_ISSUER: Kind = Kind {
    root: "jwt",
    array: "issuer",
    issuer_is: "the `iss` its keys verify",
    fields: &[
        ("public_key_file", "jwt_issuer_key"),
        ("jwks_file", "jwt_issuer_key"),
        ("hs256_secret_file", "jwt_issuer_hs256_secret_file"),
    ],
    needs_one_of: &["public_key_file", "jwks_file", "hs256_secret_file"],
};

/// `[[ssf.transmitter]]`: a Shared Signals transmitter, its keys, the
/// token issuers it may cut off and where to poll it.
const SSF_TRANSMITTER: Kind = Kind {
    root: "ssf",
    array: "transmitter",
    issuer_is: "the transmitter's `iss`",
    fields: &[
        ("jwks_file", "ssf_transmitter"),
        ("token_issuers", "ssf_transmitter_token_issuer"),
        ("poll_url", "ssf_transmitter_poll_url"),
        ("poll_token_file", "ssf_transmitter_poll_token_file"),
    ],
    needs_one_of: &["jwks_file"],
};

/// The field that names the table's issuer.
const ISSUER: &str = "issuer";

/// The kind of table a top-level key holds, if it holds tables.
pub(super) fn kind(root: &str) -> Option<&'static Kind> {
    [&JWT_ISSUER, &SSF_TRANSMITTER]
        .into_iter()
        .find(|kind| kind.root == root)
}

/// One value a table gives a setting.
#[derive(Debug)]
pub(super) struct Binding {
    /// The setting (flag's file key) the value is for.
    pub(super) setting: &'static str,
    /// The field as written, for errors: `jwt.issuer.public_key_file`.
    pub(super) field: String,
    /// The field's byte offset in the file, for its line.
    pub(super) offset: usize,
    /// `ISSUER=VALUE`, as the flag takes it.
    pub(super) value: String,
}

/// What went wrong in a table, and where.
pub(super) struct Mistake {
    /// The table's kind.
    kind: &'static Kind,
    /// Byte offset in the file.
    offset: usize,
    /// For a person to fix.
    detail: String,
}

type Spanned<'i> = toml::Spanned<DeValue<'i>>;

impl Kind {
    /// `[[root.array]]`, as written in the file.
    fn name(&self) -> String {
        format!("[[{}.{}]]", self.root, self.array)
    }

    fn mistake(&'static self, offset: usize, detail: String) -> Mistake {
        Mistake {
            kind: self,
            offset,
            detail,
        }
    }

    /// The bindings the value of [`Kind::root`] holds, in file order.
    ///
    /// # Errors
    /// A [`Mistake`] for anything but arrays of tables of known fields,
    /// each naming an issuer and holding what it needs.
    pub(super) fn bindings(&'static self, root: &Spanned<'_>) -> Result<Vec<Binding>, Mistake> {
        let only = format!("`{}` holds only {} tables", self.root, self.name());
        let table = self.as_table(root, &only)?;
        let mut bindings = Vec::new();
        for (key, value) in table {
            if key.get_ref().as_ref() != self.array {
                let detail = format!("unknown key `{}.{}`: {only}", self.root, key.get_ref());
                return Err(self.mistake(key.span().start, detail));
            }
            let Some(entries) = value.get_ref().as_array() else {
                let detail = format!(
                    "`{}.{}` must be an array of tables ({}), not {}",
                    self.root,
                    self.array,
                    self.name(),
                    value.get_ref().type_str()
                );
                return Err(self.mistake(key.span().start, detail));
            };
            for entry in entries {
                bindings.extend(self.entry_bindings(entry)?);
            }
        }
        Ok(bindings)
    }

    /// The bindings of one table.
    fn entry_bindings(&'static self, entry: &Spanned<'_>) -> Result<Vec<Binding>, Mistake> {
        let must_be = format!("each {} entry must be a table", self.name());
        let table = self.as_table(entry, &must_be)?;
        let issuer = self.issuer_of(entry, table)?;
        let mut bindings = Vec::new();
        let known = || {
            let fields: Vec<&str> = self.fields.iter().map(|(field, _)| *field).collect();
            fields.join("`, `")
        };
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            if name == ISSUER {
                continue;
            }
            let Some((_, setting)) = self.fields.iter().find(|(field, _)| *field == name) else {
                let detail = format!("unknown key `{name}`: the keys are `issuer`, `{}`", known());
                return Err(self.mistake(key.span().start, detail));
            };
            for text in self.strings(name, value)? {
                bindings.push(Binding {
                    setting,
                    field: format!("{}.{}.{name}", self.root, self.array),
                    offset: key.span().start,
                    value: format!("{issuer}={text}"),
                });
            }
        }
        let has_one = table
            .iter()
            .any(|(key, _)| self.needs_one_of.contains(&key.get_ref().as_ref()));
        if !has_one {
            let detail = format!(
                "issuer {issuer:?} has no key: give {}",
                self.needs_one_of.join(", ")
            );
            return Err(self.mistake(entry.span().start, detail));
        }
        Ok(bindings)
    }

    /// The issuer a table names: a non-empty string without `=` (which
    /// ends the issuer in `ISSUER=VALUE`).
    fn issuer_of<'a>(
        &'static self,
        entry: &Spanned<'_>,
        table: &'a DeTable<'_>,
    ) -> Result<&'a str, Mistake> {
        let Some((key, value)) = table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == ISSUER)
        else {
            let detail = format!("a {} table needs `issuer`, {}", self.name(), self.issuer_is);
            return Err(self.mistake(entry.span().start, detail));
        };
        match value.get_ref().as_str() {
            Some(issuer) if !issuer.trim().is_empty() && !issuer.contains('=') => Ok(issuer),
            Some(_) => Err(self.mistake(
                key.span().start,
                "`issuer` must be non-empty and hold no `=`".into(),
            )),
            None => Err(self.mistake(
                key.span().start,
                format!(
                    "`issuer` must be a string, not {}",
                    value.get_ref().type_str()
                ),
            )),
        }
    }

    /// The values of a field: a string, or an array of strings; none empty.
    fn strings<'a>(
        &'static self,
        name: &str,
        value: &'a Spanned<'_>,
    ) -> Result<Vec<&'a str>, Mistake> {
        let mistake = |found: &str| {
            let detail = format!("`{name}` must be a string or an array of strings, not {found}");
            self.mistake(value.span().start, detail)
        };
        let texts: Vec<&str> = match value.get_ref() {
            DeValue::String(text) => vec![text.as_ref()],
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
        if texts.iter().any(|text| text.trim().is_empty()) {
            return Err(mistake("an empty string"));
        }
        Ok(texts)
    }

    fn as_table<'a, 'i>(
        &'static self,
        value: &'a Spanned<'i>,
        detail: &str,
    ) -> Result<&'a DeTable<'i>, Mistake> {
        value.get_ref().as_table().ok_or_else(|| {
            self.mistake(
                value.span().start,
                format!("{detail}, not {}", value.get_ref().type_str()),
            )
        })
    }
}

impl Mistake {
    /// The error for this mistake in the file `path` holding `text`.
    pub(super) fn into_error(self, path: &str, text: &str) -> Error {
        Error::Table {
            table: self.kind.name(),
            at: super::Location::of(path, text, self.offset),
            detail: self.detail,
        }
    }
}
