//! The server's clock as a gateway sees it through heartbeats.
//!
//! Each heartbeat carries the server's time when it was sent. Its time
//! minus ours when the heartbeat is read is the server's lead over our
//! clock *less* however long the heartbeat took to arrive: the wire, and
//! any time it sat in a buffer (a gateway that was paused, or busy, reads
//! seconds of heartbeats at once). The least delayed heartbeats show the
//! lead best, so the estimate is the largest sample of a sliding window
//! ([`LEAD_WINDOW`], two buckets so that a past bucket survives a pause),
//! and each heartbeat is dated by how much later than that it arrived.
//!
//! That date is what freshness counts from: a heartbeat vouches that every
//! change up to its cursor is applied *when it was sent*. Counted from when
//! it is read, a buffered heartbeat would make a gateway fresh while the
//! changes sent after it are still unread.

use std::time::Duration;

/// How long a largest sample stands before a newer bucket replaces it, so
/// a step of either clock is followed within two windows.
pub const LEAD_WINDOW: Duration = Duration::from_secs(30);

/// The sliding largest sample of the server's lead, in milliseconds.
#[derive(Debug, Default)]
pub(super) struct LeadWindow {
    /// Largest sample of the current bucket, and when it began (our
    /// clock, milliseconds on the gateway's monotonic epoch).
    current: Option<(i64, u64)>,
    /// Largest sample of the bucket before.
    previous: Option<i64>,
}

impl LeadWindow {
    /// Records a heartbeat sent at `server_time_ms` (server clock) and read
    /// at `read_unix_ms` (our clock) = `read_at` (monotonic milliseconds).
    /// Returns the lead estimate and the heartbeat's date on the monotonic
    /// clock: `read_at` less how much later than the least delayed
    /// heartbeat it arrived.
    pub(super) fn record(
        &mut self,
        server_time_ms: i64,
        read_unix_ms: i64,
        read_at: u64,
    ) -> (i64, u64) {
        let sample = server_time_ms - read_unix_ms;
        let window = LEAD_WINDOW.as_millis() as u64;
        self.current = match self.current {
            Some((largest, began)) if read_at.saturating_sub(began) < window => {
                Some((largest.max(sample), began))
            }
            // One step at a time, whatever the gap: after a pause the
            // bucket before it still holds the lead seen before the pause.
            rolled => {
                self.previous = rolled.map(|(largest, _)| largest);
                Some((sample, read_at))
            }
        };
        let lead = self.lead().unwrap_or(sample);
        let late_by = u64::try_from(lead - sample).unwrap_or(0);
        (lead, read_at.saturating_sub(late_by).max(1))
    }

    /// The lead estimate, if any heartbeat was recorded.
    fn lead(&self) -> Option<i64> {
        let current = self.current.map(|(largest, _)| largest);
        current.max(self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW_MS: u64 = LEAD_WINDOW.as_millis() as u64;

    #[test]
    fn a_heartbeat_read_late_is_dated_when_it_was_sent() {
        let mut window = LeadWindow::default();
        // The server runs 200 ms ahead; a heartbeat takes 1 ms.
        assert_eq!(window.record(10_199, 10_000, 1_000), (199, 1_000));
        // Paused 5 s: the heartbeat sent at 10_399 is read at 15_000.
        let (lead, dated) = window.record(10_399, 15_000, 6_000);
        assert_eq!(lead, 199);
        assert_eq!(dated, 6_000 - 4_800, "dated when it was sent");
    }

    #[test]
    fn a_long_pause_keeps_the_lead_seen_before_it() {
        let mut window = LeadWindow::default();
        window.record(10_199, 10_000, 1_000);
        // Two minutes later, the first of the buffered heartbeats.
        let (lead, dated) = window.record(10_399, 130_000, 121_000);
        assert_eq!(lead, 199);
        assert!(dated < 2_000, "{dated}");
    }

    #[test]
    fn a_clock_step_is_followed_within_two_windows() {
        let mut window = LeadWindow::default();
        window.record(600_000, 0, 1);
        // The server's clock steps back by ten minutes.
        let mut at = 1;
        let mut lead = 600_000;
        while lead > 0 && at < 3 * WINDOW_MS {
            at += 2_000;
            (lead, _) = window.record(at as i64, at as i64, at);
        }
        assert_eq!(lead, 0);
        assert!(at <= 2 * WINDOW_MS + 2_000, "{at}");
    }
}
