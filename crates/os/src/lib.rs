//! The seam to the operating system: private files, pid locks, who owns a port, panic reports, back-off.
pub mod backoff;
pub mod panics;
pub mod pidlock;
pub mod port_owner;
pub mod private;
