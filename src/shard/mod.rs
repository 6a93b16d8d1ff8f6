//! Shards: one glommio executor per shard, each running the replica groups placed on it
//! (`hosted_groups`; each group a CommitLog in `data_dir/group-<g>`, `data_layout`), their
//! partitions, its clients (port `base_port + i`) and, in a cluster, its peers (port
//! `peer_port + i`: connections from the other replicas of its groups, each naming its
//! group).
//!
//! ```text
//! node ─┬─ shard 0: group 0 (controller: topics) ── port base+0, peer+0 ── log group-0
//!       ├─ shard 1: group 1 ──────────────────────── port base+1, peer+1 ── log group-1
//!       └─ ...      topics flow from the controller's shard to every group over a
//!                   channel mesh
//! ```
//!
//! Shards share no memory: the only things crossing between them are the topic list,
//! sent by the controller's shard whenever it changes, leader changes and questions
//! about a partition's bounds. Placement is unpinned by default
//! (several nodes share small hosts); `pin_cores` gives each shard its own CPU.

mod access_requests;
mod allocator;
pub mod answer_frame;
pub mod authorize;
pub mod client_auth;
pub mod commit_log_store;
pub mod data_layout;
mod election_watch;
pub mod group_driver;
mod group_requests;
mod group_sessions;
pub mod hosted_groups;
pub mod join_cluster;
mod join_requests;
mod move_requests;
mod no_space;
pub mod partition_bounds;
pub mod requests;
pub mod server;
pub mod snapshots;
#[cfg(test)]
mod tests_client_auth;
#[cfg(test)]
mod tests_controller_reads;
#[cfg(test)]
mod tests_hosted_topics;
#[cfg(test)]
mod tests_support;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{MeshBuilder, Receivers, Senders};
use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorPoolBuilder, PoolPlacement, Shares};

use crate::broker::snapshot::decode_state;
use crate::broker::state::{ShardState, Topics};
use crate::config::{ConfigError, NodeConfig};
use crate::constants::{LISTEN_IN_USE_WAIT, LISTEN_RETRY_INTERVAL, REPLICATION_QUEUE_LATENCY};
use crate::controller::{GroupId, Placement, CONTROLLER_GROUP};
use crate::log::CommitLog;
use crate::metrics::{NodeMetrics, ShardMetrics};
use crate::shard::group_driver::ShardCore;
use crate::shard::hosted_groups::HostedGroups;
use crate::shard::snapshots::SnapshotFiles;
use crate::transport::peer_listener::{serve_peers, Deliver, Lost, PeerIngress};

/// Messages between shards.
#[derive(Debug, Clone)]
pub enum ShardMessage {
    /// The controller's topic list and its epoch (the controller's applied index).
    Topics(Box<Topics>, u64),
    /// A group's leader changed (group, leader node; 0 when unknown).
    Leader(GroupId, u32),
    /// A coordinator asks for a partition's bounds.
    Bounds(partition_bounds::BoundsQuery),
}

/// Queue length of each shard-to-shard channel.
const MESH_CHANNEL_CAPACITY: usize = 64;

/// How often a shard checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node could not join its cluster (`--join`).
    #[error(transparent)]
    Join(#[from] join_cluster::JoinError),
    /// Executors could not start.
    #[error("cannot start the shards: {0}")]
    Start(String),
    /// A shard failed.
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard.
        shard: u32,
        /// What failed.
        message: String,
    },
}

/// Says at start what a client may do without proving who it is.
fn warn_if_open(config: &NodeConfig) {
    if config.client_auth {
        tracing::info!(
            superusers = ?config.superusers,
            local_users = config.local_users.len(),
            "clients authenticate (SCRAM-SHA-256 or a client certificate); access rules apply"
        );
        if config.tls.is_none() {
            tracing::warn!(
                "clients authenticate without TLS: passwords never cross the network, but \
                 requests and records do in the clear (--tls-cert, --tls-key)"
            );
        }
        let certificates = config.tls.as_ref().is_some_and(|t| t.files().ca.is_some());
        for superuser in &config.superusers {
            if !certificates && !config.local_users.contains_key(superuser) {
                tracing::warn!(
                    superuser = %superuser,
                    "this superuser cannot authenticate here: not in --users-file, and no \
                     --tls-ca for a client certificate (unless it is a user of the cluster)"
                );
            }
        }
    } else {
        tracing::warn!(
            port = config.base_port,
            "authentication is off: anyone who reaches the client port may read, write and \
             delete every topic and run the cluster (--client-auth turns it on)"
        );
    }
}

/// Runs a node until `stop` is set (by SIGINT/SIGTERM in the `keel broker` command).
pub fn run_node(config: NodeConfig, stop: Arc<AtomicBool>) -> Result<(), NodeError> {
    // Before the join (which may wait on the cluster): SIGHUP never stops the node.
    reload_tls_on_sighup(config.tls.clone())?;
    let config = join_cluster::resolve(config)?;
    config.validate()?;
    warn_if_open(&config);
    if !allocator::tune_for_broker() {
        tracing::warn!(
            "the C allocator refused its broker settings; large answers may cost page faults"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Start(format!("{}: {e}", config.data_dir.display())))?;
    let renamed = data_layout::adopt_shard_names(&config.data_dir)
        .map_err(|e| NodeError::Start(format!("{}: {e}", config.data_dir.display())))?;
    if !renamed.is_empty() {
        tracing::info!(?renamed, "group files renamed from their shard names");
    }
    let shards = config.shards as usize;
    let placement = if config.pin_cores {
        PoolPlacement::MaxSpread(shards, None)
    } else {
        PoolPlacement::Unbound(shards)
    };
    let metrics = NodeMetrics::new(config.node_id);
    if let Some(port) = config.metrics_port {
        let address = format!("{}:{port}", config.host);
        crate::metrics::endpoint::serve(&address, metrics.clone())
            .map_err(|e| NodeError::Start(e.to_string()))?;
    }
    let mesh = MeshBuilder::<ShardMessage, _>::full(shards, MESH_CHANNEL_CAPACITY);
    let handles = LocalExecutorPoolBuilder::new(placement)
        .io_memory(config.io_memory_bytes)
        .on_all_shards(move || {
            let (config, stop, mesh) = (config.clone(), stop.clone(), mesh.clone());
            let metrics = metrics.clone();
            async move { run_in_replication_queue(run_shard(config, stop, mesh, metrics)).await }
        })
        .map_err(|e| NodeError::Start(e.to_string()))?;
    let mut failure = None;
    for result in handles.join_all() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failure = Some(error),
            Err(error) => failure = Some(NodeError::Start(format!("a shard panicked: {error:?}"))),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// SIGHUP reads the node's TLS files again (new connections use them; open ones keep
/// theirs; on an error the files in use stay). Without TLS, SIGHUP is logged and
/// ignored: it never stops the node.
fn reload_tls_on_sighup(tls: Option<Arc<crate::security::tls::NodeTls>>) -> Result<(), NodeError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| NodeError::Start(format!("cannot handle SIGHUP: {e}")))?;
    std::thread::Builder::new()
        .name("keel-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match &tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!(
                            files = ?tls.files(),
                            "SIGHUP: TLS files read again; new connections use them"
                        ),
                        Err(error) => tracing::error!(
                            "SIGHUP: TLS files not reloaded, the ones in use stay: {error}"
                        ),
                    },
                    None => tracing::info!("SIGHUP: no TLS files to read again"),
                }
            }
        })
        .map_err(|e| NodeError::Start(format!("cannot start the SIGHUP thread: {e}")))?;
    Ok(())
}

/// Runs `shard` in the shard's replication task queue: everything it starts (the
/// replica's ticks and disk work, the peer links and listener) runs there, and only the
/// client server in a queue of its own (`run_shard`). glommio then preempts the clients'
/// queue within `REPLICATION_QUEUE_LATENCY` of replication work becoming runnable: a
/// flood of client requests cannot hold back a leader's heartbeats.
async fn run_in_replication_queue(
    shard: impl std::future::Future<Output = Result<(), NodeError>> + 'static,
) -> Result<(), NodeError> {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(1000),
        Latency::Matters(REPLICATION_QUEUE_LATENCY),
        "replication",
    );
    glommio::spawn_local_into(shard, queue)
        .map_err(|e| NodeError::Start(format!("replication task queue: {e}")))?
        .await
}

async fn run_shard(
    config: NodeConfig,
    stop: Arc<AtomicBool>,
    mesh: MeshBuilder<ShardMessage, glommio::channels::channel_mesh::Full>,
    metrics: Arc<NodeMetrics>,
) -> Result<(), NodeError> {
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|_| NodeError::Start("channel mesh".into()))?;
    let shard_id = senders.peer_id() as u32;
    let shard_error = |message: String| NodeError::Shard {
        shard: shard_id,
        message,
    };
    let placement = Placement::of_config(&config);
    let groups = Rc::new(
        HostedGroups::start(
            shard_id,
            &config,
            &placement,
            ShardMetrics::new(metrics, shard_id),
        )
        .await
        .map_err(shard_error)?,
    );
    connect_groups(&groups, &placement, Rc::new(senders), receivers);
    let stopping = Rc::new(Cell::new(false));
    let peer_server = serve_peer_port(&config, &groups, &stopping)
        .await
        .map_err(shard_error)?;
    // A shard of a node that joined serves clients once a group is moved to it.
    while !groups.is_serving() && !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    if !groups.is_serving() {
        // Stopped before any group was placed here: nothing to hand over or flush.
        stopping.set(true);
        drop(peer_server);
        return Ok(());
    }
    let address = config.shard_address(shard_id);
    let listener = listen_retrying(&address)
        .await
        .map_err(|e| shard_error(format!("listen on {address}: {e}")))?;
    tracing::info!(shard = shard_id, %address, groups = ?groups.ids().borrow(), "serving");
    let clients = glommio::executor().create_task_queue(
        Shares::Static(1000),
        Latency::NotImportant,
        "clients",
    );
    let server = glommio::spawn_local_into(
        server::serve(groups.clone(), listener, stopping.clone()),
        clients,
    )
    .map_err(|e| shard_error(format!("clients task queue: {e}")))?;
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    tracing::info!(
        shard = shard_id,
        "shutting down: handing over leadership, flushing the log"
    );
    // Still serving clients and peers while the followers take over.
    for core in groups.all() {
        core.hand_over_leadership().await;
    }
    stopping.set(true);
    drop(server);
    drop(peer_server);
    for core in groups.all() {
        core.shut_down()
            .await
            .map_err(|e| shard_error(format!("group {}: {e}", core.group.0)))?;
    }
    tracing::info!(shard = shard_id, "stopped");
    Ok(())
}

/// Wires the groups of a shard to each other and to the other shards of the node: the
/// controller's topics and every leader change reach every group of the node, and a
/// partition's bounds are asked of the shard running its group.
fn connect_groups(
    groups: &Rc<HostedGroups>,
    placement: &Placement,
    senders: Rc<Senders<ShardMessage>>,
    mut receivers: Receivers<ShardMessage>,
) {
    let broadcast = {
        let senders = senders.clone();
        move |message: ShardMessage| {
            let senders = senders.clone();
            glommio::spawn_local(async move {
                for peer in 0..senders.nr_consumers() {
                    if peer != senders.peer_id() {
                        let _ = senders.send_to(peer, message.clone()).await;
                    }
                }
            })
            .detach();
        }
    };
    let wire = {
        let local = Rc::downgrade(groups);
        move |core: &Rc<ShardCore>| {
            if core.group == CONTROLLER_GROUP {
                let (broadcast, local) = (broadcast.clone(), local.clone());
                core.on_topics_changed(Box::new(move |topics: Topics, epoch| {
                    if let Some(local) = local.upgrade() {
                        local.controller_topics(&topics, epoch);
                    }
                    broadcast(ShardMessage::Topics(Box::new(topics), epoch))
                }));
            }
            let (broadcast, leaders) = (broadcast.clone(), local.clone());
            core.on_leader_changed(Box::new(move |group, leader| {
                if let Some(local) = leaders.upgrade() {
                    local.set_leader(group, leader);
                }
                broadcast(ShardMessage::Leader(group, leader))
            }));
            let (senders, asked) = (senders.clone(), local.clone());
            core.on_ask_shard(Box::new(move |shard, query| {
                if shard == senders.peer_id() as u32 {
                    if let Some(local) = asked.upgrade() {
                        local.answer_bounds(query);
                    }
                    return;
                }
                let senders = senders.clone();
                glommio::spawn_local(async move {
                    let _ = senders
                        .send_to(shard as usize, ShardMessage::Bounds(query))
                        .await;
                })
                .detach();
            }));
            core.spawn(group_sessions::expire_sessions(core.clone()));
        }
    };
    groups.on_start(Box::new(wire));
    let controller_shard = placement.shard_on(u64::from(groups.node_id()), CONTROLLER_GROUP);
    for (peer, stream) in receivers.streams() {
        let groups = groups.clone();
        let from_controller = controller_shard == Some(peer as u32);
        glommio::spawn_local(async move {
            while let Some(message) = stream.recv().await {
                match message {
                    ShardMessage::Topics(topics, epoch) if from_controller => {
                        groups.controller_topics(&topics, epoch)
                    }
                    ShardMessage::Topics(..) => {}
                    ShardMessage::Leader(group, leader) => groups.set_leader(group, leader),
                    ShardMessage::Bounds(query) => groups.answer_bounds(query),
                }
            }
        })
        .detach();
    }
}

/// In a cluster, listens on the shard's peer port (`peer_port + shard`) and steps what
/// its connections are admitted to send (`transport::peer_listener`) in the group each
/// connection's hello names; a single node opens none.
async fn serve_peer_port(
    config: &NodeConfig,
    groups: &Rc<HostedGroups>,
    stopping: &Rc<Cell<bool>>,
) -> Result<Option<glommio::Task<()>>, String> {
    if config.peers.is_empty() {
        return Ok(None);
    }
    let address = config.peer_listen_address(groups.shard_id);
    let listener = listen_retrying(&address)
        .await
        .map_err(|e| format!("listen for peers on {address}: {e}"))?;
    tracing::info!(shard = groups.shard_id, %address, "serving peers");
    let ingress = PeerIngress {
        this_node: u64::from(config.node_id),
        groups: groups.ids(),
        nodes: groups.nodes(),
        max_frame_bytes: config.max_frame_bytes,
        secret: config.peer_secret.clone(),
        tls: config.tls.clone().filter(|_| config.peer_tls()),
    };
    let receiver = groups.clone();
    let deliver: Deliver = Rc::new(move |group, node, messages| {
        if let Some(core) = receiver.core(GroupId(group)) {
            core.step_peer_messages(node, messages);
        }
    });
    let receiver = groups.clone();
    let lost: Lost = Rc::new(move |group, node| {
        if let Some(core) = receiver.core(GroupId(group)) {
            core.peer_lost(node);
        }
    });
    Ok(Some(glommio::spawn_local(serve_peers(
        listener,
        ingress,
        (deliver, lost),
        stopping.clone(),
    ))))
}

/// Listens on `address`, trying again while it is in use, for up to `LISTEN_IN_USE_WAIT`.
async fn listen_retrying(address: &str) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + LISTEN_IN_USE_WAIT;
    let mut warned = false;
    loop {
        match listen(address) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !warned {
                    tracing::warn!(%address, "address in use; trying again");
                    warned = true;
                }
                glommio::timer::sleep(LISTEN_RETRY_INTERVAL).await;
            }
            outcome => return outcome,
        }
    }
}

/// A listener on `address` that refuses a port another process already listens on.
/// (glommio's own `bind` sets SO_REUSEPORT, so a second broker on the same port would
/// start without error and take half the connections.) SO_REUSEADDR is set, so a restart
/// is not refused for the old process's connections in TIME_WAIT.
fn listen(address: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let address = address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolves to nothing",
        )
    })?;
    let domain = if address.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership passes to
    // the glommio listener (nothing else keeps it).
    Ok(unsafe {
        <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            socket,
        ))
    })
}

/// The applied state a shard starts from: empty for a log that was never compacted, else
/// the snapshot at the log's compaction point (the entries after it are applied again).
pub(crate) fn restore_state(
    log: &CommitLog,
    snapshots: &SnapshotFiles,
) -> Result<ShardState, String> {
    let (compaction, _) = log.compaction_point();
    if compaction == 0 {
        return Ok(ShardState::default());
    }
    let snapshot = snapshots.read(compaction).map_err(|e| {
        format!(
            "the log starts after index {compaction}, but the snapshot of the state there \
             cannot be read ({e}); the shard cannot rebuild its state"
        )
    })?;
    let mut state =
        decode_state(&snapshot.data).map_err(|e| format!("snapshot at {compaction}: {e}"))?;
    state.forget_below(compaction + 1);
    log.set_snapshot(snapshot);
    Ok(state)
}
