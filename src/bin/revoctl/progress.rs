//! The progress line of `import` on stderr.
//!
//! On a terminal it is one line redrawn in place (`\r`) at most ten times a
//! second and erased before the summary. Anywhere else (a log file, a CI
//! job) a full line is written every [`LOG_INTERVAL`] instead, so a long
//! import shows it is alive without flooding the log.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Between two redraws on a terminal.
const DRAW_INTERVAL: Duration = Duration::from_millis(100);
/// Between two lines when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Terminal,
    Log,
    Off,
}

/// Counts of an import in progress, shown on stderr.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    started: Instant,
    /// When the progress was last shown (the start, at first).
    shown_at: Instant,
    /// Whether a terminal line is on screen, to be erased.
    on_screen: bool,
    /// The input's size when known (a regular file), for a percentage.
    total_bytes: Option<u64>,
    bytes_read: u64,
    lines_read: u64,
    /// Lines the server took (imported or already revoked).
    taken: u64,
}

impl Progress {
    /// Progress for an input of `total_bytes` (if known); `enabled: false`
    /// shows nothing.
    pub fn new(enabled: bool, total_bytes: Option<u64>) -> Self {
        let mode = match (enabled, std::io::stderr().is_terminal()) {
            (false, _) => Mode::Off,
            (true, true) => Mode::Terminal,
            (true, false) => Mode::Log,
        };
        let now = Instant::now();
        Progress {
            mode,
            started: now,
            shown_at: now,
            on_screen: false,
            total_bytes,
            bytes_read: 0,
            lines_read: 0,
            taken: 0,
        }
    }

    /// The reader got this far (totals).
    pub fn read(&mut self, lines: u64, bytes: u64) {
        (self.lines_read, self.bytes_read) = (lines, bytes);
        self.tick();
    }

    /// The server took this many lines so far.
    pub fn taken(&mut self, taken: u64) {
        self.taken = taken;
        self.tick();
    }

    /// Erases the terminal line, before the summary or an error.
    pub fn clear(&mut self) {
        if self.on_screen {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.on_screen = false;
        }
    }

    fn tick(&mut self) {
        let interval = match self.mode {
            Mode::Terminal => DRAW_INTERVAL,
            Mode::Log => LOG_INTERVAL,
            Mode::Off => return,
        };
        if self.shown_at.elapsed() < interval {
            return;
        }
        self.shown_at = Instant::now();
        let text = self.text();
        if self.mode == Mode::Terminal {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.on_screen = true;
        } else {
            eprintln!("{text}");
        }
    }

    fn text(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.taken as f64 / seconds) as u64;
        let share = match self.total_bytes {
            Some(total) if total > 0 => {
                format!("{:>3}% read, ", self.bytes_read.saturating_mul(100) / total)
            }
            _ => String::new(),
        };
        format!(
            "importing: {share}{} lines, {} taken ({}/s)",
            grouped(self.lines_read),
            grouped(self.taken),
            grouped(rate)
        )
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn text_shows_the_share_read_when_the_size_is_known() {
        let mut progress = Progress::new(false, Some(200));
        progress.read(10, 50);
        progress.taken(8);
        assert!(progress
            .text()
            .starts_with("importing:  25% read, 10 lines, 8 taken"));
        let unknown = Progress::new(false, None);
        assert!(unknown.text().starts_with("importing: 0 lines"));
    }
}
