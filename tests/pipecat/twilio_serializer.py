"""Pipecat's TwilioFrameSerializer against the service's `encapsulation=twilio` stream.

Run by tests/pipecat.rs with the python of scripts/pipecat-venv. It plays the part of Pipecat's
WebSocket transport: reads `connected` and `start` (whose `streamSid` and `callSid` configure the
serializer, as Pipecat's own telephony helper does), deserialises every message it receives and
sends what the serializer makes of the frames it is given. It prints one JSON object on stdout.

Scenarios:
  tone   the call plays 1000 Hz: its share in the deserialised input audio.
  echo   the call runs Echo(): 600 Hz sent as OutputAudioRawFrame comes back; then 5 s of it
         and an InterruptionFrame (Twilio `clear`): how long the echo goes on after the clear.
Both end with an EndFrame, which makes the serializer hang the call up through the service's
Twilio call-update endpoint (`base_url`); the summary says what the serializer logged and
whether the stream then stopped.
"""

import argparse
import asyncio
import json
import math
import sys
import time

import websockets
from loguru import logger
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import EndFrame, InterruptionFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.utils.asyncio.task_manager import TaskManager

# The pipeline's rate: the serializer resamples Twilio's 8 kHz to it and back.
PIPELINE_RATE = 16000
FRAME_MS = 20


def share(samples, freq, rate):
    """Goertzel power of `freq`, normalised by the total energy: ~1 for a pure tone."""
    if not samples:
        return 0.0
    k = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    energy = sum(x * x for x in samples)
    return 0.0 if energy == 0 else 2.0 * power / (len(samples) * energy)


def rms(samples):
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


def pcm(data):
    return [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)]


def tone_pcm(freq, ms, rate, amp=8000):
    n = rate * ms // 1000
    return b"".join(
        int(amp * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


class Link:
    """One stream: the socket, the serializer, and what has been received."""

    def __init__(self, ws, serializer):
        self.ws = ws
        self.serializer = serializer
        self.events = []
        self.media = 0
        self.stopped_at = None

    async def receive(self, seconds):
        """Deserialises messages for `seconds`: [(arrival, samples)] of the input audio frames."""
        frames = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self.ws.recv(), left)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            event = json.loads(message).get("event")
            if event == "media":
                self.media += 1
            else:
                self.events.append(event)
                if event == "stop" and self.stopped_at is None:
                    self.stopped_at = time.monotonic()
            frame = await self.serializer.deserialize(message)
            if frame is not None and hasattr(frame, "audio"):
                frames.append((time.monotonic(), pcm(frame.audio)))
        return frames

    async def send(self, frame):
        message = await self.serializer.serialize(frame)
        if message is not None:
            await self.ws.send(message)
        return message

    async def send_tone(self, freq, ms):
        """`ms` of `freq` as 20 ms OutputAudioRawFrames, as a TTS service would push them."""
        audio = tone_pcm(freq, ms, PIPELINE_RATE)
        step = PIPELINE_RATE * FRAME_MS // 1000 * 2
        for i in range(0, len(audio), step):
            await self.send(
                OutputAudioRawFrame(audio=audio[i : i + step], sample_rate=PIPELINE_RATE, num_channels=1)
            )


def tone_frames(frames, freq):
    """The frames that carry `freq`, as (arrival, milliseconds of audio). The deserialised
    frames are not 20 ms each: the serializer's streaming resampler hands its output over in
    larger pieces, so durations come from the sample counts."""
    return [
        (t, len(s) * 1000 / PIPELINE_RATE)
        for t, s in frames
        if rms(s) > 300 and share(s, freq, PIPELINE_RATE) > 0.5
    ]


def ms(tone):
    return round(sum(d for _, d in tone))


async def run(args):
    hangup_log = []
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    logger.add(lambda m: hangup_log.append(m.record["message"]), level="DEBUG", filter="pipecat.serializers.twilio")

    summary = {"scenario": args.scenario}
    async with websockets.connect(args.ws) as ws:
        connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
        start = json.loads(await asyncio.wait_for(ws.recv(), 5))
        summary["connected"] = connected.get("event")
        summary["stream_sid"] = start["start"]["streamSid"]
        summary["call_sid"] = start["start"]["callSid"]
        serializer = TwilioFrameSerializer(
            stream_sid=start["start"]["streamSid"],
            call_sid=start["start"]["callSid"],
            account_sid=args.account_sid,
            auth_token=args.auth_token,
            base_url=args.base_url,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=True),
        )
        await serializer.setup(
            FrameProcessorSetup(
                clock=SystemClock(),
                task_manager=TaskManager(),
                pipeline_worker=None,
                audio_in_sample_rate=PIPELINE_RATE,
            )
        )
        link = Link(ws, serializer)

        if args.scenario == "tone":
            # Playtones starts about half a second late.
            await link.receive(0.7)
            counted = link.media
            frames = await link.receive(1.0)
            samples = [x for _, s in frames for x in s]
            summary["media_messages"] = link.media - counted
            summary["input_frames"] = len(frames)
            summary["input_frame_samples"] = sorted({len(s) for _, s in frames})
            summary["input_samples"] = len(samples)
            summary["input_rate"] = PIPELINE_RATE
            summary["share_1000"] = share(samples, 1000.0, PIPELINE_RATE)
            summary["share_600"] = share(samples, 600.0, PIPELINE_RATE)
        else:
            await link.receive(0.3)
            # 1.5 s of 600 Hz, heard back through Echo().
            sent = time.monotonic()
            await link.send_tone(600, 1500)
            frames = await link.receive(2.5)
            heard = tone_frames(frames, 600)
            samples = [x for _, s in frames for x in s]
            summary["share_600"] = share(samples, 600.0, PIPELINE_RATE)
            summary["echo_ms"] = ms(heard)
            summary["echo_first_ms"] = round((heard[0][0] - sent) * 1000) if heard else None

            # 5 s of it, then an interruption once the echo is heard: the rest is dropped.
            await link.send_tone(600, 5000)
            sent = time.monotonic()
            frames = await link.receive(1.0)
            before = tone_frames(frames, 600)
            clear = await link.send(InterruptionFrame())
            cleared = time.monotonic()
            summary["clear_message"] = json.loads(clear) if clear else None
            frames = await link.receive(3.0)
            after = tone_frames(frames, 600)
            summary["interrupt_heard_before_ms"] = ms(before)
            summary["interrupt_after_send_ms"] = round((cleared - sent) * 1000)
            summary["interrupt_echo_after_clear_ms"] = ms(after)
            summary["interrupt_last_echo_ms"] = round((after[-1][0] - cleared) * 1000) if after else 0

        # The pipeline ends: the serializer hangs the call up through base_url.
        ended = time.monotonic()
        await link.send(EndFrame())
        summary["hangup_request_ms"] = round((time.monotonic() - ended) * 1000)
        summary["hangup_log"] = hangup_log
        summary["hangup_ok"] = any(m.startswith("Successfully terminated") for m in hangup_log)
        await link.receive(3.0)
        summary["events"] = link.events
        summary["media_messages_total"] = link.media
        summary["stopped"] = link.stopped_at is not None
        summary["stop_after_hangup_ms"] = round((link.stopped_at - ended) * 1000) if link.stopped_at else None
        await ws.wait_closed()
        summary["close_code"] = ws.close_code
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ws", required=True, help="the stream's URL, with encapsulation=twilio and a token")
    parser.add_argument("--base-url", required=True, help="the service's HTTP root, for the hang-up")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--scenario", choices=["tone", "echo"], required=True)
    args = parser.parse_args()
    summary = asyncio.run(asyncio.wait_for(run(args), 60))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
