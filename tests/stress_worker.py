"""Worker for test_multidevice_stress.py: many short 8-device runs with a checkpoint every
couple of steps, in one process (XLA_FLAGS must give it 8 host devices before JAX starts).

Usage: python tests/stress_worker.py WORKDIR NUM_RUNS [STEPS]. Prints one line per finished run; a
hang is caught by the caller's timeout, an abort by its exit status. AIGC_STRESS_NO_SAVE_WAIT=1
takes out the checkpointer's wait for the state before a save (the fix), to see the race.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
from conftest import tiny_vae_config  # noqa: E402

from aigc_jax import checkpoint, train  # noqa: E402

if os.environ.get("AIGC_STRESS_NO_SAVE_WAIT") == "1":  # the loop as it was before the fix
    import types

    checkpoint.jax = types.SimpleNamespace(**{**vars(jax), "block_until_ready": lambda x: x})


def main(workdir: str, num_runs: int, steps: int) -> None:
    assert jax.device_count() == 8, jax.devices()
    for i in range(num_runs):
        t0 = time.perf_counter()
        c = tiny_vae_config(steps)
        c.train.batch_size = 64
        c.train.log_every = 3
        c.train.checkpoint_every = 1  # every save races the next step's all-reduce
        c.train.keep_checkpoints = 2
        c.train.eval_every = steps // 3
        c.train.sample_every = steps // 3
        c.eval.batch_size = 100  # not a multiple of 8: padded, not rejected
        c.eval.final_batch_size = 100
        c.train.stop_after = steps // 2  # stop with a checkpoint, then resume on the same mesh
        run_dir = os.path.join(workdir, f"run{i}")
        train.train_and_evaluate(c, run_dir)
        c.train.stop_after = 0
        state = train.train_and_evaluate(c, run_dir)
        assert int(state.step) == steps, int(state.step)
        print(f"run {i} ok in {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 30)
