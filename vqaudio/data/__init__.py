"""Data I/O: Kaldi data dirs and lhotse cut manifests, audio loading, training datasets."""

from .audio import AudioError, load_audio
from .dataset import CropDataset
from .kaldi import Utterance, read_data_dir, read_table, read_text, read_utt2dur, read_utt2spk

__all__ = [
    "AudioError",
    "CropDataset",
    "Utterance",
    "load_audio",
    "read_data_dir",
    "read_table",
    "read_text",
    "read_utt2dur",
    "read_utt2spk",
]
