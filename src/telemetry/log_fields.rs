//! The text log's field formatter: [`LogFields`].
//!
//! `tracing-subscriber`'s text format writes a span's fields into a string
//! when the span opens and again on each `record`, whether or not anything
//! is ever logged inside it. Every RPC opens one (`rpc{method caller}`), so
//! that formatting runs on every call: its default formatter styles each
//! field name (even with colours off) through three layers of `format!`,
//! which came to ~4,000 instructions per `Check` (callgrind), 4% of the
//! whole call. [`LogFields`] writes a plain field of text straight to the
//! line and hands every other field to the default formatter, so the lines
//! read the same.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Formats fields exactly as `tracing-subscriber`'s
/// [`DefaultFields`](tracing_subscriber::fmt::format::DefaultFields) does, with a shortcut for
/// the common case: a named field of text, on a line without colours, is
/// written as `name="value"` (the value `Debug`-quoted, as the default
/// does) without going through the default's styling, and a value of
/// printable ASCII without quotes or backslashes without `fmt` at all.
#[derive(Debug, Default)]
pub struct LogFields;

impl<'writer> MakeVisitor<Writer<'writer>> for LogFields {
    type Visitor = LogFieldVisitor<'writer>;

    fn make_visitor(&self, writer: Writer<'writer>) -> Self::Visitor {
        LogFieldVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`LogFields`] for one line or span.
#[derive(Debug)]
pub struct LogFieldVisitor<'writer> {
    writer: Writer<'writer>,
    /// Nothing written yet, so no separating space is due.
    is_empty: bool,
    result: fmt::Result,
}

impl LogFieldVisitor<'_> {
    /// Has the default formatter write one field, continuing this line.
    fn default_field(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// Whether `field` takes the shortcut: named (not the message, not a
    /// raw identifier) on a line without colours.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("r#")
    }
}

/// Whether `Debug` writes `value` as it is between quotes: printable ASCII
/// other than `"` and `\`, the only such characters it escapes.
fn needs_no_escape(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\')
}

/// Whether `field` is metadata of a `log` record, which the line has
/// already shown and the default formatter skips.
fn log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

impl Visit for LogFieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if log_metadata(field) {
            return;
        }
        if !self.plain(field) {
            return self.default_field(|visitor| visitor.record_str(field, value));
        }
        if self.result.is_err() {
            return;
        }
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        self.result = if needs_no_escape(value) {
            // What `{value:?}` writes for such a value, without going
            // through `fmt` character by character.
            [separator, field.name(), "=\"", value, "\""]
                .into_iter()
                .try_for_each(|part| self.writer.write_str(part))
        } else {
            write!(self.writer, "{separator}{}={value:?}", field.name())
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if log_metadata(field) {
            return;
        }
        self.default_field(|visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if log_metadata(field) {
            return;
        }
        self.default_field(|visitor| visitor.record_debug(field, value));
    }
}

impl VisitOutput<fmt::Result> for LogFieldVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LogFieldVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A log's lines, kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `log` writes through a text subscriber, with or without
    /// [`LogFields`].
    fn logged(shortcut: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(lines.clone());
        if shortcut {
            tracing::subscriber::with_default(builder.fmt_fields(LogFields).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_read_as_the_default_formatter_writes_them() {
        let log = || {
            let span = tracing::info_span!(
                "rpc",
                method = "Check",
                caller = tracing::field::Empty,
                count = 3
            );
            span.record("caller", "a \"quoted\"\nname");
            let _entered = span.enter();
            let error = std::io::Error::other("disk gone");
            tracing::warn!(
                r#type = "raw",
                text = "x y",
                number = 7,
                flag = true,
                error = &error as &dyn std::error::Error,
                "something {} happened",
                "bad"
            );
            tracing::info!(
                only = "text",
                plain = "printable ASCII: 'single' ~",
                escaped = "tab\t\\ é \u{1b}[31m"
            );
        };
        let default = logged(false, log);
        let ours = logged(true, log);
        assert!(
            default.contains(r#"caller="a \"quoted\"\nname""#),
            "{default}"
        );
        assert_eq!(ours, default);
    }
}
