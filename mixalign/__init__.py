"""mixalign: domain mixtures that move a base language model toward a target model.

Pipeline, one subpackage per stage: data -> model -> llvec (log-likelihood vectors, KL)
-> mixture (domain weights) -> callbacks -> cli.
"""

__version__ = "0.1.0"
