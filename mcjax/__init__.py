"""mcjax: masked conditioning for deep generative models in JAX/Flax."""
