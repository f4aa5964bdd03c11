"""WaveNet on spoken digits: test bits/sample beside two baselines, class-conditional samples
scored by a spoken-digit classifier, cached vs naive generation speed.

    python experiments/wavenet_digits/run.py --workdir=runs/wavenet_digits \
        --data=../shared/data/spoken_digits [--override=train.num_steps=500 ...]

Trains `configs/wavenet.py:spoken_digits` in `--workdir` (resuming; nothing to do when it is
finished), then writes into this folder: results.json, spectrograms.png (real test clips and
samples, one per digit) and a few sample WAVs.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy.io import wavfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from aigc_jax import data as data_lib  # noqa: E402
from aigc_jax import train  # noqa: E402
from aigc_jax.data.audio import to_int16  # noqa: E402
from aigc_jax.evaluation import audio as audio_eval  # noqa: E402
from aigc_jax.methods.wavenet.method import model_config  # noqa: E402
from aigc_jax.methods.wavenet.sampling import SampleConfig, generate, generate_naive  # noqa
from aigc_jax.models.wavenet import WaveNet  # noqa: E402
from configs import wavenet as wavenet_configs  # noqa: E402


def _override(c: ml_collections.ConfigDict, item: str) -> None:
    key, value = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = type(node[leaf])(json.loads(value)) if not isinstance(node[leaf], str) \
        else value


def _timed(fn, *args) -> tuple[np.ndarray, float]:
    """Result and seconds of the second call (the first compiles)."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return np.asarray(out), time.perf_counter() - t0


def main() -> None:
    """Train (or resume), evaluate, sample, score and time; write the outputs here."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True, help="the spoken_digits folder")
    p.add_argument("--override", action="append", default=[], help="key=value of the config")
    p.add_argument("--per_digit", type=int, default=5, help="samples per digit to score")
    p.add_argument("--out", default=HERE, help="folder of results.json, figure and WAVs")
    p.add_argument("--temperatures", default="1.0",
                   help="comma-separated sampling temperatures to score (the first is drawn)")
    args = p.parse_args()
    c = wavenet_configs.get_config("spoken_digits")
    c.data.path = args.data
    for item in args.override:
        _override(c, item)

    state = train.train_and_evaluate(c, args.workdir)
    saved = os.path.join(args.workdir, "eval", f"{int(state.step)}.json")
    if os.path.exists(saved):  # --mode=eval of this step already ran
        with open(saved) as f:
            evaluated = json.load(f)
    else:
        evaluated = train.evaluate(c, args.workdir)
    results = {k: float(evaluated[k]) for k in ("bits_per_sample", "loss")}

    # Baselines on exactly the samples eval_step scores.
    train_ds, test_ds = data_lib.create_dataset(c, "train"), data_lib.create_dataset(c, "test")
    windows, weights = [], []
    for b in test_ds.eval_batches(64):
        for a, w, m in zip(b["audio"], b["weight"], b["mask"], strict=True):
            if m:
                windows.append(a)
                weights.append(w)
    train_clips = [train_ds.clip(i) for i in range(train_ds.num_examples)]
    results["unigram_bits_per_sample"] = audio_eval.unigram_bits(train_clips, windows, weights)
    results["linear_predictor_bits_per_sample"] = audio_eval.linear_predictor_bits(
        train_clips, windows, weights, order=32)
    results["adaptive_linear_predictor_bits_per_sample"] = audio_eval.linear_predictor_bits(
        train_clips, windows, weights, order=32, adaptive=16)

    # The spoken-digit classifier: trained on the train split, tested on the held-out accents.
    rate = int(c.data.sample_rate)
    clf = audio_eval.DigitClassifier(rate).fit(train_clips, train_ds.labels)
    test_clips = [test_ds.clip(i) for i in range(test_ds.num_examples)]
    results["classifier_test_accuracy"] = float(np.mean(clf.predict(test_clips)
                                                        == test_ds.labels))

    run, state = train.load_trained(c, args.workdir)
    results["step"] = int(state.step)
    labels = np.repeat(np.arange(10), args.per_digit)
    rng = jax.random.PRNGKey(1234)
    temps = [float(t) for t in args.temperatures.split(",")]
    for temp in temps[:0:-1]:  # the other temperatures: recognition only
        c.wavenet.temperature = temp
        other, _ = train.load_trained(c, args.workdir)
        drawn = np.asarray(other.method.sample(state, rng, len(labels), labels=labels))
        results[f"samples_recognised_t{temp}"] = float(np.mean(clf.predict(list(drawn))
                                                               == labels))
    c.wavenet.temperature = temps[0]
    run, state = train.load_trained(c, args.workdir)
    results["temperature"] = temps[0]
    t0 = time.perf_counter()
    samples = np.asarray(run.method.sample(state, rng, len(labels), labels=labels))
    gen_seconds = time.perf_counter() - t0  # includes compilation
    predicted = clf.predict(list(samples))
    results["samples_recognised"] = float(np.mean(predicted == labels))
    results["samples_confusion"] = np.bincount(labels * 10 + predicted, minlength=100).reshape(
        10, 10).tolist()
    results["num_samples"] = len(labels)
    results["sample_seconds"] = samples.shape[1] / rate
    results["generate_seconds_with_compile"] = gen_seconds

    # Generation speed: cached (the whole clip) vs naive (a short clip, identical samples).
    model = WaveNet(model_config(c, run.info))
    params = state.ema_params
    one = jnp.zeros((1,), jnp.int32)
    sc_long = SampleConfig(length=int(c.wavenet.sample_length), sample_rate=rate,
                           lead=int(c.wavenet.sample_lead))
    _, t_long = _timed(lambda: generate(model, params, rng, one, None, sc_long))
    sc_short = SampleConfig(length=400, sample_rate=rate, lead=int(c.wavenet.sample_lead))
    cached, t_cached = _timed(lambda: generate(model, params, rng, one, None, sc_short))
    naive, t_naive = _timed(lambda: generate_naive(model, params, rng, one, None, sc_short))
    results["cached_equals_naive_400"] = bool(np.array_equal(cached, naive))
    results["samples_per_sec_cached_batch1"] = sc_long.length / t_long
    results["samples_per_sec_cached_batch1_400"] = sc_short.length / t_cached
    results["samples_per_sec_naive_batch1_400"] = sc_short.length / t_naive
    results["load_average"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    first = [int(np.flatnonzero(test_ds.labels == d)[0]) for d in range(10)]
    real = [np.pad(test_clips[i], (0, max(0, samples.shape[1] - len(test_clips[i]))))
            [:samples.shape[1]] for i in first]
    pick = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    audio_eval.save_spectrograms(
        np.concatenate([np.stack(real), samples[pick]]), rate,
        os.path.join(args.out, "spectrograms.png"),
        titles=[f"test clip: {d}" for d in range(10)]
        + [f"sample for {d}: heard {predicted[i]}" for d, i in enumerate(pick)])
    for d in (0, 7):
        wavfile.write(os.path.join(args.out, f"sample_digit{d}.wav"), rate,
                      to_int16(samples[pick[d]]))


if __name__ == "__main__":
    main()
