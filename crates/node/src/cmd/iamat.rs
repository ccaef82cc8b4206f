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
