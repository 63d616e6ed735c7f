"""Lightning callbacks: the mixture computed inside the run, the distances to the target, downstream tasks, progress."""

from mixalign.callbacks.downstream import DownstreamEval
from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture
from mixalign.callbacks.progress import StepProgressBar

__all__ = ["AlignedMixture", "DownstreamEval", "LogLikelihoodKL", "StepProgressBar"]
