#![recursion_limit = "256"]
//! xorrent: a BitTorrent client.
//!
//! # Layout
//! Dependencies point one way:
//! `cli → rpc → daemon → session → torrent → {listener, config} → swarm → magnet → peer → {webseed, tracker, dht, resume} → engine → {transport, extension, storage} → {mse, metainfo, wire} → {bencode, compact, types}` (each may import what is to its right).
//!
//! - [`types`]: info-hash, peer id, bitfield, piece/block geometry.
//! - [`bencode`]: a bounded decoder that keeps each value's raw bytes, and
//!   the one writer (dictionaries that sort their own keys).
//! - `compact`: compact peers (BEP-23, BEP-7) and DHT nodes (BEP-5), the
//!   one encoder and decoder for them.
//! - [`metainfo`]: `.torrent` parsing into a flat, sanitised [`metainfo::Torrent`].
//! - [`wire`]: BEP-3 handshake and message codec, with the BEP-6 fast
//!   extension messages and BEP-10 extended messages.
//! - [`extension`]: BEP-10 extended handshake, BEP-9 `ut_metadata` and
//!   BEP-11 `ut_pex` payloads.
//! - [`magnet`]: everything a magnet link needs: parsing the URI (BEP-9,
//!   BEP-53), assembling its info dictionary from peers' pieces and
//!   checking it against the info-hash (`magnet::metadata`, sans-IO), and
//!   the metadata phase the swarm's connections run before the engine
//!   starts (`magnet::fetch`).
//! - [`dht`]: the mainline DHT (BEP-5): KRPC codec, routing table,
//!   lookups, the UDP node task and its peer store.
//! - [`mse`]: the MSE/PE handshake (sans-IO) and its RC4 streams.
//! - `transport`: dialling and accepting peer connections, plaintext or
//!   encrypted, up to the exchanged BitTorrent handshakes.
//! - `webseed`: BEP-19 web seeds: the URL and byte range of each span of
//!   the torrent, and which HTTP answers are the ones asked for.
//! - [`storage`]: positional reads/writes of the torrent byte stream over files.
//! - [`engine`]: the coordinator (picker, hashing, peer registry, choker,
//!   rate limits) and the resume checker.
//! - `swarm`: one torrent's connection manager (dialling, backoff,
//!   turnover of idle peers).
//! - [`resume`]: the fast-resume record (verified pieces, file stamps).
//! - `peer`: one task per connection that moves bytes, around a sans-IO
//!   core (`peer::state::PeerState`: choke and interest, the rate-adaptive
//!   request pipeline, timers, BEP-6/9/10/11) and the upload side
//!   (validated requests, batched positional reads).
//! - `listener`: incoming connections routed to torrents by info-hash,
//!   with the caps that keep squatters out.
//! - [`tracker`]: HTTP and UDP announce and scrape, the BEP-12 tier loop,
//!   and the embedded tracker server.
//! - `config`: the process-wide settings (plain data).
//! - [`session`]: what the process shares (listener, DHT node, global
//!   caps, task tracker); holds any number of torrents.
//! - [`torrent`]: one torrent's actor and its handle (pause, resume,
//!   remove, selection, rate caps, a [`torrent::Status`] snapshot).
//! - `daemon`: the torrent manager: a session whose torrents, settings
//!   and progress survive restarts (redb), with watch and share folders.
//! - `rpc`: the daemon's HTTP side: the Transmission RPC and the web page.
//! - [`cli`]: flags, subcommands and the progress view.
//!
//! Tasks, channels and invariants are described in `docs/DESIGN.md`.

// `pub` means used by main.rs, tests, benches or fuzz; the rest is pub(crate).
#![warn(unreachable_pub)]
// Piece, offset and length arithmetic converts with `try_from`, not `as`.
#![warn(clippy::cast_possible_truncation)]

pub mod bencode;
pub mod cli;
mod compact;
mod config;
mod daemon;
pub mod dht;
pub mod engine;
pub mod extension;
mod listener;
pub mod magnet;
pub mod metainfo;
pub mod mse;
mod peer;
pub mod resume;
mod rpc;
pub mod session;
pub mod storage;
mod swarm;
pub mod torrent;
pub mod tracker;
mod transport;
pub mod types;
mod webseed;
pub mod wire;
