"""What a request carries besides text: images, audio, files. It decides the hold.

Text is bounded by its bytes (no tokenizer gives more than one token per byte of UTF-8 text),
but an image, an audio clip or a PDF is billed on its content: a 100-byte image URL can cost a
thousand prompt tokens. So a request with any such part holds the model's whole context
window for its prompt (nothing tighter is known in general), plus its per-image and
per-audio-second prices where the model has them. Images are counted from the request; audio
is measured from its data (WAV and MP3, the formats the chat API takes) when the model charges
by the second.
"""

from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

# Chat content parts and Anthropic blocks billed as text (bounded by their bytes).
TEXT_PARTS = frozenset({"text", "refusal", "tool_use", "thinking", "redacted_thinking"})


@dataclass(slots=True)
class Media:
    images: int = 0
    audio_ms: int = 0
    # Any part not billed as text (an image, audio, a file or document, an unknown kind).
    other: bool = False


NONE = Media()


def inspect(body: dict[str, Any], api: str, *, measure_audio: bool) -> Media:
    """The media of a chat or messages request (embeddings take text only)."""
    if api not in ("chat", "messages"):
        return NONE
    messages = body.get("messages")
    if not isinstance(messages, list):
        return NONE
    media: Media | None = None
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            media = _parts(content, media, measure_audio)
    system = body.get("system")
    if isinstance(system, list):
        media = _parts(system, media, measure_audio)
    return media or NONE


def _parts(parts: list[Any], media: Media | None, measure_audio: bool) -> Media | None:
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in TEXT_PARTS:
            continue
        if kind == "tool_result":  # Anthropic: its content may hold images
            inner = part.get("content")
            if isinstance(inner, list):
                media = _parts(inner, media, measure_audio)
            continue
        if media is None:
            media = Media()
        media.other = True
        if kind in ("image_url", "image"):
            media.images += 1
        elif kind == "input_audio" and measure_audio:
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise bad_request("'input_audio' must be an object.", param="messages")
            media.audio_ms += audio_ms(audio.get("data"), audio.get("format"))
    return media


# ---- audio duration ------------------------------------------------------------------------------


def audio_ms(data: Any, fmt: Any) -> int:
    """Milliseconds of base64 WAV or MP3 audio, rounded up; a clear 400 for anything else."""
    if not isinstance(data, str) or fmt not in ("wav", "mp3"):
        raise bad_request(
            "'input_audio' needs base64 'data' and a 'format' of 'wav' or 'mp3'.",
            param="messages",
        )
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise bad_request("'input_audio.data' is not valid base64.", param="messages") from None
    seconds = _wav_seconds(raw) if fmt == "wav" else _mp3_seconds(raw)
    if seconds is None:
        raise bad_request(f"'input_audio.data' is not readable {fmt} audio.", param="messages")
    return math.ceil(seconds * 1000)


def _wav_seconds(raw: bytes) -> float | None:
    """From the RIFF header: the data chunk's size over the byte rate of the fmt chunk."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    byte_rate = 0
    at = 12
    while at + 8 <= len(raw):
        name = raw[at : at + 4]
        size: int = struct.unpack_from("<I", raw, at + 4)[0]
        if name == b"fmt " and size >= 16 and at + 24 <= len(raw):
            byte_rate = int(struct.unpack_from("<I", raw, at + 16)[0])
        elif name == b"data":
            if byte_rate <= 0:
                return None
            # A streamed WAV may declare an unknown (huge) size: count what is there.
            return float(min(size, len(raw) - at - 8) / byte_rate)
        at += 8 + size + (size & 1)
    return None


# MPEG audio: bitrates (kbit/s) by [version is MPEG-1][layer][index], sample rates by version.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_seconds(raw: bytes) -> float | None:
    """The sum of every MPEG audio frame's duration, frame by frame (after an ID3v2 tag)."""
    at = 0
    if raw[:3] == b"ID3" and len(raw) >= 10:
        size = raw[6] << 21 | raw[7] << 14 | raw[8] << 7 | raw[9]
        at = 10 + size
    seconds = 0.0
    frames = 0
    while at + 4 <= len(raw):
        header = int.from_bytes(raw[at : at + 4], "big")
        if header >> 21 != 0x7FF:
            if frames:
                break  # trailing data (an ID3v1 tag, padding)
            return None
        version = (header >> 19) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        layer = 4 - ((header >> 17) & 3)  # 1, 2 or 3
        bitrate_index = (header >> 12) & 15
        rate_index = (header >> 10) & 3
        if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
            return None
        mpeg1 = version == 3
        bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
        rate = _SAMPLE_RATES[version][rate_index]
        padding = (header >> 9) & 1
        if layer == 1:
            samples, length = 384, (12 * bitrate // rate + padding) * 4
        else:
            samples = 1152 if (layer == 2 or mpeg1) else 576
            length = samples // 8 * bitrate // rate + padding
        seconds += samples / rate
        frames += 1
        at += length
    return seconds if frames else None
