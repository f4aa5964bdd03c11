"""Stress the loop's save/eval/sample paths on 8 fake devices: a checkpoint after every step,
an eval and a sample grid mid-run, a stop and a resume. A race between a save and in-flight
multi-device work shows up as an XLA rendezvous abort (non-zero exit) or a hang (timeout).

CI runs one short pass; `AIGC_STRESS_RUNS=20 AIGC_STRESS_STEPS=60 pytest
tests/test_multidevice_stress.py` runs it longer by hand.
"""

import os
import subprocess
import sys

from helpers import REPO


def test_frequent_checkpoints_on_8_devices_never_abort_or_hang(tmp_path):
    runs = int(os.environ.get("AIGC_STRESS_RUNS", "1"))
    steps = int(os.environ.get("AIGC_STRESS_STEPS", "24"))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tests", "stress_worker.py"),
                        str(tmp_path), str(runs), str(steps)], env=env, capture_output=True,
                       text=True, timeout=300 + 120 * runs)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(" ok in ") == runs, r.stdout
