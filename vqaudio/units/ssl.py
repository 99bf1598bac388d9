"""Frame features of a self-supervised speech model (HuBERT, WavLM, wav2vec 2.0, data2vec-audio) through
``transformers`` (``pip install 'vqaudio[ssl]'``): the features that fairseq's ``simple_kmeans``, textlesslib
and ESPnet's ``asr2`` cluster into units, and that SpeechTokenizer and Mimi distil into a codec's level 0.

Layer ``L`` is the output of transformer layer ``L`` (1-based; 0 is the input to layer 1): fairseq's
``output_layer=L``, ESPnet's ``model/L``, transformers' ``hidden_states[L]``. It is read with a hook on that
layer, so it is the same under transformers 4.x and 5.x (whose ``hidden_states[-1]`` differ for
stable-layer-norm models: 4.x applies the encoder's final layer norm to it, 5.x does not), and the layers
after ``L`` are dropped from the loaded model, so they cost nothing.

Frames: the model's own, ``floor((T - rf) / hop) + 1`` for a receptive field ``rf`` (400 samples for the
standard conv stack) and hop ``hop`` (320), frame ``i`` over samples ``[i * hop, i * hop + rf)``; the last frame
is repeated up to ``ceil(T / hop)`` frames, the count a codec of the same hop gives, so frame ``i`` lines up
with a codec's frame ``i`` (centres ``(rf - hop) / 2`` samples apart: 2.5 ms at 16 kHz). The input is never
padded, so the frames equal the model's own output on the same waveform.

Batches: :meth:`SSLFeatures.features_batch` sorts waveforms by length and runs neighbours as one right-padded
batch (at most ``max_padding`` of its samples padding: by default 10 % on CUDA, none on the CPU, where a batch
runs no faster than its waveforms one by one; at most ``batch_seconds`` of samples), and every item's frames
equal the item run alone, to float rounding. The convolutions of the feature encoder have no padding,
so an item's frames read its own samples only, and transformers zeroes padded frames before the positional
convolution and masks them in attention. Two places see the padding besides, and are changed while a padded
batch runs (the loaded model is as it was after): the first conv layer of ``feat_extract_norm == "group"``
models (hubert-base, wav2vec2-base, wavlm-base), whose group norm normalises each channel over the whole
input, runs on each item alone, over its own samples; and the convolutions over time inside the encoder that
transformers does not mask (data2vec-audio's stacked positional convolutions, wav2vec2-conformer's depthwise
convolutions) get the padded frames zeroed, as the zero padding an item alone has past its end. Waveforms
longer than ``chunk_seconds`` run alone in windows of ``chunk_seconds`` with ``context_seconds`` of real audio
on each side that is computed and dropped (attention is global, so windowed frames approach, not equal, the
whole-file frames; the context bounds the difference).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError

log = logging.getLogger(__name__)

# model_type values of transformers' audio SSL encoders with the wav2vec 2.0 conv feature encoder.
SSL_MODEL_TYPES = ("hubert", "wavlm", "wav2vec2", "wav2vec2-conformer", "data2vec-audio")
# Defaults of SSLFeatures' batches (features_batch): at most this much audio at once, padding included, and at
# most this fraction of it padding, by device type. On the CPU a batch runs no faster than its waveforms one by
# one, so padding is all cost (benchmarks/README.md, SSL unit extraction): only equal lengths batch there.
BATCH_SECONDS = 60.0
MAX_PADDING = {"cpu": 0.0, "cuda": 0.1}


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("SSL features need the transformers package: pip install 'vqaudio[ssl]'") from None
    return transformers


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's tensors (name, dtype, shape, bytes, in name order): the same for the same weights
    in a ``.safetensors`` or a ``.bin`` file, or under another file layout."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def receptive_field(kernels, strides) -> tuple[int, int]:
    """``(receptive field, hop)`` in samples of a stack of strided convolutions."""
    rf, hop = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        rf += (k - 1) * hop
        hop *= s
    return rf, hop


def zero_mean_unit_var(wav: Tensor) -> Tensor:
    """Per-waveform normalisation of ``Wav2Vec2FeatureExtractor(do_normalize=True)`` over the last dim: ``(x -
    mean) / sqrt(var + 1e-7)``, computed in float64, returned in ``wav``'s dtype."""
    x = wav.double()
    return ((x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-7)).to(wav.dtype)


@dataclass
class SSLReference:
    """What identifies an SSL feature source, as a unit model records it.

    Attributes:
        model: a local folder (absolute path) or a Hugging Face Hub id.
        layer: transformer layer whose output is the feature (0 = input to layer 1), or the layers averaged.
        revision: Hub revision (branch, tag or commit) for a Hub id; None for a folder.
        sha256: :func:`weights_sha256` of the full model's weights.
        normalize: waveforms are normalised to zero mean and unit variance before the model.
        sample_rate: Hz the model takes.
        hop_length: samples per frame.
        dim: feature size (the model's hidden size).
    """

    model: str
    layer: int | list[int]
    revision: str | None
    sha256: str
    normalize: bool
    sample_rate: int
    hop_length: int
    dim: int


def _is_local(model: str) -> bool:
    return pathlib.Path(model).expanduser().exists() or model.startswith((".", "/", "~"))


def _feat_extract_norm(config) -> str:
    """``"group"`` (group norm in the first conv layer) or ``"layer"`` (layer norm in every conv layer);
    data2vec-audio's config has no ``feat_extract_norm``: its conv layers all have layer norm."""
    return getattr(config, "feat_extract_norm", "layer")


def _normalize_setting(model: str, revision: str | None, config) -> tuple[bool, int]:
    """``(do_normalize, sampling_rate)`` from the checkpoint's ``preprocessor_config.json``; without the file,
    ``feat_extract_norm == "layer"`` (as the large models were trained) and 16 kHz."""
    default = (_feat_extract_norm(config) == "layer", 16000)
    if _is_local(model):
        path = pathlib.Path(model).expanduser() / "preprocessor_config.json"
        if not path.is_file():
            return default
        try:
            pre = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(
                model, "preprocessor_config.json", revision=revision, _raise_exceptions_for_missing_entries=False
            )
        except OSError:
            found = None
        if not found:
            return default
        pre = json.loads(pathlib.Path(found).read_text())
    return bool(pre.get("do_normalize", default[0])), int(pre.get("sampling_rate", default[1]))


def length_batches(lengths: list[int], max_padding: float, max_samples: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches of neighbours by length, shortest first: each batch, padded to its longest
    waveform, holds at most ``max_samples`` samples (one waveform may hold more, alone) of which at most a
    fraction ``max_padding`` is padding (0: equal lengths only). Greedy: a batch takes the next longer waveform
    while both bounds hold."""
    if not 0 <= max_padding < 1 or max_samples < 1:
        raise ValueError(f"max_padding must lie in [0, 1) and max_samples be >= 1, got {max_padding}, {max_samples}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    total = 0
    for i in order:
        n = lengths[i]
        if batches and batches[-1]:
            padded = (len(batches[-1]) + 1) * n  # sorted: the new waveform is the batch's longest
            if padded <= max_samples and padded - (total + n) <= max_padding * padded:
                batches[-1].append(i)
                total += n
                continue
        batches.append([i])
        total = n
    return batches


class _ItemFirstLayer(nn.Module):
    """The feature encoder's first conv layer (conv, group norm, activation) run on each item of a right-padded
    ``(B, 1, T)`` batch alone, over its own ``lengths[b]`` samples, its frames written into the batch's
    ``(B, C, T')`` output and the frames after them zeroed: a group norm of one group per channel normalises
    over the whole input, so over the item's frames only it gives the item's frames as alone."""

    # transformers' Wav2Vec2Model docs (attention_mask) have wav2vec2-base batches zero-padded without a mask,
    # its group norm then counting the padding; here the padding is left out of it instead.

    def __init__(self, layer: nn.Module, lengths: list[int]) -> None:
        super().__init__()
        self.layer, self.lengths = layer, lengths

    def forward(self, x: Tensor) -> Tensor:
        conv = self.layer.conv
        frames = (x.shape[-1] - conv.kernel_size[0]) // conv.stride[0] + 1
        out = None
        for b, n in enumerate(self.lengths):
            y = self.layer(x[b : b + 1, :, :n])[0]
            if out is None:
                out = y.new_empty(x.shape[0], y.shape[0], frames)
            out[b, :, : y.shape[-1]] = y
            out[b, :, y.shape[-1] :] = 0
        return out


def _zero_padding(frames: Tensor, module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of a convolution over ``(B, C, T)``: frames past each item's ``frames[b]`` set to 0."""
    x = args[0]
    keep = torch.arange(x.shape[-1], device=x.device) < frames[:, None]
    return (x * keep[:, None].to(x.dtype), *args[1:])


class SSLFeatures:
    """Layer ``layer`` (or the mean of several layers) of an audio SSL model as frame features of whole waveforms.

    Args:
        model: a local model folder (``save_pretrained``'s) or a Hub id, resolved through the Hugging Face
            cache (offline once downloaded).
        layer: transformer layer, ``0 .. num_hidden_layers``, or a list of them whose outputs are averaged.
        revision: Hub revision; ignored for a folder.
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
        chunk_seconds: waveforms longer than this run in windows of this length (bounded memory).
        context_seconds: real audio on each side of a window, computed and dropped.
        expect_sha256: refuse a model whose weights differ (a unit model made with another model).
        batch_seconds: :meth:`features_batch` runs at most this much audio at once, padding included (memory).
        max_padding: the most padding a batch of :meth:`features_batch` may hold, as a fraction of its samples
            (padding is computed and dropped; 0 batches equal lengths only); by default ``MAX_PADDING`` of the
            device type the features run on (0 on the CPU, 0.1 on CUDA).

    One call at a time per instance: a padded batch changes the loaded model while it runs.
    """

    def __init__(
        self,
        model: str,
        layer: int | list[int],
        revision: str | None = None,
        device: str = "cpu",
        chunk_seconds: float = 30.0,
        context_seconds: float = 5.0,
        expect_sha256: str | None = None,
        batch_seconds: float = BATCH_SECONDS,
        max_padding: float | None = None,
    ) -> None:
        tf = require_transformers()
        model = str(model)
        local = _is_local(model)
        source = str(pathlib.Path(model).expanduser().resolve()) if local else model
        if local and not pathlib.Path(source).is_dir():
            raise UserError(f"SSL model {source}: no such folder (a transformers model folder or a Hub id)")
        try:
            config = tf.AutoConfig.from_pretrained(source, revision=None if local else revision)
        except (OSError, ValueError) as err:
            raise UserError(f"SSL model {source}: cannot be loaded ({_first_line(err)})") from None
        if getattr(config, "model_type", None) not in SSL_MODEL_TYPES or not hasattr(config, "conv_stride"):
            raise UserError(
                f"SSL model {source}: model_type {getattr(config, 'model_type', None)!r} is not an audio SSL model "
                f"({', '.join(SSL_MODEL_TYPES)})"
            )
        depth = config.num_hidden_layers
        layers = sorted(set(layer)) if isinstance(layer, (list, tuple)) else [layer]
        if not layers or not all(isinstance(n, int) and 0 <= n <= depth for n in layers):
            raise UserError(
                f"SSL model {source} has {depth} transformer layers; --layer must lie in [0, {depth}], got {layer}"
            )
        if not chunk_seconds > 0 or context_seconds < 0:
            raise UserError(
                f"chunk_seconds must be > 0 and context_seconds >= 0, got {chunk_seconds}, {context_seconds}"
            )
        if not batch_seconds > 0 or not (max_padding is None or 0 <= max_padding < 1):
            raise UserError(f"batch_seconds must be > 0 and max_padding in [0, 1), got {batch_seconds}, {max_padding}")
        try:
            net = tf.AutoModel.from_pretrained(source, revision=None if local else revision)
        except (OSError, ValueError) as err:
            raise UserError(f"SSL model {source}: weights cannot be loaded ({_first_line(err)})") from None
        sha = weights_sha256(net)
        if expect_sha256 and sha != expect_sha256:
            raise UserError(
                f"SSL model {source} has other weights (sha256 {sha[:12]}...) than the one this unit model was made "
                f"with ({expect_sha256[:12]}...)"
            )
        normalize, sample_rate = _normalize_setting(source, revision, config)
        rf, hop = receptive_field(config.conv_kernel, config.conv_stride)
        # Only layers 1..L run: the rest is dropped (layer 0 keeps layer 1 to hook its input).
        net.encoder.layers = net.encoder.layers[: max(max(layers), 1)]
        self.net = net.eval().requires_grad_(False).to(device)
        self.reference = SSLReference(
            source, layer, None if local else revision, sha, normalize, sample_rate, hop, config.hidden_size
        )
        self.group_norm = _feat_extract_norm(config) == "group"
        self.rf, self.device = rf, torch.device(device)
        self._convs = list(zip(config.conv_kernel, config.conv_stride, strict=True))
        self.chunk_frames = max(1, round(chunk_seconds * sample_rate / hop))
        self.context_frames = round(context_seconds * sample_rate / hop)
        self.batch_samples = max(1, round(batch_seconds * sample_rate))
        self.max_padding = max_padding
        # Convolutions over time in the encoder (positional, conformer depthwise): padded frames zeroed before them.
        self._time_convs = [m for m in self.net.encoder.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1]
        self._captured: list[Tensor] = []
        for n in layers:
            if n == 0:
                self.net.encoder.layers[0].register_forward_pre_hook(self._capture_input, with_kwargs=True)
            else:
                self.net.encoder.layers[n - 1].register_forward_hook(self._capture_output)
        log.info(
            "SSL features: %s layer %s (%d-d, hop %d, normalize %s, sha256 %s...)",
            source,
            layer,
            config.hidden_size,
            hop,
            normalize,
            sha[:12],
        )

    @property
    def sample_rate(self) -> int:
        return self.reference.sample_rate

    @property
    def hop_length(self) -> int:
        return self.reference.hop_length

    @property
    def dim(self) -> int:
        return self.reference.dim

    def to(self, device: str | torch.device) -> SSLFeatures:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def _capture_output(self, module, args, output) -> None:
        self._captured.append(output[0] if isinstance(output, tuple) else output)

    def _capture_input(self, module, args, kwargs) -> None:
        self._captured.append(args[0] if args else kwargs["hidden_states"])

    def model_frames(self, samples: int) -> int:
        """Frames the model gives for ``samples`` samples (at least ``rf``), layer by layer as the convs count."""
        n = max(samples, self.rf)
        for k, s in self._convs:
            n = (n - k) // s + 1
        return n

    @contextlib.contextmanager
    def _padded(self, lengths: list[int]) -> Iterator[None]:
        """While a right-padded batch of ``lengths`` samples per item runs: a group-norm model's first conv layer
        on each item alone, and the padded frames zeroed before the encoder's convolutions over time."""
        frames = torch.tensor([self.model_frames(n) for n in lengths], device=self.device)
        hooks = [m.register_forward_pre_hook(functools.partial(_zero_padding, frames)) for m in self._time_convs]
        layers = self.net.feature_extractor.conv_layers
        first = layers[0]
        if self.group_norm:
            layers[0] = _ItemFirstLayer(first, lengths)
        try:
            yield
        finally:
            layers[0] = first  # the loaded model as it was
            for hook in hooks:
                hook.remove()

    @torch.inference_mode()
    def _run(self, wavs: Tensor, lengths: list[int] | None = None) -> Tensor:
        """``(B, T)`` float32 -> ``(B, frames, D)`` float32 on CPU; ``lengths`` (samples of each item, the rest
        padding) gives each item's frames as alone (:meth:`_padded`, an attention mask). On CUDA ``wavs`` is
        copied from page-locked memory without blocking."""
        cuda = self.device.type == "cuda"
        x = (wavs.pin_memory() if cuda and not wavs.is_pinned() else wavs).to(self.device, non_blocking=cuda)
        padded = lengths is not None and any(n < wavs.shape[1] for n in lengths)
        mask = None
        if padded:
            mask = (torch.arange(wavs.shape[1])[None] < torch.tensor(lengths)[:, None]).long().to(self.device)
        self._captured = []
        with self._padded(lengths) if padded else contextlib.nullcontext():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                self.net(x, attention_mask=mask)
        feats = torch.stack([c.float() for c in self._captured]).mean(0).cpu()
        self._captured = []
        return feats

    def _prepare(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono waveform (T,), got shape {wav.shape}")
        if self.reference.normalize:
            wav = zero_mean_unit_var(torch.from_numpy(wav)).numpy()
        if wav.shape[0] < self.rf:  # shorter than one frame: zero-padded to one
            wav = np.pad(wav, (0, self.rf - wav.shape[0]))
        return wav

    def _frames_out(self, feats: Tensor, samples: int, name: str) -> Tensor:
        """``(n, D)`` model frames -> ``(ceil(samples / hop), D)``, the last one repeated; checked finite."""
        if not torch.isfinite(feats).all():
            raise UserError(
                f"{name}: SSL features of {self.reference.model} layer {self.reference.layer} are not "
                "finite (NaN/Inf in the model's output)"
            )
        want = max(1, math.ceil(samples / self.hop_length))
        if feats.shape[0] < want:
            feats = torch.cat([feats, feats[-1:].expand(want - feats.shape[0], -1)])
        return feats[:want]

    def features(self, wav: np.ndarray, name: str = "waveform") -> Tensor:
        """``(T,)`` samples at :attr:`sample_rate` -> ``(ceil(T / hop), D)`` float32 features (CPU)."""
        samples = int(np.asarray(wav).shape[-1])
        x = self._prepare(wav)
        n = self.model_frames(x.shape[0])
        if n <= self.chunk_frames + 2 * self.context_frames:
            return self._frames_out(self._run(torch.from_numpy(x)[None])[0], samples, name)
        hop, parts = self.hop_length, []
        for a in range(0, n, self.chunk_frames):
            b = min(a + self.chunk_frames, n)
            first = max(0, a - self.context_frames)
            start, end = first * hop, min(x.shape[0], (b + self.context_frames - 1) * hop + self.rf)
            window = self._run(torch.from_numpy(x[start:end])[None])[0]  # window frame i = global frame first + i
            parts.append(window[a - first : b - first])
        return self._frames_out(torch.cat(parts), samples, name)

    def features_batch(self, wavs: list[np.ndarray], names: list[str] | None = None) -> list[Tensor]:
        """Features of several waveforms, each as :meth:`features` gives it alone (to float rounding): sorted by
        length and run in right-padded batches of neighbours (:func:`length_batches` with ``max_padding`` and
        ``batch_seconds``; see the module's notes on batches; on the CPU by default equal lengths only);
        waveforms longer than ``chunk_seconds`` run alone in windows."""
        names = names or [f"waveform {i}" for i in range(len(wavs))]
        out: list[Tensor | None] = [None] * len(wavs)
        short = []
        for i, w in enumerate(wavs):
            if self.model_frames(int(np.asarray(w).shape[-1])) > self.chunk_frames + 2 * self.context_frames:
                out[i] = self.features(w, names[i])
            else:
                short.append(i)
        xs = [self._prepare(wavs[i]) for i in short]
        pinned = self.device.type == "cuda"
        max_padding = (
            MAX_PADDING.get(self.device.type, MAX_PADDING["cuda"]) if self.max_padding is None else self.max_padding
        )
        for rows in length_batches([x.shape[0] for x in xs], max_padding, self.batch_samples):
            lengths = [xs[r].shape[0] for r in rows]
            batch = torch.zeros(len(rows), max(lengths), pin_memory=pinned)
            for b, r in enumerate(rows):
                batch[b, : lengths[b]] = torch.from_numpy(xs[r])
            feats = self._run(batch, lengths)
            for b, r in enumerate(rows):
                i = short[r]
                n = self.model_frames(lengths[b])
                out[i] = self._frames_out(feats[b, :n], int(np.asarray(wavs[i]).shape[-1]), names[i])
        return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
