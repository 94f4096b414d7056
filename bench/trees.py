"""Comparing source trees in one run: a git revision checked out beside this checkout, and the best of each.

Imports nothing of the project, so a bench's child process can put another tree first on sys.path.
"""

import contextlib
import os
import subprocess
import tempfile

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def source_trees(baseline=None):
    """[(name, path)]: REV `baseline` checked out in a temporary git worktree (if given), then this checkout."""
    trees = [("this checkout", PROJECT)]
    worktree = None
    try:
        if baseline:
            worktree = tempfile.mkdtemp(prefix="nerve-baseline-")
            subprocess.run(["git", "-C", PROJECT, "worktree", "add", "--detach", "--force", worktree, baseline],
                           check=True, capture_output=True)
            trees.insert(0, (baseline, worktree))
        yield trees
    finally:
        if worktree:
            subprocess.run(["git", "-C", PROJECT, "worktree", "remove", "--force", worktree], check=False, capture_output=True)


def best_of_trees(trees, figures, baseline, describe):
    """Summary text of the lowest (best) figure per source tree from (tree name, figure) pairs; with a
    baseline, also this checkout's figure as a multiple of the baseline's."""
    best = {name: min(figure for tree, figure in figures if tree == name) for name, _ in trees}
    summary = ", ".join(f"{name} {describe(figure)}" for name, figure in best.items())
    if baseline:
        summary += f" ({best['this checkout'] / best[baseline]:.2f}x the baseline's CPU)"
    return summary


def add_tree_arguments(parser, what, hosts, seconds, rounds):
    """The options every tree-comparing bench takes: --hosts, --seconds, --rounds and --baseline."""
    parser.add_argument("--hosts", type=int, default=hosts)
    parser.add_argument("--seconds", type=type(seconds), default=seconds)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--baseline", help=f"a git revision whose {what} to compare with")
