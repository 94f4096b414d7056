"""Traveling-salesman core: TSPLIB parser, EUC_2D distances, input checks and the simulated-annealing kernel.

No WAMP here: the compute instance (`components.tsp.compute`) and the solver (`components.tsp.solver`)
wrap these functions, and the unit tests call them directly.
"""

import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from components.mesh.errors import InvalidArgument

MIN_CITIES = 3
MAX_COORDINATE = 1e9    # keeps every tour length far inside int64
NEIGHBOURS = 8          # candidate partners per city for 2-opt and or-opt moves
MAX_SEGMENT = 3         # or-opt moves segments of 1..MAX_SEGMENT cities
BATCH = 256             # candidate moves evaluated per numpy pass
SUPPORTED_EDGE_WEIGHTS = ("EUC_2D",)
OPTIMUM_IN_COMMENT = re.compile(r"optim\w*\s+(?:tour\s+)?(?:length\s*)?(?:[:=]\s*|is\s+)?(\d+(?:\.\d+)?)", re.IGNORECASE)

MOVE_2OPT, MOVE_OROPT = 0, 1


# -- TSPLIB --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TsplibProblem:
    """A parsed TSPLIB file: name, comment, EUC_2D city coordinates and the optimum its comment states."""

    name: str
    comment: str
    cities: List[List[float]]
    optimum: Optional[int] = None


def parse_tsplib(text, source="TSPLIB text"):
    """Parse a TSPLIB TSP file of EDGE_WEIGHT_TYPE EUC_2D; raise InvalidArgument naming what is wrong."""
    header, coords = _read_tsplib(text, source)
    _check_tsplib_header(header, coords, source)
    indices = [index for index, _, _ in coords]
    if sorted(indices) != list(range(1, len(coords) + 1)):
        raise InvalidArgument(f"{source}: node indices must be 1..{len(coords)}, each once")
    cities = [[x, y] for _, x, y in sorted(coords)]
    comment = header.get("COMMENT", "")
    found = OPTIMUM_IN_COMMENT.search(comment)
    optimum = int(round(float(found.group(1)))) if found else None
    return TsplibProblem(name=header.get("NAME", source), comment=comment, cities=cities, optimum=optimum)


def _read_tsplib(text, source):
    """The header fields and the (index, x, y) rows of NODE_COORD_SECTION, as written."""
    header, coords, section = {}, [], None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "EOF":
            break
        if section == "NODE_COORD_SECTION" and (line[0].isdigit() or line[0] in "+-."):
            coords.append(_coordinate_row(line, number, source))
            continue
        key, colon, value = line.partition(":")
        key = key.strip().upper()
        if not colon:
            if key.endswith("_SECTION"):
                section = key
                if key != "NODE_COORD_SECTION":
                    raise InvalidArgument(f"{source}: {key} is not supported; only NODE_COORD_SECTION with EUC_2D")
                continue
            raise InvalidArgument(f"{source} line {number}: cannot read {line!r}")
        header[key] = value.strip()
    return header, coords


def _coordinate_row(line, number, source):
    """(index, x, y) from one NODE_COORD_SECTION line."""
    parts = line.split()
    if len(parts) != 3:
        raise InvalidArgument(f"{source} line {number}: expected 'index x y' in NODE_COORD_SECTION, got {line!r}")
    try:
        return int(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        raise InvalidArgument(f"{source} line {number}: non-numeric coordinate in {line!r}") from None


def _check_tsplib_header(header, coords, source):
    """Refuse what nerve does not solve (other edge weights or types) and a DIMENSION the cities do not match."""
    edge_weight = header.get("EDGE_WEIGHT_TYPE")
    if edge_weight is None:
        raise InvalidArgument(f"{source}: EDGE_WEIGHT_TYPE is missing; only EUC_2D is supported")
    if edge_weight.upper() not in SUPPORTED_EDGE_WEIGHTS:
        raise InvalidArgument(f"{source}: EDGE_WEIGHT_TYPE {edge_weight} is not supported; only EUC_2D is")
    kind = header.get("TYPE", "TSP").upper()
    if kind != "TSP":
        raise InvalidArgument(f"{source}: TYPE {kind} is not supported; only TSP (symmetric)")
    if not coords:
        raise InvalidArgument(f"{source}: NODE_COORD_SECTION is missing or empty")
    dimension = header.get("DIMENSION")
    if dimension is not None:
        if not dimension.isdigit():
            raise InvalidArgument(f"{source}: DIMENSION {dimension!r} is not a whole number")
        if int(dimension) != len(coords):
            raise InvalidArgument(f"{source}: DIMENSION says {dimension} cities but NODE_COORD_SECTION has {len(coords)}")


def load_tsplib(path):
    """Read and parse a TSPLIB file."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}") from None
    return parse_tsplib(text, source=str(path))


# -- input checks and distances -------------------------------------------------------------------------------

def check_cities(cities, max_cities):
    """The cities as an (n, 2) float array; raise InvalidArgument naming the first bad entry."""
    if not isinstance(cities, (list, tuple)):
        raise InvalidArgument("cities must be a list of [x, y] pairs")
    if len(cities) < MIN_CITIES:
        raise InvalidArgument(f"cities must hold at least {MIN_CITIES} cities, got {len(cities)}")
    if len(cities) > max_cities:
        raise InvalidArgument(f"cities must hold at most {max_cities} cities, got {len(cities)}")
    for index, city in enumerate(cities):
        if not isinstance(city, (list, tuple)) or len(city) != 2:
            raise InvalidArgument(f"cities[{index}] must be an [x, y] pair, got {city!r}")
        for value in city:
            # bool is an int subclass, and a string of digits is still not a coordinate
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(f"cities[{index}] has a non-numeric or non-finite coordinate {value!r}")
            if abs(value) > MAX_COORDINATE:
                raise InvalidArgument(f"cities[{index}] has a coordinate {value!r} beyond +-{MAX_COORDINATE:g}")
    coords = np.asarray(cities, dtype=np.float64)
    _, first, counts = np.unique(coords, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        duplicate = coords[first[np.argmax(counts > 1)]]
        same = np.flatnonzero((coords == duplicate).all(axis=1)).tolist()
        raise InvalidArgument(f"cities {same[:5]} have the same coordinates {duplicate.tolist()}; each city must be unique")
    return coords


def problem_id(coords):
    """A stable id of a city set (hash of its float64 coordinates), used to cache it in compute instances."""
    data = np.ascontiguousarray(coords, dtype=np.float64)
    return "p" + hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()[:24]


def euc_2d_matrix(coords):
    """TSPLIB EUC_2D distances: the Euclidean distance rounded to the nearest integer (nint), as int64."""
    deltas = coords[:, None, :] - coords[None, :, :]
    return np.floor(np.sqrt((deltas ** 2).sum(axis=-1)) + 0.5).astype(np.int64)


def tour_length(tour, dist):
    """Length of the closed tour under the distance matrix."""
    tour = np.asarray(tour)
    return int(dist[tour, np.roll(tour, -1)].sum())


def check_tour(tour, n, name="tour"):
    """The tour as an int array; raise InvalidArgument unless it is a permutation of 0..n-1."""
    if not isinstance(tour, (list, tuple, np.ndarray)) or len(tour) != n:
        raise InvalidArgument(f"{name} must be a list of the {n} city indices")
    if any(isinstance(city, bool) or not isinstance(city, (int, np.integer)) for city in tour):
        raise InvalidArgument(f"{name} must hold integer city indices")
    array = np.asarray(tour, dtype=np.int64)
    if not np.array_equal(np.sort(array), np.arange(n)):
        raise InvalidArgument(f"{name} must be a permutation of 0..{n - 1}, each city once")
    return array


def nearest_neighbour_tour(dist, start=0):
    """A greedy starting tour: always go to the closest unvisited city."""
    n = len(dist)
    visited = np.zeros(n, dtype=bool)
    tour = [start]
    visited[start] = True
    for _ in range(n - 1):
        row = np.where(visited, np.iinfo(np.int64).max, dist[tour[-1]])
        city = int(np.argmin(row))
        tour.append(city)
        visited[city] = True
    return np.asarray(tour, dtype=np.int64)


class Problem:
    """Precomputed data of one city set: distances, k-nearest neighbour lists, a default temperature range."""

    def __init__(self, coords):
        self.coords = np.asarray(coords, dtype=np.float64)
        self.n = len(self.coords)
        self.id = problem_id(self.coords)
        self.dist = euc_2d_matrix(self.coords)
        k = min(NEIGHBOURS, self.n - 1)
        masked = self.dist + np.diag(np.full(self.n, np.iinfo(np.int32).max, dtype=np.int64))
        self.neighbours = np.argsort(masked, axis=1, kind="stable")[:, :k]
        # Temperatures scale with the typical short edge, so one schedule fits any coordinate unit.
        self.edge_scale = float(np.mean(self.dist[np.arange(self.n), self.neighbours[:, 0]])) or 1.0

    def default_temperatures(self):
        """(start, end) temperatures of a full annealing run on this problem."""
        return 0.6 * self.edge_scale, max(0.02 * self.edge_scale, 0.3)


# -- moves ------------------------------------------------------------------------------------------------------
#
# A 2-opt move (i, j) on positions removes edges (t[i], t[i+1]) and (t[j], t[j+1]) and reconnects
# (t[i], t[j]) + (t[i+1], t[j+1]) by reversing positions i+1..j. An or-opt move (s, L, c, flip) cuts the
# segment of L cities at positions s..s+L-1 out and puts it between city c and its successor,
# reversed when flip. Deltas come from the four or six edges involved, never from the whole tour.

class Tour:
    """A tour with its position index, its length kept up to date move by move."""

    def __init__(self, tour, problem):
        self.problem = problem
        self.n = problem.n
        self.order = np.array(tour, dtype=np.int64)
        self.pos = np.empty(self.n, dtype=np.int64)
        self.pos[self.order] = np.arange(self.n)
        self.length = tour_length(self.order, problem.dist)

    # Scalar deltas: used for single moves and to re-check a batch's later moves after earlier ones changed the tour.
    def delta_2opt(self, i, j):
        """Length change of the 2-opt move (i, j)."""
        n, order, dist = self.n, self.order, self.problem.dist
        a, b = order[i], order[(i + 1) % n]
        c, d = order[j], order[(j + 1) % n]
        return int(dist[a, c] + dist[b, d] - dist[a, b] - dist[c, d])

    def delta_oropt(self, s, length, c):
        """(delta, flip) of the best orientation of the or-opt move (s, length, c); None when c touches the segment."""
        n, order, dist = self.n, self.order, self.problem.dist
        offset = (self.pos[c] - s) % n
        if offset < length or offset == n - 1:  # c inside the segment, or c is its predecessor (a no-op)
            return None
        first, last = order[s], order[(s + length - 1) % n]
        prev, nxt = order[(s - 1) % n], order[(s + length) % n]
        d = order[(self.pos[c] + 1) % n]
        removed = dist[prev, first] + dist[last, nxt] + dist[c, d]
        straight = dist[c, first] + dist[last, d]
        flipped = dist[c, last] + dist[first, d]
        return int(dist[prev, nxt] + min(straight, flipped) - removed), bool(flipped < straight)

    def apply_2opt(self, i, j, delta):
        """Reverse positions i+1..j (or the complementary arc, whichever is shorter)."""
        n = self.n
        span = (j - i) % n
        if span * 2 > n:  # reversing the other arc gives the same cycle, cheaper
            i, j, span = j, i, n - span
        start = (i + 1) % n
        if start + span <= n:
            segment = self.order[start:start + span][::-1].copy()
            self.order[start:start + span] = segment
            self.pos[segment] = np.arange(start, start + span)
        else:
            index = (start + np.arange(span)) % n
            self.order[index] = self.order[index[::-1]]
            self.pos[self.order[index]] = index
        self.length += delta

    def apply_oropt(self, s, length, c, flip, delta):
        """Move the segment at positions s..s+length-1 to just after city c."""
        rotated = np.roll(self.order, -s)
        segment = rotated[:length][::-1] if flip else rotated[:length]
        cut = int((self.pos[c] - s) % self.n) + 1
        self.order = np.concatenate((rotated[length:cut], segment, rotated[cut:]))
        self.pos[self.order] = np.arange(self.n)
        self.length += delta


def batch_deltas(tour, kinds, first, partner, lengths):
    """Deltas of a batch of candidate moves on the current tour, in one numpy pass: (delta, i, j, flip, valid)."""
    # kinds: MOVE_2OPT or MOVE_OROPT per candidate; first: a city; partner: one of its nearest neighbours.
    # 2-opt joins first-partner: (i, j) = (pos[first], pos[partner]) when `lengths` is 1, else their predecessors.
    # Or-opt moves the `lengths` cities starting at first to just after partner.
    problem, n = tour.problem, tour.n
    dist, order, pos = problem.dist, tour.order, tour.pos
    p_first, p_partner = pos[first], pos[partner]
    # 2-opt: lengths 1 means "successor side", 2 or 3 "predecessor side", so both reconnections are proposed.
    succ_side = lengths == 1
    i = np.where(succ_side, p_first, p_first - 1) % n
    j = np.where(succ_side, p_partner, p_partner - 1) % n
    a, b, c, d = order[i], order[(i + 1) % n], order[j], order[(j + 1) % n]
    delta_two = dist[a, c] + dist[b, d] - dist[a, b] - dist[c, d]
    valid_two = (i != j) & ((j - i) % n != 1) & ((i - j) % n != 1)
    # Or-opt
    s = p_first
    last = order[(s + lengths - 1) % n]
    prev, nxt = order[(s - 1) % n], order[(s + lengths) % n]
    after = order[(p_partner + 1) % n]
    offset = (p_partner - s) % n
    valid_or = (offset >= lengths) & (offset != n - 1) & (lengths < n - 2)
    removed = dist[prev, first] + dist[last, nxt] + dist[partner, after]
    straight = dist[partner, first] + dist[last, after]
    flipped = dist[partner, last] + dist[first, after]
    delta_or = dist[prev, nxt] + np.minimum(straight, flipped) - removed
    is_two = kinds == MOVE_2OPT
    delta = np.where(is_two, delta_two, delta_or)
    valid = np.where(is_two, valid_two, valid_or)
    return delta, i, j, flipped < straight, valid


@dataclass
class AnnealResult:
    """What one annealing run found and did."""

    tour: np.ndarray
    length: int
    start_length: int
    moves: int
    accepted: int
    improved: int
    seconds: float
    stopped: str  # "iterations", "seconds" or "cancelled"


def anneal(problem, tour, t_start, t_end, iterations, seed=0, seconds=None, should_stop=None, on_batch=None):
    """Simulated annealing from tour (2-opt and or-opt moves, geometric cooling t_start..t_end); returns the best tour seen."""
    # The schedule position is the larger of moves done / iterations and, when `seconds` is given, time
    # spent / seconds: a time-capped call still cools through its whole segment. Each numpy pass proposes
    # BATCH moves from the neighbour lists and evaluates all their deltas at once (_apply_pass says how the
    # accepted ones are applied). on_batch(moves) is called after every pass and should_stop() polled before
    # it, so a cancelled call ends within one pass.
    if not (t_start > 0 and t_end > 0):
        raise InvalidArgument(f"temperatures must be > 0, got {t_start} .. {t_end}")
    rng = np.random.default_rng(seed)
    state = Tour(tour, problem)
    best = {"order": state.order.copy(), "length": state.length}
    start_length = state.length
    moves = accepted = improved = 0
    ratio = math.log(t_end / t_start)
    began = time.perf_counter()
    stopped = "iterations"
    while moves < iterations:
        elapsed = time.perf_counter() - began
        progress = moves / iterations
        if seconds:
            if elapsed >= seconds:
                stopped = "seconds"
                break
            progress = max(progress, elapsed / seconds)
        if should_stop is not None and should_stop():
            stopped = "cancelled"
            break
        temperature = t_start * math.exp(ratio * min(progress, 1.0))
        size = int(min(BATCH, iterations - moves))
        proposal = _propose(rng, problem, state, size)
        # Metropolis: accept when delta < -T ln(u); the threshold is kept to re-check moves after earlier ones.
        threshold = -temperature * np.log(rng.random(size))
        chosen = np.flatnonzero(proposal.valid & (proposal.delta < threshold))
        moves += size
        pass_accepted, pass_improved = _apply_pass(state, proposal, chosen, threshold, best)
        accepted += pass_accepted
        improved += pass_improved
        if on_batch is not None:
            on_batch(size)
    return AnnealResult(tour=best["order"], length=int(best["length"]), start_length=int(start_length), moves=int(moves),
                        accepted=accepted, improved=improved, seconds=time.perf_counter() - began, stopped=stopped)


@dataclass(frozen=True)
class _Proposal:
    """One pass's proposed moves (kind, city, neighbour, segment length) and their deltas on the tour as it was."""

    kinds: np.ndarray
    first: np.ndarray
    partner: np.ndarray
    lengths: np.ndarray
    delta: np.ndarray
    i: np.ndarray
    j: np.ndarray
    flip: np.ndarray
    valid: np.ndarray


def _propose(rng, problem, state, size):
    """Draw size moves from the neighbour lists and evaluate them all at once."""
    n, k = problem.n, problem.neighbours.shape[1]
    kinds = rng.integers(0, 2, size)
    first = rng.integers(0, n, size)
    partner = problem.neighbours[first, rng.integers(0, k, size)]
    lengths = rng.integers(1, max(1, min(MAX_SEGMENT, n - 3)) + 1, size)
    return _Proposal(kinds, first, partner, lengths, *batch_deltas(state, kinds, first, partner, lengths))


def _apply_pass(state, proposal, chosen, threshold, best):
    """Apply a pass's accepted moves in order, keeping the best tour in best; returns (accepted, improved).

    Each move after the first applied is re-checked against the tour as it is by then (an earlier
    move of the same pass may have changed its edges), so the running length stays exact.
    """
    accepted = improved = 0
    for index in chosen.tolist():
        kind, city, partner, length = (proposal.kinds[index], int(proposal.first[index]), int(proposal.partner[index]),
                                       int(proposal.lengths[index]))
        if accepted:
            move = _recheck(state, kind, city, partner, length, threshold[index])
            if move is None:
                continue
        else:
            move = (int(proposal.i[index]), int(proposal.j[index]), bool(proposal.flip[index]), int(proposal.delta[index]))
        move_i, move_j, move_flip, move_delta = move
        if kind == MOVE_2OPT:
            state.apply_2opt(move_i, move_j, move_delta)
        else:
            state.apply_oropt(int(state.pos[city]), length, partner, move_flip, move_delta)
        accepted += 1
        if state.length < best["length"]:
            best["length"], best["order"] = state.length, state.order.copy()
            improved += 1
    return accepted, improved


def _recheck(state, kind, city, partner, length, threshold):
    """A move as the tour is now, (i, j, flip, delta), or None when it no longer applies or is no longer accepted."""
    n = state.n
    if kind == MOVE_2OPT:
        if length == 1:
            move_i, move_j = int(state.pos[city]), int(state.pos[partner])
        else:
            move_i, move_j = int(state.pos[city] - 1) % n, int(state.pos[partner] - 1) % n
        if move_i == move_j or (move_j - move_i) % n == 1 or (move_i - move_j) % n == 1:
            return None
        move_delta, move_flip = state.delta_2opt(move_i, move_j), False
    else:
        checked = state.delta_oropt(int(state.pos[city]), length, partner)
        if checked is None:
            return None
        (move_delta, move_flip), move_i, move_j = checked, None, None
    return (move_i, move_j, move_flip, move_delta) if move_delta < threshold else None
