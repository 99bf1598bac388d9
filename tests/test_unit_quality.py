"""Unit quality (PNMI, ABX, the CTC probe), k-means unit models, and the codec's content objectives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.units import UnitsInfo, read_info, read_levels, write_info, write_units
from vqaudio.units.abx import Item, abx_error, dtw_batch
from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel, frame_features, train_kmeans
from vqaudio.units.probe import edit_distance, probe_per
from vqaudio.units.quality import evaluate_units, frame_phones, read_ctm

from .speech import SR, synth_utterance

PHONES = ["AA", "B", "K", "D", "IY", "S"]


def _dtw_reference(dist: np.ndarray) -> float:
    """Plain DTW with the path length carried along, ties to the diagonal: the definition, cell by cell."""
    la, lb = dist.shape
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for i in range(la):
        for j in range(lb):
            if i == j == 0:
                best[i, j] = (dist[0, 0], 1)
                continue
            prev = [best[p] for p in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if p in best]
            cost, length = min(prev, key=lambda c: c[0])  # min keeps the first (diagonal) on ties
            best[i, j] = (cost + dist[i, j], length + 1)
    cost, length = best[la - 1, lb - 1]
    return cost / length


def test_batched_dtw_equals_the_definition():
    rng = np.random.default_rng(0)
    for la, lb in ((1, 1), (1, 4), (3, 2), (5, 7)):
        dist = rng.random((6, la, lb)).round(1)  # rounding makes ties, which must break the same way
        expected = [_dtw_reference(d) for d in dist]
        assert np.allclose(dtw_batch(dist), expected)


def _items(phones_by_speaker: dict[str, list[str]], context=("SIL", "SIL")) -> list[Item]:
    return [
        Item(f"{spk}-u{n}", 0.0, 0.1, p, *context, spk)
        for spk, phones in phones_by_speaker.items()
        for n, p in enumerate(phones)
    ]


def test_abx_hand_computed_case():
    # A1 = [1, 1], A2 = [1, 2], B = [1, 1]: d(A1, A2) = d(A2, B) = (0 + 0.5) / 2, d(A1, B) = 0.
    # X = A1: A2 is farther than B -> 0; X = A2: a tie -> 0.5; no second B, so (b, a) has no triplet.
    items = _items({"s": ["a", "a", "b"]})
    frames = [np.array([1, 1]), np.array([1, 2]), np.array([1, 1])]
    error, triplets = abx_error(items, frames, "within")
    assert triplets == 2 and error == pytest.approx(75.0)


def test_abx_of_perfect_and_of_random_features():
    rng = np.random.default_rng(1)
    phones = {s: [p for p in PHONES for _ in range(4)] for s in ("s1", "s2")}
    items = _items(phones)
    perfect = [np.tile(np.eye(len(PHONES))[PHONES.index(it.phone)], (3, 1)) for it in items]
    noise = [rng.normal(size=(3, 8)) for _ in items]
    for mode in ("within", "across", "any"):
        assert abx_error(items, perfect, mode)[0] == 0.0
        error, triplets = abx_error(items, noise, mode)
        assert triplets > 1000 and 40.0 < error < 60.0, (mode, error)
    units = [np.full(3, PHONES.index(it.phone)) for it in items]  # units that are the phones
    assert abx_error(items, units, "within")[0] == 0.0
    with pytest.raises(ValueError, match="mode"):
        abx_error(items, units, "sideways")


def _synthetic_units(tmp_path, frame_rate=50.0, noisy=False):
    """A units dir whose level 0 is the phone of each frame (or noise), and its CTM."""
    rng, noise = np.random.default_rng(0), np.random.default_rng(1)  # the same phones whatever the units
    ctm_lines, units, level1 = [], {}, {}
    for spk in ("1001", "1002", "1003", "1004", "1005"):
        for n in range(4):
            utt, t, seq = f"{spk}-1-{n:04d}", 0.1, []  # times on the CTM's 10 ms grid
            while t < 2.5:
                phone = PHONES[int(rng.integers(len(PHONES)))]
                dur = round(float(rng.uniform(0.06, 0.16)), 2)
                ctm_lines.append(f"{utt} 1 {t:.2f} {dur:.2f} {phone}")
                seq.append((t, round(t + dur, 6), phone))
                t = round(t + dur, 2)
            frames = int(2.8 * frame_rate)
            labels = frame_phones(seq, frames, frame_rate)
            ids = [PHONES.index(p) + 1 if p in PHONES else 0 for p in labels]
            units[utt] = [int(noise.integers(7)) for _ in ids] if noisy else ids
            level1[utt] = [int(noise.integers(7)) for _ in ids]
    units["1006-1-0000"] = level1["1006-1-0000"] = [1, 2, 3]  # units without alignments: counted, skipped
    out = tmp_path / ("noisy" if noisy else "units")
    write_units(out / "units", units)
    write_units(out / "units.level1", level1)
    write_info(out, UnitsInfo("abc", 16000, frame_rate, 7, 2, False, len(units), 0))
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("\n".join(["0000-0-0000 1 0.00 0.10 SIL", *ctm_lines]) + "\n")  # an utterance with no units
    return out, ctm


def test_evaluate_units_scores_units_that_are_the_phones(tmp_path):
    units, ctm = _synthetic_units(tmp_path)
    summary = evaluate_units(units, ctm, tmp_path / "q")
    assert summary["pnmi"] == pytest.approx(1.0) and summary["phone_purity"] == pytest.approx(1.0)
    assert summary["abx_within"] == 0.0 and summary["abx_across"] == 0.0 and summary["abx_phone_any_context"] == 0.0
    assert summary["num_utterances"] == 20 and summary["num_speakers"] == 5 and summary["num_abx_triplets"] > 0
    assert summary["num_skipped_no_alignment"] == 1
    noisy, _ = _synthetic_units(tmp_path, noisy=True)
    worse = evaluate_units(noisy, ctm, tmp_path / "qn", level=0)
    assert worse["pnmi"] < 0.1 and worse["abx_within"] > 35.0
    level1 = evaluate_units(units, ctm, tmp_path / "q1", level=1)
    assert level1["pnmi"] < 0.1
    saved = json.loads((tmp_path / "q" / "unit_quality.json").read_text())
    assert set(saved) >= {"pnmi", "phone_purity", "cluster_purity", "abx_within", "abx_across", "num_frames"}
    item_lines = (tmp_path / "q" / "abx.item").read_text().splitlines()
    assert item_lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
    assert len(item_lines) - 1 == summary["num_abx_items"] and len(item_lines[1].split()) == 7
    assert (tmp_path / "q" / "phone_unit_heatmap.png").stat().st_size > 1000
    assert "| PNMI (higher is better) | 1.000 |" in (tmp_path / "q" / "RESULTS.md").read_text()


def test_evaluate_units_bad_input(tmp_path):
    units, ctm = _synthetic_units(tmp_path)
    bad = tmp_path / "bad.ctm"
    bad.write_text("1001-1-0000 1 0.00 0.10 AA\n1001-1-0000 1 zero 0.10 B\n")
    with pytest.raises(UserError, match=r"bad.ctm:2: expected 'utt channel start dur phone'"):
        evaluate_units(units, bad, tmp_path / "o")
    other = tmp_path / "other.ctm"
    other.write_text("9-9-9 1 0.00 0.10 AA\n")
    with pytest.raises(UserError, match="no utterance of .* is in"):
        evaluate_units(units, other, tmp_path / "o")
    slow = tmp_path / "slow"  # the same units under another frame rate
    write_units(slow / "units", {u: c[0] for u, c in read_levels(units, 1).items()})
    write_info(slow, UnitsInfo("abc", 16000, 25.0, 7, 1, False, 20, 0))
    for wrong in (25.0, 200.0):  # units twice as long as the speech, or ending long before it
        write_info(slow, UnitsInfo("abc", 16000, wrong, 7, 1, False, 20, 0))
        with pytest.raises(UserError, match=f"frame rate {wrong:g} Hz does not fit the alignments"):
            evaluate_units(slow, ctm, tmp_path / "o")
    write_info(slow, UnitsInfo("abc", 16000, 50.0, 7, 1, True, 20, 0))
    with pytest.raises(UserError, match="deduplicated"):
        evaluate_units(slow, ctm, tmp_path / "o")
    assert main(["evaluate-units", "--units", str(units), "--alignments", str(bad), "--out", str(tmp_path / "c")]) == 2


def test_probe_learns_units_that_are_the_phones_and_not_noise(tmp_path):
    units, ctm_path = _synthetic_units(tmp_path)
    noisy, _ = _synthetic_units(tmp_path, noisy=True)
    ctm = read_ctm(ctm_path)
    good = {u: c[0] for u, c in read_levels(units, 1).items() if u in ctm}
    bad = {u: c[0] for u, c in read_levels(noisy, 1).items() if u in ctm}
    train = [u for u in good if not u.startswith("1005")]
    test = [u for u in good if u.startswith("1005")]
    per_good = probe_per({u: good[u] for u in train}, {u: good[u] for u in test}, ctm, 7, steps=150)["probe_per"]
    per_bad = probe_per({u: bad[u] for u in train}, {u: bad[u] for u in test}, ctm, 7, steps=150)["probe_per"]
    assert per_good < 35.0 < per_bad, (per_good, per_bad)
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 4]) == 2


def test_kmeans_unit_model_frames_round_trip_and_extraction(tmp_path):
    wav = synth_utterance(2.0, seed=3)
    for n in (1, 319, 320, 321, wav.shape[0]):
        assert frame_features(wav[:n], KMeansConfig()).shape == (math.ceil(n / 320), 39)
    assert frame_features(wav, KMeansConfig(feature="logmel")).shape == (math.ceil(wav.shape[0] / 320), 40)
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for n in range(3):
        path = tmp_path / f"u{n}.wav"
        sf.write(path, wav[n * 4000 :], SR)
        rows.append(f"s-1-{n} {path}\n")
    (data / "wav.scp").write_text("".join(rows))
    _, small = train_kmeans(data, tmp_path / "km.pt", KMeansConfig(k=8), iters=5, max_frames=100, progress=False)
    assert small["frames_used"] == 100 and small["frames_seen"] > 100  # bounded by the reservoir
    with pytest.raises(UserError, match="km.pt exists; pass -f/--force"):
        train_kmeans(data, tmp_path / "km.pt", KMeansConfig(k=8), iters=5, progress=False)
    model, summary = train_kmeans(data, tmp_path / "km.pt", KMeansConfig(k=8), iters=5, progress=False, force=True)
    assert summary["frames_seen"] == sum(math.ceil((wav.shape[0] - n * 4000) / 320) for n in range(3))
    loaded = KMeansUnitModel.from_pretrained(tmp_path / "km.pt")
    x = torch.from_numpy(wav)[None, None]
    assert torch.equal(loaded.encode(x), model.encode(x)) and loaded.encode(x).shape == (1, 1, math.ceil(2.0 * 50))
    with pytest.raises(UserError, match="expected a vqaudio codec file, this is a vqaudio kmeans file"):
        from vqaudio.models import Codec

        Codec.from_pretrained(tmp_path / "km.pt")
    assert (
        main(["extract-units", "--model", str(tmp_path / "km.pt"), "--data", str(data), "--out", str(tmp_path / "u")])
        == 0
    )
    info = read_info(tmp_path / "u")
    assert info.codebook_size == 8 and info.n_q == 1 and info.frame_rate == 50.0
    levels = read_levels(tmp_path / "u")
    assert levels["s-1-1"][0] == loaded.encode_file(tmp_path / "u1.wav")[0].tolist()
    with pytest.raises(UserError, match="whole number of samples"):
        KMeansConfig(frame_rate=48.0).check()
    for bad, match in [
        ({"frame_rate": 0.0}, "--frame-rate must be > 0"),
        ({"sample_rate": 0}, "--sample-rate must be >= 1"),
        ({"feature": "logmel", "n_mels": 0}, "--n-mels must be >= 1"),
        ({"feature": "ssl"}, "--feature ssl needs --ssl-model"),
    ]:
        with pytest.raises(UserError, match=match):
            KMeansConfig(**bad).check()


def test_kmeans_cmvn_and_spliced_context_features():
    wav = synth_utterance(2.0, seed=5)
    plain = frame_features(wav, KMeansConfig(deltas=False))
    assert plain.shape[1] == 13 == KMeansConfig(deltas=False).dim
    normed = frame_features(wav, KMeansConfig(deltas=False, cmvn=True))
    np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed.std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(normed, (plain - plain.mean(0)) / plain.std(0), atol=1e-4)
    config = KMeansConfig(deltas=False, cmvn=True, context=2)
    spliced = frame_features(wav, config)
    assert spliced.shape == (plain.shape[0], 5 * 13) and config.dim == 5 * 13
    np.testing.assert_array_equal(spliced[:, 26:39], normed)  # the centre frame
    np.testing.assert_array_equal(spliced[2:, 0:13], normed[:-2])  # two frames back
    np.testing.assert_array_equal(spliced[:-2, 52:65], normed[2:])  # two frames ahead
    np.testing.assert_array_equal(spliced[0, 0:26], np.tile(normed[0], 2))  # edges repeat the first frame
    np.testing.assert_array_equal(spliced[-1, 39:65], np.tile(normed[-1], 2))
    assert (
        KMeansConfig(feature="logmel", context=1).dim
        == 120
        == frame_features(wav, KMeansConfig("logmel", context=1)).shape[1]
    )
    assert KMeansConfig(cmvn=True, context=1).dim == 117  # MFCCs with deltas, 3 frames
    with pytest.raises(UserError, match="--context must be >= 0"):
        KMeansConfig(context=-1).check()
    # a k-means file written before these options existed means what it meant then
    from vqaudio.config import from_dict

    old = from_dict(KMeansConfig, {"feature": "mfcc", "k": 8, "sample_rate": 16000, "frame_rate": 50.0}, where="old")
    assert (old.deltas, old.cmvn, old.context, old.dim) == (True, False, 0, 39)


def test_crop_targets_come_from_the_whole_utterance_at_the_crop_frames(tmp_path):
    from vqaudio.data import CropDataset
    from vqaudio.data.dataset import IGNORE

    hop, n = 320, 3200
    data = tmp_path / "data"
    data.mkdir()
    lengths = {"a": 16000 + 123, "b": 2000}  # one longer than a crop, one shorter
    for utt, length in lengths.items():
        sf.write(tmp_path / f"{utt}.wav", synth_utterance(length / SR, seed=len(utt)), SR, subtype="FLOAT")
    (data / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in lengths))
    calls = []

    def frame_index(wav):  # the teacher's "unit" of each frame is its index in the utterance
        calls.append(wav.shape[0])
        return torch.arange(math.ceil(wav.shape[0] / hop))

    ds = CropDataset(data, SR, n, frame_targets=frame_index, hop=hop)
    whole = {u: sf.read(tmp_path / f"{u}.wav", dtype="float32")[0] for u in lengths}
    starts = set()
    for _ in range(20):
        item = ds[0]
        targets, crop = item["targets"], item["wav"][0].numpy()
        assert targets.shape == (n // hop,) and crop.shape == (n,)
        first = int(targets[0])
        assert torch.equal(targets, torch.arange(first, first + n // hop))
        np.testing.assert_array_equal(crop, whole["a"][first * hop : first * hop + n])
        starts.add(first)
    assert len(starts) > 3  # random crops, each on a frame boundary
    short = ds[1]
    frames = math.ceil(lengths["b"] / hop)
    assert torch.equal(short["targets"][:frames], torch.arange(frames))
    assert (short["targets"][frames:] == IGNORE).all()
    np.testing.assert_array_equal(short["wav"][0, : lengths["b"]].numpy(), whole["b"])
    assert not short["wav"][0, lengths["b"] :].any()
    assert sorted(calls) == sorted(lengths.values())  # each utterance's targets are computed once
    with pytest.raises(ValueError, match="frame_targets need crops"):
        CropDataset(data, SR, None, frame_targets=frame_index, hop=hop)


def _codec_config(tmp_path, content: dict) -> str:
    from .test_train_codec import TINY

    cfg = yaml.safe_load(TINY.read_text())
    cfg["content"] = content
    cfg["trainer"].update(max_steps=6, val_every=3, checkpoint_every=3)
    cfg["loss"].update(quantizer_start=2, adversarial_start=100)
    path = tmp_path / f"codec_{content['objective']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_content_objectives_train_and_are_recorded(tmp_path):
    from vqaudio.models import Codec

    train = tmp_path / "train"
    train.mkdir()
    for n in range(4):
        sf.write(tmp_path / f"a{n}.wav", synth_utterance(1.5 + 0.3 * n, seed=n), SR)
    (train / "wav.scp").write_text("".join(f"a-{n} {tmp_path / f'a{n}.wav'}\n" for n in range(4)))
    # text for only some utterances, with characters outside the vocabulary
    (train / "text").write_text("a-0 HELLO WORLD\na-2 caf\u00e9 2 ok\n")
    args = ["train-codec", "--train-data", str(train), "--valid-data", str(train)]
    assert (
        main(
            [
                *args,
                "--config",
                _codec_config(tmp_path, {"objective": "ctc", "batch_size": 2, "head_lstm": 1}),
                "--exp-dir",
                str(tmp_path / "ctc"),
            ]
        )
        == 0
    )
    assert Codec.from_pretrained(tmp_path / "ctc" / "model.pt").config.content_objective == "ctc"
    km = tmp_path / "km.pt"
    assert main(["train-kmeans", "--k", "8", "--data", str(train), "--out", str(km), "--iters", "3"]) == 0
    conf = _codec_config(tmp_path, {"objective": "kmeans", "targets": str(km)})
    assert main([*args, "--config", conf, "--exp-dir", str(tmp_path / "km")]) == 0
    model = torch.load(tmp_path / "km" / "model.pt", weights_only=True)
    assert model["config"]["content_objective"] == "kmeans"
    assert not any(k.startswith("content_head") for k in model["state_dict"])  # the head stays in training
    ckpt = torch.load(tmp_path / "km" / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("content_head") for k in ckpt["state_dict"])
    # a second iteration: an earlier codec's level-0 units as the targets
    conf = _codec_config(tmp_path, {"objective": "kmeans", "targets": str(tmp_path / "ctc" / "model.pt")})
    assert main([*args, "--config", conf, "--exp-dir", str(tmp_path / "second")]) == 0
    bad = _codec_config(tmp_path, {"objective": "kmeans"})
    assert main([*args, "--config", bad, "--exp-dir", str(tmp_path / "bad")]) == 2
    (train / "text").unlink()
    assert (
        main([*args, "--config", _codec_config(tmp_path, {"objective": "ctc"}), "--exp-dir", str(tmp_path / "notext")])
        == 2
    )


def test_a_per_frame_content_head_sees_only_its_frame(tmp_path):
    from vqaudio.train.codec_task import CodecTask
    from vqaudio.train.content import ContentHead

    torch.manual_seed(0)
    x = torch.randn(2, 8, 20)
    y = x.clone()
    y[:, :, 10] += 1.0  # one frame changed
    for kernel, reach in ((1, 0), (3, 1), (5, 2)):
        head = ContentHead(8, 5, hidden=16, kernel=kernel)
        changed = (head(x) - head(y)).abs().amax(dim=(0, 1)) > 0
        assert changed.nonzero().flatten().tolist() == list(range(10 - reach, 11 + reach))
    recogniser = ContentHead(8, 5, hidden=16, kernel=1, lstm=2)
    assert recogniser(x).shape == (2, 5, 20)
    assert ((recogniser(x) - recogniser(y)).abs().amax(dim=(0, 1)) > 0).all()  # every frame hears frame 10
    assert sorted(ContentHead(8, 5).state_dict()) == ["net.0.bias", "net.0.weight", "net.2.bias", "net.2.weight"]
    with pytest.raises(ValueError, match="odd"):
        ContentHead(8, 5, kernel=2)
    with pytest.raises(ValueError, match="LSTM layers must be >= 0"):
        ContentHead(8, 5, lstm=-1)
    config = yaml.safe_load(open(_codec_config(tmp_path, {"objective": "ctc", "head_kernel": 2})))
    with pytest.raises(UserError, match="head_kernel must be odd"):
        CodecTask(config)


def test_text_to_ids_maps_and_reports_characters():
    from vqaudio.train.content import VOCAB, text_to_ids

    ids, unknown = text_to_ids("it's  caf\u00e9 2")
    assert "".join(VOCAB[i] for i in ids) == "IT'S CAF " and unknown == {"\u00c9": 1, "2": 1}


def test_normalized_first_level_keeps_encode_decode_exact():
    from vqaudio.quantize import EMAVectorQuantizer, ResidualQuantizer

    rq = ResidualQuantizer.alike(3, lambda: EMAVectorQuantizer(4, 16), normalize_first=True).eval()
    z = torch.randn(2, 4, 30) * 3 + 5
    out = rq(z)
    assert torch.equal(rq.decode(rq.encode(z)), out.quantized)
    # level 0 sees z normalised over time: a per-utterance shift and scale leaves its codes unchanged
    assert torch.equal(rq.encode(z * 2.5 - 1.0)[:, 0], rq.encode(z)[:, 0])
    assert torch.equal(out.first, rq.first_level(z))


def test_reservoir_keeps_every_frame_with_equal_probability():
    from vqaudio.units.kmeans import _reservoir_add

    rng, kept = np.random.default_rng(0), np.zeros(50)
    for _ in range(2000):
        reservoir, seen = np.full((10, 1), -1.0), 0
        for chunk in np.array_split(np.arange(50.0)[:, None], 7):  # utterances of 7-8 frames
            seen = _reservoir_add(reservoir, seen, chunk, rng)
        assert seen == 50 and len(set(reservoir[:, 0])) == 10  # full, no frame twice
        kept[reservoir[:, 0].astype(int)] += 1
    assert np.allclose(kept / 2000, 10 / 50, atol=0.04)  # early and late frames alike
    for cfg in (KMeansConfig(), KMeansConfig(feature="logmel")):
        assert frame_features(np.zeros(400, np.float32), cfg).shape[1] == cfg.dim


def test_damaged_kmeans_files_and_an_existing_codec_are_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    from vqaudio.units.model import load_unit_model

    model = KMeansUnitModel(KMeansConfig(k=4), torch.randn(4, 39))
    model.save_pretrained(tmp_path / "km")
    state = load_file(tmp_path / "km" / "model.safetensors")
    save_file({**state, "extra": torch.zeros(2)}, tmp_path / "km" / "model.safetensors")
    for load in (load_unit_model, KMeansUnitModel.from_pretrained):
        with pytest.raises(UserError, match=r"km: weight .extra. .*is not part of the model"):
            load(tmp_path / "km")
    save_file({**state, "centroids": torch.zeros(5, 39)}, tmp_path / "km" / "model.safetensors")
    with pytest.raises(UserError, match=r"km: weight 'centroids'"):
        load_unit_model(tmp_path / "km")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "model.pt").write_bytes(b"")
    data = tmp_path / "data"
    data.mkdir()
    args = ["train-codec", "--train-data", str(data), "--valid-data", str(data), "--exp-dir", str(exp)]
    assert main(args) == 2  # refused before anything is read or trained
    assert not (exp / "config.yaml").exists()
