"""A process that has to compile search kernels says so once; a warmed install compiles
nothing on its first search."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTICE = "compiling search kernels (first use after install)"

_BUILD = """
import logging, numpy as np, pyarrow as pa
logging.basicConfig(level=logging.INFO)
from quiver.superfile.vector import build_vector_index
flat = pa.array(np.arange(12, dtype=np.float32) + 1)
build_vector_index(pa.FixedSizeListArray.from_arrays(flat, 3), "cosine")
"""

_SEARCH = """
import logging, sys, quiver
logging.basicConfig(level=logging.INFO)
with quiver.connect(sys.argv[1]) as db:
    db.sql("SELECT id FROM bm25_search('t', 'body', 'alpha', 5)").to_arrow()
    db.sql("SELECT id FROM vector_search('t', 'emb', '[1, 0]', 5)").to_arrow()
"""


def _run(cache: Path, *args: str) -> str:
    # A fatal signal in the child prints every thread's stack into the failure message.
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_CACHE_DIR=str(cache),
               PYTHONFAULTHANDLER="1")
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out.stdout + out.stderr


def test_a_process_compiling_kernels_logs_one_line_and_a_cached_one_none(tmp_path) -> None:
    first = _run(tmp_path / "cache", "-c", _BUILD)
    assert first.count(NOTICE) == 1, first  # several kernels compile; one line says so
    again = _run(tmp_path / "cache", "-c", _BUILD)
    assert NOTICE not in again, again


def test_after_the_warm_up_the_first_search_compiles_nothing(tmp_path) -> None:
    import pyarrow as pa

    import quiver

    root = str(tmp_path / "data")
    with quiver.connect(root) as db:
        db.create_table("t", pa.table({"id": [1, 2], "body": ["alpha beta", "gamma"],
                                       "emb": [[1.0, 0.0], [0.0, 1.0]]}))
    cache = tmp_path / "cache"
    warm = _run(cache, "-m", "quiver.flight_server.sql.warmup")
    assert "search kernels ready" in warm, warm
    assert any(cache.rglob("*.nbc")), "the warm-up left no compiled kernels"
    first = _run(cache, "-c", _SEARCH, root)
    assert NOTICE not in first, first
