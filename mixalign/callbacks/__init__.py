"""Lightning callbacks: the mixture computed inside the run, the distances to the target, downstream tasks, progress,
and the checkpoint a SIGTERM leaves."""

from mixalign.callbacks.dashboard import Dashboard, DashboardLogger
from mixalign.callbacks.downstream import DownstreamEval
from mixalign.callbacks.interrupt import SaveOnInterrupt
from mixalign.callbacks.kl import LogLikelihoodKL
from mixalign.callbacks.mixture import AlignedMixture
from mixalign.callbacks.ownership import OwnCheckpointDir
from mixalign.callbacks.progress import StepProgressBar

__all__ = ["AlignedMixture", "Dashboard", "DashboardLogger", "DownstreamEval", "LogLikelihoodKL", "OwnCheckpointDir",
           "SaveOnInterrupt", "StepProgressBar"]
