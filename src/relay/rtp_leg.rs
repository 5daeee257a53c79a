//! The Asterisk-facing RTP leg of one stream: one UDP socket, owned by the stream's task.
//!
//! Asterisk sends to the address it was given as `external_host` and, with strictrtp, accepts
//! at first only packets from exactly that address: so this socket both receives and sends.
//! Packets from any other address are ignored and counted.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::codec::rtp::{self, RtpSender};

/// Largest datagram read: a 20 ms frame is 172 or 332 bytes, anything much larger is not ours.
const MAX_DATAGRAM: usize = 2048;

#[derive(Debug)]
pub struct RtpLeg {
    socket: UdpSocket,
    /// Asterisk's side: `UNICASTRTP_LOCAL_ADDRESS`:`UNICASTRTP_LOCAL_PORT`.
    peer: SocketAddr,
    sender: RtpSender,
    /// Reused for every datagram in either direction.
    recv_buf: Box<[u8; MAX_DATAGRAM]>,
    send_buf: Box<[u8; MAX_DATAGRAM]>,
    /// Datagrams dropped: from another address, or not RTP.
    pub foreign: u64,
    pub malformed: u64,
}

impl RtpLeg {
    /// `payload_type`: what Asterisk expects for the format it was asked for (0 for ulaw,
    /// 10 for slin).
    pub fn new(socket: UdpSocket, peer: SocketAddr, payload_type: u8) -> RtpLeg {
        let ssrc = uuid::Uuid::new_v4().as_u128() as u32;
        let seq = (uuid::Uuid::new_v4().as_u128() >> 64) as u16;
        RtpLeg {
            socket,
            peer,
            sender: RtpSender::new(ssrc, seq, u32::from(seq) << 8, payload_type),
            recv_buf: Box::new([0; MAX_DATAGRAM]),
            send_buf: Box::new([0; MAX_DATAGRAM]),
            foreign: 0,
            malformed: 0,
        }
    }

    /// Waits for the next RTP payload from Asterisk. Cancel-safe: nothing is lost if the future
    /// is dropped before it completes.
    pub async fn recv(&mut self) -> std::io::Result<&[u8]> {
        loop {
            let (len, from) = self.socket.recv_from(&mut self.recv_buf[..]).await?;
            if from != self.peer {
                self.foreign += 1;
                continue;
            }
            match rtp::parse(&self.recv_buf[..len]) {
                // Re-borrow by range: the parsed payload lies inside recv_buf (padding may
                // follow it).
                Ok(packet) => {
                    let start = packet.payload.as_ptr() as usize - self.recv_buf.as_ptr() as usize;
                    let end = start + packet.payload.len();
                    return Ok(&self.recv_buf[start..end]);
                }
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Sends one frame to Asterisk.
    pub async fn send(&mut self, payload: &[u8], samples: u32) -> std::io::Result<()> {
        let header = self.sender.next_header(samples);
        let Some(len) = rtp::write(&header, payload, &mut self.send_buf[..]) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frame larger than a datagram",
            ));
        };
        self.socket
            .send_to(&self.send_buf[..len], self.peer)
            .await?;
        Ok(())
    }
}
