//! Joining a running cluster, from the node that joins (`keel broker --join`) or for it
//! (`keel node add`): the controller's leader records the node and adds it to the
//! controller group as a learner, and answers what the node needs to start.
//!
//! Owns the request's encoding and its answer's decoding; never starts a node.

use crate::client::cluster::check_response;
use crate::client::{ClientError, ClusterClient};
use crate::config::{format_peers, PeerAddress};
use crate::protocol::codec::{decode_response, encode_request};
use crate::protocol::wire;
use crate::security::PeerSecret;

/// What a join's proof covers besides its time: the node's id, addresses, rack and
/// shards, as one text (the same on both sides).
pub fn join_proof_text(node: &PeerAddress, shards: u32) -> String {
    format!(
        "{} shards={shards}",
        format_peers(std::slice::from_ref(node))
    )
}

/// Milliseconds since the Unix epoch by this host's clock.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a node that joined needs to start, as the controller's leader answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinAnswer {
    /// The cluster's bootstrap nodes, as `--peers` names them.
    pub peers: String,
    /// Replicas of each data group.
    pub replication_factor: u32,
    /// Shards every node runs.
    pub shards: u32,
    /// The controller group's voters once the node was added.
    pub voters: Vec<u64>,
    /// Its learners (the node among them).
    pub learners: Vec<u64>,
    /// The index that configuration is as of.
    pub index: u64,
}

impl ClusterClient {
    /// Asks the controller's leader to record `node` (running `shards` shards) as a
    /// node of the cluster and to add it to the controller group, proving the cluster's
    /// peer secret (without it the cluster refuses: `NotAuthorized`); asking again
    /// changes nothing but its addresses.
    pub fn join_cluster(
        &mut self,
        node: &PeerAddress,
        shards: u32,
        secret: Option<&PeerSecret>,
    ) -> Result<JoinAnswer, ClientError> {
        let text = join_proof_text(node, shards);
        self.with_retries(|client| {
            // A cluster with client authentication tells an unauthenticated joiner
            // nothing but its join's answer: without metadata, the join goes to the
            // bootstrap nodes and follows their redirects to the controller's leader.
            let controller = client.controller().ok();
            let answer = client.call_cluster(controller, |id| {
                let mut builder = flatbuffers::FlatBufferBuilder::new();
                let host = builder.create_string(&node.host);
                let rack = builder.create_string(node.rack.as_deref().unwrap_or(""));
                let proof_time_ms = unix_millis();
                let proof = secret.map(|secret| {
                    let proof = secret.join_proof(node.node_id, &text, proof_time_ms);
                    builder.create_vector(&proof)
                });
                let body = wire::JoinClusterRequest::create(
                    &mut builder,
                    &wire::JoinClusterRequestArgs {
                        node: node.node_id,
                        host: Some(host),
                        base_port: node.base_port,
                        peer_port: node.peer_port,
                        shards,
                        rack: Some(rack),
                        proof_time_ms,
                        proof,
                    },
                );
                encode_request(
                    &mut builder,
                    id,
                    wire::RequestBody::JoinClusterRequest,
                    body.as_union_value(),
                )
            })?;
            let response = decode_response(&answer)?;
            check_response(&response)?;
            let body = response
                .body_as_join_cluster_response()
                .ok_or_else(|| ClientError::Unexpected("not a join answer".into()))?;
            let list = |v: Option<flatbuffers::Vector<'_, u64>>| v.iter().flatten().collect();
            Ok(JoinAnswer {
                peers: body.peers().unwrap_or("").to_string(),
                replication_factor: body.replication_factor(),
                shards: body.shards(),
                voters: list(body.voters()),
                learners: list(body.learners()),
                index: body.index(),
            })
        })
    }
}
