"""The TSP core without the mesh: TSPLIB parsing, EUC_2D rounding, move deltas, the annealing kernel, input checks."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.tsp.compute import ComputeConfig
from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError, InvalidArgument
from components.tsp.solver import SolverConfig
from components.tsp.core import (
    MOVE_2OPT,
    MOVE_OROPT,
    Problem,
    Tour,
    anneal,
    batch_deltas,
    check_cities,
    check_tour,
    euc_2d_matrix,
    load_tsplib,
    nearest_neighbour_tour,
    parse_tsplib,
    problem_id,
    tour_length,
)

DATA = Path(__file__).parent / "data"
SMALL = """NAME : tiny
COMMENT : four corners; optimal tour length 40
TYPE : TSP
DIMENSION : 4
EDGE_WEIGHT_TYPE : EUC_2D
NODE_COORD_SECTION
1 0 0
2 10 0
3 10 10
4 0 10
EOF
"""


def random_problem(n, seed):
    """n distinct random cities on a 1000 x 1000 square."""
    picks = np.random.default_rng(seed).choice(1000 * 1000, size=n, replace=False)
    return Problem(np.stack([picks // 1000, picks % 1000], axis=1).astype(float))


# -- TSPLIB ---------------------------------------------------------------------------------------------------

def test_parses_the_shipped_instances_with_their_optima():
    berlin, kro = load_tsplib(DATA / "berlin52.tsp"), load_tsplib(DATA / "kroA100.tsp")
    assert (berlin.name, len(berlin.cities), berlin.optimum) == ("berlin52", 52, 7542)
    assert (kro.name, len(kro.cities), kro.optimum) == ("kroA100", 100, 21282)
    assert berlin.cities[0] == [565.0, 575.0]


def test_parses_header_and_stops_at_eof():
    problem = parse_tsplib(SMALL + "5 99 99\n")
    assert problem.cities == [[0, 0], [10, 0], [10, 10], [0, 10]] and problem.optimum == 40 and problem.name == "tiny"


def test_a_file_without_optimum_has_none():
    assert parse_tsplib(SMALL.replace("; optimal tour length 40", "")).optimum is None


@pytest.mark.parametrize("change, fragment", [
    (("EUC_2D", "GEO"), "EDGE_WEIGHT_TYPE GEO is not supported"),
    (("EUC_2D", "ATT"), "EDGE_WEIGHT_TYPE ATT is not supported"),
    (("EDGE_WEIGHT_TYPE : EUC_2D\n", ""), "EDGE_WEIGHT_TYPE is missing"),
    (("DIMENSION : 4", "DIMENSION : 5"), "DIMENSION says 5"),
    (("2 10 0", "2 10 zero"), "non-numeric"),
    (("2 10 0", "2 10"), "expected 'index x y'"),
    (("4 0 10", "3 0 10"), "node indices"),
    (("TYPE : TSP", "TYPE : ATSP"), "TYPE ATSP"),
    (("NODE_COORD_SECTION", "EDGE_WEIGHT_SECTION"), "EDGE_WEIGHT_SECTION is not supported"),
])
def test_rejects_what_it_cannot_solve_with_a_clear_error(change, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        parse_tsplib(SMALL.replace(*change), source="small.tsp")


def test_an_unreadable_file_is_an_invalid_argument(tmp_path):
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_tsplib(tmp_path / "missing.tsp")


# -- distances and checks ------------------------------------------------------------------------------------

def test_euc_2d_rounds_to_the_nearest_integer():
    coords = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [0.0, 2.5], [0.0, 2.4999]])
    dist = euc_2d_matrix(coords)
    assert dist[0, 1] == 5 and dist[0, 2] == 1 and dist[0, 3] == 3 and dist[0, 4] == 2  # sqrt 2 -> 1, 2.5 -> 3
    assert dist.dtype == np.int64 and (dist == dist.T).all() and (np.diag(dist) == 0).all()


def test_berlin52_optimal_tour_has_the_published_length():
    # The published optimal tour of berlin52 (TSPLIB berlin52.opt.tour), 1-based.
    optimal = [1, 49, 32, 45, 19, 41, 8, 9, 10, 43, 33, 51, 11, 52, 14, 13, 47, 26, 27, 28, 12, 25, 4, 6, 15, 5, 24, 48,
               38, 37, 40, 39, 36, 35, 34, 44, 46, 16, 29, 50, 20, 23, 30, 2, 7, 42, 21, 17, 3, 18, 31, 22]
    problem = Problem(load_tsplib(DATA / "berlin52.tsp").cities)
    assert tour_length([city - 1 for city in optimal], problem.dist) == 7542


@pytest.mark.parametrize("cities, fragment", [
    ([[0, 0], [1, 1]], "at least 3 cities"),
    ("0,0 1,1 2,2", "list of"),
    ([[0, 0], [1, 1], [0, 0]], r"cities \[0, 2\] have the same coordinates"),
    ([[0, 0], [1, "1"], [2, 2]], r"cities\[1\] has a non-numeric"),
    ([[0, 0], [1, True], [2, 2]], r"cities\[1\] has a non-numeric"),
    ([[0, 0], [1, float("nan")], [2, 2]], "non-finite"),
    ([[0, 0], [1, 1e12], [2, 2]], "beyond"),
    ([[0, 0], [1, 1, 1], [2, 2]], r"cities\[1\] must be an \[x, y\] pair"),
    ([[0, 0], None, [2, 2]], r"cities\[1\] must be an \[x, y\] pair"),
    ([[x, x] for x in range(11)], "at most 10 cities"),
])
def test_city_checks_name_the_problem(cities, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        check_cities(cities, max_cities=10)


def test_tour_checks_require_a_permutation():
    assert check_tour([2, 0, 1], 3).tolist() == [2, 0, 1]
    for bad in ([0, 1], [0, 1, 1], [0, 1, 3], [0, 1, 2.0], [0, 1, True]):
        with pytest.raises(InvalidArgument):
            check_tour(bad, 3)


def test_problem_id_is_stable_and_tells_problems_apart():
    coords = np.array(load_tsplib(DATA / "berlin52.tsp").cities)
    assert problem_id(coords) == problem_id(coords.copy()) != problem_id(coords[::-1])


def test_nearest_neighbour_tour_is_a_permutation():
    problem = random_problem(80, 3)
    tour = nearest_neighbour_tour(problem.dist)
    assert sorted(tour.tolist()) == list(range(80))


# -- moves and the kernel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 6, 13, 52])
def test_scalar_move_deltas_equal_full_re_evaluation(n):
    problem = random_problem(n, n)
    rng = np.random.default_rng(n)
    tour = Tour(rng.permutation(n), problem)
    applied = 0
    for _ in range(3000):
        i, j = (int(value) for value in rng.integers(0, n, 2))
        if rng.random() < 0.5:
            if i == j or (j - i) % n == 1 or (i - j) % n == 1:
                continue
            tour.apply_2opt(i, j, tour.delta_2opt(i, j))
        else:
            length, city = int(rng.integers(1, min(3, n - 3) + 1)), int(rng.integers(0, n))
            checked = tour.delta_oropt(i, length, city)
            if checked is None:
                continue
            tour.apply_oropt(i, length, city, checked[1], checked[0])
        applied += 1
        assert tour.length == tour_length(tour.order, problem.dist)
        assert sorted(tour.order.tolist()) == list(range(n))
        assert (tour.pos[tour.order] == np.arange(n)).all()
    assert applied > 1000


@settings(max_examples=60, deadline=None)
@given(n=st.integers(6, 40), seed=st.integers(0, 2 ** 31))
def test_batch_deltas_equal_scalar_deltas(n, seed):
    problem = random_problem(n, seed)
    rng = np.random.default_rng(seed)
    tour = Tour(rng.permutation(n), problem)
    size = 200
    kinds = rng.integers(0, 2, size)
    first = rng.integers(0, n, size)
    partner = problem.neighbours[first, rng.integers(0, problem.neighbours.shape[1], size)]
    lengths = rng.integers(1, 4, size)
    delta, i, j, flip, valid = batch_deltas(tour, kinds, first, partner, lengths)
    for index in range(size):
        if kinds[index] == MOVE_2OPT:
            if valid[index]:
                assert delta[index] == tour.delta_2opt(int(i[index]), int(j[index]))
        else:
            scalar = tour.delta_oropt(int(tour.pos[first[index]]), int(lengths[index]), int(partner[index]))
            assert (scalar is not None) == bool(valid[index])
            if scalar is not None:
                assert (delta[index], bool(flip[index])) == scalar
    assert MOVE_OROPT in kinds


def test_anneal_returns_a_valid_tour_whose_length_is_exact_and_no_worse():
    problem = random_problem(60, 11)
    start = np.random.default_rng(0).permutation(60)
    result = anneal(problem, start, 200.0, 1.0, 100_000, seed=5)
    assert sorted(result.tour.tolist()) == list(range(60))
    assert result.length == tour_length(result.tour, problem.dist) <= result.start_length
    assert result.moves == 100_000 and result.accepted > 0 and result.stopped == "iterations"


def test_anneal_is_reproducible_with_a_seed():
    problem = random_problem(40, 2)
    start = nearest_neighbour_tour(problem.dist)
    first = anneal(problem, start, 100.0, 1.0, 30_000, seed=9)
    again = anneal(problem, start, 100.0, 1.0, 30_000, seed=9)
    other = anneal(problem, start, 100.0, 1.0, 30_000, seed=10)
    assert first.tour.tolist() == again.tour.tolist() and first.accepted == again.accepted
    assert first.accepted != other.accepted


def test_anneal_stops_on_time_and_on_request():
    problem = random_problem(30, 4)
    start = np.arange(30)
    timed = anneal(problem, start, 10.0, 1.0, 10 ** 9, seconds=0.2)
    assert timed.stopped == "seconds" and timed.seconds < 2
    stopped = anneal(problem, start, 10.0, 1.0, 10 ** 9, should_stop=lambda: True)
    assert stopped.stopped == "cancelled" and stopped.moves == 0 and stopped.tour.tolist() == list(range(30))


def test_anneal_solves_berlin52_to_the_optimum_from_a_seed():
    berlin = load_tsplib(DATA / "berlin52.tsp")
    problem = Problem(berlin.cities)
    t_start, t_end = problem.default_temperatures()
    result = anneal(problem, nearest_neighbour_tour(problem.dist), t_start, t_end, 2_000_000, seed=1)
    assert result.length <= berlin.optimum * 1.01


def test_anneal_handles_the_smallest_problems():
    for n in (3, 4, 5):
        problem = random_problem(n, n)
        result = anneal(problem, np.arange(n), 10.0, 1.0, 2000, seed=1)
        assert sorted(result.tour.tolist()) == list(range(n))
        assert result.length == tour_length(result.tour, problem.dist)


def test_anneal_rejects_non_positive_temperatures():
    with pytest.raises(InvalidArgument, match="temperatures"):
        anneal(random_problem(5, 1), np.arange(5), 0.0, 1.0, 10)


# -- process configs ------------------------------------------------------------------------------------------

def test_configs_refuse_bad_values():
    mesh = MeshConfig(role="solver", ticket="x")
    with pytest.raises(ConfigError, match="max budget"):
        SolverConfig(mesh=mesh, max_budget=0)
    with pytest.raises(ConfigError, match="round seconds"):
        SolverConfig(mesh=mesh, round_seconds=0.01)
    with pytest.raises(ConfigError, match="cache size"):
        ComputeConfig(mesh=MeshConfig(role="compute", ticket="x"), cache_size=0)
