"""TFDS builders (one package each) for the real datasets; readable without TensorFlow.

    import r3vae_jax.data.tfds.beauty  # registers "beauty"
    builder = tfds.builder("beauty", data_dir=..., file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))
    source = builder.as_data_source()["test"]   # random access, numpy, no TensorFlow
"""
