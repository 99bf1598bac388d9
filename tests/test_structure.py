"""The package's structure: no import cycles, one checkpoint format that still reads older files, one name for
residual depth, one error type for bad input."""

from __future__ import annotations

import ast
import json
import pathlib

import pytest
import torch

from vqaudio.checkpoint import VERSION, load_model
from vqaudio.cli.main import main
from vqaudio.config import to_dict
from vqaudio.errors import UserError
from vqaudio.models import Codec, CodecConfig, WaveNetPrior
from vqaudio.quantize import QuantizerConfig
from vqaudio.units import read_info, read_levels, write_units

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vqaudio"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in its body)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other():
    graph = _imports()
    assert "vqaudio.models.layers" in graph["vqaudio.models.seanet"]  # the walk sees relative imports
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_cli_or_recipes():
    for name, deps in _imports().items():
        if not name.startswith("vqaudio.cli"):
            assert not any(d.startswith("vqaudio.cli") for d in deps), name


def _tiny_codec(**kw) -> Codec:
    """A codec as files before format version 4 hold them: a SEANet decoder (with the LSTM when ``lstm``)."""
    q = QuantizerConfig(kind="ema", n_q=2, codebook_size=16, kmeans_init=False, dead_code_threshold=0.0)
    arch = {"channels": 4, "encoder_channels": 4, "latent_dim": 8, "max_channels": 8, "quantizer": q, "lstm": 0}
    return Codec(CodecConfig(encoder="seanet", **{**arch, "decoder": "seanet", "decoder_lstm": True, **kw})).eval()


# the keys format version 4 added (files before it are SEANet with a decoder-side LSTM), and version 6 (files
# before it have the SEANet encoder)
V4_KEYS = ("decoder", "decoder_lstm", "decoder_dim", "decoder_blocks", "decoder_hidden", "decoder_kernel")
V6_KEYS = ("encoder", "encoder_dim", "encoder_blocks", "n_mels")


def _load_as_version(tmp_path, codec: Codec, version: int, config: dict) -> Codec:
    """``codec``'s weights in a codec file of format ``version`` holding ``config``, loaded back."""
    path = tmp_path / f"v{version}.pt"
    torch.save(
        {"format": "vqaudio-codec", "version": version, "config": config, "state_dict": codec.state_dict()}, path
    )
    return Codec.from_pretrained(path)


def test_a_version_1_codec_file_with_the_old_names_still_loads(tmp_path):
    codec = _tiny_codec()
    config = to_dict(codec.config)
    config["quantizer"]["num_quantizers"] = config["quantizer"].pop("n_q")
    del config["lstm"], config["lstm_dim"]  # not in version 1
    for key in (*V4_KEYS, *V6_KEYS):
        del config[key]
    loaded = _load_as_version(tmp_path, codec, 1, config)
    assert loaded.n_q == 2
    wav = torch.randn(1, 1, 4000) * 0.1
    assert torch.equal(loaded.encode(wav), codec.encode(wav))


def test_a_version_2_codec_file_keeps_the_defaults_of_its_time(tmp_path):
    wav = torch.randn(1, 1, 4000) * 0.1
    for codec, missing in (
        (_tiny_codec(lstm_dim=None), ("lstm", "lstm_dim")),
        (_tiny_codec(lstm=1, lstm_dim=None), ("lstm_dim",)),
    ):
        config = to_dict(codec.config)
        for key in (*missing, *V4_KEYS, *V6_KEYS):  # version 2 had no lstm_dim; a file written before lstm had neither
            del config[key]
        loaded = _load_as_version(tmp_path, codec, 2, config)  # not version 3-4's 512-unit LSTMs
        assert loaded.config == codec.config and torch.equal(loaded.encode(wav), codec.encode(wav))
    assert CodecConfig().lstm == 2 and CodecConfig().lstm_dim is None  # what the same keys mean in version 5


def test_a_version_4_codec_file_without_lstm_dim_keeps_its_512_units(tmp_path):
    codec = _tiny_codec(lstm=1, lstm_dim=512)
    config = to_dict(codec.config)
    del config["lstm_dim"]  # the default of versions 3 and 4
    for key in V6_KEYS:
        del config[key]
    loaded = _load_as_version(tmp_path, codec, 4, config)
    assert loaded.config.lstm_dim == 512 and loaded.config == codec.config


def test_a_version_5_codec_file_without_an_encoder_kind_is_seanet(tmp_path):
    codec = _tiny_codec(decoder="istft", decoder_lstm=False, decoder_dim=8, decoder_blocks=1)
    config = to_dict(codec.config)
    for key in V6_KEYS:
        del config[key]
    loaded = _load_as_version(tmp_path, codec, 5, config)
    assert loaded.config.encoder == "seanet" and loaded.config == codec.config
    wav = torch.randn(1, 1, 4000) * 0.1
    assert torch.equal(loaded.encode(wav), codec.encode(wav))
    assert CodecConfig().encoder == "mel"  # what a file of version 6 without the key means


def test_a_version_1_prior_file_with_the_old_names_still_loads(tmp_path):
    prior = WaveNetPrior(codebook_size=8, n_q=2, residual_channels=8, skip_channels=8, layers=2).eval()
    config = to_dict(prior.config)
    config["num_levels"] = config.pop("n_q")
    del config["speakers"]  # not in version 1
    old = {"format": "vqaudio-wavenet-prior", "version": 1, "config": config, "state_dict": prior.state_dict()}
    torch.save(old, tmp_path / "old_prior.pt")
    loaded = WaveNetPrior.from_pretrained(tmp_path / "old_prior.pt")
    tokens = torch.randint(0, 8, (1, 2, 9))
    assert loaded.n_q == 2 and torch.equal(loaded(tokens), prior(tokens))


def test_one_checkpoint_format_checks_kind_and_version(tmp_path):
    codec, prior = _tiny_codec(), WaveNetPrior(codebook_size=8, residual_channels=8, skip_channels=8, layers=2)
    codec.save_pretrained(tmp_path / "codec.pt")
    prior.save_pretrained(tmp_path / "prior.pt")
    for path in ("codec.pt", "prior.pt"):
        payload = torch.load(tmp_path / path, weights_only=True)
        assert payload["version"] == VERSION and set(payload) >= {"format", "config", "state_dict", "vqaudio_version"}
    with pytest.raises(UserError, match="expected a vqaudio codec file, this is a vqaudio wavenet-prior file"):
        Codec.from_pretrained(tmp_path / "prior.pt")
    with pytest.raises(UserError, match="expected a vqaudio wavenet-prior file, this is a vqaudio codec file"):
        WaveNetPrior.from_pretrained(tmp_path / "codec.pt")
    from vqaudio.units.model import load_unit_model

    assert load_unit_model(tmp_path / "codec.pt").n_q == 2  # a unit model of either kind, from one read
    with pytest.raises(UserError, match="expected a vqaudio codec or kmeans file, this is a vqaudio wavenet-prior"):
        load_unit_model(tmp_path / "prior.pt")
    payload = torch.load(tmp_path / "prior.pt", weights_only=True)
    torch.save({**payload, "version": VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(UserError, match=f"format version {VERSION + 1} is newer"):
        WaveNetPrior.from_pretrained(tmp_path / "future.pt")
    torch.save({k: v for k, v in payload.items() if k != "state_dict"}, tmp_path / "cut.pt")
    with pytest.raises(UserError, match="without its config or weights"):
        load_model(tmp_path / "cut.pt", "wavenet-prior")
    # nothing is left behind by the atomic writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codec.pt", "cut.pt", "future.pt", "prior.pt"]


def test_old_units_json_reads_its_levels_as_n_q(tmp_path):
    write_units(tmp_path / "units", {"a": [1, 2, 3]})
    write_units(tmp_path / "units.level1", {"a": [4, 5, 6]})
    old = {"model_checksum": "x", "sample_rate": 16000, "frame_rate": 50.0, "codebook_size": 8}
    (tmp_path / "units.json").write_text(json.dumps({**old, "levels": 2, "dedup": False}))
    assert read_info(tmp_path).n_q == 2
    assert read_levels(tmp_path) == {"a": [[1, 2, 3], [4, 5, 6]]}
    (tmp_path / "units.json").write_text(json.dumps({**old, "levels": 2, "n_q": 2, "dedup": False}))
    with pytest.raises(UserError, match="both 'levels' and its new name 'n_q'"):
        read_info(tmp_path)


def test_codes_are_b_q_t_for_a_single_codebook_too(tmp_path):
    q = QuantizerConfig(kind="fsq", n_q=1, levels=[4, 4])
    codec = Codec(
        CodecConfig(encoder="seanet", channels=4, encoder_channels=4, latent_dim=8, max_channels=8, quantizer=q, lstm=0)
    ).eval()
    wav = torch.randn(2, 1, 1000) * 0.1
    codes = codec.encode(wav)
    assert codes.shape == (2, 1, 4) and codec.n_q == 1
    assert codec.encode_chunked(wav[:1], chunk_seconds=0.02).shape == (1, 1, 4)
    assert codec(wav).indices.shape == (2, 1, 4)
    assert codec.decode(codes).shape == (2, 1, 4 * 320)
    with pytest.raises(ValueError, match=r"\(B, q, T'\).*indices\[:, None\]"):
        codec.decode(codes[:, 0])
    with pytest.raises(ValueError, match=r"n_q must lie in \[1, 1\]"):
        codec.encode(wav, n_q=2)


def test_cli_reports_bad_input_in_one_line_and_bugs_with_their_traceback(tmp_path, capsys, monkeypatch):
    assert main(["resynth", "--model", str(tmp_path / "none.pt"), "--units", str(tmp_path), "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "units.json not found" in err and "Traceback" not in err  # units read first

    def bug(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr("vqaudio.units.resynth.resynthesize", bug)
    with pytest.raises(ValueError, match="internal inconsistency"):  # not swallowed into a "bad input" line
        main(["resynth", "--model", "m.pt", "--units", str(tmp_path), "--out", "o"])
