//! What a request asks to do, checked against the access rules before it is answered:
//! each request is one operation on one resource (a produce on its topic, a join on its
//! consumer group, a replica move on the cluster), refused with `NotAuthorized` naming
//! the principal, operation and resource; the connection stays usable. Listing topics
//! (metadata, list topics) is filtered instead: a principal sees the topics it may
//! describe.
//!
//! Owns the mapping from requests to (operation, resource); never decides a rule itself
//! (`security::acl::authorize`) nor who the caller is (`shard::client_auth`).

use crate::protocol::wire::{ErrorCode, Request, RequestBody};
use std::rc::Rc;

use crate::security::acl::{authorize, Decision, Operation, Resource, Rule};
use crate::shard::client_auth::Caller;
use crate::shard::hosted_groups::{coordinator_name, HostedGroups};
use crate::shard::requests::WireError;

/// Whether `caller` may make `request`.
pub fn check(
    groups: &HostedGroups,
    caller: &Caller,
    request: &Request<'_>,
) -> Result<(), WireError> {
    let principal = match caller {
        Caller::Open => return Ok(()),
        Caller::Unauthenticated if request.body_type() == RequestBody::JoinClusterRequest => {
            // A join proves the cluster's peer secret itself (`shard::join_requests`).
            return Ok(());
        }
        Caller::Unauthenticated => {
            return Err(WireError::new(
                ErrorCode::AuthenticationFailed,
                "this broker requires authentication",
            ))
        }
        Caller::Principal(principal) => principal,
    };
    let superusers = &groups.config().superusers;
    if superusers.iter().any(|s| **s == **principal) {
        return Ok(());
    }
    let asked = asked(request)?;
    groups.with_access(|access| {
        for (operation, resource) in &asked {
            let decision = authorize(access.rules(), superusers, principal, *operation, resource);
            if let Decision::Refused(why) = decision {
                return Err(WireError::new(ErrorCode::NotAuthorized, why));
            }
        }
        Ok(())
    })
}

/// One caller's rules, taken once for many decisions (a listing of every topic).
pub struct CallerRules {
    /// `None`: everything is allowed (authentication off, or a superuser).
    principal: Option<Rc<str>>,
    /// The rules naming the principal or everyone.
    rules: Vec<Rule>,
}

impl CallerRules {
    /// `caller`'s rules as the shard last heard them.
    pub fn of(groups: &HostedGroups, caller: &Caller) -> CallerRules {
        let principal = match caller {
            Caller::Open => None,
            Caller::Unauthenticated => Some(Rc::from("")),
            Caller::Principal(p) if groups.config().superusers.iter().any(|s| **s == **p) => None,
            Caller::Principal(p) => Some(p.clone()),
        };
        let rules = match &principal {
            Some(p) => groups.with_access(|access| {
                let mine = |r: &&Rule| r.principal.as_deref().is_none_or(|q| q == &**p);
                access.rules().iter().filter(mine).cloned().collect()
            }),
            None => Vec::new(),
        };
        CallerRules { principal, rules }
    }

    /// Why the caller may not describe `topic`, if it may not.
    pub fn describe_refusal(&self, topic: &str) -> Option<WireError> {
        let principal = self.principal.as_deref()?;
        if principal.is_empty() {
            let why = "this broker requires authentication";
            return Some(WireError::new(ErrorCode::AuthenticationFailed, why));
        }
        let resource = Resource::Topic(topic.to_string());
        match authorize(&self.rules, &[], principal, Operation::Describe, &resource) {
            Decision::Allowed => None,
            Decision::Refused(why) => Some(WireError::new(ErrorCode::NotAuthorized, why)),
        }
    }
}

/// The operation and resource a request asks for; `None` for one that is checked where
/// it is answered (listings, filtered) or needs nothing.
fn asked(request: &Request<'_>) -> Result<Vec<(Operation, Resource)>, WireError> {
    let topic = |name: Option<&str>| Resource::Topic(name.unwrap_or_default().to_string());
    let group = || Resource::Group(coordinator_name(request).unwrap_or_default().to_string());
    let asked = match request.body_type() {
        RequestBody::ProduceRequest => {
            let name = request.body_as_produce_request().and_then(|p| p.topic());
            (Operation::Produce, topic(name))
        }
        RequestBody::FetchRequest => {
            let name = request.body_as_fetch_request().and_then(|f| f.topic());
            (Operation::Fetch, topic(name))
        }
        RequestBody::PartitionOffsetsRequest => {
            let name = request
                .body_as_partition_offsets_request()
                .and_then(|p| p.topic());
            (Operation::Describe, topic(name))
        }
        RequestBody::CreateTopicRequest => {
            let name = request
                .body_as_create_topic_request()
                .and_then(|c| c.name());
            (Operation::Create, topic(name))
        }
        RequestBody::DeleteTopicRequest => {
            let name = request
                .body_as_delete_topic_request()
                .and_then(|d| d.name());
            (Operation::Delete, topic(name))
        }
        // Listings are filtered where they are answered; a join proves the peer secret.
        RequestBody::MetadataRequest
        | RequestBody::ListTopicsRequest
        | RequestBody::JoinClusterRequest => return Ok(Vec::new()),
        RequestBody::StatusRequest | RequestBody::ListGroupsRequest => {
            (Operation::Describe, Resource::Cluster)
        }
        RequestBody::MoveReplicaRequest
        | RequestBody::ChangeMembershipRequest
        | RequestBody::PlanMovesRequest
        | RequestBody::SetNodeStateRequest
        | RequestBody::ChangeUserRequest
        | RequestBody::ListUsersRequest
        | RequestBody::ChangeAclRequest
        | RequestBody::ListAclsRequest => (Operation::Admin, Resource::Cluster),
        RequestBody::FindCoordinatorRequest
        | RequestBody::OffsetFetchRequest
        | RequestBody::DescribeGroupRequest => (Operation::Describe, group()),
        RequestBody::JoinGroupRequest => {
            // The topics it names are looked up and dealt out: the member must see them.
            let topics = request
                .body_as_join_group_request()
                .and_then(|join| join.topics());
            let named = topics.iter().flatten().map(|t| topic(Some(t)));
            return Ok(std::iter::once((Operation::Fetch, group()))
                .chain(named.map(|t| (Operation::Describe, t)))
                .collect());
        }
        RequestBody::OffsetCommitRequest => {
            let commit = request.body_as_offset_commit_request();
            // Offsets set from outside the group (`keel group reset`): alter.
            let reset = commit.is_some_and(|c| c.member_id().unwrap_or_default().is_empty());
            let operation = if reset {
                Operation::Alter
            } else {
                Operation::Fetch
            };
            let mut topics: Vec<&str> = commit
                .and_then(|c| c.offsets())
                .iter()
                .flatten()
                .map(|offset| offset.topic().unwrap_or_default())
                .collect();
            topics.sort_unstable();
            topics.dedup();
            let named = topics
                .into_iter()
                .map(|t| (Operation::Describe, topic(Some(t))));
            return Ok(std::iter::once((operation, group())).chain(named).collect());
        }
        RequestBody::HeartbeatRequest | RequestBody::LeaveGroupRequest => {
            (Operation::Fetch, group())
        }
        RequestBody::DeleteGroupRequest => (Operation::Delete, group()),
        RequestBody::AuthenticateRequest => {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                "this connection is authenticated already",
            ))
        }
        // A request this list does not name yet: the cluster's admins only (a new
        // request type is never open by omission).
        _ => (Operation::Admin, Resource::Cluster),
    };
    Ok(vec![asked])
}
