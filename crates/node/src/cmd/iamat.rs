//! `IAMAT <client> <location> <time>`: the client's new location, answered with the AT line
//! this server makes of it, and flooded to the neighbours before the reply is released.

use herd_config::config::HerdConfig;
use herd_wire::protocol::Iamat;
use herd_wire::record::AtRecord;

use crate::peer_input;
use crate::server::{Answer, Connection};
use crate::table::Refused;
use crate::Node;

/// Appends the AT reply to `out` and notes in `conn` what it waits for; `None` when the line
/// is refused (a time too far ahead, or a new client and a full table) and nothing was
/// appended.
pub(crate) fn answer(
    node: &Node,
    config: &HerdConfig,
    conn: &mut Connection,
    iamat: &Iamat<'_>,
    received: i128,
    out: &mut Vec<u8>,
) -> Option<Answer> {
    // One forged future time would pin the client's location forever.
    if peer_input::too_far_ahead(iamat.time, received, config) {
        return None;
    }
    let record = AtRecord::from_iamat(&node.name, received, iamat);
    let line_text = record.line().len();
    out.extend_from_slice(record.line().as_bytes());
    out.push(b'\n');
    let accepted = node.accept(record, iamat, conn.handoff());
    if accepted == Err(Refused::Full) {
        // A new client and a full table (`clients.max`): refused, never an existing client
        // evicted.
        out.truncate(out.len() - line_text - 1);
        return None;
    }
    if node.strict(config) {
        conn.wait_durable(node.durable_point(accepted));
        return Some(Answer::Strict);
    }
    Some(Answer::Normal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_for_tests;
    use herd_wire::protocol::{parse_line, Command};

    const HERD: &str = "servers:\n  Alford: { port: 12000 }\nclients: { max: 1 }\n";

    fn iamat(line: &str) -> Iamat<'_> {
        match parse_line(line.as_bytes()) {
            Some(Command::Iamat(iamat)) => iamat,
            other => panic!("not an IAMAT: {other:?}"),
        }
    }

    #[test]
    fn an_iamat_is_answered_with_its_at_line_and_stored() {
        let node = node_for_tests(HERD, "Alford");
        let config = node.config();
        let mut conn = Connection::for_tests();
        let mut out = b"earlier reply\n".to_vec();
        let received = 1_700_000_000_500_000_000;
        let line = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1700000000.25";
        let answer = answer(&node, &config, &mut conn, &iamat(line), received, &mut out);
        assert_eq!(answer, Some(Answer::Normal));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "earlier reply\n\
             AT Alford +0.250000000 kiwi.cs.ucla.edu +34.068930-118.445127 1700000000.25\n"
        );
        let stored = node.table.location_of("kiwi.cs.ucla.edu").expect("stored");
        assert!(stored
            .line()
            .starts_with("AT Alford +0.250000000 kiwi.cs.ucla.edu "));
    }

    #[test]
    fn a_time_too_far_ahead_or_a_new_client_in_a_full_table_is_refused_with_nothing_written() {
        let node = node_for_tests(HERD, "Alford");
        let config = node.config();
        let mut conn = Connection::for_tests();
        let now = 1_700_000_000_000_000_000;
        let mut out = Vec::new();
        // Two days ahead of the server's clock (limits.max_future_s is one day).
        let ahead = iamat("IAMAT far +1+1 1700172800");
        assert_eq!(
            answer(&node, &config, &mut conn, &ahead, now, &mut out),
            None
        );
        assert!(out.is_empty() && node.table.location_of("far").is_none());
        // clients.max is 1: the first client takes it, a second is refused whole...
        let first = iamat("IAMAT one +1+1 1700000000");
        assert!(answer(&node, &config, &mut conn, &first, now, &mut out).is_some());
        let before = out.len();
        let second = iamat("IAMAT two +1+1 1700000000");
        assert_eq!(
            answer(&node, &config, &mut conn, &second, now, &mut out),
            None
        );
        assert_eq!(out.len(), before, "the refused reply was taken back");
        // ...and the client already held is still updated.
        let again = iamat("IAMAT one +2+2 1700000001");
        assert!(answer(&node, &config, &mut conn, &again, now, &mut out).is_some());
    }
}
