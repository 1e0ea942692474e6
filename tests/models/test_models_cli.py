"""``hoichan models ...`` handlers, driven through a stand-in top-level parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from models.cli import add_models_commands


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hoichan")
    add_models_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_register_promote_list_show_retire(
    tmp_path: Path, card_file: Path, onnx_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "reg")
    assert run(["models", "--registry", root, "register", str(card_file), str(onnx_file)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "candidate"
    assert run(["models", "--registry", root, "promote", "chest-ct-nodule", "1.0.0"]) == 0
    capsys.readouterr()
    assert run(["models", "--registry", root, "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "version", "state"]
    assert table[1].split()[:3] == ["chest-ct-nodule", "1.0.0", "active"]
    assert run(["models", "--registry", root, "show", "chest-ct-nodule", "--verify"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["card"]["labels"] == ["nodule"]
    assert run(["models", "--registry", root, "retire", "chest-ct-nodule", "1.0.0"]) == 0
    capsys.readouterr()
    assert run(["models", "--registry", root, "list", "--json", "--state", "retired"]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == ["1.0.0"]


def test_errors_are_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOICHAN_MODELS_DIR", str(tmp_path))
    assert run(["models", "promote", "missing", "1.0"]) == 1
    assert capsys.readouterr().err.startswith("error: model missing@1.0 not found")
