//! Users and access rules as the controller group records them: each user's SCRAM
//! credential (salt, iterations, StoredKey, ServerKey: never the password) and the
//! cluster's access rules (`security::acl`). Applied like every controller entry (the
//! same decision on every replica at the same index), kept in the controller's `Topics`
//! (so every shard hears them with the topics) and in its snapshots.
//!
//! Owns the entry format and the tables; never authenticates nor authorizes anything
//! itself (`shard::client_auth` and `shard::authorize` do, with these tables).
//!
//! ```text
//! kind 9 v1, access : action u8 (1 set user, 2 delete user, 3 add rule, 4 remove rule) | 0 u8 | body
//!   set user    : name | iterations u32 | salt length u16 | salt | stored key 32 | server key 32
//!   delete user : name
//!   add, remove : rule
//! name      : length u16 | UTF-8
//! rule      : principal (length 0: everyone) | pattern kind u8 (1 topic, 2 topic prefix,
//!             3 group, 4 group prefix, 5 cluster) | name | operation u8 (0 all, 1-7) | allow u8
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::entry_cursor::Cursor;
use crate::broker::log_entry::EntryDecodeError;
use crate::constants::{MAX_ACL_NAME_BYTES, MAX_ACL_RULES, MAX_SCRAM_ITERATIONS, MAX_USERS};
use crate::security::acl::{Operation, Pattern, Rule};
use crate::security::scram::StoredCredential;

/// Kind byte of an access entry.
pub const ACCESS_KIND: u8 = 9;

/// Version of the access entry's format.
const ACCESS_VERSION: u8 = 1;

/// The longest salt a credential may carry.
pub const MAX_SALT_BYTES: usize = 64;

/// An access entry of the controller's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessEntry {
    /// A user is created, or its credential replaced.
    SetUser {
        /// The user's name (`valid_user_name`).
        name: String,
        /// Its credential.
        credential: StoredCredential,
    },
    /// A user is deleted.
    DeleteUser {
        /// Its name.
        name: String,
    },
    /// A rule is added.
    AddRule(Rule),
    /// A rule is removed.
    RemoveRule(Rule),
}

/// Users and rules as applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessControl {
    pub(crate) users: BTreeMap<String, StoredCredential>,
    pub(crate) rules: BTreeSet<Rule>,
}

/// User names: 1 to `MAX_ACL_NAME_BYTES` of letters, digits, `.`, `_`, `-` and `@`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=MAX_ACL_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Principals a rule may name: a user name, or a client certificate's common name (1 to
/// `MAX_ACL_NAME_BYTES` bytes without control characters; not `*`, which means everyone).
pub fn valid_principal(name: &str) -> bool {
    (1..=MAX_ACL_NAME_BYTES).contains(&name.len())
        && name != "*"
        && !name.chars().any(char::is_control)
}

/// Whether a credential's fields are within what a server accepts.
pub fn credential_fits(credential: &StoredCredential) -> bool {
    (1..=MAX_SALT_BYTES).contains(&credential.salt.len())
        && (crate::constants::MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS)
            .contains(&credential.iterations)
}

impl AccessControl {
    /// Applies an entry; whether anything changed. A user beyond `MAX_USERS` or a rule
    /// beyond `MAX_ACL_RULES` is not added (the request handler refuses it first; a
    /// race of two is decided here, alike on every replica).
    pub fn apply(&mut self, entry: AccessEntry) -> bool {
        match entry {
            AccessEntry::SetUser { name, credential } => {
                if !self.users.contains_key(&name) && self.users.len() >= MAX_USERS {
                    return false;
                }
                let previous = self.users.insert(name, credential.clone());
                previous.as_ref() != Some(&credential)
            }
            AccessEntry::DeleteUser { name } => self.users.remove(&name).is_some(),
            AccessEntry::AddRule(rule) => {
                if self.rules.len() >= MAX_ACL_RULES {
                    return false;
                }
                self.rules.insert(rule)
            }
            AccessEntry::RemoveRule(rule) => self.rules.remove(&rule),
        }
    }

    /// A user's credential.
    pub fn user(&self, name: &str) -> Option<&StoredCredential> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = (&String, &StoredCredential)> {
        self.users.iter()
    }

    /// Every rule, in order.
    pub fn rules(&self) -> &BTreeSet<Rule> {
        &self.rules
    }

    /// Appends the snapshot section: users (count u32, then name and credential as a set
    /// user entry writes them), rules (count u32, then each as an entry writes it).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.users.len() as u32).to_le_bytes());
        for (name, credential) in &self.users {
            encode_user(name, credential, out);
        }
        out.extend_from_slice(&(self.rules.len() as u32).to_le_bytes());
        for rule in &self.rules {
            encode_rule(rule, out);
        }
    }

    /// Decodes what `encode` wrote at the start of `bytes`; the bytes it took.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(AccessControl, usize), EntryDecodeError> {
        let mut at = Cursor::new(bytes, 0);
        let mut access = AccessControl::default();
        let users = at.u32()? as usize;
        if users > MAX_USERS {
            return Err(EntryDecodeError::BadAccess);
        }
        for _ in 0..users {
            let (name, credential) = at.user()?;
            access.users.insert(name, credential);
        }
        let rules = at.u32()? as usize;
        if rules > MAX_ACL_RULES {
            return Err(EntryDecodeError::BadAccess);
        }
        for _ in 0..rules {
            access.rules.insert(at.rule()?);
        }
        Ok((access, at.at))
    }
}

impl AccessEntry {
    /// Appends the entry's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let action = match self {
            AccessEntry::SetUser { .. } => 1u8,
            AccessEntry::DeleteUser { .. } => 2,
            AccessEntry::AddRule(_) => 3,
            AccessEntry::RemoveRule(_) => 4,
        };
        out.extend_from_slice(&[ACCESS_KIND, ACCESS_VERSION, action, 0]);
        match self {
            AccessEntry::SetUser { name, credential } => encode_user(name, credential, out),
            AccessEntry::DeleteUser { name } => encode_name(name, out),
            AccessEntry::AddRule(rule) | AccessEntry::RemoveRule(rule) => encode_rule(rule, out),
        }
    }

    /// Decodes an access entry (its four prefix bytes included).
    pub fn decode(bytes: &[u8]) -> Result<AccessEntry, EntryDecodeError> {
        let version = bytes.get(1).copied().unwrap_or(0);
        let unknown = EntryDecodeError::Unknown {
            kind: ACCESS_KIND,
            version,
        };
        if version != ACCESS_VERSION {
            return Err(unknown);
        }
        let action = *bytes.get(2).ok_or(EntryDecodeError::Truncated)?;
        let mut at = Cursor::new(bytes, 4);
        let entry = match action {
            1 => {
                let (name, credential) = at.user()?;
                AccessEntry::SetUser { name, credential }
            }
            2 => AccessEntry::DeleteUser {
                name: at.user_name()?,
            },
            3 => AccessEntry::AddRule(at.rule()?),
            4 => AccessEntry::RemoveRule(at.rule()?),
            _ => return Err(unknown),
        };
        if at.at != bytes.len() {
            return Err(EntryDecodeError::BadAccess);
        }
        Ok(entry)
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    assert!(
        name.len() <= MAX_ACL_NAME_BYTES,
        "names are checked before they are recorded"
    );
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

fn encode_user(name: &str, credential: &StoredCredential, out: &mut Vec<u8>) {
    assert!(
        valid_user_name(name) && credential_fits(credential),
        "users are checked before they are recorded"
    );
    encode_name(name, out);
    out.extend_from_slice(&credential.iterations.to_le_bytes());
    out.extend_from_slice(&(credential.salt.len() as u16).to_le_bytes());
    out.extend_from_slice(&credential.salt);
    out.extend_from_slice(&credential.stored_key);
    out.extend_from_slice(&credential.server_key);
}

fn pattern_code(pattern: &Pattern) -> (u8, &str) {
    match pattern {
        Pattern::Topic(name) => (1, name),
        Pattern::TopicPrefix(prefix) => (2, prefix),
        Pattern::Group(name) => (3, name),
        Pattern::GroupPrefix(prefix) => (4, prefix),
        Pattern::Cluster => (5, ""),
    }
}

fn operation_code(operation: Option<Operation>) -> u8 {
    match operation {
        None => 0,
        Some(op) => {
            let position = Operation::ALL.iter().position(|&o| o == op);
            1 + position.expect("every operation is in ALL") as u8
        }
    }
}

fn encode_rule(rule: &Rule, out: &mut Vec<u8>) {
    encode_name(rule.principal.as_deref().unwrap_or(""), out);
    let (kind, name) = pattern_code(&rule.pattern);
    out.push(kind);
    encode_name(name, out);
    out.push(operation_code(rule.operation));
    out.push(u8::from(rule.allow));
}

/// An access entry's compound fields.
impl Cursor<'_> {
    fn key(&mut self) -> Result<[u8; 32], EntryDecodeError> {
        self.array()
    }

    /// A bounded UTF-8 name (possibly empty).
    fn name(&mut self) -> Result<String, EntryDecodeError> {
        let length = usize::from(self.u16()?);
        if length > MAX_ACL_NAME_BYTES {
            return Err(EntryDecodeError::BadAccess);
        }
        let raw = self.take(length)?;
        String::from_utf8(raw.to_vec()).map_err(|_| EntryDecodeError::BadAccess)
    }

    fn user_name(&mut self) -> Result<String, EntryDecodeError> {
        Some(self.name()?)
            .filter(|name| valid_user_name(name))
            .ok_or(EntryDecodeError::BadAccess)
    }

    fn user(&mut self) -> Result<(String, StoredCredential), EntryDecodeError> {
        let name = self.user_name()?;
        let iterations = self.u32()?;
        let salt_length = usize::from(self.u16()?);
        if salt_length > MAX_SALT_BYTES {
            return Err(EntryDecodeError::BadAccess);
        }
        let credential = StoredCredential {
            salt: self.take(salt_length)?.to_vec(),
            iterations,
            stored_key: self.key()?,
            server_key: self.key()?,
        };
        if !credential_fits(&credential) {
            return Err(EntryDecodeError::BadAccess);
        }
        Ok((name, credential))
    }

    fn rule(&mut self) -> Result<Rule, EntryDecodeError> {
        let principal = Some(self.name()?).filter(|p| !p.is_empty());
        if principal.as_deref().is_some_and(|p| !valid_principal(p)) {
            return Err(EntryDecodeError::BadAccess);
        }
        let kind = self.u8()?;
        let name = self.name()?;
        let pattern = match kind {
            1 if !name.is_empty() => Pattern::Topic(name),
            2 => Pattern::TopicPrefix(name),
            3 if !name.is_empty() => Pattern::Group(name),
            4 => Pattern::GroupPrefix(name),
            5 if name.is_empty() => Pattern::Cluster,
            _ => return Err(EntryDecodeError::BadAccess),
        };
        let operation = match self.u8()? {
            0 => None,
            code => Some(
                *Operation::ALL
                    .get(usize::from(code) - 1)
                    .ok_or(EntryDecodeError::BadAccess)?,
            ),
        };
        let allow = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err(EntryDecodeError::BadAccess),
        };
        Ok(Rule {
            principal,
            pattern,
            operation,
            allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn credential(password: &str) -> StoredCredential {
        StoredCredential::from_password(password, b"0123456789abcdef", 4096)
    }

    fn rule(principal: Option<&str>, pattern: &str, op: Option<Operation>, allow: bool) -> Rule {
        Rule {
            principal: principal.map(str::to_string),
            pattern: Pattern::parse(pattern).unwrap(),
            operation: op,
            allow,
        }
    }

    #[test]
    fn entries_round_trip_and_malformed_bytes_are_refused() {
        let entries = [
            AccessEntry::SetUser {
                name: "alice".into(),
                credential: credential("secret"),
            },
            AccessEntry::DeleteUser { name: "bob".into() },
            AccessEntry::AddRule(rule(Some("CN x"), "topic:orders", None, true)),
            AccessEntry::AddRule(rule(None, "group:g*", Some(Operation::Fetch), false)),
            AccessEntry::RemoveRule(rule(Some("a"), "cluster", Some(Operation::Admin), true)),
        ];
        for entry in entries {
            let mut bytes = Vec::new();
            entry.encode(&mut bytes);
            assert_eq!(AccessEntry::decode(&bytes), Ok(entry.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    AccessEntry::decode(&bytes[..cut]).is_err(),
                    "{entry:?} cut {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(AccessEntry::decode(&longer).is_err());
        }
        // A rule with an operation beyond the known ones, a cluster with a name.
        let mut bytes = Vec::new();
        AccessEntry::AddRule(rule(None, "cluster", Some(Operation::Admin), true))
            .encode(&mut bytes);
        let operation_at = bytes.len() - 2;
        bytes[operation_at] = 8;
        assert_eq!(
            AccessEntry::decode(&bytes),
            Err(EntryDecodeError::BadAccess)
        );
    }

    #[test]
    fn users_and_rules_apply_within_their_bounds() {
        let mut access = AccessControl::default();
        let alice = AccessEntry::SetUser {
            name: "alice".into(),
            credential: credential("one"),
        };
        assert!(access.apply(alice));
        assert!(access.apply(AccessEntry::SetUser {
            name: "alice".into(),
            credential: credential("two"),
        }));
        assert_eq!(access.user("alice"), Some(&credential("two")));
        assert!(access.apply(AccessEntry::DeleteUser {
            name: "alice".into()
        }));
        assert!(!access.apply(AccessEntry::DeleteUser {
            name: "alice".into()
        }));
        let allow = rule(Some("alice"), "topic:t", Some(Operation::Produce), true);
        assert!(access.apply(AccessEntry::AddRule(allow.clone())));
        assert!(!access.apply(AccessEntry::AddRule(allow.clone())), "once");
        assert!(access.apply(AccessEntry::RemoveRule(allow.clone())));
        assert!(access.rules().is_empty());
        for n in 0..MAX_ACL_RULES {
            let pattern = format!("topic:t{n}");
            assert!(access.apply(AccessEntry::AddRule(rule(None, &pattern, None, true))));
        }
        assert!(!access.apply(AccessEntry::AddRule(allow)), "bounded");
        assert_eq!(access.rules().len(), MAX_ACL_RULES);
    }

    #[test]
    fn the_snapshot_section_round_trips() {
        let mut access = AccessControl::default();
        access.apply(AccessEntry::SetUser {
            name: "alice".into(),
            credential: credential("pw"),
        });
        access.apply(AccessEntry::AddRule(rule(None, "topic:a*", None, false)));
        let mut bytes = Vec::new();
        access.encode(&mut bytes);
        bytes.extend_from_slice(b"rest");
        let (copy, used) = AccessControl::decode(&bytes).unwrap();
        assert_eq!((copy, used), (access, bytes.len() - 4));
    }
}
