#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target under fuzz/corpus/<target>/: valid examples of
each shape the target reads (RTP packets of each payload type, AudioSocket frame streams,
control messages of every type, client sessions of every encapsulation and format, each REST
body with each option). Names are `seed-<what>`, so they are told apart from what the fuzzer
adds; existing files are overwritten, others are left alone.

    python3 fuzz/seeds.py           # from the crate root or from fuzz/
"""
import base64
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def rtp(pt, seq, payload, marker=False, csrcs=(), extension=None, padding=0):
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    out = struct.pack(">BBHII", first, (0x80 if marker else 0) | pt, seq, seq * 160, 0x1234ABCD)
    for c in csrcs:
        out += struct.pack(">I", c)
    if extension is not None:
        words = (len(extension) + 3) // 4
        out += struct.pack(">HH", 0xBEDE, words) + extension.ljust(words * 4, b"\0")
    out += payload
    if padding:
        out += b"\0" * (padding - 1) + bytes([padding])
    return out


def frame(kind, payload):
    return struct.pack(">BH", kind, len(payload)) + payload


def tone(n, step=37):
    """`n` bytes of a changing signal, so audio is not all one value."""
    return bytes((i * step) & 0xFF for i in range(n))


# AudioSocket kinds: audio rates 0x10..0x18.
RATES = [8000, 12000, 16000, 24000, 32000, 44100, 48000, 96000, 192000]
UUID = bytes(range(16))

# --- rtp -------------------------------------------------------------------------------------
# Payload types: 0 PCMU (160 B), 10 Asterisk's L16 (320 B big-endian), 96..99 the service's L16
# at 8, 16, 24, 48 kHz towards a client.
for pt, size in [(0, 160), (10, 320), (96, 320), (97, 640), (98, 960), (99, 1920)]:
    write("rtp", f"pt{pt}", rtp(pt, 1000 + pt, tone(size)))
write("rtp", "marker", rtp(0, 1, tone(160), marker=True))
write("rtp", "csrcs", rtp(0, 2, tone(160), csrcs=(1, 2, 3)))
write("rtp", "extension", rtp(96, 3, tone(320), extension=b"\x10\x01abc"))
write("rtp", "padding", rtp(0, 4, tone(160), padding=4))
write("rtp", "all-options", rtp(97, 65535, tone(640), True, (7,), b"\x22\x00\x00\x01", 8))
write("rtp", "header-only", rtp(0, 5, b""))

# --- audiosocket ------------------------------------------------------------------------------
for kind, rate in enumerate(RATES, start=0x10):
    n = rate // 50 * 2  # 20 ms of 16-bit samples
    write("audiosocket", f"audio-{rate}", frame(0x01, UUID) + frame(kind, tone(n)) * 2)
write(
    "audiosocket",
    "call",
    frame(0x01, UUID)
    + frame(0x10, tone(320))
    + frame(0x03, b"5")
    + frame(0x10, tone(320))
    + frame(0x03, b"#")
    + frame(0x00, b""),
)
write("audiosocket", "error", frame(0x01, UUID) + frame(0xFF, b"\x04"))
write("audiosocket", "partial", frame(0x10, tone(320))[:100])

# --- control -----------------------------------------------------------------------------------
CONTROLS = {
    "clear": {"type": "clear"},
    "mark": {"type": "mark", "name": "utterance-1"},
    "mark-unicode": {"type": "mark", "name": "fin de la phrase \u00e9\u4e2d\U0001f600"},
    "mark-escapes": {"type": "mark", "name": "a\"b\\c\nd\u0001"},
    "dtmf": {"type": "dtmf", "digits": "0123456789*#ABCD"},
    "dtmf-lower": {"type": "dtmf", "digits": "12#abcd"},
    "stop": {"type": "stop"},
    "pause": {"type": "pause"},
    "resume": {"type": "resume"},
    "status": {"type": "status"},
    "extra-field": {"type": "clear", "id": 7, "note": None},
}
for name, value in CONTROLS.items():
    write("control", name, json.dumps(value, ensure_ascii=(name != "mark-unicode")))

# --- client_messages ---------------------------------------------------------------------------
# Header (fuzz_targets/client_messages.rs, stream_config): encapsulation, format index among
# those allowed, leg (odd: AudioSocket leg), flags (1 events, 2 conference, 4 expires), expiry
# (x 20 ms), jitter (20 + 4x ms), queue (jitter + 20x ms), seed. Then records op, u16 len, body.
ENCAPS = ["rtp", "sln", "audiosocket", "twilio"]
ALLOWED = {
    "rtp": ["ulaw", "slin", "slin16", "slin24", "slin48"],
    "sln": ["ulaw", "slin", "slin16", "slin24", "slin48"],
    "audiosocket": ["slin", "slin16", "slin24", "slin48"],
    "twilio": ["ulaw"],
}
RATE = {"ulaw": 8000, "slin": 8000, "slin16": 16000, "slin24": 24000, "slin48": 48000}
PT = {"ulaw": 0, "slin": 96, "slin16": 97, "slin24": 98, "slin48": 99}
(TEXT, BINARY, MEDIA, ADVANCE, LEG, LEG_FILL, LEG_CLOSED, SIGNAL, READ, ACTIONS,
 CONNECTION, REPEAT) = range(12)


def rec(op, body=b""):
    if isinstance(body, str):
        body = body.encode()
    return struct.pack(">BH", op, len(body)) + body


def repeat(count, record):
    """Op REPEAT: `record` (made by `rec`) `count` times."""
    op, length = record[0], struct.unpack(">H", record[1:3])[0]
    return rec(REPEAT, struct.pack(">HB", count, op) + record[3:3 + length])


def advance(ms):
    return rec(ADVANCE, struct.pack(">H", ms))


def media_fill(n, fill=0x55, seq=1):
    """Op MEDIA: 2n bytes of audio in the stream's own encapsulation."""
    return rec(MEDIA, struct.pack(">HBH", n, fill, seq))


def leg_frames(frames, fill=0x11):
    return rec(LEG_FILL, struct.pack(">HB", frames - 1, fill))


def client_audio(encap, fmt, seq, ms=20):
    """One message of `ms` of audio as a client sends it."""
    samples = RATE[fmt] * ms // 1000
    if encap == "twilio":
        payload = base64.b64encode(tone(samples)).decode()
        return rec(TEXT, json.dumps({"event": "media", "sequenceNumber": str(seq + 2),
                                     "media": {"track": "outbound", "chunk": str(seq),
                                               "timestamp": str(seq * 20),
                                               "payload": payload},
                                     "streamSid": "MZ0"}))
    audio = tone(samples if fmt == "ulaw" else 2 * samples)
    if encap == "rtp":
        return rec(BINARY, rtp(PT[fmt], seq, audio))
    if encap == "sln":
        return rec(BINARY, audio)
    kind = 0x10 + RATES.index(RATE[fmt])
    return rec(BINARY, frame(kind, audio))


def control(value):
    return rec(TEXT, json.dumps(value))


def session(encap, fmt, leg, events):
    """A stream's life: audio both ways, every control message, then the client stops."""
    out = b""
    for seq in range(1, 6):
        out += client_audio(encap, fmt, seq)
    if encap == "twilio":
        out += rec(TEXT, json.dumps({"event": "mark", "streamSid": "MZ0",
                                     "mark": {"name": "greeting"}}))
    else:
        out += control({"type": "mark", "name": "greeting"})
        out += control({"type": "dtmf", "digits": "12#"})
        out += control({"type": "status"})
    out += leg_frames(1) + advance(20) + leg_frames(1) + advance(20)
    out += rec(SIGNAL, b"\x00\x03")  # a digit from the call
    out += advance(100) + rec(READ, b"\x00") + rec(ACTIONS)
    if encap == "twilio":
        out += rec(TEXT, json.dumps({"event": "clear", "streamSid": "MZ0"}))
        out += rec(TEXT, json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}))
    else:
        out += control({"type": "pause"}) + client_audio(encap, fmt, 6) + advance(60)
        out += control({"type": "resume"}) + advance(60)
        out += control({"type": "clear"})
        if encap == "audiosocket":
            out += rec(BINARY, frame(0x03, b"7") + frame(0x10 + RATES.index(RATE[fmt]),
                                                        tone(RATE[fmt] // 25)))
    out += advance(200) + rec(READ, b"\x00")
    if encap == "twilio":
        out += rec(TEXT, json.dumps({"event": "stop", "streamSid": "MZ0"}))
        out += rec(CONNECTION, b"\x00")
    else:
        out += control({"type": "stop"})
    out += rec(READ, b"\x00")
    return out


def header(encap, fmt, leg, flags, expiry=0, jitter=5, queue=10, seed=7):
    return bytes([ENCAPS.index(encap), ALLOWED[encap].index(fmt), leg, flags, expiry, jitter,
                  queue, seed])


for encap in ENCAPS:
    for fmt in ALLOWED[encap]:
        legs = [0] if RATE[fmt] > 8000 else [0, 1]
        for leg in legs:
            for events in (0, 1):
                name = f"{encap}-{fmt}-{'asleg' if leg else 'rtpleg'}-{'events' if events else 'quiet'}"
                write("client_messages", name,
                      header(encap, fmt, leg, events) + session(encap, fmt, leg, events))

# Backpressure: a fast client fills the queue (xoff), the clock drains it (xon, drained).
for encap, fmt in [("sln", "slin"), ("rtp", "ulaw"), ("twilio", "ulaw"), ("audiosocket", "slin16")]:
    body = header(encap, fmt, 0, 1, queue=5)
    for seq in range(1, 16):
        body += client_audio(encap, fmt, seq, ms=100)
    body += control({"type": "mark", "name": "end"}) if encap != "twilio" else rec(
        TEXT, json.dumps({"event": "mark", "mark": {"name": "end"}}))
    for _ in range(20):
        body += advance(60) + rec(READ, b"\x00")
    body += media_fill(4000)
    write("client_messages", f"backpressure-{encap}", body)
# The other ways a stream ends.
ends = {
    "token-expires": header("sln", "slin", 0, 5, expiry=10) + advance(500) + rec(READ),
    "leg-closes": header("rtp", "ulaw", 0, 1) + rec(LEG_CLOSED) + advance(400) + rec(READ),
    "hangup": header("sln", "ulaw", 1, 1) + rec(SIGNAL, b"\x02") + rec(READ),
    "too-large": header("sln", "slin", 0, 1) + media_fill(40000) + rec(READ),
    "malformed": header("audiosocket", "slin", 0, 1) + rec(BINARY, b"\x10\x00\x03abc") + rec(READ),
    "bad-json": header("twilio", "ulaw", 0, 0) + rec(TEXT, "{\"event\":") + rec(READ),
    "not-utf8": header("rtp", "slin", 0, 1) + rec(TEXT, b"\xff\xfe") + rec(READ),
    "client-slow": header("sln", "slin", 0, 1) + leg_frames(4) * 12 + rec(READ),
    # The limits: marks pending, events unread, DTMF waiting for the session, the audio ring.
    "marks-overflow": header("sln", "slin", 0, 1)
    + repeat(1100, control({"type": "mark", "name": "m"})) + rec(READ),
    "twilio-marks-overflow": header("twilio", "ulaw", 0, 0)
    + repeat(1100, rec(TEXT, json.dumps({"event": "mark", "mark": {"name": "m"}}))) + rec(READ),
    "events-unread": header("rtp", "ulaw", 0, 0) + repeat(2100, control({"type": "status"}))
    + rec(READ),
    "dtmf-backlog": header("audiosocket", "slin", 0, 1)
    + repeat(20, control({"type": "dtmf", "digits": "1"})) + rec(ACTIONS) + rec(READ),
    "audio-ring": header("sln", "ulaw", 0, 1) + repeat(40, leg_frames(1)) + rec(READ, b"\x05")
    + repeat(40, rec(SIGNAL, b"\x00\x01")) + rec(READ),
}
for name, body in ends.items():
    write("client_messages", name, body)

# --- rest_bodies -------------------------------------------------------------------------------
BODIES = {
    # POST .../external_media
    "em-minimal": {"external_host": "10.0.0.5:4000"},
    "em-rtp": {"external_host": "asr.example:9092", "encapsulation": "rtp", "transport": "udp",
               "connection_type": "client", "format": "ulaw", "direction_listen": "both",
               "direction_speak": "none"},
    "em-rtp-slin": {"external_host": "192.0.2.1:5004", "format": "slin",
                    "direction_listen": "in", "direction_speak": "out"},
    "em-audiosocket": {"external_host": "[::1]:9", "encapsulation": "audiosocket",
                       "transport": "tcp", "format": "slin16", "direction_listen": "out",
                       "direction_speak": "both"},
    "em-audiosocket-slin": {"external_host": "asr:1", "encapsulation": "audiosocket",
                            "format": "slin", "direction_listen": "none",
                            "direction_speak": "in"},
    # POST .../media_stream_connect
    "connect-minimal": {"url": "ws://bot.internal:8765/ws?x=1"},
    "connect-wss": {"url": "wss://[::1]/media#frag", "encapsulation": "twilio", "format": "ulaw",
                    "parameters": {"lang": "en-US", "bot": "a b"}, "events": False},
    "connect-rtp": {"url": "ws://127.0.0.1:9000/rtp", "encapsulation": "rtp", "format": "slin48",
                    "parameters": {"k": "v"}, "events": True},
    "connect-sln": {"url": "ws://h/p", "encapsulation": "sln", "format": "slin16",
                    "parameters": {"lang": "en us", "bot": "a"}},
    "connect-audiosocket": {"url": "wss://bot.example:443/as?q", "encapsulation": "audiosocket",
                            "format": "slin24", "events": True},
    # POST .../actions, and flows
    "action-answer": {"type": "answer"},
    "action-hangup": {"type": "hangup", "option": {}},
    "action-em-start": {"type": "external_media_start",
                        "option": {"external_host": "asr:9092", "encapsulation": "audiosocket"}},
    "action-em-stop": {"type": "external_media_stop"},
    "action-em-stop-id": {"type": "external_media_stop",
                          "option": {"external_media_id": "652af662-eb45-11ee-b1a5-6fde165f9226"}},
    "action-connect": {"type": "media_stream_connect",
                       "option": {"url": "ws://bot:80/", "encapsulation": "sln",
                                  "format": "slin", "parameters": {"a": "1"}, "events": True}},
    # Refusals, one per field.
    "em-bad-host": {"external_host": "2001:db8::1:5060"},
    "em-bad-transport": {"external_host": "h:1", "encapsulation": "audiosocket",
                         "transport": "udp"},
    "connect-bad-format": {"url": "ws://h/", "encapsulation": "audiosocket", "format": "ulaw"},
    "connect-credentials": {"url": "ws://u:p@h/"},
    "action-bad-option": {"type": "external_media_start", "option": {"format": "x"}},
}
for name, value in BODIES.items():
    write("rest_bodies", name, json.dumps(value))


# http_heads: the first byte is the size of each read, the rest a request head or an answer
# to the service's upgrade (key dGhlIHNhbXBsZSBub25jZQ==).
HEADS = {
    "request": b"GET /v1.0/calls/c1/media_stream?encapsulation=sln HTTP/1.1\r\nHost: x\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00",
    "partial": b"GET / HTTP/1.1\r\nHost: x\r\n",
    "upgrade-101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   b"\r\n\x81\x02hi",
    "upgrade-refused": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    "upgrade-wrong-key": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
}
for name, head in HEADS.items():
    for step in (0, 6, 255):
        write("http_heads", f"{name}-{step + 1}", bytes([step]) + head)

# ari_events: every event Asterisk sent in the captured sessions.
for fixture in ("call", "bridge"):
    path = os.path.join(HERE, "..", "tests", "fixtures", f"ari-events-{fixture}.json")
    with open(path) as f:
        for i, event in enumerate(json.load(f)):
            write("ari_events", f"{fixture}-{i:02d}-{event['type']}", json.dumps(event))

print(f"seeds written under {CORPUS}", file=sys.stderr)
