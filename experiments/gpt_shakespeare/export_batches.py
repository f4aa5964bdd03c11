"""Write what `torch_reference.py` needs to train on exactly what aigc_jax trains on.

    python experiments/gpt_shakespeare/export_batches.py --data_path=input.txt --seed=0 \
        --out=/tmp/gpt_torch_0.npz

For `configs/lm.py:shakespeare_char_cpu` with `--seed`: the 2,000 training batches the data
pipeline draws (int32 [2000, 12, 65]), the whole validation split as the non-overlapping
windows `--mode=eval` scores ([N, 65]), the validation token stream (for nanoGPT's estimator of
20 random batches), the initial parameters aigc_jax starts from ("param:<path>" arrays) and
their logits on the first batch.
"""

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from aigc_jax.data.text import create_text_dataset  # noqa: E402
from aigc_jax.methods.lm import method as lm  # noqa: E402
from aigc_jax.models.gpt import GPT, config_from  # noqa: E402
from configs import lm as gpt  # noqa: E402


def gpt_logits(config, info: dict, params, tokens: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] of the GPT of `config` with `params` on windows tokens [B, T + 1]."""
    model = GPT(config_from(config.model, int(info["vocab_size"])))
    return np.asarray(jax.jit(model.apply)(params, tokens[:, :-1]))


def main() -> None:
    """Export batches, validation windows and initial parameters for one seed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", required=True, help="tiny Shakespeare input.txt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the .npz file to write")
    args = p.parse_args()

    c = gpt.get_config("shakespeare_char_cpu")
    c.data.path, c.seed = args.data_path, args.seed
    train_ds, val_ds = create_text_dataset(c, "train"), create_text_dataset(c, "test")
    b, steps = int(c.train.batch_size), int(c.train.num_steps)
    batches = np.stack([train_ds.train_batch(s, b)["tokens"] for s in range(steps)])
    val = np.concatenate([e["tokens"][e["mask"]] for e in val_ds.eval_batches(b)])
    method = lm.create(c, train_ds.info())
    state = jax.jit(method.init_state)(jax.random.PRNGKey(args.seed), {"tokens": batches[0]})
    params = {"param:" + "/".join(str(k.key) for k in path): np.asarray(v)
              for path, v in jax.tree_util.tree_flatten_with_path(state.params["params"])[0]}
    # The initial model's logits on the first batch, for torch_reference.py --init=aigc to check.
    logits0 = gpt_logits(c, train_ds.info(), state.params, batches[0])
    np.savez(args.out, batches=batches, val_windows=val, val_stream=val_ds.tokens,
             vocab_size=train_ds.info()["vocab_size"], initial_logits=logits0, **params)
    print(f"wrote {args.out}: batches {batches.shape}, validation windows {val.shape}, "
          f"{len(params)} parameter arrays")


if __name__ == "__main__":
    main()
