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
use crate::security::acl::{authorize, Decision, Operation, Resource};
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
    let Some((operation, resource)) = asked(request)? else {
        return Ok(());
    };
    decide(groups, principal, operation, &resource)
}

/// Whether `principal` may do `operation` on `resource`.
pub fn decide(
    groups: &HostedGroups,
    principal: &str,
    operation: Operation,
    resource: &Resource,
) -> Result<(), WireError> {
    let superusers = &groups.config().superusers;
    let decision = groups.with_access(|access| {
        authorize(access.rules(), superusers, principal, operation, resource)
    });
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Refused(why) => Err(WireError::new(ErrorCode::NotAuthorized, why)),
    }
}

/// Whether `caller` may see `topic` in a listing.
pub fn may_describe_topic(groups: &HostedGroups, caller: &Caller, topic: &str) -> bool {
    describe_refusal(groups, caller, topic).is_none()
}

/// Why `caller` may not describe `topic`, if it may not.
pub fn describe_refusal(groups: &HostedGroups, caller: &Caller, topic: &str) -> Option<WireError> {
    match caller {
        Caller::Open => None,
        Caller::Unauthenticated => Some(WireError::new(
            ErrorCode::AuthenticationFailed,
            "this broker requires authentication",
        )),
        Caller::Principal(principal) => {
            let resource = Resource::Topic(topic.to_string());
            decide(groups, principal, Operation::Describe, &resource).err()
        }
    }
}

/// The operation and resource a request asks for; `None` for one that is checked where
/// it is answered (listings, filtered) or needs nothing.
fn asked(request: &Request<'_>) -> Result<Option<(Operation, Resource)>, WireError> {
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
        RequestBody::MetadataRequest | RequestBody::ListTopicsRequest => return Ok(None),
        RequestBody::JoinClusterRequest => return Ok(None),
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
        RequestBody::OffsetCommitRequest
            if request
                .body_as_offset_commit_request()
                .is_some_and(|commit| commit.member_id().unwrap_or_default().is_empty()) =>
        {
            // Offsets set from outside the group (`keel group reset`).
            (Operation::Alter, group())
        }
        RequestBody::JoinGroupRequest
        | RequestBody::HeartbeatRequest
        | RequestBody::LeaveGroupRequest
        | RequestBody::OffsetCommitRequest => (Operation::Fetch, group()),
        RequestBody::DeleteGroupRequest => (Operation::Delete, group()),
        RequestBody::AuthenticateRequest => {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                "this connection is authenticated already",
            ))
        }
        _ => return Ok(None),
    };
    Ok(Some(asked))
}
