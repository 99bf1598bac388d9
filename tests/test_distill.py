"""The ``distill`` content objective: frame alignment, the two cosine losses, the teacher (spectral or SSL, cached
on disk) and a codec trained with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.train.content import FeatureTeacher, align_frames, distill_loss
from vqaudio.units.kmeans import KMeansConfig, frame_features
from vqaudio.units.ssl import SSLFeatures

from .speech import SR, synth_utterance


def test_align_frames_known_answers():
    t = torch.arange(12.0).reshape(6, 2)  # frame i = (2i, 2i + 1)
    assert torch.equal(align_frames(t, 50.0, 50.0, 4), t[:4])
    assert torch.equal(align_frames(t, 50.0, 50.0, 8)[6:], t[[5, 5]])  # past the end: the last frame
    pooled = align_frames(t, 50.0, 25.0, 3)  # integer ratio: the mean of each pair
    assert torch.equal(pooled, torch.tensor([[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]))
    # ratio 1.5: codec frame j sits at teacher position 1.5 j + 0.25
    inter = align_frames(t, 75.0, 50.0, 3)
    assert torch.allclose(inter[:, 0], torch.tensor([0.5, 3.5, 6.5]))
    with pytest.raises(UserError, match="coarser than the codec's 100"):
        align_frames(t, 50.0, 100.0, 3)


def test_distill_losses_on_known_answers_and_padding():
    torch.manual_seed(0)
    target = torch.randn(2, 7, 5)
    pred = (3.0 * target).transpose(1, 2)  # (B, D, T), same direction
    assert distill_loss(pred, target, "frame").item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(-pred, target, "frame").item() == pytest.approx(2.0, abs=1e-6)
    assert distill_loss(pred, target, "dim").item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-5)
    # frames past an utterance's end (NaN targets) are ignored whatever the prediction there
    padded = target.clone()
    padded[0, 5:] = float("nan")
    noisy = pred.clone()
    noisy[0, :, 5:] = torch.randn(5, 2)
    for form in ("frame", "dim"):
        assert distill_loss(noisy, padded, form).item() == pytest.approx(distill_loss(pred, padded, form).item())
    # the student may have a frame more than the crop's targets
    assert distill_loss(torch.cat([pred, pred[..., :1]], -1), target).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.randn(2, 5, 7, requires_grad=True)
    distill_loss(p, target, "dim").backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(UserError, match="distill_form must be one of"):
        distill_loss(pred, target, "time")


def test_spectral_teacher_is_the_spliced_mfccs_and_is_cached(tmp_path):
    wav = synth_utterance(1.3, seed=1)
    teacher = FeatureTeacher("mfcc", SR, 320, cache_dir=tmp_path)
    expected = frame_features(wav, KMeansConfig(deltas=False, cmvn=True, context=2))
    first = teacher(wav)
    assert first.shape == (math.ceil(wav.shape[0] / 320), 65) and teacher.dim == 65
    assert torch.equal(first, torch.from_numpy(expected.astype(np.float16).astype(np.float32)))  # float16 cache
    assert torch.equal(FeatureTeacher("mfcc", SR, 320)(wav), torch.from_numpy(expected))  # uncached: as computed
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1 and files[0].parent.name == teacher.id[:16]
    np.save(files[0], np.zeros_like(np.load(files[0])))  # a second call reads the cache, not the audio
    assert teacher(wav).abs().sum() == 0
    other = FeatureTeacher("mfcc", SR, 320, cmvn=False, cache_dir=tmp_path)
    assert other.id != teacher.id and other(wav).abs().sum() > 0


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("ssl") / "hubert"
    torch.manual_seed(0)
    config = transformers.HubertConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    transformers.HubertModel(config).eval().save_pretrained(path)
    return path


def test_ssl_teacher_alignment_to_other_codec_rates(hubert):
    wav = synth_utterance(1.0, seed=2)
    ssl = SSLFeatures(str(hubert), [1, 2]).features(wav)
    one, two = SSLFeatures(str(hubert), 1).features(wav), SSLFeatures(str(hubert), 2).features(wav)
    assert torch.allclose(ssl, (one + two) / 2, atol=1e-6)  # several layers: their mean
    same = FeatureTeacher(str(hubert), SR, 320, layers=[1, 2])
    assert torch.equal(same(wav), ssl)  # no cache_dir: exactly the SSL features
    half = FeatureTeacher(str(hubert), SR, 640, layers=[1, 2])(wav)  # 25 Hz codec: pairs averaged
    assert half.shape == (25, 16) and torch.allclose(half[3], ssl[6:8].mean(0))
    import librosa

    wav24 = librosa.resample(wav, orig_sr=SR, target_sr=24000, res_type="soxr_hq")
    at24 = FeatureTeacher(str(hubert), 24000, 480, layers=[1, 2])(wav24)  # same 20 ms frames at 24 kHz
    assert at24.shape == (50, 16)
    assert torch.nn.functional.cosine_similarity(at24[:-1], ssl[:-1], dim=-1).mean() > 0.97  # resampled, not equal
    with pytest.raises(UserError, match="coarser than the codec's 100"):
        FeatureTeacher(str(hubert), SR, 160, layers=[1])


def test_a_codec_trains_with_distill_and_the_gradient_reaches_the_encoder(hubert, tmp_path):
    from vqaudio.models import Codec
    from vqaudio.train.codec_task import CodecTask
    from vqaudio.train.config import TrainCodecConfig

    from .test_train_codec import TINY

    train = tmp_path / "train"
    train.mkdir()
    for n in range(3):
        sf.write(tmp_path / f"a{n}.wav", synth_utterance(1.2 + 0.3 * n, seed=n), SR)
    (train / "wav.scp").write_text("".join(f"a-{n} {tmp_path / f'a{n}.wav'}\n" for n in range(3)))
    cfg = yaml.safe_load(TINY.read_text())
    cfg["content"] = {"objective": "distill", "teacher": str(hubert), "teacher_layers": [2], "weight": 2.0}
    cfg["trainer"].update(max_steps=4, val_every=2, checkpoint_every=2)
    cfg["loss"].update(quantizer_start=1, adversarial_start=100)
    conf = tmp_path / "distill.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    args = ["train-codec", "--config", str(conf), "--train-data", str(train), "--valid-data", str(train)]
    assert main([*args, "--exp-dir", str(tmp_path / "exp")]) == 0
    assert Codec.from_pretrained(tmp_path / "exp" / "model.pt").config.content_objective == "distill"
    assert len(list((tmp_path / "exp" / "teacher_cache").rglob("*.npy"))) == 3  # once per utterance
    # the distill loss alone sends a gradient through level 0 into the encoder's first layer
    from vqaudio.config import from_dict

    task = CodecTask({**cfg, "content": {**cfg["content"], "cache_dir": None}})
    task.gen_steps.fill_(5)
    wav = torch.from_numpy(synth_utterance(0.64, seed=9))[None, None]
    batch = {"wav": wav, "targets": task.teacher(wav[0, 0].numpy())[None]}
    out = task.codec(wav, quantize=True)
    task._content_loss(batch, out).backward()
    first = next(p for n, p in task.codec.named_parameters() if n.startswith("encoder") and p.grad is not None)
    assert first.grad.abs().sum() > 0
    assert from_dict(TrainCodecConfig, cfg).content.teacher == str(hubert)
    cfg["content"]["distill_form"] = "time"
    conf.write_text(yaml.safe_dump(cfg))
    assert main([*args, "--exp-dir", str(tmp_path / "bad")]) == 2
