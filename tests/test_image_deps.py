"""The GPU image (DESIGN.md, Scale) has no tensorflow-datasets, TensorFlow, tensorboardX or
diffusers: the main paths must import and train without them, from the working tree."""

import json
import os
import subprocess
import sys

from helpers import REPO, TINY_VAE_FLAGS

ABSENT = ("tensorflow_datasets", "tensorflow", "tensorboardX", "diffusers")
# With the absent packages marked unimportable (None in sys.modules: `import` fails and
# `find_spec` finds nothing, as there), the GPU suite's and every method's modules import, and
# the CLI trains the tiny VAE with TensorBoard on (the default but for `tiny`).
SCRIPT = f"""
import runpy, sys

sys.modules.update(dict.fromkeys({ABSENT!r}))
import benchmarks.gpu_suite
from aigc_jax import methods
for name in methods.METHODS:
    methods.get_module(name)
sys.argv = ["aigc_jax.main"] + sys.argv[1:]
runpy.run_module("aigc_jax.main", run_name="__main__")
"""


def test_cli_trains_without_the_packages_the_gpu_image_lacks(tmp_path):
    workdir = str(tmp_path / "vae")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *TINY_VAE_FLAGS, f"--workdir={workdir}",
         "--config.train.tensorboard=True", "--config.train.num_steps=20",
         "--config.train.eval_every=20", "--config.train.checkpoint_every=20",
         "--config.train.sample_every=20"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorboardX is not installed" in proc.stderr
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert rows[-1]["step"] == 20 and any(r["split"] == "train" for r in rows)
    assert not os.path.exists(os.path.join(workdir, "tensorboard"))
