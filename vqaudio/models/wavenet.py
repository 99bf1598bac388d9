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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class WaveNetConfig:
    codebook_size: int = 1024
    num_levels: int = 1
    residual_channels: int = 128
    skip_channels: int = 256
    layers: int = 20
    dilation_cycle: int = 10
    num_speakers: int = 0
    speaker_dim: int = 64


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
    """Autoregressive prior over unit sequences.

    Args:
        codebook_size: K units per level.
        num_levels: Q residual levels (1 for plain units).
        residual_channels, skip_channels: widths of the residual and skip paths.
        layers: dilated layers; dilations cycle 1, 2, 4, ... 2**(dilation_cycle - 1).
        dilation_cycle: layers per dilation cycle.
        num_speakers: > 0 enables global conditioning on a speaker id.
        speaker_dim: size of the speaker embedding.
    """

    def __init__(
        self,
        codebook_size: int,
        num_levels: int = 1,
        residual_channels: int = 128,
        skip_channels: int = 256,
        layers: int = 20,
        dilation_cycle: int = 10,
        num_speakers: int = 0,
        speaker_dim: int = 64,
    ) -> None:
        super().__init__()
        for name, value in (
            ("codebook_size", codebook_size),
            ("num_levels", num_levels),
            ("layers", layers),
            ("dilation_cycle", dilation_cycle),
            ("residual_channels", residual_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.config = WaveNetConfig(
            codebook_size,
            num_levels,
            residual_channels,
            skip_channels,
            layers,
            dilation_cycle,
            num_speakers,
            speaker_dim,
        )
        self.codebook_size, self.num_levels = codebook_size, num_levels
        c = residual_channels
        self.embed = nn.ModuleList(nn.Embedding(codebook_size, c) for _ in range(num_levels))
        self.start = nn.Parameter(torch.zeros(c))  # input at t = 0, before any frame
        self.speaker = nn.Embedding(num_speakers, speaker_dim) if num_speakers > 0 else None
        cond_dim = speaker_dim if num_speakers > 0 else 0
        self.dilations = [2 ** (i % dilation_cycle) for i in range(layers)]
        self.layers = nn.ModuleList(_Layer(c, skip_channels, d, cond_dim) for d in self.dilations)
        self.out1 = nn.Conv1d(skip_channels, skip_channels, 1)
        self.out2 = nn.Conv1d(skip_channels, num_levels * codebook_size, 1)

    @property
    def receptive_field(self) -> int:
        """Frames of context one prediction sees (the conv stack's field; the input is shifted by one)."""
        return sum(self.dilations) + 1

    def _check(self, tokens: Tensor, speakers: Tensor | None) -> Tensor:
        if tokens.ndim == 2 and self.num_levels == 1:
            tokens = tokens[:, None]
        if tokens.ndim != 3 or tokens.shape[1] != self.num_levels:
            shape = "(B, T)" if self.num_levels == 1 else f"(B, {self.num_levels}, T)"
            raise ValueError(f"expected tokens of shape {shape}, got {tuple(tokens.shape)}")
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
        return h.view(h.shape[0], self.num_levels, self.codebook_size, h.shape[-1])

    def forward(self, tokens: Tensor, speakers: Tensor | None = None) -> Tensor:
        """Logits for every frame from the frames before it.

        Args:
            tokens: ``(B, T)`` (one level) or ``(B, Q, T)`` int64 units.
            speakers: ``(B,)`` speaker ids when built with ``num_speakers > 0``.

        Returns:
            ``(B, K, T)`` for one level, ``(B, Q, K, T)`` for Q levels; ``[..., t]`` predicts frame t.
        """
        one_level = tokens.ndim == 2
        tokens = self._check(tokens, speakers)
        x = self._embed(tokens)
        start = self.start[None, :, None].expand(x.shape[0], -1, 1)
        x = torch.cat([start, x[:, :, :-1]], dim=2)  # shift right: position t sees frames < t
        cond = self._cond(speakers)
        skip = 0
        for layer in self.layers:
            x, s = layer(x, cond)
            skip = skip + s
        logits = self._head(skip)
        return logits[:, 0] if one_level and self.num_levels == 1 else logits

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
        return logits.view(x.shape[0], self.num_levels, self.codebook_size)

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
            prompt: ``(B, T0)`` or ``(B, Q, T0)`` units to continue.
            speakers: ``(B,)`` speaker ids for a conditioned prior.

        Returns:
            ``(B, T0 + steps)`` or ``(B, Q, T0 + steps)`` int64, prompt included.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.codebook_size:
            raise ValueError(f"top_k must lie in [1, {self.codebook_size}], got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        device = self.start.device
        gen = torch.Generator(device=device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ())))
        if prompt is not None:
            prompt = self._check(prompt.to(device), speakers)
            batch = prompt.shape[0]
        else:
            prompt = torch.zeros(batch, self.num_levels, 0, dtype=torch.long, device=device)
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
        result = torch.stack(out, dim=2) if out else prompt
        return result[:, 0] if self.num_levels == 1 else result

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

    def save_pretrained(self, path) -> None:
        import pathlib
        from dataclasses import asdict

        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "format": "vqaudio-wavenet-prior",
                "version": 1,
                "config": asdict(self.config),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            },
            tmp,
        )
        tmp.replace(path)

    @classmethod
    def from_pretrained(cls, path, map_location="cpu") -> WaveNetPrior:
        """Load with ``weights_only=True`` (no pickled code runs)."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "vqaudio-wavenet-prior":
            raise ValueError(f"{path}: not a vqaudio WaveNet prior file")
        model = cls(**payload["config"])
        model.load_state_dict(payload["state_dict"])
        return model.eval()
