//! The Redis key names of the table in the module doc of `redis`, built
//! from versioned consts, and the partition each record belongs to.

/// Layout version, part of every key.
pub(super) const LAYOUT: &str = "v1";
/// Most log partitions a deployment may have.
pub const MAX_PARTITIONS: u16 = 1_024;

// What follows `{prefix}v1:{p<n>}:` in a partition's keys.
/// A token revocation's hash, by record name.
const JTI_RECORD: &str = "jti:";
/// A subject cut-off's hash, by record name.
const SUB_RECORD: &str = "sub:";
/// A cut-off's hash by another claim than `sub`, by record name.
const CUT_RECORD: &str = "cut:";
/// The token revocations' expiry index.
const JTI_EXPIRY: &str = "jti-expiry";
/// The subject cut-offs' expiry index.
const SUB_EXPIRY: &str = "sub-expiry";
/// The other cut-offs' expiry index.
const CUT_EXPIRY: &str = "cut-expiry";
/// The partition's change-log stream.
const LOG: &str = "log";
/// An API key's live revocations, by key name.
const ACTOR_LIVE: &str = "actor-live:";

// What follows `{prefix}v1:` in the deployment's own keys.
/// The digest key.
const DIGEST_KEY: &str = "digest-key";
/// The partition count.
const PARTITIONS: &str = "partitions";
/// The leeway, in seconds, every replica keeps records past `exp`.
const LEEWAY: &str = "leeway";

/// The key names, built once from the prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// One per partition, in partition order.
    pub(super) partitions: Vec<PartitionKeys>,
    /// Where the deployment's digest key is.
    pub(super) digest_key: String,
    /// Where the deployment's partition count is.
    pub(super) partition_count: String,
    /// The deployment's leeway (see `RedisStore::pin_leeway`).
    pub(super) leeway: String,
}

/// The keys of one partition; they share its hash tag.
#[derive(Debug, Clone)]
pub(super) struct PartitionKeys {
    /// Followed by a record name: a token revocation's hash.
    pub(super) jti_prefix: String,
    /// Followed by a record name: a subject cut-off's hash.
    pub(super) sub_prefix: String,
    /// Followed by a record name: the hash of a cut-off by another claim.
    pub(super) cut_prefix: String,
    pub(super) jti_expiry: String,
    pub(super) sub_expiry: String,
    pub(super) cut_expiry: String,
    pub(super) log: String,
    /// Followed by an API key's name: its live revocations.
    pub(super) actor_prefix: String,
}

// === impl Keys ===

impl Keys {
    pub(super) fn new(prefix: &str, partitions: u16) -> Self {
        let partitions = (0..partitions.max(1))
            .map(|n| {
                let base = format!("{prefix}{LAYOUT}:{{p{n}}}:");
                PartitionKeys {
                    jti_prefix: format!("{base}{JTI_RECORD}"),
                    sub_prefix: format!("{base}{SUB_RECORD}"),
                    cut_prefix: format!("{base}{CUT_RECORD}"),
                    jti_expiry: format!("{base}{JTI_EXPIRY}"),
                    sub_expiry: format!("{base}{SUB_EXPIRY}"),
                    cut_expiry: format!("{base}{CUT_EXPIRY}"),
                    log: format!("{base}{LOG}"),
                    actor_prefix: format!("{base}{ACTOR_LIVE}"),
                }
            })
            .collect();
        Self {
            partitions,
            digest_key: format!("{prefix}{LAYOUT}:{DIGEST_KEY}"),
            partition_count: format!("{prefix}{LAYOUT}:{PARTITIONS}"),
            leeway: format!("{prefix}{LAYOUT}:{LEEWAY}"),
        }
    }

    /// The partition a record (or an API key's live index) belongs to, and
    /// its keys.
    pub(super) fn partition_of(&self, name: &str) -> (usize, &PartitionKeys) {
        let index = partition_index(name, self.partitions.len());
        (index, &self.partitions[index])
    }
}

// === impl PartitionKeys ===

impl PartitionKeys {
    /// The hash of the token revocation named `name`.
    pub(super) fn jti(&self, name: &str) -> String {
        prefixed(&self.jti_prefix, name)
    }

    /// The hash of the subject cut-off named `name`.
    pub(super) fn sub(&self, name: &str) -> String {
        prefixed(&self.sub_prefix, name)
    }

    /// The hash of the cut-off by another claim named `name`.
    pub(super) fn cut(&self, name: &str) -> String {
        prefixed(&self.cut_prefix, name)
    }

    /// The live-revocation index of the API key named `actor`.
    pub(super) fn actor_live(&self, actor: &str) -> String {
        prefixed(&self.actor_prefix, actor)
    }
}

/// `prefix` followed by `name`, allocated once at its length: keys are
/// built on every call, and `format!` grew its string several times.
fn prefixed(prefix: &str, name: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + name.len());
    key.push_str(prefix);
    key.push_str(name);
    key
}

/// The partition of a record name: FNV-1a (64-bit) modulo the count, the
/// same in every process and version.
fn partition_index(name: &str, partitions: usize) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record_name;

    #[test]
    fn partitions_spread_records_evenly_and_never_move_them() {
        let mut counts = [0usize; 8];
        for i in 0..8_000 {
            counts[partition_index(&record_name("https://issuer.test", &format!("jti-{i}")), 8)] +=
                1;
        }
        assert!(
            counts.iter().all(|&c| (800..1_200).contains(&c)),
            "{counts:?}"
        );
        // Fixed values: a change of hash would strand every stored record.
        assert_eq!(
            partition_index("19:https://issuer.test:abc", 16),
            partition_index("19:https://issuer.test:abc", 16)
        );
        assert_eq!(
            partition_index("", 7),
            (0xcbf2_9ce4_8422_2325_u64 % 7) as usize
        );
    }

    #[test]
    fn every_key_of_a_partition_shares_its_hash_tag() {
        let keys = Keys::new("revocd:", 3);
        let tag = |key: &str| {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            key[open + 1..close].to_owned()
        };
        for (n, partition) in keys.partitions.iter().enumerate() {
            let expected = format!("p{n}");
            for key in [
                partition.jti("7:iss:{}x"),
                partition.sub("7:iss:x"),
                partition.cut("3:iss:5:3:sid:x"),
                partition.jti_expiry.clone(),
                partition.sub_expiry.clone(),
                partition.cut_expiry.clone(),
                partition.log.clone(),
                partition.actor_live("auth-server"),
            ] {
                assert_eq!(tag(&key), expected, "{key}");
            }
        }
    }

    #[test]
    fn key_names_are_the_ones_deployments_hold() {
        // Deployed data lives under these names: changing one strands it.
        let keys = Keys::new("revocd:", 2);
        let p1 = &keys.partitions[1];
        assert_eq!(p1.jti("3:iss:x"), "revocd:v1:{p1}:jti:3:iss:x");
        assert_eq!(p1.sub("3:iss:s"), "revocd:v1:{p1}:sub:3:iss:s");
        assert_eq!(p1.jti_expiry, "revocd:v1:{p1}:jti-expiry");
        assert_eq!(p1.sub_expiry, "revocd:v1:{p1}:sub-expiry");
        assert_eq!(p1.cut("3:iss:s"), "revocd:v1:{p1}:cut:3:iss:s");
        assert_eq!(p1.cut_expiry, "revocd:v1:{p1}:cut-expiry");
        assert_eq!(p1.log, "revocd:v1:{p1}:log");
        assert_eq!(p1.actor_live("ops"), "revocd:v1:{p1}:actor-live:ops");
        assert_eq!(keys.digest_key, "revocd:v1:digest-key");
        assert_eq!(keys.partition_count, "revocd:v1:partitions");
        assert_eq!(keys.leeway, "revocd:v1:leeway");
        assert_eq!(keys.partition_of("").0, partition_index("", 2));
    }
}
