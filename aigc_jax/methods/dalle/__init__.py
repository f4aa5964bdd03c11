"""The DALL-E family: a GPT prior over text and VQ image tokens, reranked by CLIP; `create`,
`validate` and `ACCEPTS` live in `method.py`, the joint layout in `sequence.py`, the compiled
image-token sampler and reranking in `sampling.py`, the reranking evaluation in
`evaluation.py`."""

from aigc_jax.methods.dalle.method import ACCEPTS, create, validate

__all__ = ["ACCEPTS", "create", "validate"]
