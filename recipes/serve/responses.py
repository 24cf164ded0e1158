"""Bodies of the OpenAI-compatible transcription responses and errors.

`response_format`:
- ``json``: ``{"text", "usage": {"type": "duration", "seconds"}}``
- ``text``: the transcript as plain text
- ``srt`` / ``vtt``: subtitles from `recipes.outputs` (cues of at most 42 characters)
- ``verbose_json``: ``{"task", "language", "duration", "text", "segments", "words", "usage"}``;
  segments are the subtitle cues with OpenAI's segment fields, words ``{"word", "start",
  "end"}``. ``timestamp_granularities[]`` chooses segments and/or words (both when absent).
  Whisper-specific segment fields (``avg_logprob``, ``compression_ratio``,
  ``no_speech_prob``, ``temperature``, ``seek``) are present with neutral values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..outputs import Transcript, group_cues, to_srt, to_vtt

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    error_type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _seconds(value: float) -> float:
    return round(float(value), 3)


def verbose_body(
    transcript: Transcript, granularities: Sequence[str], language: str | None
) -> dict[str, Any]:
    """The ``verbose_json`` body (segments and/or words by `granularities`)."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language or "unknown",
        "duration": _seconds(transcript.duration),
        "text": transcript.text,
        "usage": {"type": "duration", "seconds": _seconds(transcript.duration)},
    }
    wanted = set(granularities) or set(GRANULARITIES)
    if "segment" in wanted:
        body["segments"] = [
            {
                "id": index,
                "seek": 0,
                "start": _seconds(cue.start),
                "end": _seconds(cue.end),
                "text": cue.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
            for index, cue in enumerate(group_cues(transcript.words))
        ]
    if "word" in wanted:
        body["words"] = [
            {"word": w.word, "start": _seconds(w.start), "end": _seconds(w.end)}
            for w in transcript.words
        ]
    return body


def transcription_response(
    transcript: Transcript,
    response_format: str,
    granularities: Sequence[str] = (),
    language: str | None = None,
) -> Response:
    """The response for one transcript in `response_format` (one of `RESPONSE_FORMATS`)."""
    if response_format == "json":
        usage = {"type": "duration", "seconds": _seconds(transcript.duration)}
        return JSONResponse({"text": transcript.text, "usage": usage})
    if response_format == "verbose_json":
        return JSONResponse(verbose_body(transcript, granularities, language))
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript))
    if response_format == "vtt":
        return Response(to_vtt(transcript), media_type="text/vtt; charset=utf-8")
    return PlainTextResponse(transcript.text + "\n")
