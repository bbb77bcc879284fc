//! The change log read by range rather than followed: its newest end,
//! where a replica starts following, and the audit trail. Both read every
//! partition's stream with `XRANGE`/`XREVRANGE` and merge the partitions
//! into one log order, with the cursors of [`crate::cursor`].

use futures_util::future::try_join_all;

use super::log::{logged_change, merge, Fetched, LogEntry, RangeReply};
use super::{decode, RedisStore};
use crate::cursor::{EntryId, Positions};
use crate::store::{AuditEntry, Error, LogTail, Page, RecordFilter};

/// Store calls one page of the audit trail may take at most, so a filter
/// that matches little cannot keep a call going for long.
const MAX_READS_PER_PAGE: usize = 16;
/// Most entries one read of the log's newest end asks for: a reply of
/// `--delta-history` entries (100,000 by default) in one piece can take
/// longer than `--redis-timeout`, and a load that times out is retried
/// from the start, so a replica would never finish loading.
const TAIL_PAGE: usize = 1_000;

// === impl RedisStore ===

impl RedisStore {
    /// One `XRANGE`/`XREVRANGE` of every partition's log, concurrently.
    async fn ranges(
        &self,
        command: &str,
        bounds: Vec<(String, String)>,
        count: usize,
    ) -> Result<Vec<Vec<LogEntry>>, Error> {
        let reads = self
            .keys
            .partitions
            .iter()
            .zip(bounds)
            .map(|(keys, (from, to))| {
                let mut connection = self.connection.clone();
                async move {
                    let reply: RangeReply = redis::cmd(command)
                        .arg(&keys.log)
                        .arg(from)
                        .arg(to)
                        .arg("COUNT")
                        .arg(count.max(1))
                        .query_async(&mut connection)
                        .await?;
                    Ok::<_, Error>(reply.0)
                }
            });
        try_join_all(reads).await
    }

    /// Up to `count` of a partition's newest log entries, newest first,
    /// read [`TAIL_PAGE`] at a time, and whether they are the whole log
    /// (only said when one read held them all: between reads the log may
    /// be trimmed).
    async fn newest_entries(
        &self,
        log: &str,
        count: usize,
    ) -> Result<(Vec<LogEntry>, bool), Error> {
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut newer_than = "+".to_owned();
        loop {
            let asked = (count - entries.len()).clamp(1, TAIL_PAGE);
            let page: RangeReply = redis::cmd("XREVRANGE")
                .arg(log)
                .arg(&newer_than)
                .arg("-")
                .arg("COUNT")
                .arg(asked)
                .query_async(&mut self.connection.clone())
                .await?;
            let first_read = entries.is_empty();
            let got = page.0.len();
            if let Some(oldest) = page.0.last() {
                newer_than = format!("({}", oldest.id);
            }
            entries.extend(page.0);
            if got < asked || entries.len() >= count {
                return Ok((entries, first_read && got < asked));
            }
        }
    }

    pub(in crate::store) async fn log_tail(&self, count: usize) -> Result<LogTail, Error> {
        let partitions = self.keys.partitions.len();
        let reads = self
            .keys
            .partitions
            .iter()
            .map(|keys| self.newest_entries(&keys.log, count.max(1)));
        let newest_first = try_join_all(reads).await?;
        let mut head = Positions::origin(partitions);
        let mut whole_log = true;
        let mut fetched = Fetched::new();
        for (partition, (entries, whole)) in newest_first.into_iter().enumerate() {
            if let Some(newest) = entries.first().and_then(|e| EntryId::parse(&e.id)) {
                head.0[partition] = newest;
            }
            whole_log &= whole;
            fetched.extend(entries.into_iter().map(|entry| (partition, entry)));
        }
        let mut merged = merge(fetched)?;
        let window_start = merged.len().saturating_sub(count);
        whole_log &= window_start == 0;
        // Where each partition stands just before the window.
        let mut position = Positions::origin(partitions);
        for (id, partition, _) in &merged[..window_start] {
            position.0[*partition] = *id;
        }
        if !whole_log {
            let mut seen_before_window = vec![false; partitions];
            for (_, partition, _) in &merged[..window_start] {
                seen_before_window[*partition] = true;
            }
            for (id, partition, _) in &merged[window_start..] {
                if !seen_before_window[*partition] {
                    seen_before_window[*partition] = true;
                    position.0[*partition] = id.before();
                }
            }
        }
        let start = whole_log.then(|| position.to_string());
        let mut entries = Vec::with_capacity(merged.len() - window_start);
        for (id, partition, entry) in merged.drain(window_start..) {
            position.0[partition] = id;
            entries.push(logged_change(
                &self.keys.partitions[partition].log,
                id,
                &entry,
                &position,
            )?);
        }
        Ok(LogTail {
            head: head.to_string(),
            entries,
            start,
        })
    }

    pub(in crate::store) async fn audit(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<AuditEntry>, Error> {
        let partitions = self.keys.partitions.len();
        let mut position = match page_token {
            Some(token) => Positions::parse(token, partitions).ok_or(Error::BadPageToken)?,
            None => {
                let since = EntryId {
                    millis: filter.since.max(0) as u64 * 1_000,
                    sequence: 0,
                };
                Positions(vec![since.before(); partitions])
            }
        };
        let end = match filter.until {
            until if until > 0 => (until as u64 * 1_000 - 1).to_string(),
            _ => "+".to_owned(),
        };
        let count = page_size.max(1);
        let mut items = Vec::new();
        for _ in 0..MAX_READS_PER_PAGE {
            let bounds = position
                .0
                .iter()
                .map(|id| (format!("({id}"), end.clone()))
                .collect();
            let pages = self.ranges("XRANGE", bounds, count).await?;
            // A partition that returned a full page may hold more beyond it.
            let mut more = pages
                .iter()
                .map(|page| page.len() == count)
                .collect::<Vec<_>>();
            let fetched = pages
                .into_iter()
                .enumerate()
                .flat_map(|(partition, page)| page.into_iter().map(move |e| (partition, e)))
                .collect();
            let mut merged = merge(fetched)?;
            // Only the first `count` overall are surely in order.
            if merged.len() > count {
                for (_, partition, _) in merged.drain(count..) {
                    more[partition] = true;
                }
            }
            for (id, partition, entry) in merged {
                position.0[partition] = id;
                let record = decode::entry_record(&self.keys.partitions[partition].log, &entry)?;
                if filter.matches(&record) {
                    items.push(AuditEntry {
                        cursor: position.to_string(),
                        logged_at_ms: id.millis as i64,
                        record,
                    });
                }
            }
            if !more.contains(&true) {
                return Ok(Page { items, next: None });
            }
            if items.len() >= count {
                break;
            }
        }
        Ok(Page {
            items,
            next: Some(position.to_string()),
        })
    }
}
