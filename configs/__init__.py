"""Every mcjax config: ``get_config()`` files for ``train.py --config``, installed as ``mcjax.configs`` (``from
mcjax.configs import geobiked_vae_datasize``). Configs are data: they import ml_collections, the standard library, the
embedded table's column names (``mcjax.data.geobiked``) and each other, never JAX."""
