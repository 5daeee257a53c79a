"""A Pipecat voice bot that echoes what it hears, for the service to connect out to.

Run by tests/pipecat.rs with the python of scripts/pipecat-venv. It is a real Pipecat bot, as
Pipecat's Twilio examples build one: a FastAPI WebSocket route hands the socket to Pipecat's
FastAPIWebsocketTransport with a TwilioFrameSerializer, and the pipeline between the transport's
input and output is Echo(): every audio frame heard is played back. The service speaks the Twilio
Media Streams protocol to it, as Twilio does for `<Connect><Stream url="ws://.../bot">`.

After --seconds of stream the bot ends its pipeline with an EndFrame, as a bot does when its
conversation is over: the serializer (auto_hang_up) then hangs the call up through Twilio's
call-update endpoint at --base-url, that is through the service.

stdout carries one JSON object a line, flushed, for the test; logs go to stderr:
  {"event":"listening","port":P}                            uvicorn accepts connections
  {"event":"start","streamSid":S,"callSid":C,"customParameters":{...}}   a stream starts
  {"event":"echoed","frames":50,"streamSid":S}              50 audio frames echoed, once a stream
  {"event":"ending","streamSid":S}                          the EndFrame is pushed (--seconds)
  {"event":"closed","streamSid":S}                          the stream's WebSocket is done
SIGTERM (or SIGINT) stops the server: uvicorn closes open streams (code 1012, no hang-up) and the
bot exits with status 0.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

# Twilio's rate. The pipeline runs at it too, as Pipecat's Twilio examples set it, so nothing
# is resampled: the serializer only converts μ-law to PCM and back.
TWILIO_RATE = 8000
# Echoed frames after which the bot says it echoes (one input frame per `media` message).
ECHOED_REPORT = 50
# How long the bot waits for `connected` and `start` once the socket is accepted.
START_TIMEOUT_SECS = 10


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Echo(FrameProcessor):
    """Plays back what it hears: each InputAudioRawFrame becomes an OutputAudioRawFrame with the
    same audio, sample rate and channels. Every other frame goes on as it came."""

    def __init__(self, stream_sid, **kwargs):
        super().__init__(**kwargs)
        self._stream_sid = stream_sid
        self._echoed = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
                ),
                direction,
            )
            self._echoed += 1
            if self._echoed == ECHOED_REPORT:
                emit("echoed", frames=self._echoed, streamSid=self._stream_sid)
        else:
            await self.push_frame(frame, direction)


async def read_start(websocket: WebSocket):
    """Reads Twilio's `connected` and `start` messages, as Pipecat's Twilio examples do before
    handing the socket to the transport; returns the `start` message."""
    while True:
        message = json.loads(await websocket.receive_text())
        event = message.get("event")
        if event == "start":
            return message
        if event != "connected":
            raise ValueError(f"expected connected or start, got {event!r}")


def create_app(args):
    app = FastAPI()

    @app.websocket("/bot")
    async def bot(websocket: WebSocket):
        await websocket.accept()
        stream_sid = None
        try:
            try:
                start = await asyncio.wait_for(read_start(websocket), START_TIMEOUT_SECS)
                stream_sid = start["start"]["streamSid"]
                call_sid = start["start"]["callSid"]
            except (WebSocketDisconnect, asyncio.TimeoutError, ValueError, KeyError) as e:
                logger.warning(f"the stream did not start: {e!r}")
                return
            emit(
                "start",
                streamSid=stream_sid,
                callSid=call_sid,
                customParameters=start["start"].get("customParameters", {}),
            )
            await run_bot(websocket, args, stream_sid, call_sid)
        finally:
            emit("closed", streamSid=stream_sid)

    return app


async def run_bot(websocket: WebSocket, args, stream_sid, call_sid):
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        base_url=args.base_url,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=True),
    )
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    pipeline = Pipeline([transport.input(), Echo(stream_sid), transport.output()])
    # No VAD, STT, LLM or TTS, hence no RTVI client to talk to either.
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=TWILIO_RATE, audio_out_sample_rate=TWILIO_RATE),
        enable_rtvi=False,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, websocket):
        # The service closed the stream (the call ended), or uvicorn did (the bot is shutting
        # down): nothing left to echo to. The CancelFrame this sends down the pipeline makes no
        # hang-up: the transport hands the serializer nothing once the socket is closed.
        logger.info(f"stream {stream_sid}: the WebSocket closed")
        await worker.cancel(reason="client disconnected")

    async def end_after(seconds):
        await asyncio.sleep(seconds)
        emit("ending", streamSid=stream_sid)
        # The output transport plays what it has queued, then the serializer turns the EndFrame
        # into the hang-up POST before the transport closes the WebSocket.
        await worker.queue_frame(EndFrame())

    # One runner a stream, as Pipecat's development runner has it. Signals are uvicorn's
    # business here (see main), so the runner installs no handler of its own.
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    timer = asyncio.create_task(end_after(args.seconds)) if args.seconds is not None else None
    try:
        await runner.run()
    finally:
        if timer:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer


class Server(uvicorn.Server):
    """uvicorn's server, without its signal handling: uvicorn re-raises a caught SIGTERM once it
    has shut down, which would end the process by the signal rather than with status 0."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve(args):
    config = uvicorn.Config(
        create_app(args),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        # Open streams are told to close on shutdown; a pipeline that does not finish in time
        # is not waited for.
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))

    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            break
        await asyncio.sleep(0.01)
    if server.started:
        emit("listening", port=args.port)
    await serving
    return 0 if server.started else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--base-url", required=True, help="the service's HTTP root, for the hang-up")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="end each stream's pipeline after this many seconds (default: never)",
    )
    args = parser.parse_args()

    # stdout is the test's: loguru (Pipecat) and logging (uvicorn) both write to stderr.
    logger.remove()
    logger.add(sys.stderr, level="DEBUG")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
