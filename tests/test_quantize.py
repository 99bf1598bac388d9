"""Behaviour of the quantizers: equations, gradients, round trips, state and bad input."""

from __future__ import annotations

import copy
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from vqaudio.errors import UserError
from vqaudio.quantize import FSQ, EMAVectorQuantizer, ResidualQuantizer, VectorQuantizer, ops

D, K = 8, 16

FACTORIES = {
    "vq": lambda: VectorQuantizer(D, K),
    "vq_cosine": lambda: VectorQuantizer(D, K, distance="cosine"),
    "vq_factorized": lambda: VectorQuantizer(D, K, codebook_dim=3),
    "vq_kmeans": lambda: VectorQuantizer(D, K, kmeans_init=True, dead_code_threshold=1.0),
    "ema": lambda: EMAVectorQuantizer(D, K),
    "ema_kmeans": lambda: EMAVectorQuantizer(D, K, kmeans_init=True, dead_code_threshold=1.0),
    "fsq": lambda: FSQ([4, 4], dim=D),
    "fsq_noproj": lambda: FSQ([5, 3, 4, 2, 2, 2, 2, 2]),
    "rvq": lambda: ResidualQuantizer.alike(3, lambda: VectorQuantizer(D, K)),
    "rvq_ema_dropout": lambda: ResidualQuantizer.alike(3, lambda: EMAVectorQuantizer(D, K), dropout=True),
    "rvq_fsq": lambda: ResidualQuantizer.alike(2, lambda: FSQ([4, 4], dim=D)),
    "rvq_mixed": lambda: ResidualQuantizer([VectorQuantizer(D, K), EMAVectorQuantizer(D, K), FSQ([4, 4], dim=D)]),
}


def latents(b=4, t=25, d=D):
    return torch.randn(b, d, t)


@pytest.mark.parametrize("name", FACTORIES)
def test_protocol_shapes_and_eval_decode_equals_quantized(name):
    q = FACTORIES[name]()
    z = latents()
    q.train()
    q(z)  # one training step (k-means init, EMA) before checking eval behaviour
    q.eval()
    out = q(z)
    assert out.quantized.shape == z.shape
    expected = (4, 25) if q.n_q == 1 else (4, q.n_q, 25)
    assert out.indices.shape == expected and out.indices.dtype == torch.int64
    assert torch.equal(q.decode(out.indices), out.quantized)
    assert torch.equal(q.encode(z), out.indices)
    assert set(out.metrics) >= {"perplexity", "usage"}
    assert 1.0 <= float(out.metrics["perplexity"]) <= q.codebook_size
    assert q.bits_per_frame == pytest.approx(q.n_q * math.log2(q.codebook_size))
    assert torch.allclose(out.loss, out.codebook + getattr(q, "beta", 0.0) * out.commitment) or q.n_q > 1


@pytest.mark.parametrize("name", FACTORIES)
def test_eval_mode_changes_no_buffer_or_parameter(name):
    q = FACTORIES[name]()
    q.eval()
    before = copy.deepcopy(q.state_dict())
    q(latents())
    q.encode(latents())
    for key, value in q.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", FACTORIES)
def test_state_dict_round_trip(name):
    q = FACTORIES[name]()
    q.train()
    for _ in range(3):
        q(latents())
    q.eval()
    fresh = FACTORIES[name]()
    fresh.load_state_dict(q.state_dict())
    fresh.eval()
    z = latents()
    assert torch.equal(fresh.encode(z), q.encode(z))
    assert torch.equal(fresh(z).quantized, q(z).quantized)


@pytest.mark.parametrize("make", [lambda: VectorQuantizer(D, K), lambda: EMAVectorQuantizer(D, K)])
def test_straight_through_gradient_equals_upstream(make):
    q = make().train()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    (q(z).quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


def test_codebook_loss_moves_only_codebook_and_commitment_only_encoder():
    q = VectorQuantizer(D, K).train()
    z = latents().requires_grad_(True)
    out = q(z)
    g_z, g_e = torch.autograd.grad(out.codebook, (z, q.codebook), allow_unused=True)
    assert g_z is None or torch.count_nonzero(g_z) == 0
    assert torch.count_nonzero(g_e) > 0
    out = q(z)
    g_z, g_e = torch.autograd.grad(out.commitment, (z, q.codebook), allow_unused=True)
    assert torch.count_nonzero(g_z) > 0
    assert g_e is None or torch.count_nonzero(g_e) == 0


def test_vq_losses_follow_the_equations():
    q = VectorQuantizer(D, K, beta=0.3).train()
    z = latents()
    out = q(z)
    e = q.codebook.detach()[out.indices]  # (B, T, D)
    zt = z.transpose(1, 2)
    sq = (zt - e).pow(2).mean()
    assert torch.allclose(out.commitment, sq) and torch.allclose(out.codebook, sq)
    assert torch.allclose(out.loss, sq + 0.3 * sq)
    # the chosen codes are the nearest ones
    dist = torch.cdist(zt.reshape(-1, D), q.codebook.detach())
    assert torch.equal(out.indices.reshape(-1), dist.argmin(1))


def test_one_ema_step_matches_hand_computation():
    torch.manual_seed(1)
    q = EMAVectorQuantizer(2, 3, decay=0.9, eps=0.1).train()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        q.embed_sum.copy_(q.codebook * 2.0)
        q.cluster_size.fill_(2.0)
    # 4 vectors: two near code 0, one near code 1, none near code 2
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0], [-1.0, -1.0]]).t()[None]  # (1, 2, 4)
    out = q(z)
    assert out.indices.tolist() == [[0, 0, 1, 0]]
    n_k = torch.tensor([3.0, 1.0, 0.0])
    s_k = torch.tensor([[0.0, 0.0], [9.0, 1.0], [0.0, 0.0]])
    N = 0.9 * 2.0 + 0.1 * n_k
    m = 0.9 * torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]]) + 0.1 * s_k
    n = N.sum()
    N_hat = (N + 0.1) / (n + 3 * 0.1) * n
    assert torch.allclose(q.cluster_size, N)
    assert torch.allclose(q.embed_sum, m)
    assert torch.allclose(q.codebook, m / N_hat[:, None])
    # quantized used the codebook from before the update; loss is beta * commitment only
    assert torch.allclose(out.codebook, torch.zeros(()))
    expected_commit = ((z[0].t() - torch.tensor([[0.0, 0], [0, 0], [10, 0], [0, 0]])) ** 2).mean()
    assert torch.allclose(out.loss, 0.25 * expected_commit)


def test_fsq_maps_are_exact_inverses_over_the_whole_codebook():
    for levels in ([8, 5, 5, 5], [7, 5, 5, 5, 5], [8, 6, 5], [2, 3]):
        q = FSQ(levels)
        all_idx = torch.arange(q.codebook_size)[None]  # (1, K)
        codes = q.indices_to_codes(all_idx)  # (1, C, K)
        assert torch.equal(q.codes_to_indices(codes), all_idx)
        assert torch.unique(codes[0].t(), dim=0).shape[0] == q.codebook_size
        assert float(codes.abs().max()) <= 1.0


def test_fsq_outputs_lie_on_the_grid_and_match_codes():
    q = FSQ([8, 5, 5, 5])
    z = torch.randn(3, 4, 50) * 5
    out = q(z)
    lv = torch.tensor([8, 5, 5, 5])[:, None]
    hw = (lv // 2).float()
    digits = out.quantized * hw + hw
    assert torch.allclose(digits, digits.round(), atol=1e-6)
    assert digits.min() >= 0 and (digits <= lv - 1).all()
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    assert q.codebook_size == 1000 and q.bits_per_frame == pytest.approx(math.log2(1000))


def test_fsq_zero_maps_to_zero_and_bound_is_monotonic():
    q = FSQ([8, 5])
    assert torch.equal(q(torch.zeros(1, 2, 1)).quantized, torch.zeros(1, 2, 1))
    x = torch.linspace(-6, 6, 200).expand(1, 2, 200)
    b = q.bound(x.contiguous())
    assert (b.diff(dim=-1) > 0).all()


def test_fsq_bf16_autocast_gives_float32_indices():
    q = FSQ([8, 8, 8, 5, 5, 5], dim=32)  # 64000 codes: bf16 cannot hold these indices
    z = torch.randn(4, 32, 100)
    ref = q.encode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        enc = q.encode(z)
    assert torch.equal(out.indices, ref) and torch.equal(enc, ref)
    assert out.indices.dtype == torch.int64 and out.quantized.dtype == torch.float32


def test_vq_distances_run_in_float32_under_autocast():
    q = VectorQuantizer(D, 256).eval()
    z = torch.randn(4, D, 100)
    ref = q.encode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q(z).indices, ref)


def test_fsq_gradient_flows_through_projections():
    q = FSQ([8, 5, 5, 5], dim=16)
    z = torch.randn(2, 16, 10, requires_grad=True)
    q(z).quantized.square().sum().backward()
    assert z.grad.abs().sum() > 0
    assert q.project_in.weight.grad.abs().sum() > 0 and q.project_out.weight.grad.abs().sum() > 0


def test_nearest_code_chunks_agree_with_brute_force(monkeypatch):
    monkeypatch.setattr(ops, "_MAX_DIST_ELEMENTS", 37)  # many uneven chunks
    x, e = torch.randn(101, 5), torch.randn(13, 5)
    assert torch.equal(ops.nearest_code(x, e), torch.cdist(x, e).argmin(1))
    xn, en = nn.functional.normalize(x, dim=1), nn.functional.normalize(e, dim=1)
    assert torch.equal(ops.nearest_code(xn, en, cosine=True), (xn @ en.t()).argmax(1))


def test_residual_error_does_not_grow_with_more_stages():
    rq = ResidualQuantizer.alike(6, lambda: EMAVectorQuantizer(D, 32, kmeans_init=True))
    data = torch.randn(16, D, 64)
    rq.train()
    for _ in range(20):
        rq(data)
    rq.eval()
    errors = [float((rq.decode(rq.encode(data, n_q=n)) - data).pow(2).mean()) for n in range(1, 7)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.5 * errors[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResidualQuantizer.alike(4, lambda: VectorQuantizer(D, K, codebook_dim=4)),
        lambda: ResidualQuantizer.alike(4, lambda: FSQ([4, 4], dim=D)),
        lambda: ResidualQuantizer([VectorQuantizer(D, K, codebook_dim=4), FSQ([4, 4], dim=D)], dropout=True),
    ],
)
def test_gradient_reaches_every_stage_of_a_residual_stack(make):
    rq = make().train()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    out = rq(z)
    ((out.quantized * upstream).sum() + out.loss).backward()
    for i, stage in enumerate(rq.stages):
        for name, p in stage.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"stage {i} {name} got no gradient"
    assert z.grad.abs().sum() > 0


def test_residual_straight_through_passes_upstream_gradient_once():
    rq = ResidualQuantizer.alike(4, lambda: VectorQuantizer(D, K)).train()
    z = latents().requires_grad_(True)
    upstream = torch.randn_like(z)
    (rq(z).quantized * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)


def test_residual_encode_n_q_and_decode_prefixes():
    rq = ResidualQuantizer.alike(4, lambda: VectorQuantizer(D, K)).eval()
    z = latents()
    full = rq.encode(z)
    assert full.shape == (4, 4, 25)
    assert torch.equal(rq.encode(z, n_q=2), full[:, :2])
    out2 = rq(z, n_q=2)
    assert torch.equal(rq.decode(full[:, :2]), out2.quantized)
    with pytest.raises(ValueError, match=r"n_q must lie in \[1, 4\], got 5"):
        rq.encode(z, n_q=5)


def test_quantizer_dropout_uses_fewer_stages_for_some_examples():
    torch.manual_seed(3)
    rq = ResidualQuantizer.alike(4, lambda: VectorQuantizer(D, K), dropout=True).train()
    z = latents(b=32)
    out = rq(z)
    full = rq.decode(out.indices)
    per_example_match = [
        [torch.allclose(out.quantized[b], rq.decode(out.indices[b : b + 1, :n])[0], atol=1e-6) for n in range(1, 5)]
        for b in range(32)
    ]
    assert all(any(row) for row in per_example_match)  # each example is some prefix of the stack
    kept = [row.index(True) + 1 for row in per_example_match]
    assert len(set(kept)) > 1 and max(kept) == 4
    rq.eval()
    assert torch.equal(rq(z).quantized, full)


def _depths(rq: ResidualQuantizer, z: torch.Tensor) -> list[int]:
    """How many stages each example of a training pass kept (the prefix its output equals)."""
    out = rq(z)
    return [
        next(
            n
            for n in range(1, rq.n_q + 1)
            if torch.allclose(out.quantized[b], rq.decode(out.indices[b : b + 1, :n])[0], atol=1e-6)
        )
        for b in range(z.shape[0])
    ]


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_dropout_fraction_spares_the_rest_of_the_batch(fraction):
    torch.manual_seed(4)
    rq = ResidualQuantizer.alike(4, lambda: VectorQuantizer(D, K), dropout=True, dropout_fraction=fraction).train()
    depths = _depths(rq, latents(b=256))
    full = sum(d == 4 for d in depths) / len(depths)
    # a dropped example keeps all 4 stages with probability 1/4: P(full) = (1 - f) + f / 4
    assert abs(full - ((1 - fraction) + fraction / 4)) < 0.1
    if fraction == 0.0:
        assert set(depths) == {4}
    else:
        assert set(depths) == {1, 2, 3, 4}


def test_dropout_fraction_out_of_range_is_refused():
    with pytest.raises(UserError, match="dropout_fraction must lie in"):
        ResidualQuantizer.alike(2, lambda: VectorQuantizer(D, K), dropout=True, dropout_fraction=1.5)


def test_dead_codes_come_back_after_restart():
    q = VectorQuantizer(2, 8, dead_code_threshold=0.5).train()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0]] + [[100.0 + i, 100.0] for i in range(7)]))  # 7 codes far from data
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    data = torch.randn(8, 2, 64)
    for _ in range(150):
        opt.zero_grad()
        q(data).loss.backward()
        opt.step()
    q.eval()
    assert float(q(data).metrics["usage"]) == 1.0


def test_ema_revived_code_resets_its_statistics():
    q = EMAVectorQuantizer(2, 4, dead_code_threshold=0.5).train()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1e3, 0.0], [0.0, 1e3], [1e3, 1e3]]))
        q.embed_sum.copy_(q.codebook.clone())
        q.cluster_size.fill_(1.0)
    data = torch.randn(1, 2, 100) * 0.1
    for _ in range(80):
        q(data)
    # every code sits among the data (none pulled back towards its old far-away EMA sum)
    assert float(q.codebook.abs().max()) < 1.0
    assert float(q(data).metrics["usage"]) == 1.0


def test_kmeans_init_runs_once_and_survives_state_dict_round_trip():
    q = VectorQuantizer(D, K, kmeans_init=True).train()
    assert not bool(q.initted)
    first = latents()
    q(first)
    assert bool(q.initted)
    assert float(torch.cdist(q.codebook.detach(), first.transpose(1, 2).reshape(-1, D)).min(1).values.max()) < 3.0
    fresh = VectorQuantizer(D, K, kmeans_init=True)
    fresh.load_state_dict(q.state_dict())
    assert bool(fresh.initted)
    fresh.train()
    fresh(latents() * 100)  # a k-means re-run would move the codes; a learned codebook only moves by optimizer
    assert torch.equal(fresh.codebook, q.codebook)


def _gmm(n_clusters=16, n=4096, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = int(math.sqrt(n_clusters))
    centers = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    centers = centers.float() * 2.0 - (side - 1)
    which = torch.randint(0, n_clusters, (n,), generator=g)
    return centers[which] + spread * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize(
    "make, encoder",
    [
        (lambda: VectorQuantizer(2, 16, kmeans_init=True), False),
        (lambda: VectorQuantizer(2, 16, dead_code_threshold=4.0), False),
        (lambda: VectorQuantizer(2, 16, distance="cosine", codebook_dim=2, dead_code_threshold=1.0), False),
        (lambda: EMAVectorQuantizer(2, 16, kmeans_init=True, dead_code_threshold=1.0), False),
        (lambda: FSQ([4, 4], dim=2), True),
        (lambda: ResidualQuantizer.alike(2, lambda: EMAVectorQuantizer(2, 16, kmeans_init=True)), False),
    ],
    ids=["vq_kmeans", "vq_restart", "vq_cosine", "ema", "fsq", "rvq"],
)
def test_quantizer_learns_a_gaussian_mixture(make, encoder):
    """Codes must cover > 90 % of a 16-component mixture and reconstruct it.

    VQ kinds learn their codebook on the data itself; FSQ's grid is fixed, so it learns through a linear
    encoder/decoder around it (its standard use).
    """
    q = make()
    enc, dec = (nn.Linear(2, 2), nn.Linear(2, 2)) if encoder else (nn.Identity(), nn.Identity())
    params = list(q.parameters()) + list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=0.02) if params else None  # EMA codebooks have no parameters
    data = _gmm()
    for _ in range(400):
        batch = data[torch.randint(0, len(data), (512,))]
        out = q(enc(batch).t()[None])  # (1, 2, N)
        if opt is not None:
            opt.zero_grad()
            ((dec(out.quantized[0].t()) - batch).pow(2).mean() + out.loss).backward()
            opt.step()
    q.eval()
    with torch.no_grad():
        out = q(enc(data).t()[None])
        mse = float((dec(out.quantized[0].t()) - data).pow(2).mean())
    usage = float(out.metrics["usage_q0" if q.n_q > 1 else "usage"])
    assert usage > 0.9, usage
    if not getattr(q, "cosine", False):  # cosine codes live on a circle: usage is the claim, not distortion
        assert mse < 0.5, mse


@pytest.mark.parametrize("name", ["vq", "ema", "fsq", "rvq"])
def test_bad_input_raises_value_error_naming_the_problem(name):
    q = FACTORIES[name]()
    with pytest.raises(ValueError, match=rf"expected {D} channels.*got 5"):
        q(torch.randn(2, 5, 10))
    with pytest.raises(ValueError, match=r"3 dims, got 2 dims"):
        q.encode(torch.randn(D, 10))
    bad = torch.randn(2, D, 10)
    bad[0, 0, 3] = float("nan")
    bad[1, 2, 4] = float("inf")
    with pytest.raises(ValueError, match=r"2 NaN/Inf"):
        q(bad)
    idx_shape = (2, 10) if q.n_q == 1 else (2, q.n_q, 10)
    too_big = torch.full(idx_shape, q.codebook_size)
    with pytest.raises(ValueError, match=rf"\[0, {q.codebook_size - 1}\].*got values in \[{q.codebook_size}"):
        q.decode(too_big)
    with pytest.raises(ValueError, match=r"got values in \[-1"):
        q.decode(torch.full(idx_shape, -1))
    with pytest.raises(ValueError, match=r"integer indices, got dtype torch.float32"):
        q.decode(torch.zeros(idx_shape))
    with pytest.raises(ValueError, match=r"expected indices of shape"):
        q.decode(torch.tensor(3) if q.n_q == 1 else torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_index_to_code_accepts_any_leading_shape(name):
    q = FACTORIES[name]().eval()
    shape = (2, 10) if q.n_q == 1 else (2, q.n_q, 10)
    idx = torch.randint(0, q.codebook_size, shape)
    batched = q.decode(idx)  # (2, D, 10)
    assert batched.shape == (2, D, 10)
    assert torch.equal(q.decode(idx[0]), batched[0])  # no batch: (D, 10)
    stacked = torch.stack([idx, idx.flip(0), idx])  # (3, 2, ..., 10)
    assert torch.equal(q.decode(stacked)[1], q.decode(idx.flip(0)))
    if q.n_q == 1:  # a flat list of codes, as users pass it: (N,) -> (D, N)
        flat = torch.arange(q.codebook_size)
        assert q.decode(flat).shape == (D, q.codebook_size)
        assert torch.equal(q.decode(flat)[:, idx[0, 3]], batched[0, :, 3])


def test_fsq_indices_to_codes_takes_flat_lists_and_inverts_exactly():
    fsq = FSQ([8, 5, 5, 5])
    codes = fsq.indices_to_codes(torch.arange(1000))  # raised IndexError before
    assert codes.shape == (4, 1000)
    assert torch.equal(fsq.codes_to_indices(codes), torch.arange(1000))
    grid = fsq.indices_to_codes(torch.arange(1000).view(2, 5, 100))
    assert grid.shape == (2, 5, 4, 100) and torch.equal(grid[1, 2], codes[:, 700:800])
    assert torch.equal(fsq.codes_to_indices(grid), torch.arange(1000).view(2, 5, 100))
    with pytest.raises(ValueError, match=r"codes of shape \(\.\.\., 4, T\)"):
        fsq.codes_to_indices(torch.zeros(3, 100))


def test_large_finite_values_are_not_mistaken_for_nan():
    q = VectorQuantizer(D, K).eval()
    z = torch.full((2, D, 10), 3e38)  # the sum overflows to inf, every value is finite
    assert q.encode(z).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=8, codebook_size=1), "codebook_size must be >= 2"),
        (dict(dim=8, codebook_size=16, distance="manhattan"), "distance must be one of"),
        (dict(dim=0, codebook_size=16), "dim must be >= 1"),
        (dict(dim=8, codebook_size=16, dead_code_threshold=-1), "dead_code_threshold must be >= 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**kwargs)


def test_bad_constructor_arguments_other_quantizers():
    with pytest.raises(ValueError, match="decay must lie in"):
        EMAVectorQuantizer(8, 16, decay=1.0)
    with pytest.raises(ValueError, match="levels must be a non-empty list of integers >= 2"):
        FSQ([8, 1])
    with pytest.raises(ValueError, match="share dim"):
        ResidualQuantizer([VectorQuantizer(8, 16), VectorQuantizer(4, 16)])
    with pytest.raises(ValueError, match="share codebook_size"):
        ResidualQuantizer([VectorQuantizer(8, 16), VectorQuantizer(8, 32)])
    with pytest.raises(ValueError, match="at least one quantizer"):
        ResidualQuantizer([])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial codebook on every rank
    q = EMAVectorQuantizer(4, 8, kmeans_init=True, dead_code_threshold=2.0).train()
    torch.manual_seed(100 + rank)  # different data on every rank
    for _ in range(5):
        q(torch.randn(2, 4, 30) + rank)
    results[rank] = {k: v.clone() for k, v in q.state_dict().items()}
    dist.destroy_process_group()


def test_ema_codebooks_stay_identical_across_ddp_ranks():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    a, b = results[0], results[1]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_kmeans_plus_plus_finds_every_separated_cluster():
    data = _gmm(n_clusters=64, n=8192, spread=0.01, seed=2)
    for seed in range(3):
        torch.manual_seed(seed)
        centroids, counts = ops.kmeans(data, 64, iters=5)
        assert int((counts > 0).sum()) == 64
        assert float(torch.cdist(data, centroids).min(1).values.max()) < 0.1
