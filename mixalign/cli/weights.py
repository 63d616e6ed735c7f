"""`mixalign weights`: the first round's aligned mixture, computed as fit would, without training."""

from __future__ import annotations

from mixalign.callbacks.kl import texts_for
from mixalign.callbacks.mixture import AUTOCAST, moving_away_note, no_exact_note
from mixalign.cli.lightning import MixalignCLI
from mixalign.cli.parsing import output_path
from mixalign.errors import MixalignError
from mixalign.mixture.method import align
from mixalign.mixture.probes import ONE_PROCESS, Ranks, gather_objects
from mixalign.mixture.result import write_weights
from mixalign.mixture.rounds import round_end, round_starts


def weights_main(args: list[str]) -> None:
    """The first round's aligned mixture without training: the probes, every candidate's measured
    distance, the choice; written as a weights YAML (train on it with --data.weights) and a bar chart."""
    cli = MixalignCLI(args=args, run=False, command="weights", description=weights_main.__doc__)
    mixture, trainer = cli.config_init["mixture"], cli.trainer
    if mixture.warmup_steps:
        raise MixalignError("mixture.warmup_steps > 0: the mixture depends on the warm-up training, which is the "
                            "run's own first steps; run `mixalign fit` (the weights land in the run directory)")
    output_path(cli.config["out"])  # before the probes, not after them
    texts_for("mixture", mixture.textset, mixture.n_texts)  # a bad mixture.n_texts fails before the data, naming the key
    starts = round_starts(trainer.max_steps, mixture.rounds, 0)
    ranks = weights_ranks(trainer)
    if ranks.world > 1:  # one process per node tokenizes the data; the others wait and read its cache
        if trainer.local_rank == 0:
            cli.datamodule.prepare_data()
        trainer.strategy.barrier("mixalign weights: data prepared")
    result = align(mixture, cli.model, cli.datamodule, 0, round_end(starts, 0, trainer.max_steps), trainer.max_steps,
                   trainer.gradient_clip_val, device=str(trainer.strategy.root_device),
                   autocast=AUTOCAST.get(str(trainer.precision)), ranks=ranks,
                   accumulate=trainer.accumulate_grad_batches)
    if not trainer.is_global_zero:
        return  # rank 0 writes the file; every rank holds the same result
    out = cli.config["out"]
    png = write_weights(result, out)
    print(result.table())
    for note in (no_exact_note(result), moving_away_note(result)):
        if note:
            print(note)
    rounds = f" (round 0 of {mixture.rounds}: later rounds are computed during fit)" if mixture.rounds > 1 else ""
    print(f"weights written to {out}{rounds} (bar chart {png}); train on them with --data.weights {out}")


def weights_ranks(trainer) -> Ranks:
    """This process among those torchrun or SLURM launched for `mixalign weights`: the trainer's own
    strategy sets up the process group (as in fit), so the probes are dealt across the processes."""
    if trainer.world_size == 1:
        return ONE_PROCESS
    if not trainer.strategy.cluster_environment.creates_processes_externally:
        raise MixalignError(f"mixalign weights on {trainer.world_size} devices needs its processes launched by "
                            "torchrun or SLURM (torchrun --nproc_per_node N -m mixalign weights ... --trainer.devices N "
                            "--trainer.strategy ddp), or --trainer.devices 1")
    trainer.strategy.setup_environment()
    return Ranks(trainer.global_rank, trainer.world_size, gather_objects)
