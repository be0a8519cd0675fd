"""mcjax: masked conditioning for deep generative models (mcVAE, mcLDM) in JAX/Flax.

Importing ``mcjax`` loads nothing else: the research API is ``mcjax.api`` (``import mcjax.api as mc``), and the entry
points (``train.py``, ``sample.py``, ``prepare_dvm.py``) make their process-wide settings through ``mcjax.runtime``
before JAX starts.
"""

__version__ = "0.3.0"
