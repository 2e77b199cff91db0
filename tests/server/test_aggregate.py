import numpy as np
import pytest

from pfeddc.server.aggregate import fedavg


def test_fedavg_weights_by_example_count() -> None:
    a = {"t": np.array([0.0, 2.0], dtype=np.float32)}
    b = {"t": np.array([4.0, 6.0], dtype=np.float32)}
    out = fedavg([(a, 1), (b, 3)])
    np.testing.assert_allclose(out["t"], [3.0, 5.0])
    assert out["t"].dtype == np.float32


def test_fedavg_rejects_mismatched_names_and_bad_weights() -> None:
    a = {"t": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match="disagree on tensor names"):
        fedavg([(a, 1), ({"u": np.zeros(2, np.float32)}, 1)])
    with pytest.raises(ValueError, match="positive"):
        fedavg([(a, 0)])
    with pytest.raises(ValueError, match="at least one"):
        fedavg([])
