//! Issue 13: client authentication and access rules on a real 3-node cluster started with
//! --client-auth, a superuser from a users file, plain TCP (SCRAM needs no TLS). A client
//! without credentials, with a wrong password or an unknown user is refused; the
//! superuser creates a user and rules; the rules allow and deny exactly what they say on
//! every node, the refused connection stays usable; users and rules survive a restart of
//! the whole cluster; a deleted user is refused. A client certificate from the cluster's
//! CA names its principal (common name) on a TLS broker.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use keel::client::access_calls::new_credential;
use keel::client::{ClientError, ClientSecurity, ClusterClient, Credentials};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::{Acks, ErrorCode};
use keel::security::acl::Rule;
use keel::security::users_file::credential_line;
use support::{retry, start_cluster_with, Broker};

const ADMIN_PASSWORD: &str = "the admin's password";

/// The users file of a cluster whose superuser is "admin".
fn users_file(dir: &Path) -> String {
    let credential = new_credential(ADMIN_PASSWORD).unwrap();
    let path = dir.join("users");
    std::fs::write(&path, credential_line("admin", &credential) + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn client_as(bootstrap: &str, user: Option<(&str, &str)>) -> ClusterClient {
    let credentials = user.map(|(user, password)| Credentials {
        user: user.to_string(),
        password: password.to_string(),
    });
    let security = ClientSecurity {
        tls: None,
        credentials,
    };
    let mut client = ClusterClient::with_security(bootstrap, security);
    client.set_request_timeout(Duration::from_secs(5));
    client
}

fn produce(client: &mut ClusterClient, topic: &str) -> Result<u64, ClientError> {
    let records = [RecordData {
        value: b"v".to_vec(),
        ..Default::default()
    }];
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    client.produce(topic, 0, &batch, crc, Acks::Quorum)
}

/// The broker's words of a `NotAuthorized` refusal.
fn not_authorized<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Broker { code, message, .. }) if code == ErrorCode::NotAuthorized => {
            message
        }
        other => panic!("NotAuthorized expected, got {other:?}"),
    }
}

/// Waits until `check` holds (rules reach every shard a moment after they are applied).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The salt a node's server-first message gives `user` (the exchange then abandoned);
/// asked again while the node is not serving yet (just restarted).
fn server_salt(address: &str, user: &str) -> String {
    retry("a server-first message", || {
        server_first_salt(address, user)
    })
}

fn server_first_salt(address: &str, user: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let request = keel::client::connection::authenticate_request(1, &format!("n,,n={user},r=abc"));
    let frame = keel::protocol::frame::encode_frame(&request).map_err(|e| e.to_string())?;
    let mut stream = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream.write_all(&frame).map_err(|e| e.to_string())?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).map_err(|e| e.to_string())?;
    let mut answer = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    let response = keel::protocol::codec::decode_response(&answer).map_err(|e| e.to_string())?;
    let message = response
        .body_as_authenticate_response()
        .and_then(|a| a.message())
        .ok_or("not a server-first message")?;
    let salt = message.split(',').find_map(|part| part.strip_prefix("s="));
    Ok(salt.ok_or("no salt")?.to_string())
}

fn rule(principal: &str, pattern: &str, operation: &str, allow: bool) -> Rule {
    Rule::parse(Some(principal), pattern, Some(operation), allow).unwrap()
}

#[test]
fn clients_authenticate_and_rules_allow_and_deny_what_they_say_across_restarts() {
    let root = tempfile::tempdir().unwrap();
    let users = users_file(root.path());
    let args = [
        "--client-auth",
        "--superuser",
        "admin",
        "--users-file",
        users.as_str(),
    ];
    let nodes = start_cluster_with(root.path(), 3, 1, &args);
    let addresses: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = addresses.join(",");
    // Without credentials, with a wrong password, as an unknown user: refused at once
    // (never retried), the last two alike.
    let refused = client_as(&bootstrap, None).list_topics();
    assert_eq!(
        refused.as_ref().err().and_then(ClientError::code),
        Some(ErrorCode::AuthenticationFailed),
        "{refused:?}"
    );
    for (user, password) in [("admin", "wrong"), ("nobody", "wrong")] {
        let error = client_as(&bootstrap, Some((user, password)))
            .list_topics()
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Authentication { reason, .. }
                if reason.contains("unknown user or wrong password")),
            "{user}: {error:?}"
        );
    }
    // The superuser makes a topic and a user; the user may do nothing yet.
    let mut admin = client_as(&bootstrap, Some(("admin", ADMIN_PASSWORD)));
    retry("create topic", || admin.create_topic("orders", 1));
    assert!(admin.set_user("alice", "alice's password").unwrap());
    let mut alice = client_as(&bootstrap, Some(("alice", "alice's password")));
    eventually("alice authenticates", || alice.list_topics().is_ok());
    // Not even the topic's metadata: the client is told it may not describe it.
    let why = not_authorized(produce(&mut alice, "orders"));
    assert!(
        why.contains("\"alice\" may not describe topic \"orders\"")
            && why.contains("deny by default"),
        "{why}"
    );
    // The refused connection serves her next request: a listing without the topic.
    assert_eq!(alice.list_topics().unwrap(), Vec::new());
    not_authorized(alice.list_users());
    // Allowed to describe the topic, not to write it: the produce itself is refused.
    let describe = rule("alice", "topic:orders", "describe", true);
    assert!(admin.change_acl(&describe, false).unwrap());
    eventually("alice sees the topic", || {
        alice.list_topics().is_ok_and(|t| t.len() == 1)
    });
    let why = not_authorized(produce(&mut alice, "orders"));
    assert!(
        why.contains("\"alice\" may not produce topic \"orders\""),
        "{why}"
    );
    // Allowed by prefix: she produces and sees the topic (describe is implied).
    assert!(admin
        .change_acl(&rule("alice", "topic:ord*", "produce", true), false)
        .unwrap());
    eventually("alice produces", || produce(&mut alice, "orders").is_ok());
    assert_eq!(
        alice.list_topics().unwrap(),
        vec![("orders".to_string(), 1)]
    );
    not_authorized(alice.fetch("orders", 0, 0, 1 << 16, Duration::ZERO));
    // A deny rule wins over the allow, on every node (she still may describe the topic,
    // so the produce itself is refused).
    let deny = rule("alice", "topic:orders", "produce", false);
    assert!(admin.change_acl(&deny, false).unwrap());
    for address in &addresses {
        let mut at_node = client_as(address, Some(("alice", "alice's password")));
        eventually("the deny rule applies", || {
            matches!(produce(&mut at_node, "orders"),
                Err(ClientError::Broker { code, ref message, .. })
                    if code == ErrorCode::NotAuthorized && message.contains("a deny rule matches"))
        });
    }
    // The whole cluster restarts: users and rules are the controller's, replicated.
    let nodes: Vec<Broker> = nodes.into_iter().map(Broker::restart).collect();
    let mut admin = client_as(&bootstrap, Some(("admin", ADMIN_PASSWORD)));
    let users = retry("list users", || admin.list_users());
    assert_eq!(
        users.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );
    let rules = admin.list_acls(Some("alice")).unwrap();
    let expected = [
        rule("alice", "topic:ord*", "produce", true),
        deny.clone(),
        describe,
    ];
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert!(expected.iter().all(|r| rules.contains(r)), "{rules:?}");
    let mut alice = client_as(&bootstrap, Some(("alice", "alice's password")));
    eventually("alice is still denied after the restart", || {
        matches!(produce(&mut alice, "orders"),
            Err(ClientError::Broker { code, .. }) if code == ErrorCode::NotAuthorized)
    });
    assert!(
        admin.change_acl(&deny, true).unwrap(),
        "the deny rule removed"
    );
    eventually("alice produces again", || {
        produce(&mut alice, "orders").is_ok()
    });
    // A group of her own does not open other topics: a reset of her group's offsets
    // naming a topic she may not see is refused for that topic (not answered about it).
    retry("create a secret topic", || admin.create_topic("secret", 1));
    let group_rule = rule("alice", "group:alice-*", "all", true);
    assert!(admin.change_acl(&group_rule, false).unwrap());
    let offsets = [(("secret".to_string(), 0), 0, String::new())];
    eventually("the group rule applies", || {
        matches!(alice.commit_offsets("alice-g", "", 0, &offsets),
            Err(ClientError::Broker { code, ref message, .. })
                if code == ErrorCode::NotAuthorized
                    && message.contains("may not describe topic \"secret\""))
    });
    // Her group's offsets of a topic she may not see are left out of what she is told.
    let both = [
        (("secret".to_string(), 0), 0, String::new()),
        (("orders".to_string(), 0), 0, String::new()),
    ];
    admin.commit_offsets("alice-g", "", 0, &both).unwrap();
    let described = alice.describe_group("alice-g").unwrap();
    let seen: Vec<&str> = described.offsets.iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(seen, ["orders"]);
    let everything = admin.describe_group("alice-g").unwrap();
    assert_eq!(everything.offsets.len(), 2, "the superuser sees both");
    // An unknown user's salt is the same on every node, as a real user's is: asking
    // does not tell which names exist. (A node whose controller replica is still catching
    // up after the restart answers a name it has not applied yet with the decoy's salt:
    // the users are the same everywhere once every node has caught up.)
    for user in ["alice", "nobody"] {
        let mut salts = Vec::new();
        eventually(&format!("{user}'s salt is the same on every node"), || {
            salts = addresses.iter().map(|a| server_salt(a, user)).collect();
            let same = salts.iter().all(|s| *s == salts[0]);
            if !same {
                eprintln!("{user}: {salts:?}");
            }
            same
        });
    }
    // A deleted user is refused from then on.
    assert!(admin.delete_user("alice").unwrap());
    eventually("alice is refused once deleted", || {
        matches!(
            client_as(&bootstrap, Some(("alice", "alice's password"))).list_topics(),
            Err(ClientError::Authentication { .. })
        )
    });
    drop(nodes);
}

#[test]
fn a_client_certificate_names_its_principal_on_a_tls_broker() {
    use keel::security::certs::{Authority, Validity};
    use support::certs::{write_ca, write_pair};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let ca = Authority::new("keel test CA").unwrap();
    let valid = Validity::days_from_now(30);
    let ca_file = write_ca(dir, "ca", &ca);
    let (cert, key) = write_pair(
        dir,
        "node",
        &ca.issue_node(1, &["127.0.0.1"], valid).unwrap(),
    );
    let users = users_file(dir);
    let args: Vec<String> = [
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
        "--tls-ca",
        &ca_file.display().to_string(),
        "--client-auth",
        "--superuser",
        "admin",
        "--users-file",
        &users,
    ]
    .map(str::to_string)
    .to_vec();
    let broker =
        Broker::start_with_args(&dir.join("data"), support::free_ports(1), 1, "4MiB", &args);
    let address = broker.address(0);
    let as_certificate = |name: &str| {
        let (cert, key) = write_pair(dir, name, &ca.issue_client(name, valid).unwrap());
        let tls = keel::security::tls::client_config(&ca_file, Some((&cert, &key))).unwrap();
        let security = ClientSecurity {
            tls: Some(tls),
            credentials: None,
        };
        let mut client = ClusterClient::with_security(&address, security);
        client.set_request_timeout(Duration::from_secs(5));
        client
    };
    // The certificate "admin" is the superuser; "bob" is authenticated, allowed nothing.
    let mut admin = as_certificate("admin");
    retry("create topic", || admin.create_topic("orders", 1));
    let mut bob = as_certificate("bob");
    let why = not_authorized(produce(&mut bob, "orders"));
    assert!(why.contains("\"bob\" may not describe topic"), "{why}");
    admin
        .change_acl(&rule("bob", "topic:orders", "produce", true), false)
        .unwrap();
    eventually("bob produces", || produce(&mut bob, "orders").is_ok());
    // TLS without a certificate and without credentials: not authenticated.
    let tls = keel::security::tls::client_config(&ca_file, None).unwrap();
    let security = ClientSecurity {
        tls: Some(tls),
        credentials: None,
    };
    let refused = ClusterClient::with_security(&address, security).list_topics();
    assert_eq!(
        refused.as_ref().err().and_then(ClientError::code),
        Some(ErrorCode::AuthenticationFailed),
        "{refused:?}"
    );
}

/// Hostile input on the authentication path: 300 connections that never authenticate
/// (silent, a request before authenticating, a malformed SCRAM message, an unknown
/// mechanism) never keep a real client out; at most `MAX_AUTHENTICATING_PER_SHARD` of
/// them stay open (a new one evicts the oldest), a malformed exchange is answered and
/// closed, and the broker goes on.
#[test]
fn unauthenticated_connections_are_bounded_and_never_keep_a_client_out() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let root = tempfile::tempdir().unwrap();
    let users = users_file(root.path());
    let args: Vec<String> = [
        "--client-auth",
        "--superuser",
        "admin",
        "--users-file",
        &users,
    ]
    .map(str::to_string)
    .to_vec();
    let broker = Broker::start_with_args(
        &root.path().join("data"),
        support::free_ports(1),
        1,
        "4MiB",
        &args,
    );
    let address = broker.address(0);
    let frame = |message: &str| {
        let request = keel::client::connection::authenticate_request(1, message);
        keel::protocol::frame::encode_frame(&request).unwrap()
    };
    // A malformed client-first message: answered AuthenticationFailed, then closed.
    let mut malformed = TcpStream::connect(&address).unwrap();
    malformed.write_all(&frame("not a SCRAM message")).unwrap();
    malformed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    malformed
        .read_to_end(&mut answer)
        .expect("closed by the broker");
    let response = keel::protocol::codec::decode_response(&answer[4..]).unwrap();
    let error = response.error().unwrap();
    assert_eq!(error.code(), ErrorCode::AuthenticationFailed);
    assert!(
        error.message().unwrap().contains("malformed SCRAM message"),
        "{:?}",
        error.message()
    );
    // 300 more that never authenticate.
    let mut held = Vec::new();
    for n in 0..300 {
        let mut stream = TcpStream::connect(&address).unwrap();
        match n % 3 {
            0 => {}
            1 => stream
                .write_all(
                    &keel::protocol::frame::encode_frame(
                        &keel::protocol::codec::encode_metadata_request(7),
                    )
                    .unwrap(),
                )
                .unwrap(),
            _ => stream.write_all(&frame("n,,n=admin,r=abc")).unwrap(),
        }
        held.push(stream);
    }
    // A real client gets in at once.
    let started = Instant::now();
    let mut admin = client_as(&address, Some(("admin", ADMIN_PASSWORD)));
    retry("list topics as admin", || admin.list_topics());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The broker closed all but the newest few (well before their 10 s were up).
    let mut open = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut bytes = [0u8; 4096];
        let closed = loop {
            match stream.read(&mut bytes) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        open += usize::from(!closed);
    }
    assert!(
        open <= keel::constants::MAX_AUTHENTICATING_PER_SHARD,
        "{open} unauthenticated connections still open"
    );
    assert!(
        broker.log_tail().contains("too many at once"),
        "{}",
        broker.log_tail()
    );
}
