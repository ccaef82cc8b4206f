//! The wire: herd protocol lines, the AT record and its order, the admin endpoint's JSON, the skew clock, a seeded RNG.
pub mod clock;
pub mod protocol;
pub mod record;
pub mod rng;
pub mod status;
