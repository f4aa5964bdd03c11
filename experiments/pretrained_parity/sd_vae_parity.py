"""Stable Diffusion's autoencoder (diffusers `AutoencoderKL`) parity, both ways (run by hand).

    python experiments/pretrained_parity/sd_vae_parity.py \
        --torch_python=/work/venvs/torch/bin/python

Run with this repo's interpreter (jax); `--torch_python` has torch and diffusers (no jax) and
runs the PyTorch stages of this same file:

1. torch: a random-initialised AutoencoderKL (SD's block layout at a CPU size: 3 levels,
   2 res blocks per level, 4 latent channels, scaling_factor 0.18215; GroupNorm gains and all
   biases randomised so every tensor matters), saved with save_pretrained; its posterior
   mean/log-variance on fixed images and its decode of fixed latents.
2. jax: `--mode=import` of that directory into a workdir, then our encoder moments and decoder
   on the same inputs (max |diff|), the Autoencoder component's decode of the scaled latents
   (the scale factor applied once), and `python -m aigc_jax.export --format=hf` of the run.
3. torch: AutoencoderKL.from_pretrained(export): its decode against ours, its scaling_factor.

Writes sd_vae_results.json beside this file (and prints it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHAPE = dict(block_out_channels=(32, 64, 64), layers_per_block=2, latent_channels=4,
             norm_num_groups=16, sample_size=32)
SCALE = 0.18215


def torch_build(work: str) -> None:
    """Stage 1 (torch interpreter): random AutoencoderKL, save_pretrained, reference outputs."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                        up_block_types=["UpDecoderBlock2D"] * 3, scaling_factor=SCALE,
                        **SHAPE).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    vae.save_pretrained(os.path.join(work, "hf_random"))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    z = torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        moments = vae.encode(x).latent_dist.parameters
        decoded = vae.decode(z).sample
    np.savez(os.path.join(work, "torch_random.npz"), x=x.numpy(), z=z.numpy(),
             moments=moments.numpy(), decoded=decoded.numpy())


def torch_check(work: str) -> None:
    """Stage 3 (torch interpreter): from_pretrained on our export, decode the same latents."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL

    ref = np.load(os.path.join(work, "torch_random.npz"))
    vae = AutoencoderKL.from_pretrained(os.path.join(work, "export")).eval()
    with torch.no_grad():
        decoded = vae.decode(torch.from_numpy(ref["z"])).sample.numpy()
    ours = np.load(os.path.join(work, "ours.npz"))["decoded"]
    with open(os.path.join(work, "torch_check.json"), "w") as f:
        json.dump({"export_decode_max_abs_diff": float(np.abs(decoded - ours).max()),
                   "export_scaling_factor": float(vae.config.scaling_factor),
                   "torch": torch.__version__, "diffusers": diffusers.__version__}, f)


def jax_stage(work: str) -> dict:
    """Stage 2 (this interpreter): import, compare, export."""
    import jax.numpy as jnp

    from aigc_jax import components, parallel
    from aigc_jax.methods.autoencoder.method import autoencoder_role, make_context

    run = os.path.join(work, "run")
    subprocess.run([sys.executable, "-m", "aigc_jax.main", "--config=configs/autoencoder.py:tiny",
                    f"--config.init_from.hf={work}/hf_random", "--config.data.image_size=32",
                    f"--workdir={run}", "--mode=import"], cwd=REPO, check=True)
    ref = np.load(os.path.join(work, "torch_random.npz"))
    config, info = components.read_run(run, "parity")
    weights = components.restore_weights(run, 0, "ema", parallel.create_mesh(), "parity")
    ctx = make_context(config, info)
    params = {"params": weights["autoencoder"]}
    nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)  # noqa: E731
    moments = nchw(ctx.model.apply(params, nhwc(ref["x"]), method="encode"))
    decoded = nchw(ctx.model.apply(params, nhwc(ref["z"]), method="decode")[0])
    role = autoencoder_role(config, info, run)
    via_role = nchw(role.decode(weights, nhwc(ref["z"]) * role.scale_factor))
    np.savez(os.path.join(work, "ours.npz"), decoded=decoded)
    out = os.path.join(work, "export")
    subprocess.run([sys.executable, "-m", "aigc_jax.export", f"--workdir={run}", "--format=hf",
                    f"--out={out}"], cwd=REPO, check=True)
    return {"import_encode_moments_max_abs_diff": float(np.abs(moments - ref["moments"]).max()),
            "import_decode_max_abs_diff": float(np.abs(decoded - ref["decoded"]).max()),
            "component_decode_max_abs_diff": float(np.abs(via_role - ref["decoded"]).max()),
            "component_scale_factor": float(role.scale_factor),
            "decode_output_max_abs": float(np.abs(ref["decoded"]).max()),
            "shape": {k: list(v) if isinstance(v, tuple) else v for k, v in SHAPE.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default="/work/venvs/torch/bin/python")
    parser.add_argument("--stage", default="all", choices=["all", "torch_build", "torch_check"])
    parser.add_argument("--work", default="")
    args = parser.parse_args()
    if args.stage == "torch_build":
        return torch_build(args.work)
    if args.stage == "torch_check":
        return torch_check(args.work)
    with tempfile.TemporaryDirectory() as work:
        me = [args.torch_python, os.path.abspath(__file__), f"--work={work}"]
        subprocess.run([*me, "--stage=torch_build"], check=True)
        results = jax_stage(work)
        subprocess.run([*me, "--stage=torch_check"], check=True)
        with open(os.path.join(work, "torch_check.json")) as f:
            results.update(json.load(f))
    path = os.path.join(HERE, "sd_vae_results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
