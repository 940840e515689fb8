"""The keyed latent encryptor (RiDDLE, CVPR'23): ``encryptor`` (the exact-invertible keyed map on generator
latents), ``loader`` (generator + bundled encryptor weights -> the ``riddle`` method), and its two CPU
trainers, ``train`` (proxy / decoder + dlib) and ``surrogate`` (dlib surrogate), which share ``common``.

Not the default de-identification method any more; kept as ``--method riddle`` for users who bring
StyleGAN2/e4e weights."""
