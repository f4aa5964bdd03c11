"""Layers shared by every model: attention, residual blocks, norms, embeddings, resampling.

One implementation per idea (maxtext `layers/`, score_sde `models/layers.py`): the UNet, the
GPT and every new model build from these, so a fix or a faster kernel lands everywhere at once.
"""

from aigc_jax.models.layers.attention import (
    Cache,
    MultiHeadAttention,
    dot_product_attention,
    init_kv_cache,
)
from aigc_jax.models.layers.core import (
    DTYPES,
    GELUS,
    Dense,
    count_params,
    gelu,
    gelu_tanh,
    normal_init,
    resolve_dtype,
    zero_init,
)
from aigc_jax.models.layers.embeddings import rope, sincos_2d, timestep_embedding
from aigc_jax.models.layers.norms import GroupNorm32, batch_norm, bn_scale_init, maybe_sn
from aigc_jax.models.layers.resample import (
    CONV_IMPLS,
    Down2,
    Downsample,
    Up2,
    Upsample,
    avg_pool2,
    upsample_nearest,
)
from aigc_jax.models.layers.resblocks import AttnBlock, ResBlock
from aigc_jax.models.layers.transformer import GEGLU, SpatialTransformer, TransformerBlock

__all__ = [
    "CONV_IMPLS", "DTYPES", "GELUS", "GEGLU", "AttnBlock", "Cache", "Dense", "Down2", "Downsample",
    "GroupNorm32", "MultiHeadAttention", "ResBlock", "SpatialTransformer", "TransformerBlock",
    "Up2", "Upsample", "avg_pool2",
    "batch_norm", "bn_scale_init", "count_params", "dot_product_attention", "gelu", "gelu_tanh",
    "init_kv_cache", "maybe_sn", "normal_init", "resolve_dtype", "rope", "sincos_2d",
    "timestep_embedding",
    "upsample_nearest", "zero_init",
]
