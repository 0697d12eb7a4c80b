"""Library code shared by the methods and the engine; the method registry never scans it.

Modules: ``device`` (devices, batching, threads, progress), ``seeding`` (seed streams),
``training`` (the Adam training loop), ``checkpoint`` (checkpoint schedule and reference),
``standardise``, ``gaussian``, ``distances`` (energy distance), ``nets``, ``mle`` (maximum-likelihood
loop), ``sde`` (VP-SDE), ``training_free_score``, ``compat`` (third-party quirks). They import only
the standard library, numpy, scipy, torch (with torchdiffeq in ``sde`` and tqdm for progress bars)
and ``harness.errors``. ``files``: the checked opening of files a user names.
"""

__all__ = [
    "device",
    "files",
    "seeding",
    "training",
    "checkpoint",
    "standardise",
    "gaussian",
    "distances",
    "nets",
    "mle",
    "sde",
    "training_free_score",
    "compat",
]
