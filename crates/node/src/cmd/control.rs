//! The operator's tool on the client port: `HERD OPERATOR <nonce>` gets a challenge, and the
//! one `HERD CONTROL <proof> <command>` that follows must prove the herd secret over both
//! nonces (`operator.rs`) before it is carried out.

use herd_config::config::HerdConfig;
use herd_wire::protocol::{self, ControlCommand};

use crate::server::{Answer, Connection, Role};
use crate::{faults, operator, Node};

/// `HERD OPERATOR <nonce>`: the challenge, on a connection that is a client's so far;
/// `None` otherwise.
pub(crate) fn challenge(
    node: &Node,
    conn: &mut Connection,
    nonce: &str,
    out: &mut Vec<u8>,
) -> Option<Answer> {
    if !matches!(conn.role, Role::Client) {
        return None;
    }
    let (challenge, our_nonce) = operator::challenge(node, nonce);
    conn.role = Role::Operator {
        tool_nonce: nonce.to_owned(),
        our_nonce,
    };
    out.extend_from_slice(challenge.as_bytes());
    Some(Answer::Normal)
}

/// `HERD CONTROL <proof> <command>`: carried out when it proves the secret over the
/// challenge this connection was given; `None` to refuse it. One command per challenge:
/// whatever happens, the nonces are spent.
pub(crate) fn command(
    node: &Node,
    config: &HerdConfig,
    conn: &mut Connection,
    proof: Option<&str>,
    command: ControlCommand<'_>,
    out: &mut Vec<u8>,
) -> Option<Answer> {
    let Role::Operator {
        tool_nonce,
        our_nonce,
    } = std::mem::replace(&mut conn.role, Role::Client)
    else {
        return None;
    };
    if let Err(why) = operator::authorise(node, proof, &command, &tool_nonce, &our_nonce) {
        tracing::warn!(
            "{}: refused the control command {}: {why}",
            conn.remote,
            command.text()
        );
        return None;
    }
    match command {
        ControlCommand::Digest => {
            out.extend_from_slice(operator::digest_answer(node).as_bytes());
            Some(Answer::Quiet)
        }
        ControlCommand::Records(buckets) => {
            conn.role = Role::Records(protocol::parse_want(buckets)?);
            Some(Answer::Quiet)
        }
        ControlCommand::Forget { client, reason } => {
            if client.len() > config.limits.max_client_id_bytes {
                return None;
            }
            out.extend_from_slice(operator::forget(node, client, reason).as_bytes());
            Some(Answer::Normal)
        }
        _ => match faults::apply(node, &command) {
            Ok(faults) => {
                out.extend_from_slice(protocol::format_done(&faults).as_bytes());
                Some(Answer::Normal)
            }
            Err(why) => {
                tracing::warn!("{}: cannot {}: {why}", conn.remote, command.text());
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_for_tests;

    const HERD: &str = "servers:\n  Alford: { port: 12000 }\n";

    #[test]
    fn a_challenge_is_given_once_per_client_connection_and_spent_by_any_command() {
        let node = node_for_tests(HERD, "Alford");
        let config = node.config();
        let mut conn = Connection::for_tests();
        let mut out = Vec::new();
        // A command with no challenge first is refused.
        let refused = command(
            &node,
            &config,
            &mut conn,
            None,
            ControlCommand::Digest,
            &mut out,
        );
        assert_eq!(refused, None);
        let nonce = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            challenge(&node, &mut conn, nonce, &mut out),
            Some(Answer::Normal)
        );
        assert!(String::from_utf8_lossy(&out).starts_with("HERD CHALLENGE Alford "));
        assert!(matches!(conn.role, Role::Operator { .. }));
        // Not a second challenge on the same connection.
        assert_eq!(challenge(&node, &mut conn, nonce, &mut out), None);
        // A command with a wrong proof is refused, and the challenge is spent.
        let wrong = Some("00".repeat(32));
        let answered = command(
            &node,
            &config,
            &mut conn,
            wrong.as_deref(),
            ControlCommand::Digest,
            &mut out,
        );
        assert_eq!(answered, None);
        assert!(matches!(conn.role, Role::Client));
    }
}
