"""The ``.vqc`` codes file: one utterance's codes, bit-packed, with what is needed to decode them exactly.

Layout (little-endian)::

    b"VQAC"                  magic, 4 bytes
    version                  u8 (1)
    header length            u32
    header                   UTF-8 JSON: model_sha256, sample_rate, num_samples, n_q, codebook_size,
                             frame_rate, num_frames, bits, payload_crc32, vqaudio_version
    payload                  the codes, frame-major ((t, q) order), ``bits = ceil(log2 K)`` bits each,
                             most significant bit first, zero-padded to a whole byte

So the file is ``num_frames * n_q * bits / 8`` bytes plus the header (about 300 bytes): the nominal bitrate
times the duration when K is a power of two. Nothing in it is executable (no pickle), a truncated or
corrupt file fails the length and CRC checks with a :class:`~vqaudio.errors.UserError` naming the file,
and the header's sample count restores the input's exact length on decode. EnCodec's ``.ecdc`` has the
same parts (magic, version, JSON header, bit-packed codes).
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
VERSION = 1
_PREFIX = struct.Struct("<4sBI")


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
    meta = json.dumps(asdict(header), separators=(",", ":")).encode()
    path = pathlib.Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(_PREFIX.pack(MAGIC, VERSION, len(meta)) + meta + payload)
    return path


def read_codes_file(path: str | pathlib.Path) -> tuple[np.ndarray, CodesHeader]:
    """``((n_q, T) int64 codes, header)`` of a codes file; any damage is a one-line :class:`UserError`."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise UserError(f"{path}: not a vqaudio codes file (no {MAGIC.decode()} magic)")
    _, version, meta_len = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise UserError(f"{path}: codes file version {version} is newer than this vqaudio reads ({VERSION}); upgrade")
    meta = data[_PREFIX.size : _PREFIX.size + meta_len]
    try:
        fields = json.loads(meta.decode())
        header = CodesHeader(**{k: fields[k] for k in CodesHeader.__dataclass_fields__})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: damaged header (truncated or corrupt codes file)") from None
    payload = data[_PREFIX.size + meta_len :]
    expected = math.ceil(header.n_q * header.num_frames * header.bits / 8)
    if len(payload) != expected:
        raise UserError(f"{path}: {len(payload)} bytes of codes where the header says {expected} (truncated?)")
    if zlib.crc32(payload) != header.payload_crc32:
        raise UserError(f"{path}: the codes fail their CRC check (corrupt file)")
    codes = unpack_codes(payload, header.n_q, header.num_frames, header.bits)
    if codes.max() >= header.codebook_size:
        raise UserError(f"{path}: codes outside [0, {header.codebook_size}) (corrupt file)")
    return codes, header
