"""Command-line entry points of the traveling-salesman compute mesh (filled in by the TSP work)."""

import click


@click.group()
def tsp():
    """Solve traveling-salesman problems on the mesh."""
