//! The operator's side: the supervisor, the admin client, status, tail, top, exports, chaos and verify.
pub mod admin;
pub mod chaos;
pub mod client;
pub mod direct;
pub mod export;
pub mod forget;
pub mod link;
pub mod operator;
pub mod supervisor;
pub mod tail;
pub mod top;
pub mod verify;
