"""k-means unit models over MFCC, log-mel or self-supervised (HuBERT, WavLM, wav2vec 2.0) frames: fairseq's
``speech2unit`` (Lakhotia et al. 2021) with spectral features, or its HuBERT units over any layer of any
transformers audio SSL model (:mod:`vqaudio.units.ssl`). A :class:`KMeansUnitModel` has the codec's unit
interface (``encode``, ``encode_chunked``, ``encode_file``, ``sample_rate``, ``hop_length``, ``frame_rate``,
``codebook_size``, ``n_q``), so ``extract-units``, ``evaluate-units`` and ``train-prior`` take it as they
take a codec, and the codec's ``kmeans`` content objective takes its units as targets.

Frames are aligned with a codec of the same hop: frame ``i`` is centred on sample ``i * hop + hop / 2``, and
a waveform of ``T`` samples has ``ceil(T / hop)`` frames.
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import librosa
import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..checkpoint import check_state, load_model, save_model
from ..config import from_dict, to_dict
from ..data.audio import AudioError, load_audio
from ..data.kaldi import read_data_dir
from ..errors import UserError
from ..fileio import atomic_output
from ..quantize.ops import kmeans, nearest_code
from .ssl import SSLFeatures

log = logging.getLogger(__name__)
FEATURES = ("mfcc", "logmel", "ssl")


@dataclass
class KMeansConfig:
    """A k-means unit model's features and size.

    Attributes:
        feature: ``"mfcc"`` (13 coefficients, with deltas and delta-deltas: 39 dims), ``"logmel"``, or ``"ssl"``
            (a layer of a self-supervised model: ``ssl_model``, ``ssl_layer``).
        k: number of units.
        deltas: ``mfcc``: append deltas and delta-deltas (fairseq's speech2unit features); off, the 13 static
            coefficients alone (as Kaldi splices them).
        cmvn: normalise each input's features to zero mean and unit variance over its own frames (per-utterance
            CMVN), which removes much of the speaker and channel, so the units of a frame depend on the whole
            input it came from.
        context: frames on each side spliced onto each frame (Kaldi's ``splice-feats``; edges repeat the first
            and last frame), after CMVN: ``(2 * context + 1)`` times the dims.
        sample_rate: Hz; audio at other rates is resampled on load.
        frame_rate: frames per second; ``sample_rate / frame_rate`` must be a whole number of samples.
        n_fft: analysis window in samples (25 ms at 16 kHz).
        n_mels: mel bands (of the MFCCs' filterbank, or the log-mel features).
        n_mfcc: cepstral coefficients before deltas.
        standardize: cluster features scaled to zero mean and unit variance over the training frames (the
            spectral default); off, raw features as fairseq and ESPnet cluster SSL features, so the centroids
            are theirs to use as they are.
        ssl_model: ``ssl``: the SSL model's folder (absolute path) or Hub id.
        ssl_layer: ``ssl``: transformer layer whose output is clustered (0 = the input to layer 1).
        ssl_revision: ``ssl``: Hub revision of a Hub id.
        ssl_sha256: ``ssl``: sha256 of the SSL model's weights; another model is refused.
        ssl_normalize: ``ssl``: waveforms normalised to zero mean and unit variance before the model.
        ssl_dim: ``ssl``: the layer's width.
    """

    feature: str = "mfcc"
    k: int = 256
    sample_rate: int = 16000
    frame_rate: float = 50.0
    n_fft: int = 400
    n_mels: int = 40
    n_mfcc: int = 13
    deltas: bool = True
    cmvn: bool = False
    context: int = 0
    standardize: bool = True
    ssl_model: str = ""
    ssl_layer: int = 6
    ssl_revision: str | None = None
    ssl_sha256: str = ""
    ssl_normalize: bool = False
    ssl_dim: int = 0

    @property
    def dim(self) -> int:
        """Feature dimensions per frame: the MFCCs (with their deltas) or the mel bands, times the spliced frames."""
        if self.feature == "ssl":
            base = self.ssl_dim
        elif self.feature == "mfcc":
            base = (3 if self.deltas else 1) * self.n_mfcc
        else:
            base = self.n_mels
        return base * (2 * self.context + 1)

    def check(self) -> KMeansConfig:
        if self.feature not in FEATURES:
            raise UserError(f"--feature must be one of {FEATURES}, got {self.feature!r}")
        for name in ("sample_rate", "n_fft", "n_mels", "n_mfcc"):
            if not getattr(self, name) >= 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.frame_rate > 0:
            raise UserError(f"--frame-rate must be > 0 frames per second, got {self.frame_rate}")
        if self.k < 2:
            raise UserError(f"--k must be >= 2, got {self.k}")
        if self.context < 0:
            raise UserError(f"--context must be >= 0 frames, got {self.context}")
        if self.feature == "ssl" and not self.ssl_model:
            raise UserError("--feature ssl needs --ssl-model: a transformers model folder or a Hub id")
        hop = self.sample_rate / self.frame_rate
        if abs(hop - round(hop)) > 1e-9:
            raise UserError(f"sample_rate / frame_rate must be a whole number of samples, got {hop}")
        return self


def frame_features(wav: np.ndarray, cfg: KMeansConfig, ssl: SSLFeatures | None = None) -> np.ndarray:
    """``(T,)`` float32 samples -> ``(ceil(T / hop), F)`` float32 features, frame ``i`` centred on
    sample ``i * hop + hop / 2`` (an SSL model's frames: see :mod:`vqaudio.units.ssl`)."""
    if cfg.feature == "ssl":
        if ssl is None:
            raise ValueError("feature 'ssl' needs the SSLFeatures to compute them")
        return finish_features(ssl.features(wav).numpy(), cfg)
    hop = round(cfg.sample_rate / cfg.frame_rate)
    frames = max(1, math.ceil(wav.shape[0] / hop))
    y = np.pad(wav, (0, frames * hop - wav.shape[0]))[hop // 2 :]
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=hop, n_mels=cfg.n_mels, center=True, power=2.0
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    if cfg.feature == "logmel":
        feats = logmel
    else:
        feats = librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc)
        if cfg.deltas:
            deltas = [librosa.feature.delta(feats, order=o, mode="nearest") for o in (1, 2)]
            feats = np.concatenate([feats, *deltas], axis=0)
    return finish_features(feats[:, :frames].T, cfg)  # (T', F)


def finish_features(feats: np.ndarray, cfg: KMeansConfig) -> np.ndarray:
    """``(T', F)`` frame features -> CMVN'd and spliced as ``cfg`` says, contiguous float32."""
    if cfg.cmvn:
        feats = cmvn(feats)
    if cfg.context:
        feats = splice(feats, cfg.context)
    return np.ascontiguousarray(feats, dtype=np.float32)


def cmvn(feats: np.ndarray) -> np.ndarray:
    """``(T', F)`` -> the same features at zero mean and unit variance over the frames (a constant dim -> 0)."""
    std = feats.std(0)
    return (feats - feats.mean(0)) / np.where(std > 1e-5, std, 1.0)


def splice(feats: np.ndarray, context: int) -> np.ndarray:
    """``(T', F)`` -> ``(T', (2 * context + 1) * F)``: frames ``i - context .. i + context`` side by side, oldest
    first, the edges repeating the first and last frame (Kaldi's ``splice-feats``)."""
    padded = np.pad(feats, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + feats.shape[0]] for i in range(2 * context + 1)], axis=1)


def _check_one_level(n_q: int | None) -> None:
    if n_q not in (None, 1):
        raise UserError(f"a k-means unit model has one level; n_q must be 1, got {n_q}")


def _repeat_last(units: Tensor, frames: int) -> Tensor:
    """``(T',)`` units cut or extended to ``frames`` by repeating the last one."""
    return torch.cat([units, units[-1:].expand(max(0, frames - units.shape[0]))])[:frames]


class KMeansUnitModel(nn.Module):
    """Nearest of ``k`` centroids over (standardised) frame features: one unit per frame.

    Args:
        config: the features and ``k``.
        centroids: ``(k, F)`` in standardised feature space; ``mean``, ``std``: ``(F,)`` feature statistics
            (0 and 1 without ``standardize``).
        ssl: ``feature == "ssl"``: the SSL feature source; by default loaded from ``config.ssl_model`` and
            checked against ``config.ssl_sha256`` (one line when it cannot be found or has other weights).
            It is not part of the unit model's weights: the model records a reference to it.
    """

    def __init__(
        self, config: KMeansConfig, centroids: Tensor | None = None, mean=None, std=None, ssl: SSLFeatures | None = None
    ) -> None:
        super().__init__()
        self.config = config.check()
        self.ssl = None
        if config.feature == "ssl":
            self.ssl = ssl or load_ssl(config)
            if self.ssl.sample_rate != config.sample_rate or self.ssl.hop_length != self.hop_length:
                raise UserError(
                    f"SSL model {config.ssl_model} runs at {self.ssl.sample_rate} Hz with hop {self.ssl.hop_length}; "
                    f"the k-means config says {config.sample_rate} Hz, hop {self.hop_length}"
                )
        dim = config.dim
        self.register_buffer("centroids", torch.zeros(config.k, dim) if centroids is None else centroids.float())
        self.register_buffer("mean", torch.zeros(dim) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(dim) if std is None else torch.as_tensor(std).float())

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return round(self.config.sample_rate / self.config.frame_rate)

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def codebook_size(self) -> int:
        return self.config.k

    @property
    def n_q(self) -> int:
        return 1

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.ssl is not None:  # the SSL model is not a submodule (not saved), but goes where the model goes
            self.ssl.to(self.centroids.device)
        return self

    def units(self, wav: np.ndarray) -> Tensor:
        """``(T,)`` samples -> ``(ceil(T / hop),)`` int64 units."""
        return self.units_of(frame_features(wav, self.config, self.ssl))

    def units_of(self, feats: np.ndarray) -> Tensor:
        """``(T', F)`` features (:func:`frame_features`) -> ``(T',)`` int64 units."""
        x = (torch.from_numpy(feats).to(self.centroids.device) - self.mean) / self.std
        return nearest_code(x, self.centroids).cpu()

    @torch.no_grad()
    def encode(self, wav: Tensor, n_q: int | None = None, lengths: list[int] | None = None) -> Tensor:
        """``(B, 1, T)`` or ``(B, T)`` waveform -> ``(B, 1, ceil(T / hop))`` units.

        Without ``lengths`` a batch is padded audio: its frames past an item's end are what that padding gives,
        and with ``cmvn`` (or an SSL model with group norm) the padding also enters the item's features. With
        ``lengths`` (samples per item) each item is its own first ``lengths[b]`` samples, as alone, and its
        frames past ``ceil(lengths[b] / hop)`` repeat its last unit."""
        _check_one_level(n_q)
        wav = wav[:, None] if wav.ndim == 2 else wav
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected a mono waveform (B, 1, T), got {tuple(wav.shape)}")
        if lengths is not None and (len(lengths) != wav.shape[0] or not all(0 < n <= wav.shape[-1] for n in lengths)):
            raise ValueError(
                f"lengths must give 1..{wav.shape[-1]} samples for each of {wav.shape[0]} items, got {lengths}"
            )
        items = [w[0].cpu().float().numpy() for w in wav]
        if lengths is not None:
            items = [x[:n] for x, n in zip(items, lengths, strict=True)]
        frames = -(-wav.shape[-1] // self.hop_length)
        return torch.stack([_repeat_last(u, frames) for u in self._units(items)])[:, None]

    @torch.no_grad()
    def encode_batch(self, wavs: Sequence[Tensor], n_q: int | None = None, chunk_seconds: float = 30.0) -> list[Tensor]:
        """Units of several waveforms of any lengths, each as alone: ``(T_i,)`` -> ``(1, ceil(T_i / hop))`` each
        (:meth:`Codec.encode_batch <vqaudio.models.Codec.encode_batch>`'s interface). An SSL model batches them
        where that changes no frame (:meth:`SSLFeatures.features_batch`); other features are per waveform."""
        _check_one_level(n_q)
        items = [w.reshape(-1).cpu().float().numpy() for w in wavs]
        units = self._units(items)
        return [_repeat_last(u, -(-x.shape[0] // self.hop_length))[None] for x, u in zip(items, units, strict=True)]

    def _units(self, items: list[np.ndarray]) -> list[Tensor]:
        """The units of each ``(T_i,)`` waveform alone (the features' own frame count)."""
        if self.ssl is not None:
            feats = [finish_features(f.numpy(), self.config) for f in self.ssl.features_batch(items)]
        else:
            feats = [frame_features(x, self.config) for x in items]
        return [self.units_of(f) for f in feats]

    def encode_chunked(self, wav: Tensor, chunk_seconds: float = 30.0, n_q: int | None = None) -> Tensor:
        """As :meth:`encode`: the features are local, so a long file needs no chunking beyond its own."""
        return self.encode(wav, n_q=n_q)

    def encode_file(self, path: str, n_q: int | None = None, chunk_seconds: float = 30.0) -> Tensor:
        """``(1, T')`` units of an audio file (read as mono at ``sample_rate``)."""
        return self.encode(torch.from_numpy(load_audio(str(path), self.sample_rate))[None, None], n_q=n_q)[0]

    def save_pretrained(self, path: str | pathlib.Path, overwrite: bool = False) -> pathlib.Path:
        """Write a model folder, or one ``.pt`` file (see :mod:`vqaudio.checkpoint`); a model already at ``path``
        is refused unless ``overwrite``."""
        return save_model(path, "kmeans", to_dict(self.config), self, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> KMeansUnitModel:
        try:
            return cls.from_saved(*load_model(path, "kmeans", map_location), where=f"{path} config")
        except UserError as err:
            raise UserError(f"{path}: {err}") from None

    def export_centroids(self, path: str | pathlib.Path) -> pathlib.Path:
        """The centroids as an ``(k, F)`` float32 ``.npy`` in the space of the features, as fairseq's and ESPnet's
        k-means appliers read them (for an SSL model without ``standardize``, the raw layer output)."""
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.save(f, (self.centroids * self.std + self.mean).cpu().numpy().astype(np.float32))
        return pathlib.Path(path)

    @classmethod
    def from_saved(cls, config: dict, state: dict, where: str = "k-means config") -> KMeansUnitModel:
        """A k-means unit model from a saved file's config and weights (see :mod:`vqaudio.checkpoint`)."""
        model = cls(from_dict(KMeansConfig, config, where=where))
        check_state(model, state)
        model.load_state_dict(state)
        return model.eval()


def load_ssl(config: KMeansConfig, device: str = "cpu") -> SSLFeatures:
    """The SSL feature source a k-means config records, checked to be the same weights and, for a model saved
    with its weights' sha256, the same waveform normalisation (``preprocessor_config.json``'s ``do_normalize``)."""
    where = f"this k-means unit model clusters layer {config.ssl_layer} of {config.ssl_model}"
    try:
        ssl = SSLFeatures(
            config.ssl_model,
            config.ssl_layer,
            config.ssl_revision,
            device=device,
            expect_sha256=config.ssl_sha256 or None,
        )
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if config.ssl_sha256 and ssl.reference.normalize != config.ssl_normalize:
        raise UserError(
            f"{where}: the model now {'normalises' if ssl.reference.normalize else 'does not normalise'} its "
            f"waveforms (do_normalize in its preprocessor_config.json), the units were clustered "
            f"{'with' if config.ssl_normalize else 'without'}; restore that file"
        )
    return ssl


def _reservoir_add(reservoir: np.ndarray, seen: int, rows: np.ndarray, rng: np.random.Generator) -> int:
    """Reservoir sampling (Vitter's algorithm R), one utterance's rows at once: frame number ``n`` (0-based)
    replaces a uniform slot in ``[0, n]`` when that slot is in the reservoir, so every frame is kept with equal
    probability; a slot drawn twice keeps the later frame, as one-by-one. Returns the frames seen."""
    size = reservoir.shape[0]
    fill = min(max(size - seen, 0), rows.shape[0])
    reservoir[seen : seen + fill] = rows[:fill]
    rest = rows[fill:]
    if rest.shape[0]:
        slots = rng.integers(0, seen + fill + np.arange(rest.shape[0]) + 1)
        kept = np.flatnonzero(slots < size)
        _, last = np.unique(slots[kept][::-1], return_index=True)  # the last draw of each slot wins
        kept = kept[kept.shape[0] - 1 - last]
        reservoir[slots[kept]] = rest[kept]
    return seen + rows.shape[0]


def train_kmeans(
    data_dir: str | pathlib.Path,
    out: str | pathlib.Path,
    config: KMeansConfig,
    iters: int = 20,
    max_frames: int = 1_000_000,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
    force: bool = False,
) -> tuple[KMeansUnitModel, dict]:
    """Fit a :class:`KMeansUnitModel` on the utterances of a Kaldi data dir and save it to ``out``.

    With ``feature == "ssl"`` the SSL model is loaded first (on ``device``) and the config completed with what
    identifies it (absolute path or Hub id, revision, weights sha256, normalisation, width, rate, hop); the
    centroids are also written as ``.npy`` beside the model (``centroids.npy`` in a model folder,
    ``<name>.centroids.npy`` beside a file). An existing ``out`` is refused unless ``force``.

    Memory is bounded by ``max_frames`` feature frames (a uniform reservoir sample of all frames); the
    standardisation statistics use every frame. k-means++ seeds, then ``iters`` Lloyd iterations with
    chunked distances (:func:`vqaudio.quantize.ops.kmeans`). Unreadable audio is logged and skipped.

    Returns:
        the model and a summary (frames seen and used, inertia per frame, skipped utterances).
    """
    config.check()
    if max_frames < config.k:
        raise UserError(f"--max-frames must be at least --k ({config.k}), got {max_frames}")
    out = pathlib.Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass -f/--force to replace it")
    ssl = None
    if config.feature == "ssl":
        ssl = SSLFeatures(config.ssl_model, config.ssl_layer, config.ssl_revision, device=device)
        ref = ssl.reference
        config = replace(
            config,
            ssl_model=ref.model,
            ssl_revision=ref.revision,
            ssl_sha256=ref.sha256,
            ssl_normalize=ref.normalize,
            ssl_dim=ref.dim,
            sample_rate=ref.sample_rate,
            frame_rate=ref.sample_rate / ref.hop_length,
        ).check()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    utts = read_data_dir(data_dir)
    dim = config.dim
    reservoir = np.empty((max_frames, dim), dtype=np.float32)
    seen, total, total_sq, skipped = 0, np.zeros(dim), np.zeros(dim), []
    for u in tqdm(utts, desc="k-means features", unit="utt", disable=not progress):
        try:
            wav = load_audio(u.source, config.sample_rate, u.start, u.end, name=u.utt_id)
            feats = frame_features(wav, config, ssl)
        except AudioError as err:
            log.warning("skipping %s: %s", u.utt_id, err)
            skipped.append(u.utt_id)
            continue
        total += feats.sum(0)
        total_sq += np.square(feats, dtype=np.float64).sum(0)
        seen = _reservoir_add(reservoir, seen, feats, rng)
    if seen < config.k:
        raise UserError(f"{data_dir}: {seen} readable frames, fewer than k = {config.k}")
    if config.standardize:
        mean = total / seen
        std = np.sqrt(np.maximum(total_sq / seen - mean**2, 1e-8))
    else:
        mean, std = np.zeros(dim), np.ones(dim)
    x = (torch.from_numpy(reservoir[: min(seen, max_frames)]) - torch.from_numpy(mean).float()) / torch.from_numpy(
        std
    ).float()
    centroids, counts = kmeans(x, config.k, iters)
    assign = nearest_code(x, centroids)
    inertia = float((x - centroids[assign]).pow(2).sum(1).mean())
    model = KMeansUnitModel(config, centroids, mean, std, ssl=ssl).eval()
    model.save_pretrained(out, overwrite=force)
    if ssl is not None:
        model.export_centroids(out / "centroids.npy" if out.is_dir() else out.with_suffix(".centroids.npy"))
    summary = {
        "frames_seen": seen,
        "frames_used": int(x.shape[0]),
        "inertia_per_frame": inertia,
        "empty_clusters": int((counts == 0).sum()),
        "skipped_utterances": skipped,
    }
    log.info("k-means (%s, k=%d) on %d frames: %s", config.feature, config.k, x.shape[0], summary)
    return model, summary
