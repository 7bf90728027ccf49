//! The mainline DHT (BEP-5): KRPC codec, routing table and the storage
//! side, each sans-IO.

pub mod krpc;
pub(crate) mod lookup;
pub mod node;
pub mod routing;
pub(crate) mod storage;
