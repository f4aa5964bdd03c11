"""`--mode=sample` figures of StyleGAN2 (EMA generator, one fixed noise for every image):

- style mixing (the paper's Fig. 3): a top row of source A seeds, a left column of source B
  seeds, and per block (coarse, middle, fine) the A images with B's styles copied into those
  layers;
- a truncation sweep: one row per seed, one column per psi (1, 0.7, 0.5, 0 by default);
- one two-seed mix at `sampler.crossover`: [A, B, layers < crossover from A, the rest from B].

Files go to `workdir/figures/<name>.png` under the first free name (`name_1`, `name_2`, ...).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import plotting
from aigc_jax.methods.common import to_uint8
from aigc_jax.methods.stylegan2.styles import (
    StyleGANContext,
    broadcast,
    layer_groups,
    mapping,
    mix,
    seed_latents,
    synthesize,
    truncate,
)
from aigc_jax.state import TrainState


def fixed_noise_key(ctx: StyleGANContext) -> jax.Array:
    """The noise key of the sample grids and figures (fixed: images are comparable)."""
    return jax.random.fold_in(jax.random.PRNGKey(ctx.fixed_noise_seed), 10**6)


def seed_ws(ctx: StyleGANContext, state: TrainState, seeds, psi: float = 1.0) -> jax.Array:
    """The EMA mapping's truncated w of each seed, broadcast to every layer [S, num_ws, D]."""
    w = mapping(ctx, state.ema_params["generator"], seed_latents(ctx, jnp.asarray(seeds)))
    return broadcast(ctx, truncate(w, state.model_state["w_avg"], psi))


def render(ctx: StyleGANContext, state: TrainState, ws: jax.Array) -> np.ndarray:
    """uint8 images [N, H, W, C] of styles ws [N, num_ws, D], each with the same noise maps."""
    key = fixed_noise_key(ctx)
    one = lambda v: synthesize(ctx, state.ema_params["generator"], v[None], key)[0]
    return np.asarray(to_uint8(jax.jit(jax.vmap(one))(ws)))


def style_mixing_grid(ctx: StyleGANContext, state: TrainState, seeds_a, seeds_b,
                      psi: float = 1.0) -> np.ndarray:
    """The Fig. 3 grid as uint8 [(1 + 3 len(B)) * (1 + len(A)), H, W, C] (row-major)."""
    ws_a, ws_b = seed_ws(ctx, state, seeds_a, psi), seed_ws(ctx, state, seeds_b, psi)
    na, nb = ws_a.shape[0], ws_b.shape[0]
    layer = jnp.arange(ctx.num_ws)[None, None, :, None]
    rows = [ws_a]
    for start, stop in layer_groups(ctx.image_shape[0]).values():
        take_b = (layer >= start) & (layer < stop)  # [1, 1, L, 1]
        rows.append(jnp.where(take_b, ws_b[:, None], ws_a[None]).reshape(-1, *ws_a.shape[1:]))
    images = render(ctx, state, jnp.concatenate(rows))
    src_a, src_b, cells = images[:na], render(ctx, state, ws_b), images[na:]
    blank = np.full_like(src_a[:1], 255)
    out = [blank, src_a]
    for g in range(3):
        block = cells[g * na * nb:(g + 1) * na * nb].reshape(nb, na, *src_a.shape[1:])
        for j in range(nb):
            out += [src_b[j:j + 1], block[j]]
    return np.concatenate(out)


def truncation_grid(ctx: StyleGANContext, state: TrainState, seeds, psis) -> np.ndarray:
    """uint8 [len(seeds) * len(psis), H, W, C]: row i is seed i at each psi."""
    ws = jnp.stack([seed_ws(ctx, state, seeds, float(p)) for p in psis], axis=1)
    return render(ctx, state, ws.reshape(-1, *ws.shape[2:]))


def mix_pair(ctx: StyleGANContext, state: TrainState, seed_a: int, seed_b: int,
             crossover: int, psi: float = 1.0) -> np.ndarray:
    """uint8 [3, H, W, C]: A, B and A's styles below `crossover` with B's from there on."""
    ws = seed_ws(ctx, state, [seed_a, seed_b], psi)
    mixed = mix(ws[:1], ws[1:], crossover)
    return render(ctx, state, jnp.concatenate([ws, mixed]))


def write_figures(ctx: StyleGANContext, state: TrainState, out_dir: str,
                  config: ml_collections.ConfigDict) -> list[str]:
    """The three figures as PNGs under new names in `out_dir`; returns their paths."""
    base = ctx.fixed_noise_seed
    seeds_a, seeds_b = [base + i for i in range(5)], [base + 5 + i for i in range(3)]
    psi = float(config.sampler.truncation_psi)
    grid = style_mixing_grid(ctx, state, seeds_a, seeds_b, psi)
    files = [plotting.save_image_grid(grid, plotting.free_stem(out_dir, "style_mixing")
                                      + ".png", ncols=len(seeds_a) + 1)]
    psis = tuple(float(p) for p in config.sampler.truncation_sweep)
    sweep = truncation_grid(ctx, state, [base + i for i in range(8)], psis)
    files.append(plotting.save_image_grid(sweep, plotting.free_stem(out_dir, "truncation")
                                          + ".png", ncols=len(psis)))
    a, b = (int(v) for v in config.sampler.mix_seeds)
    pair = mix_pair(ctx, state, a, b, int(config.sampler.crossover), psi)
    files.append(plotting.save_image_grid(pair, plotting.free_stem(out_dir, "mix_pair") + ".png",
                                          ncols=3))
    return files
