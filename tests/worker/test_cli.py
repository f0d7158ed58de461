"""`ecseq worker` refuses an unusable store or data directory at once, before waiting for Kafka."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("variable", ["ECSEQ_STORE", "ECSEQ_DATA_DIR"])
def test_an_unusable_path_is_one_line_and_status_2(tmp_path, variable):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    env = {**os.environ, "ECSEQ_STORE": str(tmp_path / "store"), "ECSEQ_DATA_DIR": str(tmp_path / "data"),
           "ECSEQ_BROKER": "127.0.0.1:1", variable: str(a_file / "below")}
    done = subprocess.run([sys.executable, "-m", "ecseq_cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"ecseq: error: {variable}={a_file / 'below'}: cannot use it (Not a directory)\n"
