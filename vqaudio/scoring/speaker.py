"""Speaker similarity: cosine of Resemblyzer GE2E speaker embeddings (SECS).

Resemblyzer's wheel carries ``pretrained.pt``, a GE2E speaker encoder (Wan et al. 2018: 3-layer LSTM over 40
mel bands, 256-d embeddings). Its preprocessing (volume normalised
to -30 dBFS, long silences cut with WebRTC's VAD), its mel frames and its partial utterances (1.6 s windows,
embeddings averaged and L2-normalised) are used as they are; the weights are loaded here as a plain state dict
(``torch.load(weights_only=True)``), so no pickled code runs. On unseen speakers of read speech (LibriSpeech
test-other), same-speaker cosines are about 0.75-0.9 and different-speaker ones about 0.45-0.55.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .packages import require

#: Speech needed after Resemblyzer's silence trimming. One partial utterance is 1.6 s; below this, most of the
#: single window would be zero padding.
MIN_SPEECH_SECONDS = 1.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The L2-normalised mean of utterance embeddings: a speaker's embedding (Resemblyzer's ``embed_speaker``)."""
    if not len(embeddings):
        raise ValueError("mean_embedding needs at least one embedding")
    mean = np.mean(np.stack([np.asarray(e, dtype=np.float32) for e in embeddings]), axis=0)
    return mean / np.linalg.norm(mean)


class SpeakerEncoder:
    """Resemblyzer's GE2E encoder (``pip install 'vqaudio[eval]'``): :meth:`embed` one utterance,
    :meth:`embed_speaker` several of one speaker."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.resemblyzer = require("resemblyzer", "--speaker-sim (speaker similarity)")
        weights = pathlib.Path(self.resemblyzer.__file__).with_name("pretrained.pt")
        if not weights.is_file():
            raise UserError(
                f"{weights}: missing from the resemblyzer package; reinstall it (pip install -U resemblyzer)"
            )
        hp = importlib.import_module("resemblyzer.hparams")  # not an attribute: a re-imported package lacks it
        self.lstm = torch.nn.LSTM(hp.mel_n_channels, hp.model_hidden_size, hp.model_num_layers, batch_first=True)
        self.linear = torch.nn.Linear(hp.model_hidden_size, hp.model_embedding_size)
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        # The checkpoint also holds GE2E's training-only similarity scale and bias.
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.to(device).eval()
        self.linear.to(device).eval()
        self.device = device
        self.sample_rate = hp.sampling_rate

    def embed(self, wav: np.ndarray, sample_rate: int = 16000, name: str = "audio") -> np.ndarray:
        """The 256-d L2-normalised embedding of one utterance (Resemblyzer's ``embed_utterance`` with its
        defaults: 1.6 s partials at 1.3 per second, a last partial kept when 75 % covered).

        Raises :class:`UserError` naming ``name`` for silence and for less than :data:`MIN_SPEECH_SECONDS` of
        speech once silences are trimmed.
        """
        import torch

        rz = self.resemblyzer
        wav = np.asarray(wav, dtype=np.float32).ravel()
        if wav.size == 0 or float(np.abs(wav).max()) < 1e-4:
            raise UserError(f"{name}: silent (peak below -80 dBFS); a speaker embedding needs speech")
        speech = rz.preprocess_wav(wav, source_sr=sample_rate if sample_rate != self.sample_rate else None)
        if speech.size < MIN_SPEECH_SECONDS * self.sample_rate:
            raise UserError(
                f"{name}: {speech.size / self.sample_rate:.2f} s of speech after trimming silences; the speaker "
                f"encoder needs at least {MIN_SPEECH_SECONDS:.1f} s"
            )
        wav_slices, mel_slices = rz.VoiceEncoder.compute_partial_slices(speech.size, rate=1.3, min_coverage=0.75)
        if wav_slices[-1].stop >= speech.size:
            speech = np.pad(speech, (0, wav_slices[-1].stop - speech.size))
        mel = rz.wav_to_mel_spectrogram(speech)
        mels = torch.from_numpy(np.stack([mel[s] for s in mel_slices])).to(self.device)
        with torch.no_grad():
            _, (hidden, _) = self.lstm(mels)
            partial = torch.relu(self.linear(hidden[-1]))
            partial = partial / partial.norm(dim=1, keepdim=True)
        return mean_embedding(list(partial.cpu().numpy()))

    def embed_speaker(self, wavs: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
        """The speaker embedding of several utterances: their embeddings' normalised mean."""
        return mean_embedding([self.embed(w, sample_rate, name=f"utterance {i}") for i, w in enumerate(wavs)])


def conversion_similarity(
    encoder: SpeakerEncoder,
    converted: np.ndarray,
    target: np.ndarray,
    source: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> dict[str, float]:
    """SECS of a voice conversion: ``speaker_similarity_target``, the cosine of the converted audio's embedding
    to ``target`` (the target speaker's embedding, e.g. :meth:`SpeakerEncoder.embed_speaker` of the reference
    utterances), and with ``source`` (the source speaker's embedding) ``speaker_similarity_source``. A
    conversion that works is closer to the target than to the source."""
    emb = encoder.embed(converted, sample_rate, name="converted audio")
    out = {"speaker_similarity_target": cosine(emb, target)}
    if source is not None:
        out["speaker_similarity_source"] = cosine(emb, source)
    return out
