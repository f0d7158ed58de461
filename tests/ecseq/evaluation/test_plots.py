from pathlib import Path

import numpy as np
import pytest

from ecseq.evaluation.plots import plot_cluster_sizes, plot_pr_curves, plot_score_histograms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(np.int64)
    return {
        "strong": (y, y + rng.normal(0, 0.5, 2000)),
        "weak": (y, 0.3 * y + rng.normal(0, 0.5, 2000)),
    }


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000


def test_pr_curves_written_as_png(results, tmp_path):
    path = tmp_path / "nested" / "dir" / "pr.png"
    plot_pr_curves(results, path, title="PR")
    _assert_png(path)


def test_score_histograms_written_as_png(results, tmp_path):
    path = tmp_path / "hist.png"
    plot_score_histograms(results, str(path), title="scores")
    _assert_png(path)


def test_score_histograms_tolerate_a_single_class(tmp_path):
    path = tmp_path / "hist.png"
    plot_score_histograms({"negatives only": (np.zeros(100), np.linspace(0, 1, 100))}, path)
    _assert_png(path)


def test_cluster_sizes_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 2000, 500)
    path = tmp_path / "out" / "clusters"  # no suffix: still PNG
    plot_cluster_sizes(sizes, rng.random(500), path, title="clusters")
    _assert_png(path)


def test_rejects_empty_or_mismatched_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_pr_curves({}, tmp_path / "pr.png")
    with pytest.raises(ValueError, match="equal-length"):
        plot_cluster_sizes(np.array([1, 2]), np.array([0.5]), tmp_path / "c.png")
    with pytest.raises(ValueError, match="within"):
        plot_cluster_sizes(np.array([1, 2]), np.array([0.5, 1.5]), tmp_path / "c.png")
