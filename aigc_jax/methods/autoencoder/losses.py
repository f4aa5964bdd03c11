"""The first-stage losses of latent diffusion (LDM's `LPIPSWithDiscriminator` without LPIPS)
and VQGAN (`VQLPIPSWithDiscriminator`), and the quality metrics PSNR and SSIM.

KL autoencoder:  nll = sum(|x - x^| / exp(logvar) + logvar) / B with a learnable scalar
logvar, + kl_weight * KL(q(z|x) || N(0, I)) summed over latents / B (kl_weight 1e-6).
VQ autoencoder:  mean |x - x^| + codebook and commitment losses (beta 0.25).
Both:            + d_weight * disc_factor * g_loss (hinge, from `methods.gan.losses`), with the
adaptive weight d_weight = ||grad_W nll|| / (||grad_W g_loss|| + 1e-4), W the decoder's last
layer (Esser et al., 2021, eq. 7), clipped to [0, 1e4], and disc_factor 0 before disc_start.
"""

import math

import jax
import jax.numpy as jnp

from aigc_jax.errors import UserError

RECONSTRUCTIONS = {"l1": lambda x, y: jnp.abs(x - y), "l2": lambda x, y: (x - y) ** 2}
# An LPIPS-style feature loss plugs in here: name -> fn(x, x_hat) -> per-example loss [B].
# None ships: every such network is pretrained on ImageNet, and nothing is downloaded offline.
PERCEPTUAL: dict[str, object] = {}


def check_perceptual(name: str) -> None:
    """'' (none) or a registered perceptual loss; a clear error otherwise."""
    if name and name not in PERCEPTUAL:
        raise UserError(
            f"config.autoencoder.perceptual={name!r} is not available: no pretrained perceptual "
            "(LPIPS) network ships with aigc_jax offline; set it to '' or register one in "
            f"aigc_jax.methods.autoencoder.losses.PERCEPTUAL (known: {sorted(PERCEPTUAL)}).")


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis -> [B]."""
    kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(-1)


def weighted_nll(rec: jax.Array, logvar: jax.Array) -> jax.Array:
    """LDM's nll: rec / exp(logvar) + logvar elementwise (a Laplace/Gaussian scale), [B, ...]."""
    return rec / jnp.exp(logvar) + logvar


def adaptive_weight(grad_nll: jax.Array, grad_g: jax.Array, max_weight: float = 1e4
                    ) -> jax.Array:
    """||grad nll|| / (||grad g|| + 1e-4), clipped to [0, max_weight], with no gradient."""
    w = jnp.linalg.norm(grad_nll) / (jnp.linalg.norm(grad_g) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


def last_layer_grad(h: jax.Array, kernel: jax.Array, grad_out: jax.Array) -> jax.Array:
    """d loss / d kernel of the 3x3 'SAME' conv x = conv(h, kernel) + b, given d loss / d x.

    x depends linearly on the kernel, so this is exact and needs no second pass through the
    decoder."""
    def conv(k):
        return jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.vjp(conv, kernel)[1](grad_out)[0]


# ----------------------------------------------------------------------------- metrics


def psnr(x: jax.Array, y: jax.Array, data_range: float = 255.0) -> jax.Array:
    """Per-image PSNR in dB of images [B, H, W, C] (any dtype; compared as float32)."""
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    w = jnp.exp(-0.5 * (r / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: jax.Array, w: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of x [B, H, W, C] with the 1-D window w, per channel."""
    c = x.shape[-1]
    kh = jnp.tile(w[:, None, None, None], (1, 1, 1, c))  # [S, 1, 1, C] (HWIO, depthwise)
    kw = jnp.tile(w[None, :, None, None], (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                     feature_group_count=c)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                        feature_group_count=c)


def ssim(x: jax.Array, y: jax.Array, data_range: float = 255.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Per-image SSIM (Wang et al., 2004) of [B, H, W, C] images: Gaussian window (11, 1.5),
    population covariances, averaged over the positions where the window fits and over
    channels. Equals skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...) (tested)."""
    if min(x.shape[1:3]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got "
                         f"{x.shape[1]}x{x.shape[2]}")
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    w = _gaussian_window(win_size, sigma)
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    vx = _filter_valid(x * x, w) - mu_x**2
    vy = _filter_valid(y * y, w) - mu_y**2
    cxy = _filter_valid(x * y, w) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def ssim_window(image_side: int) -> int:
    """The largest odd window up to 11 that fits (7 for 8x8 digits), as skimage requires."""
    return min(11, image_side - (1 - image_side % 2))


def bits_per_dim_prior_free(codebook_size: int, latent_positions: int, image_dims: int) -> float:
    """The rate of coding every latent position with log2 K bits, per image dimension."""
    return latent_positions * math.log2(codebook_size) / image_dims
