"""mixalign: domain mixtures that move a base language model toward a target model.

Pipeline, one subpackage per stage: data -> model -> llvec (log-likelihood vectors, KL)
-> mixture (domain weights) -> callbacks -> cli.
"""

import os

# Reproducible CPU numerics: MKL otherwise picks kernels by memory alignment and, on a loaded
# machine, may run fewer threads than asked, so the same probe could round differently in two
# processes. Read when MKL starts, so only before torch is imported; a user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"
