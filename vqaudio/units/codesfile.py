"""The ``.vqc`` codes file: one utterance's codes, bit-packed, with what is needed to decode them exactly.

Layout (little-endian), version 2::

    b"VQAC"                  magic, 4 bytes
    version                  u8 (2)
    header length            u32
    header                   UTF-8 JSON: model_sha256, sample_rate, num_samples, n_q, codebook_size,
                             frame_rate, num_frames, bits, payload_crc32, vqaudio_version
    payload                  the codes, frame-major ((t, q) order), ``bits = ceil(log2 K)`` bits each,
                             most significant bit first, zero-padded to a whole byte
    file CRC                 u32: CRC-32 of every byte before it (magic, version, header and payload)

So the file is ``num_frames * n_q * bits / 8`` bytes plus the header (about 300 bytes): the nominal bitrate
times the duration when K is a power of two. Nothing in it is executable (no pickle). Every header field is
type- and range-checked, ``bits`` must be the one the codebook size gives, the sample count must fit the
frame count, the payload size the header implies is compared with the file before anything is allocated,
and the file CRC covers the header as well as the codes: a truncated, corrupt or edited file is a
:class:`~vqaudio.errors.UserError` naming the file. Version 1 files (no file CRC; ``payload_crc32`` covers
the codes only) are read with the same field checks. EnCodec's ``.ecdc`` has the same parts (magic,
version, JSON header, bit-packed codes).
"""

from __future__ import annotations

import json
import math
import pathlib
import struct
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from ..fileio import atomic_output

MAGIC = b"VQAC"
VERSION = 2
_PREFIX = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")
# Bounds of the header fields: far beyond any real file, small enough that sizes derived from them stay exact.
MAX_N_Q = 1 << 12
MAX_CODEBOOK = 1 << 31
MAX_FRAMES = 1 << 40


@dataclass
class CodesHeader:
    """What a codes file says about its codes (``bits`` and ``payload_crc32`` are filled in on write)."""

    model_sha256: str
    sample_rate: int
    num_samples: int
    n_q: int
    codebook_size: int
    frame_rate: float
    num_frames: int = 0
    bits: int = 0
    payload_crc32: int = 0
    vqaudio_version: str = ""


def bits_for(codebook_size: int) -> int:
    """Bits per code: ``ceil(log2 K)`` (at least 1)."""
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """``(n_q, T)`` codes in ``[0, 2**bits)`` -> bytes, frame-major, ``bits`` bits per code, MSB first."""
    flat = np.ascontiguousarray(codes.T).reshape(-1).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((flat[:, None] >> shifts) & 1).astype(np.uint8), axis=None).tobytes()


def unpack_codes(payload: bytes, n_q: int, num_frames: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(n_q, num_frames)`` int64."""
    count = n_q * num_frames
    flat_bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=count * bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    values = flat_bits.reshape(count, bits).astype(np.int64) @ weights
    return values.reshape(num_frames, n_q).T.copy()


def write_codes_file(path: str | pathlib.Path, codes: np.ndarray, header: CodesHeader) -> pathlib.Path:
    """Write ``(n_q, T)`` codes with ``header`` (its ``n_q``, frames, bits and CRC set from the codes), atomically."""
    from .._version import __version__

    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise ValueError(f"expected codes of shape (n_q, frames) with frames > 0, got {codes.shape}")
    if codes.min() < 0 or codes.max() >= header.codebook_size:
        raise ValueError(f"codes must lie in [0, {header.codebook_size}), got [{codes.min()}, {codes.max()}]")
    header.n_q, header.num_frames = int(codes.shape[0]), int(codes.shape[1])
    header.bits = bits_for(header.codebook_size)
    payload = pack_codes(codes, header.bits)
    header.payload_crc32 = zlib.crc32(payload)
    header.vqaudio_version = __version__
    check_header(header)
    meta = json.dumps(asdict(header), separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(meta)) + meta + payload
    path = pathlib.Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(body + _CRC.pack(zlib.crc32(body)))
    return path


def _int_field(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def check_header(h: CodesHeader) -> None:
    """Every field of ``h`` of its type and in its range, ``bits`` from the codebook size and the sample count
    within the last frame; ``ValueError`` naming the first field that is not."""
    if not isinstance(h.model_sha256, str) or not 0 < len(h.model_sha256) <= 128:
        raise ValueError(f"model_sha256 must be a non-empty string, got {h.model_sha256!r}")
    if not isinstance(h.vqaudio_version, str):
        raise ValueError(f"vqaudio_version must be a string, got {h.vqaudio_version!r}")
    _int_field(h.sample_rate, "sample_rate", 1, 10_000_000)
    _int_field(h.n_q, "n_q", 1, MAX_N_Q)
    _int_field(h.codebook_size, "codebook_size", 1, MAX_CODEBOOK)
    _int_field(h.num_frames, "num_frames", 1, MAX_FRAMES)
    _int_field(h.payload_crc32, "payload_crc32", 0, 0xFFFFFFFF)
    fr = h.frame_rate
    if isinstance(fr, bool) or not isinstance(fr, (int, float)) or not math.isfinite(fr) or not 0 < fr <= h.sample_rate:
        raise ValueError(f"frame_rate must be a number in (0, sample_rate], got {fr!r}")
    if h.bits != bits_for(h.codebook_size):
        raise ValueError(
            f"bits must be {bits_for(h.codebook_size)} for codebook_size {h.codebook_size}, got {h.bits!r}"
        )
    hop = h.sample_rate / fr
    _int_field(h.num_samples, "num_samples", 1, math.ceil(h.num_frames * hop))
    if h.num_samples <= math.floor((h.num_frames - 1) * hop):
        raise ValueError(
            f"num_samples {h.num_samples} does not fit {h.num_frames} frames of {hop:g} samples "
            f"(more than {math.floor((h.num_frames - 1) * hop)} expected)"
        )


def read_codes_file(path: str | pathlib.Path) -> tuple[np.ndarray, CodesHeader]:
    """``((n_q, T) int64 codes, header)`` of a codes file; any damage is a one-line :class:`UserError`."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err})") from None
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise UserError(f"{path}: not a vqaudio codes file (no {MAGIC.decode()} magic)")
    _, version, meta_len = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise UserError(f"{path}: codes file version {version} is newer than this vqaudio reads ({VERSION}); upgrade")
    if version >= 2:
        if len(data) < _PREFIX.size + _CRC.size or zlib.crc32(data[: -_CRC.size]) != _CRC.unpack(data[-_CRC.size :])[0]:
            raise UserError(f"{path}: the file fails its CRC check (truncated, corrupt or edited)")
        data = data[: -_CRC.size]
    meta = data[_PREFIX.size : _PREFIX.size + meta_len]
    try:
        fields = json.loads(meta.decode())
        header = CodesHeader(**{k: fields[k] for k in CodesHeader.__dataclass_fields__})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: damaged header (truncated or corrupt codes file)") from None
    try:
        check_header(header)
    except ValueError as err:
        raise UserError(f"{path}: damaged header: {err}") from None
    payload = data[_PREFIX.size + meta_len :]
    expected = math.ceil(header.n_q * header.num_frames * header.bits / 8)  # exact: Python integers
    if len(payload) != expected:
        raise UserError(f"{path}: {len(payload)} bytes of codes where the header says {expected} (truncated?)")
    if zlib.crc32(payload) != header.payload_crc32:
        raise UserError(f"{path}: the codes fail their CRC check (corrupt file)")
    codes = unpack_codes(payload, header.n_q, header.num_frames, header.bits)
    if codes.max() >= header.codebook_size:
        raise UserError(f"{path}: codes outside [0, {header.codebook_size}) (corrupt file)")
    return codes, header
