//! Authorization: which principal may do which operation on which resource.
//!
//! ```text
//! authorize(principal, operation, resource)
//!   superuser ─────────────────────────────▶ allowed
//!   a deny rule matches ───────────────────▶ refused (deny wins over allow)
//!   an allow rule matches ─────────────────▶ allowed
//!   nothing matches ───────────────────────▶ refused (deny by default)
//! ```
//!
//! A rule names a principal (or `*`: every authenticated one), a resource pattern (a
//! topic or consumer group by exact name or by prefix, or the cluster) and an operation
//! (or `all`). `describe` is implied by any other allowed operation on the same resource
//! (a producer may look up the topic it writes), as Kafka does.
//!
//! Pure: rules in, a decision out; no I/O. Rules are bounded where they are stored
//! (`MAX_ACL_RULES`), names by `MAX_ACL_NAME_BYTES`.

use std::fmt;

use crate::constants::MAX_ACL_NAME_BYTES;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Write records.
    Produce,
    /// Read records, join a consumer group, commit its offsets.
    Fetch,
    /// Create a topic.
    Create,
    /// Delete a topic or a consumer group.
    Delete,
    /// Look at metadata: topics, partitions, offsets, groups.
    Describe,
    /// Change a resource's settings (a group's offsets reset).
    Alter,
    /// Run the cluster: nodes, replica moves, users, rules.
    Admin,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 7] = [
        Operation::Produce,
        Operation::Fetch,
        Operation::Create,
        Operation::Delete,
        Operation::Describe,
        Operation::Alter,
        Operation::Admin,
    ];

    /// Its name as the CLI and messages write it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Fetch => "fetch",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::Admin => "admin",
        }
    }

    /// The operation of this name.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// What a request acts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A topic.
    Topic(String),
    /// A consumer group.
    Group(String),
    /// The cluster itself.
    Cluster,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) => write!(f, "topic {name:?}"),
            Resource::Group(name) => write!(f, "group {name:?}"),
            Resource::Cluster => write!(f, "the cluster"),
        }
    }
}

/// How a rule names resources.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// The topic of this name.
    Topic(String),
    /// Every topic whose name starts so.
    TopicPrefix(String),
    /// The consumer group of this name.
    Group(String),
    /// Every consumer group whose name starts so.
    GroupPrefix(String),
    /// The cluster.
    Cluster,
}

impl Pattern {
    /// Whether it names `resource`.
    pub fn matches(&self, resource: &Resource) -> bool {
        match (self, resource) {
            (Pattern::Topic(name), Resource::Topic(topic)) => name == topic,
            (Pattern::TopicPrefix(prefix), Resource::Topic(topic)) => topic.starts_with(prefix),
            (Pattern::Group(name), Resource::Group(group)) => name == group,
            (Pattern::GroupPrefix(prefix), Resource::Group(group)) => group.starts_with(prefix),
            (Pattern::Cluster, Resource::Cluster) => true,
            _ => false,
        }
    }

    /// Parses "topic:NAME", "topic:PREFIX*", "group:NAME", "group:PREFIX*", "cluster".
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text == "cluster" {
            return Ok(Pattern::Cluster);
        }
        let (kind, name) = text.split_once(':').ok_or_else(|| {
            format!(
                "{text:?}: give topic:NAME, topic:PREFIX*, group:NAME, group:PREFIX* or cluster"
            )
        })?;
        let (name, prefix) = match name.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (name, false),
        };
        if name.len() > MAX_ACL_NAME_BYTES || (name.is_empty() && !prefix) || name.contains('*') {
            return Err(format!(
                "{text:?}: a name of 1-{MAX_ACL_NAME_BYTES} bytes, '*' only at its end"
            ));
        }
        let name = name.to_string();
        match (kind, prefix) {
            ("topic", false) => Ok(Pattern::Topic(name)),
            ("topic", true) => Ok(Pattern::TopicPrefix(name)),
            ("group", false) => Ok(Pattern::Group(name)),
            ("group", true) => Ok(Pattern::GroupPrefix(name)),
            _ => Err(format!("{text:?}: the kind is topic, group or cluster")),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Topic(name) => write!(f, "topic:{name}"),
            Pattern::TopicPrefix(prefix) => write!(f, "topic:{prefix}*"),
            Pattern::Group(name) => write!(f, "group:{name}"),
            Pattern::GroupPrefix(prefix) => write!(f, "group:{prefix}*"),
            Pattern::Cluster => write!(f, "cluster"),
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// The principal it is for; `None`: every authenticated principal.
    pub principal: Option<String>,
    /// The resources.
    pub pattern: Pattern,
    /// The operation; `None`: all of them.
    pub operation: Option<Operation>,
    /// Allow (true) or deny.
    pub allow: bool,
}

impl Rule {
    /// A rule from its written parts: a principal (`None` or "*": everyone), a pattern
    /// ("topic:orders"), an operation (`None` or "all": all of them), allow or deny.
    pub fn parse(
        principal: Option<&str>,
        pattern: &str,
        operation: Option<&str>,
        allow: bool,
    ) -> Result<Rule, String> {
        let principal = principal.filter(|p| *p != "*").map(str::to_string);
        if let Some(principal) = &principal {
            let printable = !principal.chars().any(char::is_control);
            if !(1..=MAX_ACL_NAME_BYTES).contains(&principal.len()) || !printable {
                return Err(format!(
                    "principal {principal:?}: 1-{MAX_ACL_NAME_BYTES} bytes without control \
                     characters"
                ));
            }
        }
        let operation = match operation {
            None | Some("all") => None,
            Some(name) => Some(Operation::parse(name).ok_or_else(|| {
                format!(
                    "operation {name:?}: one of produce, fetch, create, delete, describe, \
                     alter, admin, all"
                )
            })?),
        };
        Ok(Rule {
            principal,
            pattern: Pattern::parse(pattern)?,
            operation,
            allow,
        })
    }

    fn applies(&self, principal: &str, operation: Operation, resource: &Resource) -> bool {
        self.principal.as_deref().is_none_or(|p| p == principal)
            && self.pattern.matches(resource)
            && self.operation.is_none_or(|op| op == operation)
    }
}

/// A decision with its reason, for the `NotAuthorized` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allowed,
    /// Refused: what was asked, and why.
    Refused(String),
}

/// Whether `principal` may do `operation` on `resource` under `rules`, `superusers`
/// allowed everything.
pub fn authorize<'a>(
    rules: impl IntoIterator<Item = &'a Rule> + Copy,
    superusers: &[String],
    principal: &str,
    operation: Operation,
    resource: &Resource,
) -> Decision {
    if superusers.iter().any(|s| s == principal) {
        return Decision::Allowed;
    }
    let refused = |why: &str| {
        Decision::Refused(format!(
            "{principal:?} may not {} {resource}: {why}",
            operation.name()
        ))
    };
    let applying = |op: Operation| {
        rules
            .into_iter()
            .filter(move |r| r.applies(principal, op, resource))
    };
    if applying(operation).any(|r| !r.allow) {
        return refused("a deny rule matches");
    }
    if applying(operation).any(|r| r.allow) {
        return Decision::Allowed;
    }
    if operation == Operation::Describe {
        // Any other allowed operation on the resource lets its holder describe it.
        let others = Operation::ALL
            .into_iter()
            .filter(|&op| op != Operation::Describe);
        let mut allowed =
            others.filter(|&op| applying(op).any(|r| r.allow) && !applying(op).any(|r| !r.allow));
        if allowed.next().is_some() {
            return Decision::Allowed;
        }
    }
    refused("no rule allows it (deny by default)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        principal: Option<&str>,
        pattern: &str,
        operation: Option<Operation>,
        allow: bool,
    ) -> Rule {
        Rule {
            principal: principal.map(str::to_string),
            pattern: Pattern::parse(pattern).unwrap(),
            operation,
            allow,
        }
    }

    /// Issue 13: the rules allow and deny exactly what they say, over principals x
    /// resources x operations. Each row: principal, resource, the operations allowed;
    /// every other operation on that resource must be refused.
    #[test]
    fn rules_allow_and_deny_exactly_what_they_say() {
        use Operation::*;
        let rules = vec![
            rule(Some("alice"), "topic:orders", Some(Produce), true),
            rule(Some("alice"), "topic:orders", Some(Fetch), true),
            rule(Some("bob"), "topic:metrics.*", Some(Fetch), true),
            rule(Some("bob"), "topic:metrics.secret", None, false),
            rule(Some("carol"), "group:billing*", None, true),
            rule(None, "topic:public", Some(Fetch), true),
            rule(Some("dave"), "topic:public", Some(Fetch), false),
            rule(Some("ops"), "cluster", Some(Admin), true),
            rule(Some("ops"), "topic:*", Some(Create), true),
        ];
        let superusers = vec!["admin".to_string()];
        let topic = |name: &str| Resource::Topic(name.to_string());
        let group = |name: &str| Resource::Group(name.to_string());
        let table: Vec<(&str, Resource, Vec<Operation>)> = vec![
            ("alice", topic("orders"), vec![Produce, Fetch, Describe]),
            ("alice", topic("orders2"), vec![]),
            ("alice", topic("public"), vec![Fetch, Describe]),
            ("alice", Resource::Cluster, vec![]),
            ("bob", topic("metrics.cpu"), vec![Fetch, Describe]),
            ("bob", topic("metrics.secret"), vec![]),
            ("bob", topic("metrics"), vec![]),
            ("bob", group("billing"), vec![]),
            ("carol", group("billing"), Operation::ALL.to_vec()),
            ("carol", group("billing-eu"), Operation::ALL.to_vec()),
            ("carol", group("bill"), vec![]),
            ("carol", topic("billing"), vec![]),
            ("dave", topic("public"), vec![]),
            ("erin", topic("public"), vec![Fetch, Describe]),
            ("ops", Resource::Cluster, vec![Admin, Describe]),
            ("ops", topic("anything"), vec![Create, Describe]),
            ("ops", group("anything"), vec![]),
            ("admin", topic("orders"), Operation::ALL.to_vec()),
            ("admin", Resource::Cluster, Operation::ALL.to_vec()),
            ("admin", group("x"), Operation::ALL.to_vec()),
        ];
        for (principal, resource, allowed) in &table {
            for operation in Operation::ALL {
                let decision = authorize(&rules, &superusers, principal, operation, resource);
                let expected = allowed.contains(&operation);
                assert_eq!(
                    decision == Decision::Allowed,
                    expected,
                    "{principal} {} {resource}: {decision:?}",
                    operation.name()
                );
            }
        }
    }

    #[test]
    fn with_no_rules_only_a_superuser_may_do_anything_and_refusals_say_what() {
        let superusers = vec!["admin".to_string()];
        let topic = Resource::Topic("t".into());
        assert_eq!(
            authorize(&[], &superusers, "admin", Operation::Delete, &topic),
            Decision::Allowed
        );
        let Decision::Refused(why) =
            authorize(&[], &superusers, "alice", Operation::Produce, &topic)
        else {
            panic!("refused by default");
        };
        assert!(
            why.contains("\"alice\" may not produce topic \"t\""),
            "{why}"
        );
        assert!(why.contains("deny by default"), "{why}");
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for text in [
            "topic:orders",
            "topic:metrics.*",
            "group:g",
            "group:*",
            "topic:*",
            "cluster",
        ] {
            assert_eq!(Pattern::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "topic:", "topics:x", "topic:a*b", "group", "cluster:x"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pattern::parse(&format!("topic:{}", "x".repeat(256))).is_err());
        assert_eq!(Operation::parse("produce"), Some(Operation::Produce));
        assert_eq!(Operation::parse("write"), None);
    }
}
