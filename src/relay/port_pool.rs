//! UDP sockets for the Asterisk-facing RTP legs, bound within `media.rtp_ports`.
//!
//! The operating system is the source of truth for which ports are free: the pool only
//! remembers where to try next, so a port comes back when its socket is dropped.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::UdpSocket;

#[derive(Debug)]
pub struct PortPool {
    ip: IpAddr,
    range: RangeInclusive<u16>,
    /// Round-robin cursor, so a just-freed port is not reused at once (late packets of the
    /// previous stream would land in the next one).
    cursor: AtomicU32,
}

impl PortPool {
    pub fn new(ip: IpAddr, range: RangeInclusive<u16>) -> PortPool {
        PortPool {
            ip,
            range,
            cursor: AtomicU32::new(0),
        }
    }

    /// Binds the next free port of the range; `AddrInUse` when every port is taken.
    pub async fn bind(&self) -> std::io::Result<UdpSocket> {
        let start = u32::from(*self.range.start());
        let size = u32::from(*self.range.end()) - start + 1;
        for _ in 0..size {
            let offset = self.cursor.fetch_add(1, Ordering::Relaxed) % size;
            let port = u16::try_from(start + offset).unwrap_or(u16::MAX);
            match UdpSocket::bind(SocketAddr::new(self.ip, port)).await {
                Ok(socket) => return Ok(socket),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "every port of media.rtp_ports is in use",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_within_the_range_and_reports_exhaustion() {
        // A range of one port that was free a moment ago.
        let probe = UdpSocket::bind("127.0.0.1:0").await.expect("probe");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let pool = PortPool::new("127.0.0.1".parse().expect("ip"), port..=port);
        let a = pool.bind().await.expect("first");
        assert_eq!(a.local_addr().expect("addr").port(), port);
        assert_eq!(
            pool.bind().await.expect_err("full").kind(),
            std::io::ErrorKind::AddrInUse
        );
        drop(a);
        assert!(pool.bind().await.is_ok(), "a dropped socket frees its port");
    }
}
