//! A shard that has not yet heard the controller's users (a node starting) tells a client
//! naming a user it does not know to try again, with a retriable code, instead of failing
//! its credentials; once it has heard them, an unknown name goes down the decoy path and
//! a known one is served, as before.

use crate::client::connection::{authenticate_answer, authenticate_request};
use crate::client::ClientError;
use crate::protocol::codec::decode_response;
use crate::protocol::wire::ErrorCode;
use crate::security::scram::{ClientExchange, StoredCredential};
use crate::shard::client_auth::{Admission, ConnectionAuth};
use crate::shard::tests_support::{one_shard_groups, state_with_user};

fn client_first(user: &str) -> Vec<u8> {
    let (_, message) = ClientExchange::start(user, "fyko+d2lbbFgONRv9qkxdawL");
    authenticate_request(1, &message)
}

/// The answer's error code, and whether the connection is closed after it.
fn answer_of(admission: Admission) -> (ErrorCode, bool, Vec<u8>) {
    let (frame, closed) = match admission {
        Admission::Answer(frame) => (frame, false),
        Admission::Close(frame, _) | Admission::Later(frame) => (frame, true),
        Admission::Serve(_) => panic!("an authentication step is answered, not served"),
    };
    let message = frame.message().to_vec();
    let response = decode_response(&message).expect("a valid answer");
    let code = response.error().map_or(ErrorCode::None, |e| e.code());
    (code, closed, message)
}

#[test]
fn a_name_unknown_before_the_controller_is_heard_is_retried_not_refused() {
    crate::runtime::run_on_executor("client-auth", 512 * 1024, || async {
        let dir = tempfile::tempdir().unwrap();
        let groups = one_shard_groups(dir.path()).await;
        assert!(!groups.heard_controller());
        let (code, closed, message) =
            answer_of(ConnectionAuth::new(true, None).admit(&groups, &client_first("alice")));
        assert_eq!(
            (code, closed),
            (ErrorCode::RequestTimedOut, true),
            "before the controller's users are heard an unknown name is told to try again"
        );
        let error = authenticate_answer("node-1", &message).unwrap_err();
        assert!(
            error.is_retriable() && !matches!(error, ClientError::Authentication { .. }),
            "the client must retry it, not give up: {error}"
        );

        let credential = StoredCredential::from_password("secret", &[9; 16], 4096);
        let state = state_with_user("alice", credential);
        groups.controller_topics(&state.topics, 1);
        assert!(groups.heard_controller());
        let (code, closed, _) =
            answer_of(ConnectionAuth::new(true, None).admit(&groups, &client_first("alice")));
        assert_eq!(
            (code, closed),
            (ErrorCode::None, false),
            "a known user goes on"
        );
        // An unknown name after the users are heard: the decoy's server-first, as for a
        // real user (the exchange fails at the proof, like a wrong password).
        let (code, closed, _) =
            answer_of(ConnectionAuth::new(true, None).admit(&groups, &client_first("mallory")));
        assert_eq!((code, closed), (ErrorCode::None, false));
        // The client maps a refusal of its credentials to a final authentication error.
        let refused = crate::shard::requests::error_response(
            2,
            &crate::shard::requests::WireError::new(ErrorCode::AuthenticationFailed, "no"),
        );
        let error = authenticate_answer("node-1", refused.message()).unwrap_err();
        assert!(matches!(error, ClientError::Authentication { .. }) && !error.is_retriable());
    })
    .unwrap();
}
