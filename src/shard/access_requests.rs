//! The requests that manage users and access rules (`keel user`, `keel acl`): checked,
//! then proposed to the controller group (at its leader), answered once applied; the
//! lists answered from the controller's tables. Authorization (admin on the cluster)
//! is checked before any of these is answered (`shard::authorize`).
//!
//! Owns checking and answering these requests; never authenticates a connection.

use std::rc::Rc;

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::broker::access::{credential_fits, valid_user_name, AccessEntry};
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::constants::{MAX_ACL_RULES, MAX_SCRAM_ITERATIONS, MAX_USERS, MIN_SCRAM_ITERATIONS};
use crate::protocol::wire::{self, ErrorCode, ResponseBody};
use crate::security::acl::Rule;
use crate::security::scram::StoredCredential;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::group_driver::ShardCore;
use crate::shard::requests::{controller_only, finish_response, propose_admin, WireError};

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}

/// Creates, replaces or deletes a user.
pub(super) async fn handle_change_user(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::ChangeUserRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let name = asked.name().unwrap_or_default().to_string();
    if !valid_user_name(&name) {
        return Err(invalid(format!(
            "invalid user name {name:?}: use 1-255 of [A-Za-z0-9._@-]"
        )));
    }
    let entry = if asked.delete() {
        AccessEntry::DeleteUser { name }
    } else {
        let credential = credential_of(&asked)?;
        let is_new = core.state().topics.access().user(&name).is_none();
        if is_new && core.state().topics.access().users().count() >= MAX_USERS {
            return Err(invalid(format!(
                "the cluster has {MAX_USERS} users, the most it keeps"
            )));
        }
        AccessEntry::SetUser { name, credential }
    };
    let changed = propose_admin(core, BrokerEntry::Access(entry).encode()).await?;
    Ok(changed_response(
        correlation_id,
        matches!(changed, Applied::TopicsChanged),
        true,
    ))
}

/// The stored credential a request carries, checked.
fn credential_of(asked: &wire::ChangeUserRequest<'_>) -> Result<StoredCredential, WireError> {
    let key = |bytes: Option<flatbuffers::Vector<'_, u8>>| -> Result<[u8; 32], WireError> {
        bytes
            .map(|b| b.bytes())
            .unwrap_or_default()
            .try_into()
            .map_err(|_| invalid("a stored key and a server key are 32 bytes each"))
    };
    let credential = StoredCredential {
        salt: asked.salt().map(|s| s.bytes().to_vec()).unwrap_or_default(),
        iterations: asked.iterations(),
        stored_key: key(asked.stored_key())?,
        server_key: key(asked.server_key())?,
    };
    if !credential_fits(&credential) {
        return Err(invalid(format!(
            "a credential has a salt of 1-{} bytes and {MIN_SCRAM_ITERATIONS}-\
             {MAX_SCRAM_ITERATIONS} iterations",
            crate::broker::access::MAX_SALT_BYTES
        )));
    }
    Ok(credential)
}

/// The users, names and iteration counts (never their credentials).
pub(super) async fn handle_list_users(
    core: &Rc<ShardCore>,
    correlation_id: u64,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    let users: Vec<_> = {
        let state = core.state();
        let access = state.topics.access();
        access
            .users()
            .map(|(name, credential)| {
                let name = builder.create_string(name);
                wire::UserSummary::create(
                    &mut builder,
                    &wire::UserSummaryArgs {
                        name: Some(name),
                        iterations: credential.iterations,
                    },
                )
            })
            .collect()
    };
    let users = builder.create_vector(&users);
    let body = wire::ListUsersResponse::create(
        &mut builder,
        &wire::ListUsersResponseArgs { users: Some(users) },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::ListUsersResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// The rule a request names, checked.
pub fn rule_of(rule: Option<wire::AclRule<'_>>) -> Result<Rule, String> {
    let rule = rule.ok_or("a rule is missing")?;
    let pattern = rule.pattern().unwrap_or_default();
    Rule::parse(rule.principal(), pattern, rule.operation(), rule.allow())
}

/// Adds or removes a rule.
pub(super) async fn handle_change_acl(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::ChangeAclRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let rule = rule_of(asked.rule()).map_err(invalid)?;
    let entry = if asked.remove() {
        AccessEntry::RemoveRule(rule)
    } else {
        if core.state().topics.access().rules().len() >= MAX_ACL_RULES {
            return Err(invalid(format!(
                "the cluster has {MAX_ACL_RULES} rules, the most it keeps: use prefixes"
            )));
        }
        AccessEntry::AddRule(rule)
    };
    let changed = propose_admin(core, BrokerEntry::Access(entry).encode()).await?;
    Ok(changed_response(
        correlation_id,
        matches!(changed, Applied::TopicsChanged),
        false,
    ))
}

/// Writes a rule into an answer.
pub(super) fn build_rule<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    rule: &Rule,
) -> WIPOffset<wire::AclRule<'a>> {
    let principal = rule.principal.as_deref().map(|p| builder.create_string(p));
    let pattern = builder.create_string(&rule.pattern.to_string());
    let operation = rule.operation.map(|op| builder.create_string(op.name()));
    wire::AclRule::create(
        builder,
        &wire::AclRuleArgs {
            principal,
            pattern: Some(pattern),
            operation,
            allow: rule.allow,
        },
    )
}

/// The rules, those of one principal when it is named.
pub(super) async fn handle_list_acls(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::ListAclsRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    let rules: Vec<_> = {
        let state = core.state();
        let of = asked.principal();
        state
            .topics
            .access()
            .rules()
            .iter()
            .filter(|rule| of.is_none() || rule.principal.as_deref() == of)
            .map(|rule| build_rule(&mut builder, rule))
            .collect()
    };
    let rules = builder.create_vector(&rules);
    let body = wire::ListAclsResponse::create(
        &mut builder,
        &wire::ListAclsResponseArgs { rules: Some(rules) },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::ListAclsResponse,
        Some(body.as_union_value()),
        None,
    ))
}

fn changed_response(correlation_id: u64, changed: bool, user: bool) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let (body_type, body) = if user {
        let body = wire::ChangeUserResponse::create(
            &mut builder,
            &wire::ChangeUserResponseArgs { changed },
        );
        (ResponseBody::ChangeUserResponse, body.as_union_value())
    } else {
        let body =
            wire::ChangeAclResponse::create(&mut builder, &wire::ChangeAclResponseArgs { changed });
        (ResponseBody::ChangeAclResponse, body.as_union_value())
    };
    finish_response(builder, correlation_id, body_type, Some(body), None)
}
