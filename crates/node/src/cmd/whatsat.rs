//! `WHATSAT <client> <radius km> <bound>`: the places near a known client, from the places
//! provider, after the client's stored AT line.

use std::sync::atomic::{AtomicU64, Ordering};

use herd_places::NearbyQuery;
use herd_wire::protocol::{push_whatsat_reply, Whatsat};

use crate::Node;

/// Appends the reply to `out`; `None` for a client this server does not know.
pub(crate) async fn answer(node: &Node, query: &Whatsat<'_>, out: &mut Vec<u8>) -> Option<()> {
    let record = node.table.location_of(query.client)?;
    let location = record.location();
    let _waiting = Waiting::on(&node.places_waiting);
    let places = node
        .places
        .nearby(NearbyQuery {
            lat: location.lat,
            lng: location.lng,
            radius_km: query.radius_km,
            bound: query.bound,
        })
        .await;
    push_whatsat_reply(out, record.line(), places.as_str());
    Some(())
}

/// Counts a query as waiting while it lives (also when its connection drops mid-wait).
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn on(counter: &'a AtomicU64) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
