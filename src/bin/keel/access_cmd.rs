//! `keel user ...` and `keel acl ...`: users (SCRAM credentials) and access rules, kept
//! by the controller group. Prints tables for people; exit status 0 on success, 1 on any
//! error (with the broker's words on stderr), 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use keel::client::ClientError;
use keel::security::acl::Rule;

use super::{fail, ConnectArgs};

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Creates a user (or gives an existing one a new password). The password is read
    /// from a file (or stdin with "-"); the brokers receive only a salted, iterated hash
    /// of it (SCRAM-SHA-256).
    Create {
        /// The user's name (1-255 of letters, digits, . _ - @).
        name: String,
        /// A file holding the new user's password (its first line), or - for stdin
        /// (--password-file is the password of --user, who makes the change).
        #[arg(long)]
        new_password_file: PathBuf,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Deletes a user (its open connections stay open; new ones are refused).
    Delete {
        /// The user.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Every user of the cluster (not the nodes' own, from their --users-file).
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Prints a user's credential line for a broker's --users-file (the superuser's,
    /// who creates the others); contacts no broker.
    Hash {
        /// The user's name.
        name: String,
        /// A file holding the password (its first line), or - for stdin.
        #[arg(long)]
        password_file: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum AclCommand {
    /// Adds a rule: PRINCIPAL may (or, with --deny, may not) do OPERATION on RESOURCE.
    Add(RuleArgs),
    /// Removes a rule (given exactly as it was added).
    Remove(RuleArgs),
    /// Every rule (of one principal with --principal).
    List {
        /// Only the rules naming this principal.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true)))]
pub(crate) struct RuleArgs {
    /// The principal: a user, or a client certificate's common name.
    #[arg(long, group = "who")]
    principal: Option<String>,
    /// The rule is for every authenticated principal.
    #[arg(long, group = "who")]
    everyone: bool,
    /// topic:NAME, topic:PREFIX*, group:NAME, group:PREFIX* or cluster.
    #[arg(long)]
    resource: String,
    /// produce, fetch, create, delete, describe, alter, admin or all (describe is implied
    /// by any other allowed operation on the resource).
    #[arg(long)]
    operation: String,
    /// A deny rule (deny wins over allow).
    #[arg(long)]
    deny: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Reads a password: the first line of `path`, or of stdin for "-".
pub(crate) fn read_password(path: &Path) -> Result<String, String> {
    let text = if path == Path::new("-") {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?
    };
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(format!("the password in {} is empty", path.display()));
    }
    Ok(password)
}

fn usage(error: String) -> ExitCode {
    eprintln!("keel: {error}");
    ExitCode::from(2)
}

/// `keel user ...`.
pub(crate) fn user(command: UserCommand) -> ExitCode {
    let outcome = match command {
        UserCommand::Create {
            name,
            new_password_file,
            connect,
        } => {
            let password = match read_password(&new_password_file) {
                Ok(password) => password,
                Err(error) => return usage(error),
            };
            connect.client().set_user(&name, &password).map(|changed| {
                let what = if changed { "set" } else { "unchanged" };
                println!("user {name}: {what}");
            })
        }
        UserCommand::Delete { name, connect } => {
            connect.client().delete_user(&name).map(|existed| {
                let what = if existed { "deleted" } else { "no such user" };
                println!("user {name}: {what}");
            })
        }
        UserCommand::List { connect } => connect.client().list_users().map(|users| {
            println!("{:<40} ITERATIONS", "USER");
            for (name, iterations) in users {
                println!("{name:<40} {iterations}");
            }
        }),
        UserCommand::Hash {
            name,
            password_file,
        } => return hash(&name, &password_file),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("user", error),
    }
}

fn hash(name: &str, password_file: &Path) -> ExitCode {
    if !keel::broker::access::valid_user_name(name) {
        return usage(format!(
            "invalid user name {name:?}: use 1-255 of [A-Za-z0-9._@-]"
        ));
    }
    let password = match read_password(password_file) {
        Ok(password) => password,
        Err(error) => return usage(error),
    };
    match keel::client::access_calls::new_credential(&password) {
        Ok(credential) => {
            let line = keel::security::users_file::credential_line(name, &credential);
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => fail("user", error),
    }
}

/// `keel acl ...`.
pub(crate) fn acl(command: AclCommand) -> ExitCode {
    let outcome = match command {
        AclCommand::Add(args) => change(&args, false),
        AclCommand::Remove(args) => change(&args, true),
        AclCommand::List { principal, connect } => connect
            .client()
            .list_acls(principal.as_deref())
            .map(|rules| print_rules(&rules))
            .map_err(Some),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(error)) => fail("acl", error),
        Err(None) => ExitCode::from(2),
    }
}

/// Adds or removes the rule; `Err(None)`: a usage error, already printed.
fn change(args: &RuleArgs, remove: bool) -> Result<(), Option<ClientError>> {
    let principal = if args.everyone {
        None
    } else {
        args.principal.as_deref()
    };
    let rule = Rule::parse(principal, &args.resource, Some(&args.operation), !args.deny).map_err(
        |error| {
            eprintln!("keel: {error}");
            None
        },
    )?;
    let changed = args.connect.client().change_acl(&rule, remove)?;
    let what = match (remove, changed) {
        (false, true) => "added",
        (false, false) => "already there",
        (true, true) => "removed",
        (true, false) => "no such rule",
    };
    println!("{}: {what}", describe(&rule));
    Ok(())
}

fn describe(rule: &Rule) -> String {
    format!(
        "{} {} {} on {}",
        if rule.allow { "allow" } else { "deny" },
        rule.principal.as_deref().unwrap_or("*"),
        rule.operation.map_or("all", |op| op.name()),
        rule.pattern
    )
}

fn print_rules(rules: &[Rule]) {
    println!(
        "{:<6} {:<32} {:<10} RESOURCE",
        "RULE", "PRINCIPAL", "OPERATION"
    );
    for rule in rules {
        println!(
            "{:<6} {:<32} {:<10} {}",
            if rule.allow { "allow" } else { "deny" },
            rule.principal.as_deref().unwrap_or("*"),
            rule.operation.map_or("all", |op| op.name()),
            rule.pattern
        );
    }
}
