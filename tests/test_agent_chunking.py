import numpy as np
import pytest

from uio_robot.agent.chunking import ChunkExecutor
from uio_robot.agent.protocols import ActionChunk


def chunk(values, start, period=0.1):
    return ActionChunk(np.asarray(values, np.float32)[:, None], start_time=start, period=period)


def test_rows_play_at_their_times_and_run_out():
    ex = ChunkExecutor()
    assert ex.add(chunk([1, 2, 3], start=0.0), now=0.0) == 0
    assert ex.action_at(0.0)[0] == 1 and ex.action_at(0.1)[0] == 2 and ex.action_at(0.25)[0] == 3
    assert ex.remaining_at(0.2) == 1
    assert ex.action_at(0.3) is None and ex.remaining_at(0.3) == 0


def test_late_chunk_is_aligned_to_now_and_stale_rows_are_dropped():
    ex = ChunkExecutor()
    stale = ex.add(chunk([1, 2, 3, 4, 5], start=0.0), now=0.2)
    assert stale == 2 and ex.dropped_steps == 2
    assert ex.action_at(0.2)[0] == 3


def test_without_ensembling_the_newest_chunk_wins():
    ex = ChunkExecutor()
    ex.add(chunk([1, 1, 1, 1], start=0.0), now=0.0)
    ex.add(chunk([9, 9, 9], start=0.1), now=0.1)
    assert ex.action_at(0.1)[0] == 9


def test_temporal_ensemble_weights_fresh_predictions_more():
    decay = 0.5
    ex = ChunkExecutor(temporal_ensemble=True, decay=decay)
    ex.add(chunk([0, 0, 0, 0], start=0.0), now=0.0)
    ex.add(chunk([10, 10, 10], start=0.2), now=0.2)
    # At t=0.2 the old chunk is 2 steps in (weight e^-1), the new one at step 0 (weight 1).
    w_old, w_new = np.exp(-decay * 2), 1.0
    assert ex.action_at(0.2)[0] == pytest.approx(10 * w_new / (w_old + w_new), rel=1e-5)
    # After the old chunk ends only the new one remains.
    assert ex.action_at(0.4)[0] == pytest.approx(10)


def test_chunk_from_the_future_is_not_executed_early():
    ex = ChunkExecutor()
    ex.add(chunk([7, 8], start=1.0), now=0.5)
    assert ex.action_at(0.5) is None and ex.action_at(1.0)[0] == 7


def test_negative_decay_is_rejected():
    with pytest.raises(ValueError, match="decay"):
        ChunkExecutor(True, decay=-1)
