"""The trainer of laspa's bundled miniature model (not part of the installed runtime).

Run from the repository root with the trainer on the path::

    PYTHONPATH=training python -m laspa_train.train --stage unet --resume --minutes 120
    PYTHONPATH=training python -m laspa_train.evaluate --json

It writes the diffusers folder that ``laspa.mini.model_dir()`` serves.
"""
