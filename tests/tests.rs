//! The integration tests, one binary (so `common/` compiles once and CI
//! links once), a module per area. Tests that need real clients or a
//! private network namespace skip with a message unless
//! `XORRENT_REQUIRE_INTEROP=1`; see `common::interop_ready`.

mod common;

mod cli;
mod conformance;
mod create;
mod daemon;
mod dht;
mod dht_interop;
mod encryption;
mod extensions;
mod fast_resume;
mod hostile;
mod interop;
mod magnet_interop;
mod newcomer;
mod seed;
mod select;
mod session;
mod squat;
mod tracker;
mod tracker_interop;
mod tracker_server;
mod upload;
mod webseed;
