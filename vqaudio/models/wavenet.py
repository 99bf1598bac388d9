"""WaveNet-style autoregressive prior over units (van den Oord et al. 2016), with fast incremental sampling.

Residual levels: per-level output heads. Every level of frame t is predicted from all frames < t, and the
levels of one frame are conditionally independent given the past. A delay pattern (MusicGen) would also
model the levels of a frame jointly, at the cost of Q - 1 frames of extra latency and a longer sequence.
Per-level heads keep one step per frame, which is what makes sampling cheap.

Incremental generation keeps, for every layer, a queue of its last ``dilation`` inputs, so one step
costs O(layers) rather than O(receptive field) (Fast WaveNet, Paine et al. 2016).
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import check_state, load_model, save_model
from ..config import from_dict, to_dict
from ..errors import UserError


@dataclass
class WaveNetConfig:
    """Architecture of the prior. ``codebook_size`` and ``n_q`` come from the units it models, and
    ``speakers`` from their speakers, so training configs leave them unset.

    Attributes:
        codebook_size: K units per level.
        n_q: residual levels Q modelled per frame (read from ``num_levels`` in files before the rename).
        residual_channels, skip_channels: widths of the residual and skip paths.
        layers: dilated layers; dilations cycle 1, 2, 4, ... 2**(dilation_cycle - 1).
        dilation_cycle: layers per dilation cycle.
        num_speakers: > 0 enables global conditioning on a speaker id (0 .. num_speakers - 1).
        speaker_dim: size of the speaker embedding.
        speakers: speaker names by id (``speakers[i]`` is id i), when conditioned on speakers.
        unit_model: the checksum of the model that made the training units (their ``units.json``), so
            ``sample`` can refuse another codec; ``None`` when unknown.
    """

    RENAMED: ClassVar[dict[str, str]] = {"num_levels": "n_q"}

    codebook_size: int | None = None
    n_q: int | None = None
    residual_channels: int = 128
    skip_channels: int = 256
    layers: int = 20
    dilation_cycle: int = 10
    num_speakers: int = 0
    speaker_dim: int = 64
    speakers: list[str] = field(default_factory=list)
    unit_model: str | None = None


class _Layer(nn.Module):
    """Causal dilated conv (kernel 2) -> tanh * sigmoid gate -> 1x1 residual and 1x1 skip."""

    def __init__(self, channels: int, skip: int, dilation: int, cond_dim: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, 2 * channels, 2, dilation=dilation)
        self.cond = nn.Linear(cond_dim, 2 * channels) if cond_dim else None
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip, 1)

    def gate(self, h: Tensor, cond: Tensor | None) -> Tensor:
        if cond is not None:
            h = h + self.cond(cond)[:, :, None]
        a, b = h.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        g = self.gate(self.conv(F.pad(x, (self.dilation, 0))), cond)
        return (x + self.res(g)) * math.sqrt(0.5), self.skip(g)

    def fused(self, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Weights for one incremental step: ``[past, x] @ w_in + b_in`` gives both conv taps at once (the
        speaker term folded into ``b_in``, (B, 2C)), ``g @ w_out + b_out`` the residual and skip 1x1s."""
        w = self.conv.weight  # (2C, C, 2): tap 0 sees t - dilation, tap 1 sees t
        w_in = torch.cat([w[:, :, 0], w[:, :, 1]], dim=1).t().contiguous()  # (2C, 2C)
        b_in = self.conv.bias[None]
        if cond is not None:
            b_in = b_in + self.cond(cond)
        w_out = torch.cat([self.res.weight[:, :, 0], self.skip.weight[:, :, 0]], dim=0).t().contiguous()
        return w_in, b_in, w_out, torch.cat([self.res.bias, self.skip.bias])


class WaveNetPrior(nn.Module):
    """Autoregressive prior over unit sequences ``(B, Q, T)``.

    Args:
        config: the architecture (see :class:`WaveNetConfig`; ``codebook_size`` and ``n_q`` required).
        **overrides: fields of ``config`` to replace, e.g. ``WaveNetPrior(codebook_size=16, n_q=2)``.
    """

    def __init__(self, config: WaveNetConfig | None = None, **overrides) -> None:
        super().__init__()
        config = replace(config or WaveNetConfig(), **overrides)
        if config.n_q is None:
            config.n_q = 1
        if config.codebook_size is None:
            raise UserError("the prior needs codebook_size (the units' codebook size)")
        for name in ("codebook_size", "n_q", "layers", "dilation_cycle", "residual_channels", "skip_channels"):
            if getattr(config, name) < 1:
                raise UserError(f"prior config: {name} must be >= 1, got {getattr(config, name)}")
        if config.num_speakers < 0 or (config.speakers and len(config.speakers) != config.num_speakers):
            raise UserError(
                f"prior config: num_speakers={config.num_speakers} must be >= 0 and match the "
                f"{len(config.speakers)} speaker names given"
            )
        self.config = config
        self.codebook_size, self.n_q = config.codebook_size, config.n_q
        c, skip_channels = config.residual_channels, config.skip_channels
        self.embed = nn.ModuleList(nn.Embedding(self.codebook_size, c) for _ in range(self.n_q))
        self.start = nn.Parameter(torch.zeros(c))  # input at t = 0, before any frame
        self.speaker = nn.Embedding(config.num_speakers, config.speaker_dim) if config.num_speakers > 0 else None
        cond_dim = config.speaker_dim if config.num_speakers > 0 else 0
        self.dilations = [2 ** (i % config.dilation_cycle) for i in range(config.layers)]
        self.layers = nn.ModuleList(_Layer(c, skip_channels, d, cond_dim) for d in self.dilations)
        self.out1 = nn.Conv1d(skip_channels, skip_channels, 1)
        self.out2 = nn.Conv1d(skip_channels, self.n_q * self.codebook_size, 1)

    @classmethod
    def from_config(cls, config: WaveNetConfig | dict) -> WaveNetPrior:
        """A prior from a :class:`WaveNetConfig` or a plain dict of its fields."""
        if isinstance(config, dict):
            config = from_dict(WaveNetConfig, config, where="prior config")
        return cls(config)

    def speaker_id(self, name: str) -> int:
        """The id of a speaker the prior was trained on, by name."""
        if name not in self.config.speakers:
            known = ", ".join(self.config.speakers[:10]) or "none: the prior is not conditioned on speakers"
            raise UserError(f"unknown speaker {name!r}; this prior knows {known}")
        return self.config.speakers.index(name)

    @property
    def receptive_field(self) -> int:
        """Frames of context one prediction sees (the conv stack's field; the input is shifted by one)."""
        return sum(self.dilations) + 1

    def _check(self, tokens: Tensor, speakers: Tensor | None) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[1] != self.n_q:
            raise ValueError(f"expected tokens of shape (B, {self.n_q}, T), got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ValueError(
                f"tokens must lie in [0, {self.codebook_size - 1}], got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        if (speakers is None) != (self.speaker is None):
            raise ValueError("pass speakers exactly when the prior was built with num_speakers > 0")
        return tokens

    def _cond(self, speakers: Tensor | None) -> Tensor | None:
        return None if speakers is None else self.speaker(speakers)

    def _embed(self, tokens: Tensor) -> Tensor:
        """(B, Q, T) -> (B, C, T), the sum of the levels' embeddings."""
        return sum(emb(tokens[:, q]) for q, emb in enumerate(self.embed)).transpose(1, 2)

    def _head(self, skip: Tensor) -> Tensor:
        """(B, S, T) -> (B, Q, K, T)."""
        h = self.out2(F.relu(self.out1(F.relu(skip))))
        return h.view(h.shape[0], self.n_q, self.codebook_size, h.shape[-1])

    def forward(self, tokens: Tensor, speakers: Tensor | None = None) -> Tensor:
        """Logits for every frame from the frames before it.

        Args:
            tokens: ``(B, Q, T)`` int64 units.
            speakers: ``(B,)`` speaker ids when built with ``num_speakers > 0``.

        Returns:
            ``(B, Q, K, T)``; ``[..., t]`` predicts frame t.
        """
        tokens = self._check(tokens, speakers)
        x = self._embed(tokens)
        start = self.start[None, :, None].expand(x.shape[0], -1, 1)
        x = torch.cat([start, x[:, :, :-1]], dim=2)  # shift right: position t sees frames < t
        cond = self._cond(speakers)
        skip = 0
        for layer in self.layers:
            x, s = layer(x, cond)
            skip = skip + s
        return self._head(skip)

    def init_state(self, batch: int) -> list[Tensor]:
        """Empty per-layer input queues ``(dilation, B, C)`` of zeros (the causal padding)."""
        p = self.start
        return [p.new_zeros(d, batch, p.shape[0]) for d in self.dilations]

    def prepare_steps(self, speakers: Tensor | None = None) -> list:
        """Per-layer fused weights and the head's, computed once per generation (see :meth:`step`)."""
        cond = self._cond(speakers)
        head = (
            self.out1.weight[:, :, 0].t().contiguous(),
            self.out1.bias,
            self.out2.weight[:, :, 0].t().contiguous(),
            self.out2.bias,
        )
        return [[layer.fused(cond) for layer in self.layers], head]

    def step(self, x: Tensor, state: list[Tensor], t: int, weights: list) -> Tensor:
        """Logits ``(B, Q, K)`` for frame ``t`` given its input vector ``x`` (B, C) (the previous frame's
        embedding, or ``start``); updates the queues in ``state``. O(layers), not O(receptive field)."""
        layers, (w1, b1, w2, b2) = weights
        c = x.shape[1]
        skip = None
        for (w_in, b_in, w_out, b_out), queue, d in zip(layers, state, self.dilations, strict=True):
            slot = t % d
            h = torch.addmm(b_in, torch.cat([queue[slot], x], dim=1), w_in)
            queue[slot] = x
            a, b = h.chunk(2, dim=1)
            rs = torch.addmm(b_out, torch.tanh(a) * torch.sigmoid(b), w_out)
            x = (x + rs[:, :c]) * math.sqrt(0.5)
            skip = rs[:, c:] if skip is None else skip + rs[:, c:]
        logits = torch.addmm(b2, torch.relu(torch.addmm(b1, torch.relu(skip), w1)), w2)
        return logits.view(x.shape[0], self.n_q, self.codebook_size)

    @torch.no_grad()
    def generate(
        self,
        batch: int,
        steps: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        prompt: Tensor | None = None,
        speakers: Tensor | None = None,
    ) -> Tensor:
        """Sample ``steps`` new frames incrementally (O(layers) per step).

        Args:
            batch: sequences to sample (the prompt's batch when given).
            steps: frames to generate after the prompt.
            temperature: softmax temperature (> 0).
            top_k: keep only the k most likely units.
            top_p: nucleus sampling: keep the smallest set of units with probability >= top_p.
            seed: makes sampling reproducible.
            prompt: ``(B, Q, T0)`` units to continue.
            speakers: ``(B,)`` speaker ids for a conditioned prior.

        Returns:
            ``(B, Q, T0 + steps)`` int64, prompt included.
        """
        if not temperature > 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.codebook_size:
            raise UserError(f"top_k must lie in [1, {self.codebook_size}], got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise UserError(f"top_p must lie in (0, 1], got {top_p}")
        device = self.start.device
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ())))
        if prompt is not None:
            prompt = self._check(prompt.to(device), speakers)
            batch = prompt.shape[0]
        else:
            prompt = torch.zeros(batch, self.n_q, 0, dtype=torch.long, device=device)
            self._check(prompt, speakers)
        weights = self.prepare_steps(speakers.to(device) if speakers is not None else None)
        state = self.init_state(batch)
        out = [prompt[:, :, t] for t in range(prompt.shape[2])]
        x = self.start[None].expand(batch, -1)
        logits = None
        for t in range(prompt.shape[2] + steps):
            logits = self.step(x, state, t, weights)
            if t < prompt.shape[2]:
                frame = prompt[:, :, t]
            else:
                frame = self._sample(logits, temperature, top_k, top_p, gen)
                out.append(frame)
            x = self._embed(frame[:, :, None])[:, :, 0]
        return torch.stack(out, dim=2) if out else prompt

    @staticmethod
    def _sample(
        logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, gen: torch.Generator
    ) -> Tensor:
        """(B, Q, K) logits -> (B, Q) sampled units."""
        logits = logits.float() / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the first unit that crosses top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        probs = logits.softmax(-1)
        b, q, k = probs.shape
        return torch.multinomial(probs.view(b * q, k), 1, generator=gen).view(b, q)

    def save_pretrained(self, path: str | pathlib.Path, overwrite: bool = False) -> pathlib.Path:
        """Write a model folder (``config.json`` + ``model.safetensors``), or one ``.pt`` file when ``path`` ends
        in ``.pt``; each file atomically (see :mod:`vqaudio.checkpoint`). A model already at ``path`` is
        refused unless ``overwrite``."""
        return save_model(path, "wavenet-prior", to_dict(self.config), self, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> WaveNetPrior:
        """Load a model folder, a ``.pt`` file (``weights_only=True``) or, with ``huggingface_hub`` installed, a
        Hub id; no pickled code runs, and files of earlier format versions load too."""
        config, state = load_model(path, "wavenet-prior", map_location)
        try:
            model = cls.from_config(config)
            check_state(model, state)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        model.load_state_dict(state)
        return model.eval()
