//! The Asterisk-facing leg of a stream: which transport, and the externalMedia channel that
//! goes with it.

use std::net::SocketAddr;

use super::{StreamRequest, Streams};
use crate::ari::rest::ExternalMediaParams;
use crate::config::AsteriskTransport;
use crate::domain::{Encapsulation, Format};
use crate::media::transcode::SampleFormat;
use crate::relay::MediaLeg;
use crate::relay::audiosocket_leg::AudioSocketLeg;
use crate::relay::stream::Leg;
use crate::session::SessionError;
use crate::session::attachment::STASIS_START_TIMEOUT;

impl Streams {
    /// Asks Asterisk for the externalMedia channel `channel` on the transport that fits the
    /// request, and makes the leg that talks to it.
    pub(super) async fn leg(
        &self,
        channel: &str,
        request: &StreamRequest,
    ) -> Result<(MediaLeg, SampleFormat), SessionError> {
        let rtp = match self.transport_for(request.encapsulation, request.format) {
            AsteriskTransport::Audiosocket => None,
            _ => RtpFormat::of(request.format),
        };
        match rtp {
            Some(format) => self.rtp_leg(channel, format).await,
            None => self.audiosocket_leg(channel, request.format).await,
        }
    }

    /// Wideband goes over AudioSocket whatever the setting: Asterisk sends 16 kHz RTP (PT 118)
    /// but drops every packet with a payload type above 34 that it receives, so an RTP leg
    /// would carry wideband one way only.
    fn transport_for(&self, encapsulation: Encapsulation, format: Format) -> AsteriskTransport {
        match (self.media.asterisk_transport, encapsulation, format) {
            _ if format.is_wideband() => AsteriskTransport::Audiosocket,
            (AsteriskTransport::Auto, Encapsulation::Audiosocket, _) => {
                AsteriskTransport::Audiosocket
            }
            (AsteriskTransport::Auto, ..) => AsteriskTransport::Rtp,
            (chosen, ..) => chosen,
        }
    }

    /// An externalMedia channel over RTP, in the client's format (ulaw, or slin which Asterisk
    /// sends big-endian), served by a media worker: Asterisk sends to the worker's socket.
    async fn rtp_leg(
        &self,
        em_id: &str,
        format: RtpFormat,
    ) -> Result<(MediaLeg, SampleFormat), SessionError> {
        let RtpFormat {
            leg_format,
            ari_format,
            payload_type,
        } = format;
        let worker = self.workers.choose();
        let local_port = self.workers.local_addr(worker).port();
        let external_host = SocketAddr::new(self.media.advertise_ip, local_port).to_string();
        let channel = self
            .ari
            .external_media(&ExternalMediaParams {
                channel_id: em_id,
                app: &self.app,
                external_host: &external_host,
                encapsulation: "rtp",
                transport: "udp",
                format: ari_format,
                direction: "both",
                data: None,
            })
            .await?;
        let peer = rtp_peer(&channel)
            .ok_or_else(|| SessionError::NotReady("externalMedia gave no RTP address".into()))?;
        Ok((
            MediaLeg::Shared {
                worker,
                peer,
                payload_type,
            },
            leg_format,
        ))
    }

    /// An externalMedia channel over AudioSocket: Asterisk connects to the hub during the
    /// request, announcing the UUID given as `data`. Always signed linear (little-endian), at
    /// the client's rate: Asterisk labels μ-law as 8 kHz slin on this leg.
    async fn audiosocket_leg(
        &self,
        em_id: &str,
        format: Format,
    ) -> Result<(MediaLeg, SampleFormat), SessionError> {
        let rate_hz = format.sample_rate();
        let ari_format = if format.is_wideband() {
            format.as_str()
        } else {
            "slin"
        };
        let id = uuid::Uuid::new_v4();
        let arrival = self.hub.expect(id);
        let external_host =
            SocketAddr::new(self.media.advertise_ip, self.hub.local_addr().port()).to_string();
        let data = id.to_string();
        let created = self
            .ari
            .external_media(&ExternalMediaParams {
                channel_id: em_id,
                app: &self.app,
                external_host: &external_host,
                encapsulation: "audiosocket",
                transport: "tcp",
                format: ari_format,
                direction: "both",
                data: Some(&data),
            })
            .await;
        if let Err(e) = created {
            self.hub.forget(id);
            return Err(e.into());
        }
        match tokio::time::timeout(STASIS_START_TIMEOUT, arrival).await {
            Ok(Ok(identified)) => Ok((
                MediaLeg::Own(Leg::AudioSocket(AudioSocketLeg::new(identified, rate_hz))),
                SampleFormat::SlinLe,
            )),
            _ => {
                self.hub.forget(id);
                Err(SessionError::NotReady(
                    "Asterisk did not connect to the AudioSocket listener".into(),
                ))
            }
        }
    }
}

/// A format an RTP leg carries both ways: narrowband only (see [`Streams::transport_for`]).
#[derive(Debug, Clone, Copy)]
struct RtpFormat {
    /// The layout of the audio on the leg.
    leg_format: SampleFormat,
    /// Its name to ARI.
    ari_format: &'static str,
    /// What Asterisk sends and expects for it.
    payload_type: u8,
}

impl RtpFormat {
    fn of(format: Format) -> Option<RtpFormat> {
        let (leg_format, ari_format, payload_type) = match format {
            Format::Ulaw => (SampleFormat::Ulaw, "ulaw", 0),
            // Asterisk's slin on RTP is big-endian (L16).
            Format::Slin => (SampleFormat::SlinBe, "slin", 10),
            Format::Slin16 | Format::Slin24 | Format::Slin48 => return None,
        };
        Some(RtpFormat {
            leg_format,
            ari_format,
            payload_type,
        })
    }
}

/// Asterisk's side of an RTP externalMedia channel.
pub(super) fn rtp_peer(channel: &crate::ari::Channel) -> Option<SocketAddr> {
    let vars = channel.channelvars.as_ref()?;
    let ip = vars.get("UNICASTRTP_LOCAL_ADDRESS")?.as_str()?;
    let port = vars.get("UNICASTRTP_LOCAL_PORT")?.as_str()?;
    format!("{ip}:{port}").parse().ok()
}
