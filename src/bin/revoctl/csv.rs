//! The CSV of `import` and `export`: RFC 4180 fields, one record per line.
//!
//! A field is either bare (no `"` in it) or quoted: `"` … `"`, with a `"`
//! inside written twice. Spaces belong to the field (RFC 4180 §2.4), so
//! `a, b` has the fields `a` and ` b`. Fields are separated by `,`.
//!
//! Unlike RFC 4180, a quoted field may not span lines: every field `revocd`
//! stores (jti, issuer, reason) refuses control characters, so a record
//! over several lines could never be imported, and keeping to one record
//! per line means an unbalanced quote costs one line, not the rest of the
//! file.

use std::borrow::Cow;
use std::io::{self, Write};

/// Why a line is not a CSV record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A quoted field with no closing quote before the end of the line.
    #[error("field {field}: a quoted field has no closing quote (fields cannot span lines)")]
    Unterminated { field: usize },
    /// Something other than `,` or the end of the line after a closing quote.
    #[error(
        "field {field}: text after a closing quote (write a quote inside a quoted field as \"\")"
    )]
    TextAfterQuote { field: usize },
    /// A `"` inside a field that does not start with one.
    #[error("field {field}: a quote inside an unquoted field (quote the whole field and double the quote)")]
    QuoteInBareField { field: usize },
}

/// Splits one line (without its line terminator) into fields.
///
/// # Errors
/// The line breaks the quoting rules; the error names the field, from 1.
pub fn parse_line(line: &str) -> Result<Vec<String>, CsvError> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let number = fields.len() + 1;
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CsvError::Unterminated { field: number }),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
            match chars.next() {
                None => return Ok(fields),
                Some(',') => continue,
                Some(_) => return Err(CsvError::TextAfterQuote { field: number }),
            }
        }
        loop {
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => break,
                Some('"') => return Err(CsvError::QuoteInBareField { field: number }),
                Some(c) => field.push(c),
            }
        }
        fields.push(field);
    }
}

/// `field` as written in a record: quoted (inner quotes doubled) when it
/// holds a comma, a quote or a line break, else as it is.
pub fn quote(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// Writes one record and its `\n`.
///
/// # Errors
/// Whatever writing to `out` fails with.
pub fn write_record<W: Write>(out: &mut W, fields: &[&str]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(quote(field).as_bytes())?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Vec<String> {
        parse_line(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn parses_bare_and_quoted_fields() {
        assert_eq!(fields("a,b,c"), ["a", "b", "c"]);
        assert_eq!(fields(""), [""]);
        assert_eq!(fields("a,,"), ["a", "", ""]);
        assert_eq!(
            fields(" a , b"),
            [" a ", " b"],
            "spaces are part of a field"
        );
        assert_eq!(
            fields(r#"j1,100,,"lost, then found""#),
            ["j1", "100", "", "lost, then found"]
        );
        assert_eq!(
            fields(r#""say ""hi""",x"#),
            [r#"say "hi""#, "x"],
            "a doubled quote is one quote"
        );
        assert_eq!(fields(r#""""#), [""]);
        assert_eq!(fields(r#"",","""#), [",", ""]);
        assert_eq!(fields("\"\",\"\"\"\""), ["", "\""], "a lone quote");
        assert_eq!(fields("héllo,wörld"), ["héllo", "wörld"]);
    }

    #[test]
    fn refuses_broken_quoting_and_names_the_field() {
        assert_eq!(
            parse_line(r#"a,"open"#),
            Err(CsvError::Unterminated { field: 2 })
        );
        assert_eq!(
            parse_line(r#""a"b,c"#),
            Err(CsvError::TextAfterQuote { field: 1 })
        );
        assert_eq!(
            parse_line(r#"a,b"c"#),
            Err(CsvError::QuoteInBareField { field: 2 })
        );
    }

    #[test]
    fn written_records_parse_back_to_the_same_fields() {
        let records: [&[&str]; 4] = [
            &["j1", "1700000000", "https://issuer.test", "plain"],
            &["j,2", "1", "", "says \"hi\", twice"],
            &["", "", "", ""],
            &["\"", ",", "a\"b", " padded "],
        ];
        for record in records {
            let mut out = Vec::new();
            write_record(&mut out, record).unwrap();
            let line = String::from_utf8(out).unwrap();
            let line = line.strip_suffix('\n').expect("one line");
            assert_eq!(fields(line), record, "{line}");
        }
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
    }
}
