"""aigc_jax: JAX/Flax research code for diffusion, VAEs, GANs and GPT decoders."""

__version__ = "0.1.0"
