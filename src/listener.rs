//! The peer listener: accepts TCP connections, reads the handshake, and
//! hands the connection to the torrent whose info-hash it names. Caps the
//! connections being handshaken at once and each torrent's peer count.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::types::InfoHash;
use crate::wire::Handshake;

/// Connections allowed to be mid-handshake at once.
pub const MAX_HALF_OPEN: usize = 32;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Torrents = HashMap<InfoHash, (Arc<Engine>, CancellationToken)>;

/// Torrents reachable through the listener.
#[derive(Default, Clone)]
pub struct Registry {
    torrents: Arc<Mutex<Torrents>>,
}

impl Registry {
    pub fn add(&self, engine: Arc<Engine>, cancel: CancellationToken) {
        self.lock().insert(engine.info_hash, (engine, cancel));
    }

    pub fn remove(&self, ih: &InfoHash) {
        self.lock().remove(ih);
    }

    fn get(&self, ih: &InfoHash) -> Option<(Arc<Engine>, CancellationToken)> {
        self.lock().get(ih).cloned()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<InfoHash, (Arc<Engine>, CancellationToken)>> {
        self.torrents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts until `cancel` fires.
pub async fn run(listener: TcpListener, registry: Registry, cancel: CancellationToken) {
    let half_open = Arc::new(Semaphore::new(MAX_HALF_OPEN));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => {
                let Ok((mut stream, addr)) = r else { continue };
                // Over the cap: drop the connection rather than queue it.
                let Ok(permit) = half_open.clone().try_acquire_owned() else { continue };
                let registry = registry.clone();
                let cancel = cancel.clone();
                tasks.spawn(async move {
                    let mut buf = BytesMut::with_capacity(16 * 1024);
                    let read = async {
                        loop {
                            match Handshake::decode(&mut buf) {
                                Ok(Some(h)) => return Some(h),
                                Ok(None) => {}
                                Err(_) => return None,
                            }
                            match stream.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return None,
                                Ok(_) => {}
                            }
                        }
                    };
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, read).await.ok().flatten();
                    drop(permit);
                    let Some(hs) = hs else { return };
                    let Some((engine, torrent_cancel)) = registry.get(&hs.info_hash) else {
                        tracing::debug!(%addr, "incoming peer for an unknown torrent");
                        return;
                    };
                    if engine.stats.connected.load(Ordering::Relaxed) >= engine.config.max_peers
                        || engine.is_banned(addr.ip())
                    {
                        return;
                    }
                    let token = tokio::select! {
                        _ = cancel.cancelled() => return,
                        t = async { torrent_cancel.child_token() } => t,
                    };
                    let outcome = crate::peer::run(engine, stream, addr, token, Some((hs, buf))).await;
                    tracing::debug!(%addr, result = ?outcome.result, "incoming peer ended");
                });
            }
        }
    }
    tasks.shutdown().await;
}
