"""Lightning callbacks: the mixture computed inside the run, the distances to the target, progress."""

from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture
from mixalign.callbacks.progress import StepProgressBar

__all__ = ["AlignedMixture", "LogLikelihoodKL", "StepProgressBar"]
