"""Data I/O: Kaldi data dirs, audio loading, training datasets."""

from .audio import AudioError, load_audio
from .dataset import CropDataset
from .kaldi import Utterance, read_data_dir, read_table, read_utt2dur

__all__ = ["AudioError", "CropDataset", "Utterance", "load_audio", "read_data_dir", "read_table", "read_utt2dur"]
