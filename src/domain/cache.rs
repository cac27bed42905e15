//! The TTL cache: values that expire, and claims that let exactly one caller in the cluster fill a
//! missing key (a cluster-wide single-flight).
//!
//! Every time here is the leader's clock carried in a log entry (`at_ms`), so applying is
//! deterministic: a claim is granted, a value expires and a sweep removes it at the same log position
//! on every node. Reads compare expiry times with the serving node's clock, so an expired entry is
//! absent to readers even before the sweeper's removal is committed.
//!
//! Sizes are bounded per key, per value and in total (`MAX_CACHE_BYTES`); a full cache refuses new
//! entries instead of growing, and the bound is a constant so every node refuses the same writes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::DomainError;

pub const MAX_KEY_BYTES: usize = 256;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Keys, values and claims together; each entry also counts `ENTRY_OVERHEAD`.
pub const MAX_CACHE_BYTES: u64 = 64 << 20;
pub const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
pub const MAX_LEASE_MS: u64 = 10 * 60 * 1000;
/// What an entry costs beyond its key and value, so that a flood of empty values is bounded too.
const ENTRY_OVERHEAD: u64 = 64;
/// How many recent sweeper removals are remembered, so a read can say at which log index a key
/// expired. Oldest first out; removals arrive in log order.
const REMOVALS_KEPT: usize = 10_000;

/// A cache key: 1-256 bytes of printable ASCII without spaces (URLs and paths fit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        if value.is_empty() {
            return Err(DomainError::invalid("key", "must not be empty"));
        }
        if value.len() > MAX_KEY_BYTES {
            return Err(DomainError::invalid("key", format!("is {} bytes, the limit is {MAX_KEY_BYTES}", value.len())));
        }
        if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                "key",
                format!("contains {bad:?}; allowed is printable ASCII without spaces"),
            ));
        }
        Ok(CacheKey(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a value's size; the bytes themselves are opaque.
pub fn check_value(value: &[u8]) -> Result<(), DomainError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(DomainError::invalid("value", format!("is {} bytes, the limit is {MAX_VALUE_BYTES}", value.len())));
    }
    Ok(())
}

/// Checks a time-to-live or lease length; `field` names it in the error.
pub fn check_ttl(field: &str, ms: u64, max: u64) -> Result<(), DomainError> {
    if ms == 0 || ms > max {
        return Err(DomainError::invalid(field, format!("{ms} ms is outside 1..={max}")));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// `version` is the log index that wrote the value.
    Value { value: Vec<u8>, expires_at_ms: u64, version: u64 },
    /// Someone is computing the value; only `token` may fill it while the lease lasts.
    Claim { token: String, holder: String, expires_at_ms: u64 },
}

impl Slot {
    fn expires_at_ms(&self) -> u64 {
        match self {
            Slot::Value { expires_at_ms, .. } | Slot::Claim { expires_at_ms, .. } => *expires_at_ms,
        }
    }

    fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms()
    }

    fn cost(&self, key: &str) -> u64 {
        let body = match self {
            Slot::Value { value, .. } => value.len(),
            Slot::Claim { token, holder, .. } => token.len() + holder.len(),
        };
        ENTRY_OVERHEAD + (key.len() + body) as u64
    }
}

/// A live value as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CachedValue {
    pub value: Vec<u8>,
    pub expires_at_ms: u64,
    pub version: u64,
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The key holds a live value: nothing to compute.
    Hit(CachedValue),
    /// This caller must compute the value and `Put` it with `token` before `expires_at_ms`.
    Granted { token: String, expires_at_ms: u64 },
    /// Another caller holds the claim until `expires_at_ms`.
    Held { holder: String, expires_at_ms: u64 },
}

/// What a read of one key finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRead {
    pub value: Option<CachedValue>,
    /// Set when the key is absent because the expiry sweeper removed it at this log index.
    pub removed_at_index: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cache {
    slots: BTreeMap<String, Slot>,
    /// The sum of every slot's cost, kept so a put is checked against the bound in O(1).
    bytes: u64,
    removed: HashMap<String, u64>,
    removal_order: VecDeque<(u64, String)>,
}

impl Cache {
    /// Replaces `key`'s slot, refusing when the total would pass `MAX_CACHE_BYTES`.
    fn store(&mut self, key: &CacheKey, slot: Slot) -> Result<(), DomainError> {
        let old = self.slots.get(key.as_str()).map_or(0, |s| s.cost(key.as_str()));
        let new = slot.cost(key.as_str());
        let total = self.bytes - old + new;
        if total > MAX_CACHE_BYTES {
            return Err(DomainError::ResourceExhausted(format!(
                "the cache holds {} of {MAX_CACHE_BYTES} bytes; {} more do not fit",
                self.bytes,
                new.saturating_sub(old)
            )));
        }
        self.bytes = total;
        self.removed.remove(key.as_str());
        self.slots.insert(key.as_str().to_string(), slot);
        Ok(())
    }

    fn take(&mut self, key: &str) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.bytes -= slot.cost(key);
        Some(slot)
    }

    /// Stores a value. With `token`, the put fulfils that claim and is refused unless the claim
    /// still holds the key.
    pub fn put(
        &mut self,
        key: &CacheKey,
        value: &[u8],
        ttl_ms: u64,
        token: Option<&str>,
        at_ms: u64,
        index: u64,
    ) -> Result<CachedValue, DomainError> {
        if let Some(token) = token {
            match self.slots.get(key.as_str()) {
                Some(Slot::Claim { token: held, expires_at_ms, .. }) if held == token && at_ms < *expires_at_ms => {}
                Some(Slot::Claim { token: held, .. }) if held == token => {
                    return Err(DomainError::FailedPrecondition(format!(
                        "claim {token} on key {} expired before this put; claim the key again",
                        key.as_str()
                    )))
                }
                _ => {
                    return Err(DomainError::FailedPrecondition(format!(
                        "claim {token} does not hold key {}; it was filled, deleted, or claimed by someone else",
                        key.as_str()
                    )))
                }
            }
        }
        let stored = CachedValue { value: value.to_vec(), expires_at_ms: at_ms.saturating_add(ttl_ms), version: index };
        self.store(
            key,
            Slot::Value { value: stored.value.clone(), expires_at_ms: stored.expires_at_ms, version: index },
        )?;
        Ok(stored)
    }

    /// Removes a value or a claim; answers whether a live one was there.
    pub fn delete(&mut self, key: &CacheKey, at_ms: u64) -> bool {
        self.take(key.as_str()).is_some_and(|s| s.live(at_ms))
    }

    /// Gives the key to exactly one caller: the first claim after the key is empty or expired wins;
    /// its token is derived from the log index, so every node grants the same token.
    pub fn claim(
        &mut self,
        key: &CacheKey,
        lease_ms: u64,
        holder: &str,
        at_ms: u64,
        index: u64,
    ) -> Result<ClaimOutcome, DomainError> {
        match self.slots.get(key.as_str()) {
            Some(Slot::Value { value, expires_at_ms, version }) if at_ms < *expires_at_ms => {
                return Ok(ClaimOutcome::Hit(CachedValue {
                    value: value.clone(),
                    expires_at_ms: *expires_at_ms,
                    version: *version,
                }))
            }
            Some(Slot::Claim { holder, expires_at_ms, .. }) if at_ms < *expires_at_ms => {
                return Ok(ClaimOutcome::Held { holder: holder.clone(), expires_at_ms: *expires_at_ms })
            }
            _ => {}
        }
        let token = format!("claim-{index}");
        let expires_at_ms = at_ms.saturating_add(lease_ms);
        self.store(key, Slot::Claim { token: token.clone(), holder: holder.to_string(), expires_at_ms })?;
        Ok(ClaimOutcome::Granted { token, expires_at_ms })
    }

    /// The sweeper's effect: removes each of `keys` whose value or claim expired by `at_ms` (a key
    /// written again since the sweeper looked is left alone). Answers the keys removed.
    pub fn expire(&mut self, keys: &[CacheKey], at_ms: u64, index: u64) -> Vec<String> {
        let mut removed = Vec::new();
        for key in keys {
            if self.slots.get(key.as_str()).is_some_and(|s| !s.live(at_ms)) {
                self.take(key.as_str());
                self.remember_removal(key.as_str(), index);
                removed.push(key.as_str().to_string());
            }
        }
        removed
    }

    fn remember_removal(&mut self, key: &str, index: u64) {
        self.removed.insert(key.to_string(), index);
        self.removal_order.push_back((index, key.to_string()));
        while self.removal_order.len() > REMOVALS_KEPT {
            if let Some((at, old)) = self.removal_order.pop_front() {
                if self.removed.get(&old) == Some(&at) {
                    self.removed.remove(&old);
                }
            }
        }
    }

    /// Up to `limit` keys whose value or claim has expired by `now_ms`: the sweeper's work list.
    pub fn expired(&self, now_ms: u64, limit: usize) -> Vec<CacheKey> {
        self.slots.iter().filter(|(_, s)| !s.live(now_ms)).take(limit).map(|(k, _)| CacheKey(k.clone())).collect()
    }

    pub fn get(&self, key: &CacheKey, now_ms: u64) -> CacheRead {
        let value = match self.slots.get(key.as_str()) {
            Some(Slot::Value { value, expires_at_ms, version }) if now_ms < *expires_at_ms => {
                Some(CachedValue { value: value.clone(), expires_at_ms: *expires_at_ms, version: *version })
            }
            _ => None,
        };
        let removed_at_index = if value.is_none() { self.removed.get(key.as_str()).copied() } else { None };
        CacheRead { value, removed_at_index }
    }

    /// Every live value, for rebuilding the eventual view from a snapshot.
    pub fn values(&self) -> impl Iterator<Item = (&str, CachedValue)> + '_ {
        self.slots.iter().filter_map(|(k, s)| match s {
            Slot::Value { value, expires_at_ms, version } => Some((
                k.as_str(),
                CachedValue { value: value.clone(), expires_at_ms: *expires_at_ms, version: *version },
            )),
            Slot::Claim { .. } => None,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> CacheKey {
        CacheKey::parse(k).unwrap()
    }

    #[test]
    fn keys_values_and_ttls_are_bounded() {
        assert!(CacheKey::parse("").is_err());
        assert!(CacheKey::parse("a b").unwrap_err().to_string().contains("key"));
        assert!(CacheKey::parse("x".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(CacheKey::parse("/users/42?full=1").is_ok());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).unwrap_err().to_string().contains("value"));
        assert!(check_ttl("ttl_ms", 0, MAX_TTL_MS).is_err());
        assert!(check_ttl("ttl_ms", MAX_TTL_MS + 1, MAX_TTL_MS).is_err());
    }

    #[test]
    fn one_claim_wins_until_it_is_filled_or_expires() {
        let mut c = Cache::default();
        let k = key("k");
        let first = c.claim(&k, 1000, "a", 100, 1).unwrap();
        let ClaimOutcome::Granted { token, expires_at_ms: 1100 } = first else { panic!("{first:?}") };
        assert_eq!(
            c.claim(&k, 1000, "b", 200, 2).unwrap(),
            ClaimOutcome::Held { holder: "a".into(), expires_at_ms: 1100 }
        );
        // A put with someone else's token is refused and changes nothing.
        assert!(matches!(c.put(&k, b"v", 500, Some("claim-9"), 300, 3), Err(DomainError::FailedPrecondition(_))));
        let stored = c.put(&k, b"v", 500, Some(&token), 300, 4).unwrap();
        assert_eq!(stored.expires_at_ms, 800);
        assert!(matches!(c.claim(&k, 1000, "b", 400, 5).unwrap(), ClaimOutcome::Hit(v) if v.value == b"v"));
        // The token is spent: the claim no longer holds the key.
        assert!(c.put(&k, b"w", 500, Some(&token), 450, 6).is_err());
        // Expired: the next claim is granted afresh.
        assert!(matches!(c.claim(&k, 1000, "b", 900, 7).unwrap(), ClaimOutcome::Granted { .. }));
    }

    #[test]
    fn an_abandoned_claim_passes_on_after_its_lease() {
        let mut c = Cache::default();
        let k = key("k");
        c.claim(&k, 100, "dead", 0, 1).unwrap();
        assert!(matches!(c.claim(&k, 100, "b", 99, 2).unwrap(), ClaimOutcome::Held { .. }));
        let ClaimOutcome::Granted { token, .. } = c.claim(&k, 100, "b", 100, 3).unwrap() else { panic!() };
        assert_eq!(token, "claim-3");
        assert!(c.put(&k, b"late", 10, Some("claim-1"), 150, 4).is_err(), "the dead holder's token is stale");
    }

    #[test]
    fn reads_hide_expired_values_and_the_sweeper_removes_them_at_its_index() {
        let mut c = Cache::default();
        let (a, b) = (key("a"), key("b"));
        c.put(&a, b"1", 100, None, 0, 1).unwrap();
        c.put(&b, b"2", 1000, None, 0, 2).unwrap();
        assert!(c.get(&a, 99).value.is_some());
        assert_eq!(c.get(&a, 100), CacheRead { value: None, removed_at_index: None });
        assert_eq!(c.expired(150, 10), vec![a.clone()]);
        assert_eq!(c.expire(&[a.clone(), b.clone()], 150, 7), vec!["a".to_string()]);
        assert_eq!(c.get(&a, 150).removed_at_index, Some(7));
        assert!(c.get(&b, 150).value.is_some());
        c.put(&a, b"3", 100, None, 200, 8).unwrap();
        assert_eq!(c.get(&a, 250).removed_at_index, None);
    }

    #[test]
    fn a_full_cache_refuses_and_keeps_its_accounting() {
        let mut c = Cache::default();
        let big = vec![0u8; MAX_VALUE_BYTES];
        let mut n = 0u64;
        let err = loop {
            match c.put(&key(&format!("k{n}")), &big, 1000, None, 0, n) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, DomainError::ResourceExhausted(_)), "{err}");
        assert!(c.bytes() <= MAX_CACHE_BYTES);
        // Overwriting an existing key with a smaller value still fits.
        c.put(&key("k0"), b"small", 1000, None, 0, n + 1).unwrap();
        assert!(c.delete(&key("k1"), 0));
        let expected: u64 = c.slots.iter().map(|(k, s)| s.cost(k)).sum();
        assert_eq!(c.bytes(), expected);
    }
}
