//! `keel cluster ...`: the cluster's state, and replicas moved between its nodes.
//! Prints for people; exit status 0 on success, 1 on any error (with the broker's words
//! on stderr).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use keel::client::move_calls::{MoveRecord, NodeService, PlannedChange};
use keel::client::mover::{move_replica, MoveBudget, MoveOutcome, ReplicaMovePlan};
use keel::client::ClusterClient;

use super::{fail, parse_duration, ConnectArgs};

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Nodes, groups, leaders, terms, commit/applied/durable indexes and follower lag.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Refresh every --interval until Ctrl-C: per group its leader, term, commit
        /// index, produce rate (records/s) and follower lag.
        #[arg(long)]
        watch: bool,
        /// Time between refreshes with --watch.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Move one replica of a replica group from one node to another while the group
    /// serves: the new replica joins as a learner, catches up (snapshot and log), is
    /// promoted while the old one is demoted (joint consensus), then the old one leaves
    /// and its node deletes its files. Interrupted (this command, a node, the
    /// controller's leader killed), it resumes when asked again; a learner that does not
    /// catch up in time is removed again (the move rolls back).
    Move(MoveArgs),
    /// Even out replicas over the nodes: prints the moves the controller plans, then
    /// makes them one at a time (each as `keel cluster move`), planning again until none
    /// is left. With --dry-run, only prints them.
    Rebalance(PlanArgs),
}

/// `keel node ...`: adding a node, taking one out of service.
#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Register a node with the running cluster before (or instead of) starting it with
    /// `keel broker --join`: the controller records its addresses and adds it to the
    /// controller group as a learner. It holds no replica until a rebalance (`keel
    /// cluster rebalance`) or a move gives it some. A node started with --join
    /// registers itself the same way.
    Add {
        /// The new node's id (never one of --peers, nor a removed node's).
        node: u32,
        /// Where it listens: HOST:PORT (shard 0's client port) or HOST:PORT/PEER_PORT
        /// (without it, the peer port is PORT + 100); "@rack" after it names its rack.
        address: String,
        /// Shards it runs (every node of the cluster runs as many) [default: the
        /// cluster's].
        #[arg(long)]
        shards: Option<u32>,
        /// The cluster's peer secret file (the nodes' --peer-secret-file): only a holder
        /// of the secret adds a node.
        #[arg(long)]
        peer_secret_file: std::path::PathBuf,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move every replica off node N (one at a time, while the groups serve), so it can
    /// be stopped for good. With --dry-run, only prints the moves.
    Drain {
        /// The node.
        node: u64,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Return a draining node to service: it takes replicas again (not a removed one).
    Activate {
        /// The node.
        node: u64,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Take a drained node out of the cluster for good: it is given nothing again and
    /// may be stopped. Refused while it holds a replica (drain it first) or votes in the
    /// controller group.
    Remove {
        /// The node.
        node: u64,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Args)]
pub(crate) struct PlanArgs {
    /// Print the moves; make none.
    #[arg(long)]
    dry_run: bool,
    /// At most this many moves.
    #[arg(long, default_value_t = 256)]
    max_moves: u32,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// How long each move may take.
#[derive(Args)]
pub(crate) struct BudgetArgs {
    /// The new replica's lag behind its leader (in entries) must set a new low at least
    /// once within this while it catches up, else its move rolls back: a large group
    /// takes as long as its size at the leaders' `learner_rate` (8 MiB/s by default,
    /// about 2 minutes a GiB), a group written faster than that never closes in.
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    catch_up_timeout: Duration,
    /// A move must end within this (it resumes when asked again).
    #[arg(long, value_parser = parse_duration, default_value = "12h")]
    timeout: Duration,
}

impl BudgetArgs {
    fn budget(&self) -> MoveBudget {
        MoveBudget {
            catch_up: self.catch_up_timeout,
            total: Some(self.timeout),
        }
    }
}

#[derive(Args)]
pub(crate) struct MoveArgs {
    /// The replica group (`keel cluster status` lists them).
    #[arg(long)]
    group: u32,
    /// The node giving its replica up.
    #[arg(long)]
    from: u64,
    /// The node taking it (one that never held a replica of the group).
    #[arg(long)]
    to: u64,
    /// Its shard there [default: the one running the fewest groups].
    #[arg(long)]
    to_shard: Option<u32>,
    #[command(flatten)]
    budget: BudgetArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub(crate) fn cluster(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Status {
            connect,
            watch: false,
            ..
        } => cluster_status(&connect),
        ClusterCommand::Status {
            connect, interval, ..
        } => super::status_watch::watch(&connect, interval),
        ClusterCommand::Move(args) => cluster_move(args),
        ClusterCommand::Rebalance(args) => run_plan("cluster rebalance", &[], args),
    }
}

pub(crate) fn node(command: NodeCommand) -> ExitCode {
    let (what, node, state, connect) = match command {
        NodeCommand::Add {
            node,
            address,
            shards,
            peer_secret_file,
            connect,
        } => return node_add(node, &address, (shards, &peer_secret_file), &connect),
        NodeCommand::Drain { node, plan } => {
            // Draining first: nothing new is placed on it while its replicas move off.
            if !plan.dry_run {
                let mut client = plan.connect.client();
                if let Err(error) = client.set_node_state(node, NodeService::Draining) {
                    return fail("node drain", error);
                }
            }
            return run_plan("node drain", &[node], plan);
        }
        NodeCommand::Activate { node, connect } => {
            ("node activate", node, NodeService::Active, connect)
        }
        NodeCommand::Remove { node, connect } => {
            ("node remove", node, NodeService::Removed, connect)
        }
    };
    match connect.client().set_node_state(node, state) {
        Ok(changed) => {
            let now = match state {
                NodeService::Active => "active",
                NodeService::Draining => "draining",
                NodeService::Removed => "removed: it may be stopped",
            };
            let already = if changed { "" } else { " (already)" };
            println!("{what}: node {node} is {now}{already}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(what, error),
    }
}

/// `keel node add`: records the node at the controller.
fn node_add(
    node: u32,
    address: &str,
    (shards, secret_file): (Option<u32>, &std::path::Path),
    connect: &ConnectArgs,
) -> ExitCode {
    let secret = match keel::security::PeerSecret::load(secret_file) {
        Ok(secret) => secret,
        Err(error) => return fail("node add", error),
    };
    let parsed = match keel::config::parse_peers(&format!("{node}={address}")) {
        Ok(mut parsed) if parsed.len() == 1 => parsed.remove(0),
        Ok(_) => return fail("node add", "give one address: HOST:PORT[/PEER_PORT][@RACK]"),
        Err(error) => return fail("node add", error),
    };
    let mut client = connect.client();
    let shards = match shards {
        Some(shards) => shards,
        None => match client.metadata() {
            Ok(metadata) => metadata
                .nodes
                .first()
                .map_or(1, |&(_, _, _, shards)| shards),
            Err(error) => return fail("node add", error),
        },
    };
    match client.join_cluster(&parsed, shards, Some(&secret)) {
        Ok(answer) => {
            let rack = parsed
                .rack
                .as_ref()
                .map_or(String::new(), |r| format!(" --rack {r}"));
            println!(
                "node add: node {node} is in the cluster ({}:{} for clients, peer port {}); \
                 start it with: keel broker --node-id {node} --host {} --port {} --peer-port {} \
                 --shards {}{rack} --peer-secret-file {} --join {}",
                parsed.host,
                parsed.base_port,
                parsed.peer_port,
                parsed.host,
                parsed.base_port,
                parsed.peer_port,
                answer.shards,
                secret_file.display(),
                connect.bootstrap
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail("node add", error),
    }
}

/// Plans, prints and (without --dry-run) makes the moves, planning again after each
/// round until nothing is left to move.
fn run_plan(what: &str, drain: &[u64], args: PlanArgs) -> ExitCode {
    let mut client = args.connect.client();
    let budget = args.budget.budget();
    // Changes made, replica moves among them.
    let (mut made, mut moved): (u32, u32) = (0, 0);
    loop {
        let left = args.max_moves.saturating_sub(made);
        let plan = match client.plan_moves(drain, left) {
            Ok(plan) => plan,
            Err(error) => return fail(what, error),
        };
        if plan.is_empty() || left == 0 {
            println!(
                "{what}: {moved} replica(s) moved, {led} leadership(s) moved; nothing left to move",
                led = made - moved
            );
            return ExitCode::SUCCESS;
        }
        println!("{what}: {} move(s) planned", plan.len());
        for planned in &plan {
            match planned {
                PlannedChange::Replica(m) => println!(
                    "  group {:>4}: node {} -> node {} (shard {})",
                    m.group,
                    m.from,
                    m.to,
                    m.to_shard.unwrap_or(0)
                ),
                PlannedChange::Leader { group, from, to } => {
                    println!("  group {group:>4}: leadership node {from} -> node {to}")
                }
            }
        }
        if args.dry_run {
            return ExitCode::SUCCESS;
        }
        for planned in &plan {
            let done = match planned {
                PlannedChange::Replica(m) => {
                    moved += 1;
                    move_one(&mut client, m, budget)
                }
                PlannedChange::Leader { group, to, .. } => lead(&mut client, *group, *to),
            };
            if done != ExitCode::SUCCESS {
                return ExitCode::FAILURE;
            }
            made += 1;
        }
    }
}

/// Records `to` as `group`'s preferred leader: leader balancing hands it the group once
/// it is up to date (`leader_balance_delay`).
fn lead(client: &mut ClusterClient, group: u32, to: u64) -> ExitCode {
    match client.record_move(group, &MoveRecord::Leader { to }) {
        Ok(_) => {
            println!("group {group}: node {to} is its preferred leader");
            ExitCode::SUCCESS
        }
        Err(error) => fail("leadership move", error),
    }
}

fn cluster_move(args: MoveArgs) -> ExitCode {
    let mut client = args.connect.client();
    let plan = ReplicaMovePlan {
        group: args.group,
        from: args.from,
        to: args.to,
        to_shard: args.to_shard,
    };
    let budget = args.budget.budget();
    move_one(&mut client, &plan, budget)
}

/// How often a move in progress prints the new replica's catch-up.
const MOVE_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes one move, printing each step and, every few seconds, the catch-up.
fn move_one(client: &mut ClusterClient, plan: &ReplicaMovePlan, budget: MoveBudget) -> ExitCode {
    let started = std::time::Instant::now();
    let mut last_step = "";
    let mut last_print = started;
    let mut report = |progress: &keel::client::mover::MoveProgress| {
        let m = &progress.membership;
        let matched = m.learner_matched(plan.to).filter(|_| m.last_index > 0);
        if progress.step == last_step && last_print.elapsed() >= MOVE_PROGRESS_EVERY {
            if let Some(matched) = matched {
                println!(
                    "{:>7.1}s  node {} at index {matched} of {} ({} behind)",
                    started.elapsed().as_secs_f64(),
                    plan.to,
                    m.last_index,
                    m.last_index.saturating_sub(matched)
                );
                last_print = std::time::Instant::now();
            }
        }
        if progress.step != last_step {
            last_print = std::time::Instant::now();
            println!(
                "{:>7.1}s  {}  (voters {:?}{}, learners {:?}, as of index {})",
                started.elapsed().as_secs_f64(),
                progress.step,
                m.voters,
                if m.is_joint() {
                    format!(" + outgoing {:?}", m.outgoing)
                } else {
                    String::new()
                },
                m.learners,
                m.index
            );
            last_step = progress.step;
        }
    };
    match move_replica(client, plan, budget, &mut report) {
        Ok(MoveOutcome::Done) => {
            println!(
                "group {}: replica moved from node {} to node {} in {:.1} s",
                plan.group,
                plan.from,
                plan.to,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Ok(MoveOutcome::RolledBack) => {
            eprintln!(
                "group {}: node {}'s lag behind the leader set no new low for {:?} while it caught up: the move rolled back (the group is as before)",
                plan.group, plan.to, budget.catch_up
            );
            ExitCode::FAILURE
        }
        Err(error) => fail("cluster move", error),
    }
}

fn cluster_status(connect: &ConnectArgs) -> ExitCode {
    let mut client = connect.client();
    let rows = match client.cluster_status() {
        Ok(rows) => rows,
        Err(error) => return fail("cluster status", error),
    };
    println!(
        "{:>5} {:>4} {:<13} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}  followers (node:matched/lag)",
        "group", "node", "role", "leader", "term", "commit", "applied", "last", "durable"
    );
    for row in &rows {
        let followers: Vec<String> = row
            .followers
            .iter()
            .map(|(node, matched, lag)| format!("{node}:{matched}/{lag}"))
            .collect();
        println!(
            "{:>5} {:>4} {:<13} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}  {}",
            row.group,
            row.node,
            row.role,
            row.leader,
            row.term,
            row.commit,
            row.applied,
            row.last_index,
            row.durable,
            followers.join(" ")
        );
    }
    let changes = client.placement_changes().unwrap_or_default();
    if !changes.draining.is_empty() {
        println!("nodes draining: {:?}", changes.draining);
    }
    if !changes.removed.is_empty() {
        println!("nodes removed: {:?}", changes.removed);
    }
    if !changes.moves.is_empty() {
        println!("moves under way:");
    }
    for (group, from, to, shard) in changes.moves {
        // The new replica's progress, as the group's leader sees it.
        let progress = rows
            .iter()
            .filter(|r| r.group == group && r.role == "leader")
            .flat_map(|r| r.followers.iter())
            .find(|(node, ..)| u64::from(*node) == to)
            .map_or("not heard from yet".to_string(), |(_, matched, lag)| {
                format!("matched {matched}, {lag} entries behind")
            });
        println!("  group {group:>4}: node {from} -> node {to} (shard {shard}): {progress}");
    }
    ExitCode::SUCCESS
}
