//! One module per client-port command, in the spirit of mini-redis's `cmd/`: each takes the
//! parsed line and the connection's state and appends its reply. `server.rs` reads lines,
//! dispatches, releases and writes; the handshake's answers are `handshake.rs`'s.

pub(crate) mod control;
pub(crate) mod iamat;
pub(crate) mod whatsat;
