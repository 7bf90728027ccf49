//! A one-route HTTP tracker for tests: records each request line and
//! answers every request with the same bencoded body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Listens on `addr` (port 0: any); returns the address and the request
/// lines seen so far.
pub async fn fake_tracker(addr: &str, body: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (s, body) = (s.clone(), body.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                s.lock().unwrap().push(line);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (addr, seen)
}

/// An announce answer listing `peers` (compact, IPv4), in this order.
pub fn announce_body(peers: &[SocketAddr]) -> Vec<u8> {
    let mut compact = Vec::new();
    for p in peers {
        let SocketAddr::V4(a) = p else {
            panic!("v4 only")
        };
        compact.extend_from_slice(&a.ip().octets());
        compact.extend_from_slice(&a.port().to_be_bytes());
    }
    let mut b = format!("d8:intervali1800e5:peers{}:", compact.len()).into_bytes();
    b.extend_from_slice(&compact);
    b.push(b'e');
    b
}
