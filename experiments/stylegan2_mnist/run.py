"""StyleGAN2 vs DCGAN on MNIST at equal wall-clock time (issue 20's check).

    python experiments/stylegan2_mnist/run.py --workdir=runs/sg2_vs_dcgan \
        --data=../shared/data/mnist --seconds=1200

Trains `configs/stylegan2.py:mnist32` and `configs/gan.py:mnist32` (DCGAN, same data and
split) one after the other, each for `--seconds` of wall-clock time including start-up
(`train.num_steps` far beyond what fits; SIGTERM at the budget, where the loop saves a
checkpoint and exits 75); evaluates both with `--mode=eval` (FD/KID/precision/recall in the
MNIST classifier's features, 1,000 samples; StyleGAN2 also PPL) and draws both with
`--mode=sample` (StyleGAN2: style-mixing and truncation figures). Writes results.json and
results.md and copies the figures into `--out` (this folder by default). A run whose workdir
already holds `<name>.seconds` (written when its training ends) is not trained again.
`--set=KEY=VALUE` overrides StyleGAN2's config (for ablations).
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUNS = {"stylegan2": "configs/stylegan2.py:mnist32", "dcgan": "configs/gan.py:mnist32"}
METRICS = ("fd_mnist", "kid", "precision", "recall", "ppl_w")


def _cli(config: str, workdir: str, data: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aigc_jax.main", f"--config={config}", f"--workdir={workdir}",
            f"--config.data.path={data}", *extra]


def _train(cmd: list[str], log: str, budget: float | None) -> tuple[float, int]:
    """Run a training command (SIGTERM after `budget` seconds); its seconds and exit code."""
    t0 = time.monotonic()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the loop checkpoints this step, exits 75
            rc = proc.wait()
    return time.monotonic() - t0, rc


def _newest(pattern: str) -> str:
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        raise SystemExit(f"error: nothing matches {pattern}")
    return found[-1]


def _eval(config: str, workdir: str, data: str) -> dict:
    subprocess.run(_cli(config, workdir, data, "--mode=eval"), cwd=ROOT, check=True)
    with open(_newest(os.path.join(workdir, "eval", "*.json"))) as f:
        return json.load(f)


def main() -> None:
    """Train both at equal wall time, evaluate, sample; write the results here."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="holds stylegan2/ and dcgan/ runs")
    p.add_argument("--data", required=True, help="folder of the MNIST IDX files")
    p.add_argument("--seconds", type=float, required=True,
                   help="wall-clock training budget of each run, start-up included")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a StyleGAN2 config override (--config.KEY=VALUE)")
    p.add_argument("--out", default=HERE)
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    dirs = {name: os.path.join(args.workdir, name) for name in RUNS}
    extra = {"stylegan2": [f"--config.{kv}" for kv in args.set], "dcgan": []}

    cmds, seconds = {}, {}
    for name, config in RUNS.items():
        cmds[name] = _cli(config, dirs[name], args.data, "--config.train.num_steps=1000000",
                          *extra[name])
        stamp = dirs[name] + ".seconds"
        if os.path.exists(stamp):  # trained by an earlier call
            with open(stamp) as f:
                seconds[name] = float(f.read())
            continue
        seconds[name], rc = _train(cmds[name], dirs[name] + ".log", args.seconds)
        if rc not in (0, 75):  # 75: preempted, checkpoint saved
            raise SystemExit(f"error: {name} training exited {rc}; see {dirs[name]}.log")
        with open(stamp, "w") as f:
            f.write(f"{seconds[name]:.1f}")

    results = {"budget_seconds": args.seconds,
               "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "commands": {k: " ".join(v[1:]) for k, v in cmds.items()},
               "load_average_at_end": os.getloadavg()[0], "runs": {}}
    for name, config in RUNS.items():
        ev = _eval(config, dirs[name], args.data)
        subprocess.run(_cli(config, dirs[name], args.data, "--mode=sample"), cwd=ROOT, check=True)
        with open(os.path.join(dirs[name], "config.json")) as f:
            cfg = json.load(f)
        results["runs"][name] = {
            "step": int(ev["step"]) if "step" in ev else None,
            "batch_size": cfg["train"]["batch_size"],
            **{k: ev[k] for k in METRICS if k in ev},
            "protocol": ev.get("protocol"), "ppl_protocol": ev.get("ppl_protocol")}
        shutil.copy(_newest(os.path.join(dirs[name], "samples*.png")),
                    os.path.join(args.out, f"samples_{name}.png"))
    for fig in ("style_mixing", "truncation", "mix_pair"):
        shutil.copy(_newest(os.path.join(dirs["stylegan2"], "figures", f"{fig}*.png")),
                    os.path.join(args.out, f"{fig}.png"))

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    rows = ["| model | steps | images seen | FD (MNIST features) | KID | precision | recall | "
            "PPL (W) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        step = r["step"] or 0
        ppl = f"{r['ppl_w']:.1f}" if "ppl_w" in r else "-"
        rows.append(f"| {name} | {step:,} | {step * r['batch_size']:,} | {r['fd_mnist']:.2f} | "
                    f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | {ppl} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"Wall-clock budget {args.seconds:.0f} s each (trained "
                + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ").\n\n"
                + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
