//! Users and access rules, managed at the controller's leader (`keel user`, `keel acl`).
//! A user's credential is made here, from the password, with a fresh salt: the broker
//! receives and stores only the salted, iterated hash (`security::scram`).
//!
//! Owns the requests' encoding and their answers' decoding; never authenticates.

use crate::client::cluster::check_response;
use crate::client::{ClientError, ClusterClient};
use crate::constants::DEFAULT_SCRAM_ITERATIONS;
use crate::protocol::codec::{decode_response, encode_request};
use crate::protocol::wire;
use crate::security::acl::Rule;
use crate::security::scram::StoredCredential;

/// Bytes of a new credential's salt.
const SALT_BYTES: usize = 16;

/// The credential of `password` with a fresh random salt.
pub fn new_credential(password: &str) -> Result<StoredCredential, ClientError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::getrandom(&mut salt)
        .map_err(|e| ClientError::Unexpected(format!("no random salt: {e}")))?;
    Ok(StoredCredential::from_password(
        password,
        &salt,
        DEFAULT_SCRAM_ITERATIONS,
    ))
}

impl ClusterClient {
    /// Creates user `name` with `password`, or gives it that password; whether anything
    /// changed.
    pub fn set_user(&mut self, name: &str, password: &str) -> Result<bool, ClientError> {
        let credential = new_credential(password)?;
        self.change_user(name, Some(&credential))
    }

    /// Deletes user `name`; whether it existed.
    pub fn delete_user(&mut self, name: &str) -> Result<bool, ClientError> {
        self.change_user(name, None)
    }

    fn change_user(
        &mut self,
        name: &str,
        credential: Option<&StoredCredential>,
    ) -> Result<bool, ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let name = builder.create_string(name);
            let fields = credential.map(|c| {
                (
                    builder.create_vector(&c.salt),
                    builder.create_vector(&c.stored_key),
                    builder.create_vector(&c.server_key),
                    c.iterations,
                )
            });
            let body = wire::ChangeUserRequest::create(
                &mut builder,
                &wire::ChangeUserRequestArgs {
                    name: Some(name),
                    delete: credential.is_none(),
                    salt: fields.map(|f| f.0),
                    iterations: fields.map_or(0, |f| f.3),
                    stored_key: fields.map(|f| f.1),
                    server_key: fields.map(|f| f.2),
                },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ChangeUserRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let changed = response
            .body_as_change_user_response()
            .ok_or_else(|| ClientError::Unexpected("not a user change answer".into()))?;
        Ok(changed.changed())
    }

    /// The users (name, PBKDF2 iterations of its credential).
    pub fn list_users(&mut self) -> Result<Vec<(String, u32)>, ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let body = wire::ListUsersRequest::create(&mut builder, &wire::ListUsersRequestArgs {});
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ListUsersRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let users = response
            .body_as_list_users_response()
            .ok_or_else(|| ClientError::Unexpected("not a user list".into()))?;
        Ok(users
            .users()
            .iter()
            .flatten()
            .map(|u| (u.name().unwrap_or_default().to_string(), u.iterations()))
            .collect())
    }

    /// Adds `rule` (or removes it); whether anything changed.
    pub fn change_acl(&mut self, rule: &Rule, remove: bool) -> Result<bool, ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let principal = rule.principal.as_deref().map(|p| builder.create_string(p));
            let pattern = builder.create_string(&rule.pattern.to_string());
            let operation = rule.operation.map(|op| builder.create_string(op.name()));
            let rule = wire::AclRule::create(
                &mut builder,
                &wire::AclRuleArgs {
                    principal,
                    pattern: Some(pattern),
                    operation,
                    allow: rule.allow,
                },
            );
            let body = wire::ChangeAclRequest::create(
                &mut builder,
                &wire::ChangeAclRequestArgs {
                    remove,
                    rule: Some(rule),
                },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ChangeAclRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let changed = response
            .body_as_change_acl_response()
            .ok_or_else(|| ClientError::Unexpected("not a rule change answer".into()))?;
        Ok(changed.changed())
    }

    /// The rules (of `principal` only, when given).
    pub fn list_acls(&mut self, principal: Option<&str>) -> Result<Vec<Rule>, ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let principal = principal.map(|p| builder.create_string(p));
            let body = wire::ListAclsRequest::create(
                &mut builder,
                &wire::ListAclsRequestArgs { principal },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ListAclsRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let rules = response
            .body_as_list_acls_response()
            .ok_or_else(|| ClientError::Unexpected("not a rule list".into()))?;
        rules
            .rules()
            .iter()
            .flatten()
            .map(|rule| {
                let pattern = rule.pattern().unwrap_or_default();
                Rule::parse(rule.principal(), pattern, rule.operation(), rule.allow())
                    .map_err(|e| ClientError::Unexpected(format!("a rule the broker sent: {e}")))
            })
            .collect()
    }
}
