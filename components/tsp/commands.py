"""Command-line entry points of the traveling-salesman compute mesh: `nerve compute`, `nerve solver`, `nerve tsp solve`."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click

from components.cli.options import build_mesh_config, checked, mesh_options, run_or_exit, split_mesh
from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError, InvalidArgument


@click.group()
def tsp():
    """Solve traveling-salesman problems on the mesh."""




@click.command()
@mesh_options("compute")
@click.option("--cache-size", envvar="NERVE_TSP_CACHE_SIZE", default=16, show_default=True, show_envvar=True,
              type=click.IntRange(1, 1000), help="Problems kept in memory (so calls need not resend the cities).")
@click.option("--max-cities", envvar="NERVE_TSP_MAX_CITIES", default=2000, show_default=True, show_envvar=True,
              type=click.IntRange(3, 20000), help="Largest problem accepted.")
def compute(**kwargs):
    """Serve nerve.tsp.anneal (shared round robin, one call at a time); start one per core, on any machine."""
    from components.tsp.compute import Compute, ComputeConfig
    from components.mesh.session import Mesh

    common, own = split_mesh(kwargs)
    config = checked(ComputeConfig, mesh=build_mesh_config("compute", **common), **own)
    mesh = Mesh(config)
    run_or_exit([Compute(config, mesh)], config, mesh, "compute")


@click.command()
@mesh_options("solver")
@click.option("--max-budget", envvar="NERVE_TSP_MAX_BUDGET", default=300.0, show_default=True, show_envvar=True,
              type=float, help="Largest budget in seconds a caller may ask for.")
@click.option("--max-cities", envvar="NERVE_TSP_MAX_CITIES", default=2000, show_default=True, show_envvar=True,
              type=int, help="Largest problem accepted.")
@click.option("--round-seconds", envvar="NERVE_TSP_ROUND_SECONDS", default=1.0, show_default=True, show_envvar=True,
              type=float, help="Length of one round of anneal calls.")
@click.option("--max-solves", envvar="NERVE_TSP_MAX_SOLVES", default=4, show_default=True, show_envvar=True,
              type=int, help="Solves served at once (the router refuses more).")
def solver(**kwargs):
    """Serve nerve.tsp.solve: annealing in rounds of parallel nerve.tsp.anneal calls over the compute instances."""
    from components.mesh.session import Mesh
    from components.tsp.solver import Solver, SolverConfig

    common, own = split_mesh(kwargs)
    config = checked(SolverConfig, mesh=build_mesh_config("solver", **common), **own)
    mesh = Mesh(config)
    run_or_exit([Solver(config, mesh)], config, mesh, "solver")


@dataclass(frozen=True)
class TspSolveConfig:
    """One `nerve tsp solve`: the parsed file, the budget, an optional seed."""

    mesh: MeshConfig
    file: Path
    budget: float
    seed: Optional[int] = None
    show_tour: bool = False

    def __post_init__(self):
        if not self.budget > 0:
            raise ConfigError(f"budget must be more than 0 seconds, got {self.budget}")
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


def describe_progress(payload, echo):
    """One line per progressive result of nerve.tsp.solve."""
    if payload.get("kind") == "start":
        echo(f"start: {payload['n']} cities, nearest-neighbour tour {payload['length']}")
        return
    gap = f"  gap {payload['gap']:6.2f}%" if payload.get("gap") is not None else ""
    echo(f"round {payload['round']:>3}  {payload['elapsed']:6.1f} s  length {payload['length']:>9}{gap}"
         f"  T {payload['temperature']:9.3f}  instances {payload.get('instances', 0)}"
         f"  {payload.get('moves_per_second', 0) / 1e6:5.2f} M moves/s")


@tsp.command("solve")
@mesh_options("operator", one_shot=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", default=10.0, show_default=True, type=float, help="Seconds of annealing.")
@click.option("--seed", default=None, type=int, help="Seed for a reproducible sequence of anneal calls.")
@click.option("--tour", "show_tour", is_flag=True, help="Also print the tour (0-based city indices).")
def solve(file, budget, seed, show_tour, **kwargs):
    """Solve a TSPLIB EUC_2D FILE on the mesh; print progress, the length and the gap to the optimum the file states."""
    from components.mesh.runner import run_once
    from components.tsp.core import load_tsplib

    common, _ = split_mesh(kwargs)
    config = checked(TspSolveConfig, mesh=build_mesh_config("operator", **common), file=file, budget=budget, seed=seed,
                     show_tour=show_tour)
    try:
        problem = load_tsplib(config.file)
    except InvalidArgument as error:
        raise click.BadParameter(f"{error} ({InvalidArgument.uri})", param_hint="FILE") from error

    def echo(line):
        click.echo(line)
        sys.stdout.flush()

    def show(result):
        length = result["length"]
        line = f"{problem.name}: length {length}"
        if problem.optimum:
            line += f"  optimum {problem.optimum}  gap {100.0 * (length - problem.optimum) / problem.optimum:.2f}%"
        echo(line + f"  ({result['rounds']} rounds on {result['instances']} instances, {result['seconds']:.1f} s,"
                    f" {result['moves'] / 1e6:.1f} M moves)")
        if config.show_tour:
            echo("tour: " + " ".join(str(city) for city in result["tour"]))

    def action(mesh):
        arguments = {"cities": problem.cities, "budget": config.budget}
        if config.seed is not None:
            arguments["seed"] = config.seed
        # The solver answers within its budget; the margin covers a last round and a retried call.
        call = mesh.call("nerve.tsp.solve", timeout=config.budget + 30,
                         on_progress=lambda payload: describe_progress(payload, echo), **arguments)
        return call.addCallback(show)

    sys.exit(run_once(action, config, name="nerve tsp solve"))
