"""The paper's studies as presets: which models, over which settings, with which seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ncf.errors import NcfError
from ncf.experiments.cells import (
    Budget,
    Cell,
    baseline_cell_config,
    baseline_spec,
    ncf_cell_config,
    pipeline_config,
)
from ncf.experiments.names import ALL_MODELS, NCF_MODELS, PRESET_TITLES

#: Baselines quick enough for a smoke run.
QUICK_BASELINES = ("itempop", "puresvd", "ease")


@dataclass(frozen=True)
class ExperimentOptions:
    """What the command line chose.

    Args:
        seeds: model seeds; every cell is run once per seed.
        epochs: maximum epochs of every NCF stage (the kept epoch is chosen on validation).
        factors: predictive factors to sweep (``None``: the preset's own).
        models: models to run (``None``: the preset's own).
        quick: a smoke run: one seed, one factor size, two points of every sweep and grid.
        batch_size, lr: NCF training (the pipeline's defaults).
        full_ranking_users: users sampled for full-ranking metrics (``None``: all).
        device: torch device of NCF training.
        dropout: dropout of the MLP's input (MLP and NeuMF); 0, the paper's model, by default.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    factors: tuple[int, ...] | None = None
    models: tuple[str, ...] | None = None
    quick: bool = False
    batch_size: int = 256
    lr: float = 0.001
    full_ranking_users: int | None = 10_000
    device: str = "cpu"
    dropout: float = 0.0

    def budget(self) -> Budget:
        return Budget(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      full_ranking_users=self.full_ranking_users, device=self.device,
                      dropout=self.dropout)


Settings = Callable[[tuple[int, ...], bool], list[dict[str, int]]]


@dataclass(frozen=True)
class Preset:
    """One study.

    Args:
        name: the command-line name.
        title: what it shows, with the paper's figure or table.
        models: default models.
        factors: default factor sizes.
        settings: the grid points, from the factor sizes and the quick flag.
        sweep: the setting varied along the x-axis of plots and the columns of tables.
        fix_factors: factor-based baselines take the setting's factor size (else tuned).
    """

    name: str
    title: str
    models: tuple[str, ...]
    factors: tuple[int, ...]
    settings: Settings
    sweep: str | None
    fix_factors: bool = True


def _factors(f: tuple[int, ...], quick: bool) -> list[dict[str, int]]:
    return [{"factors": x} for x in f]


def _depth(f: tuple[int, ...], quick: bool) -> list[dict[str, int]]:
    layers = (0, 1) if quick else (0, 1, 2, 3, 4)
    return [{"factors": x, "layers": n} for x in f for n in layers]


def _negatives(f: tuple[int, ...], quick: bool) -> list[dict[str, int]]:
    negs = (1, 4) if quick else tuple(range(1, 11))
    return [{"factors": x, "negatives": n} for x in f for n in negs]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("factors", PRESET_TITLES["factors"],
           ALL_MODELS, (8, 16, 32, 64), _factors, "factors"),
    Preset("depth", PRESET_TITLES["depth"],
           ("mlp",), (8, 16, 32, 64), _depth, "layers"),
    Preset("negatives", PRESET_TITLES["negatives"],
           ("gmf", "mlp", "neumf"), (16,), _negatives, "negatives"),
    Preset("curves", PRESET_TITLES["curves"],
           ("gmf", "mlp", "neumf"), (8,), _factors, None),
    Preset("protocols", PRESET_TITLES["protocols"],
           ALL_MODELS, (32,), _factors, None, fix_factors=False),
)}


def preset_models(preset: Preset, options: ExperimentOptions) -> tuple[str, ...]:
    """The models of this run, checked."""
    if options.models is not None:
        unknown = [m for m in options.models if m not in ALL_MODELS]
        if unknown:
            raise NcfError(f"unknown model(s) {', '.join(unknown)} "
                           f"(choose from {', '.join(ALL_MODELS)})")
        return options.models
    if options.quick:
        return tuple(m for m in preset.models if m in NCF_MODELS or m in QUICK_BASELINES)
    return preset.models


def preset_factors(preset: Preset, options: ExperimentOptions) -> tuple[int, ...]:
    """The factor sizes of this run, checked."""
    factors = options.factors or preset.factors
    if options.quick and options.factors is None:
        factors = factors[:1]
    bad = [f for f in factors if f < 2 or f % 2]
    if bad:
        raise NcfError(f"predictive factors must be even numbers >= 2, got {bad}")
    return tuple(factors)


def build_cells(preset: Preset, options: ExperimentOptions, fingerprint: str,
                n_users: int) -> list[Cell]:
    """Every (model, setting, seed) of the run, each with its full configuration (``n_users``:
    the training users, which decide row-wise updates on a CPU)."""
    if options.epochs < 1:
        raise NcfError(f"epochs must be >= 1, got {options.epochs}")
    if not options.seeds:
        raise NcfError("no seeds")
    budget = options.budget()
    cells: list[Cell] = []
    for setting in preset.settings(preset_factors(preset, options), options.quick):
        for model in preset_models(preset, options):
            for seed in options.seeds:
                if model in NCF_MODELS:
                    pc = pipeline_config(setting, seed, budget, model != "neumf-scratch",
                                         n_users)
                    cfg = ncf_cell_config(model, pc, fingerprint)
                    cells.append(Cell(model, setting, seed, pc, cfg))
                else:
                    spec = baseline_spec(model, setting, seed, preset.fix_factors, options.quick)
                    cfg = baseline_cell_config(spec, fingerprint, budget.full_ranking_users)
                    cells.append(Cell(model, setting, seed, spec, cfg))
    return cells
