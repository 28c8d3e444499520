"""`make reset_local_files` empties the local folders and keeps their structure, but only when asked to:
it lists what goes, needs --yes (or a yes on a terminal), and --help removes nothing."""

import subprocess
import sys

import pytest

from pipelines import reset_local_files
from taxifare_core.contract import local_data_path, local_registry_path


def _fill():
    data, registry = local_data_path(), local_registry_path()
    (data / "processed" / "run").mkdir(parents=True)
    (data / "processed" / "run" / "train-00000-of-00001.csv").write_text("1,2\n")
    (registry / "models").mkdir(parents=True)
    (registry / "models" / "m.keras").write_text("x")
    return data, registry


def _reset(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.reset_local_files", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_reset_keeps_structure_and_removes_content():
    data, registry = _fill()
    done = _reset("--yes")
    assert done.returncode == 0, done.stderr
    assert "processed/run/" in done.stdout and "models/m.keras" in done.stdout  # listed before going
    assert sorted(p.name for p in data.iterdir()) == ["processed", "raw"]
    assert list((data / "processed").iterdir()) == []
    assert sorted(p.name for p in registry.iterdir()) == ["metrics", "models", "params"]
    assert list((registry / "models").iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["-h"], [], ["--bogus"]])
def test_nothing_is_removed_unless_told_yes(args):
    data, registry = _fill()
    done = _reset(*args)
    assert (data / "processed" / "run" / "train-00000-of-00001.csv").exists()
    assert (registry / "models" / "m.keras").exists()
    if args in (["--help"], ["-h"]):
        assert done.returncode == 0 and "--yes" in done.stdout
    else:  # no terminal to ask on, and no --yes: one line, exit 2
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_answer_other_than_yes_keeps_everything(monkeypatch, capsys):
    _, registry = _fill()
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert reset_local_files.main([]) == 0
    assert "nothing removed" in capsys.readouterr().out
    assert (registry / "models" / "m.keras").exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert reset_local_files.main([]) == 0
    assert not (registry / "models" / "m.keras").exists()


def test_refuses_to_empty_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCAL_DATA_PATH", str(tmp_path))
    (tmp_path / "thesis.tex").write_text("years of work")
    done = _reset("--yes")
    assert done.returncode == 2 and "home folder" in done.stderr
    assert (tmp_path / "thesis.tex").exists()
