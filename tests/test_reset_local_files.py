"""`make reset_local_files` empties the local folders and keeps their structure."""
import subprocess
import sys

from taxifare_core.contract import local_data_path, local_registry_path


def test_reset_keeps_structure_and_removes_content():
    data, registry = local_data_path(), local_registry_path()
    (data / "processed" / "run").mkdir(parents=True)
    (data / "processed" / "run" / "train-00000-of-00001.csv").write_text("1,2\n")
    (registry / "models").mkdir(parents=True)
    (registry / "models" / "m.keras").write_text("x")
    done = subprocess.run([sys.executable, "-m", "pipelines.reset_local_files"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["processed", "raw"]
    assert list((data / "processed").iterdir()) == []
    assert sorted(p.name for p in registry.iterdir()) == ["metrics", "models", "params"]
    assert list((registry / "models").iterdir()) == []
