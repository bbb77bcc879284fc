//! Walking the live records: listings and the filter's full load. Both walk
//! the expiry indexes with `ZSCAN`, partition by partition, so memory stays
//! bounded and no keyspace `SCAN` is needed. `ZSCAN` returns every member
//! present for the whole walk at least once (a member may come twice when
//! the index is resized meanwhile), which is what makes paging stable under
//! concurrent writes.

use std::collections::HashMap;

use super::decode::{field, Fields, Named};
use super::RedisStore;
use crate::store::{
    parse_record_name, Change, Error, Page, Record, RecordFilter, RecordKind, SUBJECT_CLAIM,
};

/// Records asked for per `ZSCAN` call when walking the live set.
const SCAN_PAGE: usize = 1_000;
/// `ZSCAN` calls one page of a listing may take at most, so a filter that
/// matches little cannot keep a call going for long.
const MAX_SCANS_PER_PAGE: usize = 16;

/// Which expiry index of a partition, in the order a walk visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Revocations,
    Subjects,
    Claims,
}

impl Index {
    /// The index of the records of `kind`.
    fn of(kind: RecordKind) -> Index {
        match kind {
            RecordKind::Token => Index::Revocations,
            RecordKind::Subject => Index::Subjects,
            RecordKind::Claim => Index::Claims,
        }
    }

    /// The index a walk over `kind` (`None`: all) visits after this one
    /// in the same partition.
    fn next(self, kind: Option<RecordKind>) -> Option<Index> {
        match (kind, self) {
            (Some(_), _) | (None, Index::Claims) => None,
            (None, Index::Revocations) => Some(Index::Subjects),
            (None, Index::Subjects) => Some(Index::Claims),
        }
    }

    /// The record name of one of this index's members: what it revokes.
    fn named(self, name: &str) -> Option<Named> {
        let (issuer, id) = parse_record_name(name)?;
        let issuer = issuer.to_owned();
        Some(match self {
            Index::Revocations => Named::Token {
                issuer,
                jti: id.to_owned(),
            },
            Index::Subjects => Named::Cutoff {
                issuer,
                claim: SUBJECT_CLAIM.to_owned(),
                value: id.to_owned(),
            },
            Index::Claims => {
                let (claim, value) = parse_record_name(id)?;
                Named::Cutoff {
                    issuer,
                    claim: claim.to_owned(),
                    value: value.to_owned(),
                }
            }
        })
    }
}

/// Where a walk is: a partition, one of its indexes, a `ZSCAN` cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    partition: usize,
    index: Index,
    scan_cursor: u64,
}

impl Position {
    /// Where a walk over `kind` starts.
    fn start(kind: Option<RecordKind>) -> Self {
        Position {
            partition: 0,
            index: kind.map_or(Index::Revocations, Index::of),
            scan_cursor: 0,
        }
    }

    /// Where a walk over `kind` goes after a `ZSCAN` here answered `next`;
    /// `None` when it is done.
    fn advance(self, next: u64, kind: Option<RecordKind>, partitions: usize) -> Option<Self> {
        if next != 0 {
            return Some(Position {
                scan_cursor: next,
                ..self
            });
        }
        if let Some(index) = self.index.next(kind) {
            return Some(Position {
                index,
                scan_cursor: 0,
                ..self
            });
        }
        (self.partition + 1 < partitions).then(|| Position {
            partition: self.partition + 1,
            ..Position::start(kind)
        })
    }

    /// A page token: `<t|s|c>:<partition>:<cursor>` for the revocations,
    /// subject cut-offs and other cut-offs.
    fn token(self) -> String {
        let tag = match self.index {
            Index::Revocations => 't',
            Index::Subjects => 's',
            Index::Claims => 'c',
        };
        format!("{tag}:{}:{}", self.partition, self.scan_cursor)
    }

    fn parse_token(token: &str, partitions: usize) -> Result<Self, Error> {
        let mut parts = token.splitn(3, ':');
        let index = match parts.next() {
            Some("t") => Index::Revocations,
            Some("s") => Index::Subjects,
            Some("c") => Index::Claims,
            _ => return Err(Error::BadPageToken),
        };
        let mut number = || parts.next().and_then(|part| part.parse().ok());
        let (Some(partition), Some(scan_cursor)) = (number(), number()) else {
            return Err(Error::BadPageToken);
        };
        if partition as usize >= partitions {
            return Err(Error::BadPageToken);
        }
        Ok(Position {
            partition: partition as usize,
            index,
            scan_cursor,
        })
    }
}

// === impl RedisStore ===

impl RedisStore {
    pub(in crate::store) async fn list(
        &self,
        filter: &RecordFilter,
        page_size: usize,
        page_token: Option<&str>,
        now: i64,
    ) -> Result<Page<Record>, Error> {
        let partitions = self.keys.partitions.len();
        let mut position = match page_token {
            None => Some(Position::start(filter.kind)),
            Some(token) => Some(Position::parse_token(token, partitions)?),
        };
        let mut items = Vec::new();
        let mut calls = 0;
        while let Some(here) = position {
            if items.len() >= page_size || calls == MAX_SCANS_PER_PAGE {
                break;
            }
            calls += 1;
            let (next, members) = self.zscan(here, page_size).await?;
            position = here.advance(next, filter.kind, partitions);
            let live: Vec<String> = members
                .into_iter()
                .filter(|(_, until)| *until > now)
                .map(|(name, _)| name)
                .collect();
            let records = self.read_records(here, &live, now).await?;
            items.extend(records.into_iter().filter(|r| filter.matches(r)));
        }
        Ok(Page {
            items,
            next: position.map(Position::token),
        })
    }

    /// One `ZSCAN` call: (next cursor, (record name, until)).
    async fn zscan(&self, at: Position, count: usize) -> Result<(u64, Vec<(String, i64)>), Error> {
        let keys = &self.keys.partitions[at.partition];
        let key = match at.index {
            Index::Revocations => &keys.jti_expiry,
            Index::Subjects => &keys.sub_expiry,
            Index::Claims => &keys.cut_expiry,
        };
        let mut connection = self.connection.clone();
        Ok(redis::cmd("ZSCAN")
            .arg(key)
            .arg(at.scan_cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut connection)
            .await?)
    }

    /// Reads the named records of one partition's index in one pipeline;
    /// records that expired meanwhile are skipped.
    async fn read_records(
        &self,
        at: Position,
        names: &[String],
        now: i64,
    ) -> Result<Vec<Record>, Error> {
        if names.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let prefix = self.record_prefix(at);
        let keys: Vec<String> = names.iter().map(|name| format!("{prefix}{name}")).collect();
        let mut connection = self.connection.clone();
        let mut records = Vec::with_capacity(names.len());
        if at.index == Index::Revocations {
            // Packed values; a hash (written before packing) answers
            // WRONGTYPE and is read on its own.
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.get(key);
            }
            let replies: Vec<redis::RedisResult<Option<String>>> =
                pipe.ignore_errors().query_async(&mut connection).await?;
            for ((name, key), reply) in names.iter().zip(&keys).zip(replies) {
                let Some(Named::Token { issuer, jti }) = at.index.named(name) else {
                    continue;
                };
                if let Some(revocation) = self.revocation_from(key, reply, &issuer, &jti).await? {
                    records.push(Record::Token(revocation));
                }
            }
        } else {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hgetall(key);
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
            for ((name, key), fields) in names.iter().zip(&keys).zip(hashes) {
                let Some(named) = at.index.named(name) else {
                    continue;
                };
                if !fields.is_empty() {
                    records.push(Fields::stored(key, &fields).record(named)?);
                }
            }
        }
        records.retain(|record| record.change().keep_until() > now);
        Ok(records)
    }

    /// The prefix of the records of the index at `at`.
    fn record_prefix(&self, at: Position) -> &str {
        let keys = &self.keys.partitions[at.partition];
        match at.index {
            Index::Revocations => &keys.jti_prefix,
            Index::Subjects => &keys.sub_prefix,
            Index::Claims => &keys.cut_prefix,
        }
    }

    pub(in crate::store) fn scan_live(&self, now: i64) -> RedisLiveScan {
        RedisLiveScan {
            store: self.clone(),
            now,
            position: Some(Position::start(None)),
        }
    }
}

/// Walks every live record for the filter: revocations, then subject
/// cut-offs, then the other cut-offs (whose `nbf` is read with one
/// pipelined `HGET` per page), in each partition.
pub struct RedisLiveScan {
    store: RedisStore,
    now: i64,
    /// `None` when done.
    position: Option<Position>,
}

impl std::fmt::Debug for RedisLiveScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLiveScan")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl RedisLiveScan {
    pub(in crate::store) async fn next_page(&mut self) -> Result<Option<Vec<Change>>, Error> {
        let Some(here) = self.position else {
            return Ok(None);
        };
        let (next, members) = self.store.zscan(here, SCAN_PAGE).await?;
        self.position = here.advance(next, None, self.store.keys.partitions.len());
        let live: Vec<(String, i64)> = members
            .into_iter()
            .filter(|(_, until)| *until > self.now)
            .collect();
        let page = match here.index {
            Index::Revocations => live
                .iter()
                .filter_map(|(name, keep_until)| {
                    let (issuer, jti) = parse_record_name(name)?;
                    Some(Change::Revoked {
                        issuer: issuer.to_owned(),
                        jti: jti.to_owned(),
                        keep_until: *keep_until,
                    })
                })
                .collect(),
            Index::Subjects | Index::Claims => self.cutoffs(here, &live).await?,
        };
        Ok(Some(page))
    }

    /// Reads the `nbf` of each live cut-off in one pipeline; a record that
    /// expired meanwhile is skipped.
    async fn cutoffs(&self, at: Position, live: &[(String, i64)]) -> Result<Vec<Change>, Error> {
        if live.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let prefix = self.store.record_prefix(at);
        let mut pipe = redis::pipe();
        for (name, _) in live {
            pipe.hget(format!("{prefix}{name}"), field::NOT_BEFORE);
        }
        let mut connection = self.store.connection.clone();
        let not_befores: Vec<Option<i64>> = pipe.query_async(&mut connection).await?;
        let changes = live
            .iter()
            .zip(not_befores)
            .filter_map(|((name, keep_until), nbf)| {
                let Named::Cutoff {
                    issuer,
                    claim,
                    value,
                } = at.index.named(name)?
                else {
                    return None;
                };
                Some(Change::Cut {
                    issuer,
                    claim,
                    value,
                    not_before: nbf?,
                    keep_until: *keep_until,
                })
            });
        Ok(changes.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record_name;

    #[test]
    fn a_walk_visits_each_partitions_indexes_for_the_kind_asked() {
        let mut visited = Vec::new();
        let mut position = Some(Position::start(None));
        while let Some(here) = position {
            visited.push((here.partition, here.index));
            position = here.advance(0, None, 2);
        }
        use Index::*;
        assert_eq!(
            visited,
            [
                (0, Revocations),
                (0, Subjects),
                (0, Claims),
                (1, Revocations),
                (1, Subjects),
                (1, Claims)
            ]
        );
        let claims_only =
            Position::start(Some(RecordKind::Claim)).advance(0, Some(RecordKind::Claim), 2);
        assert_eq!(
            claims_only.map(|p| (p.partition, p.index)),
            Some((1, Claims))
        );
        let tokens_only =
            Position::start(Some(RecordKind::Token)).advance(0, Some(RecordKind::Token), 2);
        assert_eq!(
            tokens_only.map(|p| (p.partition, p.index)),
            Some((1, Revocations))
        );
    }

    #[test]
    fn page_tokens_round_trip_and_strangers_are_refused() {
        let position = Position {
            partition: 3,
            index: Index::Claims,
            scan_cursor: 99,
        };
        assert_eq!(
            Position::parse_token(&position.token(), 4).unwrap(),
            position
        );
        for bad in ["", "x:1:2", "t:1", "t:9:0", "t:a:b", "c:1"] {
            assert!(Position::parse_token(bad, 4).is_err(), "{bad}");
        }
    }

    #[test]
    fn index_members_name_what_they_revoke() {
        let named = |index: Index, issuer: &str, id: &str| index.named(&record_name(issuer, id));
        assert_eq!(
            named(Index::Claims, "iss", &record_name("sid", "a:b")),
            Some(Named::Cutoff {
                issuer: "iss".into(),
                claim: "sid".into(),
                value: "a:b".into()
            })
        );
        assert_eq!(
            named(Index::Subjects, "iss", "3:sid:x"),
            Some(Named::Cutoff {
                issuer: "iss".into(),
                claim: "sub".into(),
                value: "3:sid:x".into()
            }),
            "a subject that looks like a claim's id is a subject"
        );
        assert_eq!(named(Index::Claims, "iss", "not-a-name"), None);
    }
}
