"""Lightning callbacks: measure the distance to the target while training."""

from mixalign.callbacks.kl import LogLikelihoodKL

__all__ = ["LogLikelihoodKL"]
