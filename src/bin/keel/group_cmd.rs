//! `keel group ...` and `keel consume --group`: consumer groups from the command line.
//! Prints tables for people; exit status 0 on success, 1 on any error (with the broker's
//! words on stderr).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use keel::broker::groups::GroupMode;
use keel::client::group_calls::GroupDescription;
use keel::client::{ClientError, ClusterClient, GroupConsumer, GroupConsumerConfig};

use super::{fail, ConnectArgs};

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Every consumer group: members, generation, mode.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// A group's members and their partitions, and per partition its committed offset,
    /// its end and the lag between them.
    Describe {
        /// The group.
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Sets a group's committed offsets for a topic (the group must have no members:
    /// stop its consumers first).
    Reset(ResetArgs),
    /// Deletes a group without members, and its committed offsets.
    Delete {
        /// The group.
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("to").required(true)))]
pub(crate) struct ResetArgs {
    /// The group.
    group: String,
    /// The topic whose offsets are set.
    #[arg(long)]
    topic: String,
    /// Only these partitions (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<u32>,
    /// To each partition's first kept offset.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To each partition's end (only records produced from now on).
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To this offset in each partition.
    #[arg(long, group = "to")]
    to_offset: Option<u64>,
    /// To each partition's first record stamped at or after this time: an RFC 3339 time
    /// (2026-12-02T09:30:00Z), milliseconds since the Unix epoch, or a duration ago (15m,
    /// 2h). A partition with no such record goes to its end.
    #[arg(long, group = "to", value_parser = parse_time)]
    to_time: Option<i64>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `keel group ...`.
pub(crate) fn group(command: GroupCommand) -> ExitCode {
    let outcome = match command {
        GroupCommand::List { connect } => list(&connect),
        GroupCommand::Describe { group, connect } => describe(&group, &connect),
        GroupCommand::Reset(args) => reset(&args),
        GroupCommand::Delete { group, connect } => connect
            .client()
            .delete_group(&group)
            .map(|()| println!("deleted group {group}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("group", error),
    }
}

fn mode_name(mode: GroupMode) -> &'static str {
    match mode {
        GroupMode::Clustering => "clustering",
        GroupMode::Broadcasting => "broadcasting",
    }
}

fn list(connect: &ConnectArgs) -> Result<(), ClientError> {
    let groups = connect.client().list_groups()?;
    println!("{:<30} {:>8} {:>11} MODE", "GROUP", "MEMBERS", "GENERATION");
    for group in groups {
        println!(
            "{:<30} {:>8} {:>11} {}",
            group.name,
            group.members,
            group.generation,
            mode_name(group.mode)
        );
    }
    Ok(())
}

fn describe(group: &str, connect: &ConnectArgs) -> Result<(), ClientError> {
    let mut client = connect.client();
    let found = client.describe_group(group)?;
    println!(
        "group {}: generation {}, {}, {:?} assignment, {} member(s)",
        found.name,
        found.generation,
        mode_name(found.mode),
        found.strategy,
        found.members.len()
    );
    println!(
        "{:<32} {:<16} {:>9} PARTITIONS",
        "MEMBER", "INSTANCE", "SESSION"
    );
    for member in &found.members {
        let partitions: Vec<String> = member
            .assignment
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        println!(
            "{:<32} {:<16} {:>8}s {}",
            member.member_id,
            member.instance,
            member.session_timeout_ms / 1000,
            partitions.join(",")
        );
    }
    print_offsets(&mut client, &found)
}

/// Committed offset, end and lag per partition of the group's offsets.
fn print_offsets(client: &mut ClusterClient, found: &GroupDescription) -> Result<(), ClientError> {
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>10} INSTANCE",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for offset in &found.offsets {
        let (_, end) = client.partition_offsets(&offset.topic, offset.partition)?;
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>10} {}",
            offset.topic,
            offset.partition,
            offset.offset,
            end,
            end.saturating_sub(offset.offset),
            offset.instance
        );
    }
    Ok(())
}

fn reset(args: &ResetArgs) -> Result<(), ClientError> {
    let mut client = args.connect.client();
    let count = *client
        .metadata()?
        .topics
        .get(&args.topic)
        .ok_or_else(|| ClientError::Unexpected(format!("no topic {:?}", args.topic)))?;
    let partitions: Vec<u32> = if args.partitions.is_empty() {
        (0..count).collect()
    } else {
        args.partitions.clone()
    };
    let mut offsets = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (start, end) = client.partition_offsets(&args.topic, partition)?;
        // clap makes exactly one of the four present.
        let offset = match (
            args.to_earliest,
            args.to_latest,
            args.to_offset,
            args.to_time,
        ) {
            (true, ..) => start,
            (_, true, ..) => end,
            (_, _, Some(offset), _) => offset,
            (_, _, None, Some(time)) => client.offset_for_time(&args.topic, partition, time)?,
            (_, _, None, None) => start,
        };
        offsets.push(((args.topic.clone(), partition), offset, "reset".to_string()));
    }
    client.commit_offsets(&args.group, "", 0, &offsets)?;
    for ((topic, partition), offset, _) in &offsets {
        println!("{} {topic}/{partition} -> {offset}", args.group);
    }
    Ok(())
}

/// A time for `--to-time`, in milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(milliseconds) = text.parse::<i64>() {
        return Ok(milliseconds);
    }
    if let Ok(time) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok((time.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let ago = keel::units::parse_duration(text).map_err(|_| {
        format!("{text:?} is not a time: an RFC 3339 time (2026-12-02T09:30:00Z), milliseconds since the Unix epoch, or a duration ago (15m)")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(now.saturating_sub(ago).as_millis() as i64)
}

/// What `keel consume --group` was asked.
pub(crate) struct GroupConsumeArgs<'a> {
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) offsets: bool,
    pub(crate) follow: bool,
    pub(crate) session_timeout: Duration,
    pub(crate) connect: &'a ConnectArgs,
}

/// `keel consume TOPIC --group G`: prints the records of the partitions the group
/// assigns this member, committing what it printed (at-least-once), until interrupted
/// or, without --follow, until every assigned partition is read to its end.
pub(crate) fn consume_group(args: GroupConsumeArgs<'_>) -> ExitCode {
    let GroupConsumeArgs {
        group,
        topic,
        offsets,
        follow,
        session_timeout,
        connect,
    } = args;
    let mut config = GroupConsumerConfig::new(group, &[topic]);
    config.security = connect.security();
    config.auto_commit = Some(Duration::from_secs(1));
    config.join.session_timeout_ms = u32::try_from(session_timeout.as_millis()).unwrap_or(u32::MAX);
    let mut consumer = match GroupConsumer::subscribe(&connect.bootstrap, config) {
        Ok(consumer) => consumer,
        Err(error) => return fail("consume", error),
    };
    let stdout = std::io::stdout();
    let mut idle_polls = 0;
    loop {
        let records = match consumer.poll(Duration::from_millis(500)) {
            Ok(records) => records,
            Err(error) => return fail("consume", error),
        };
        idle_polls = if records.is_empty() {
            idle_polls + 1
        } else {
            0
        };
        let mut out = stdout.lock();
        for record in &records {
            let value = String::from_utf8_lossy(&record.record.value);
            let written = if offsets {
                writeln!(
                    out,
                    "{}\t{}\t{value}",
                    record.partition, record.record.offset
                )
            } else {
                writeln!(out, "{value}")
            };
            if written.is_err() {
                return ExitCode::SUCCESS; // the reader went away (a closed pipe)
            }
        }
        drop(out);
        // Without --follow: done once a poll round over every partition found nothing.
        if !follow && idle_polls >= 2 {
            return match consumer.close() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail("consume", error),
            };
        }
    }
}
