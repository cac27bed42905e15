//! Validated identifiers. A value of these types has passed its charset and length rule, so the
//! rest of the code never re-checks strings that came from the network.

use serde::{Deserialize, Serialize};

use super::DomainError;

const MAX_NAME_BYTES: usize = 128;

fn check_token(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(DomainError::invalid(field, format!("is {} bytes, the limit is {MAX_NAME_BYTES}", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(DomainError::invalid(field, format!("contains {bad:?}; allowed are A-Z a-z 0-9 . _ : -")));
    }
    Ok(())
}

/// A counter name: 1-128 bytes of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CounterName(String);

impl CounterName {
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        check_token("name", &value)?;
        Ok(CounterName(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A lot name: 1-128 bytes of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LotName(String);

impl LotName {
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        check_token("lot", &value)?;
        Ok(LotName(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen idempotency key: 1-128 bytes of `[A-Za-z0-9._:-]` (a UUID fits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(String);

impl RequestId {
    /// An empty string means "no request id", as proto3 cannot tell unset from empty.
    pub fn parse_optional(value: impl Into<String>) -> Result<Option<Self>, DomainError> {
        let value = value.into();
        if value.is_empty() {
            return Ok(None);
        }
        check_token("request_id", &value)?;
        Ok(Some(RequestId(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_charset_and_length_rule() {
        assert!(CounterName::parse("a.b_c:d-9").is_ok());
        assert!(CounterName::parse("x".repeat(128)).is_ok());
        let too_long = CounterName::parse("x".repeat(129)).unwrap_err();
        assert!(too_long.to_string().contains("name"), "{too_long}");
        assert!(CounterName::parse("").is_err());
        assert!(CounterName::parse("a b").is_err());
        assert!(CounterName::parse("é").is_err());
        assert_eq!(RequestId::parse_optional("").unwrap(), None);
        let bad = RequestId::parse_optional("a/b").unwrap_err();
        assert!(bad.to_string().contains("request_id"), "{bad}");
    }
}
