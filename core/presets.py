"""Named toys for the pages and the worked examples of claims.md: builders for binary trees, CNF
formulas, the hidden path and the EOS toy (C12), and ``PRESETS``. ``core.toy`` re-exports every name
here, so ``from core.toy import PRESETS, binary_tree`` keeps working."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.toy import MarkovChain, TableDistribution, Toy, random_markov_chain


def eos_toy(p_eos: float = 0.4, length: int = 3) -> MarkovChain:
    """claims.md C12: tokens a (0) and EOS (1), p(EOS) = ``p_eos`` at every step, at most ``length``
    tokens. The 0-1 mode is the empty output (EOS at once, P = p_eos) as soon as p_eos >= (1 - p_eos)^length,
    while greedy (for p_eos < .5) emits a^length, P = (1 - p_eos)^length (.216 for the defaults)."""
    if not (isinstance(p_eos, int | float) and 0 < p_eos < 1):
        raise ValueError(f"p_eos must be in (0, 1), got {p_eos!r}")
    step = [1.0 - p_eos, p_eos]
    return MarkovChain(step, [step, [0.0, 1.0]], length, eos_id=1, token_names=("a", "<eos>"))


MAX_TREE_DEPTH = 8


def binary_tree(p_a: Mapping[tuple[int, ...], float] | Sequence[float], n: int) -> TableDistribution:
    """A distribution over {A=0, B=1}^n from the conditionals P(A | prefix).

    Args:
        p_a: either {prefix: P(A | prefix)} for every prefix of length 0..n-1 (2^n - 1 entries), or
            the same numbers as a list in breadth-first order: P(A), P(A|A), P(A|B), P(A|AA),
            P(A|AB), P(A|BA), ...
        n: length, 1..MAX_TREE_DEPTH.

    Conditionals below a prefix of probability zero do not change the distribution and are
    dropped (the table then reports them as uniform).
    """
    if not isinstance(n, int) or not 1 <= n <= MAX_TREE_DEPTH:
        raise ValueError(f"n must be an integer in 1..{MAX_TREE_DEPTH}, got {n!r}")
    prefixes = [p for k in range(n) for p in itertools.product((0, 1), repeat=k)]
    if isinstance(p_a, Mapping):
        cond = {tuple(k): float(v) for k, v in p_a.items()}
        missing = [p for p in prefixes if p not in cond]
        extra = [k for k in cond if k not in set(prefixes)]
        if missing or extra:
            bad = missing[0] if missing else extra[0]
            raise ValueError(f"p_a must give P(A | prefix) for every prefix of length 0..{n - 1}; bad or missing {bad}")
    else:
        values = [float(v) for v in p_a]
        if len(values) != len(prefixes):
            raise ValueError(f"p_a must hold 2^n - 1 = {len(prefixes)} conditionals for n={n}, got {len(values)}")
        cond = dict(zip(prefixes, values))
    for prefix, q in cond.items():
        if not (math.isfinite(q) and 0 <= q <= 1):
            raise ValueError(f"P(A | {prefix}) must be in [0, 1], got {q!r}")
    probs = {}
    for seq in itertools.product((0, 1), repeat=n):
        p = 1.0
        for t, tok in enumerate(seq):
            q = cond[seq[:t]]
            p *= q if tok == 0 else 1.0 - q
        probs[seq] = p
    return TableDistribution(probs, 2)


def cnf_distribution(clauses: Sequence[Sequence[int]], n_vars: int, beta: float) -> TableDistribution:
    """P(x) ∝ exp(-beta · #clauses x violates) over x in {0=false, 1=true}^n_vars.

    Clauses are DIMACS-style: literal k > 0 is x_k, -k is not x_k (1-based). For beta > 0 the
    satisfying assignments (if any) are exactly the modes."""
    if not isinstance(n_vars, int) or not 1 <= n_vars <= 20:
        raise ValueError(f"n_vars must be an integer in 1..20, got {n_vars!r}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be >= 0 and finite, got {beta!r}")
    for clause in clauses:
        if not clause or any(not (isinstance(lit, int) and 1 <= abs(lit) <= n_vars) for lit in clause):
            raise ValueError(f"clause {tuple(clause)} must be a non-empty list of literals ±1..±{n_vars}")
    xs = np.array(list(itertools.product((0, 1), repeat=n_vars)), dtype=bool)
    violated = np.zeros(len(xs))
    for clause in clauses:
        sat = np.zeros(len(xs), dtype=bool)
        for lit in clause:
            sat |= xs[:, abs(lit) - 1] if lit > 0 else ~xs[:, abs(lit) - 1]
        violated += ~sat
    w = np.exp(-beta * (violated - violated.min()))
    w /= w.sum()
    return TableDistribution({tuple(x.astype(int).tolist()): float(p) for x, p in zip(xs, w)}, 2)


def hidden_path(n: int = 6, p_main: float = 0.55, stay: float = 0.7, p_hidden: float = 0.13) -> TableDistribution:
    """Vocabulary {0,1,2,3}. Token 0 (prob ``p_main``) opens an attractive branch that then repeats
    0 with prob ``stay`` (else 1, 2, 3 equally); tokens 1 and 2 share the rest with 3 and open
    uniform branches; token 3 (prob ``p_hidden``, the least likely first token) is followed by 3s
    with certainty. With the defaults the mode is 333333 (P = .13) while greedy, every lookahead
    up to depth 5 and beams narrower than 4 end in the 0-branch (best path 000000, P = .092)."""
    rest = 1.0 - p_main - p_hidden
    if not (0 < p_hidden < p_main and rest >= 0 and 0 < stay < 1 and n >= 2):
        raise ValueError("hidden_path needs 0 < p_hidden < p_main, p_main + p_hidden <= 1, 0 < stay < 1, n >= 2")
    first = {0: p_main, 1: rest / 2, 2: rest / 2, 3: p_hidden}
    probs = {}
    for seq in itertools.product(range(4), repeat=n):
        p = first[seq[0]]
        for tok in seq[1:]:
            if seq[0] == 0:
                p *= stay if tok == 0 else (1 - stay) / 3
            elif seq[0] == 3:
                p *= 1.0 if tok == 3 else 0.0
            else:
                p *= 0.25
        if p > 0:
            probs[seq] = p
    return TableDistribution(probs, 4)


@dataclass(frozen=True)
class ToyPreset:
    """A named toy for the pages: ``build()`` returns a fresh model."""

    name: str
    description: str
    build: Callable[[], Toy]


E1_CONDITIONALS = {(): 0.6, (0,): 0.55, (1,): 0.9}
E2_CONDITIONALS = {(): 0.6, (0,): 0.55, (1,): 0.0}
SAT_CLAUSES = ((1,),) + tuple((-1, k) for k in range(2, 9))

PRESETS: dict[str, ToyPreset] = {
    p.name: p
    for p in (
        ToyPreset(
            "E1",
            "Greedy ≠ mode, and the mode is not Hamming-optimal (n=2): P(A)=.6, P(A|A)=.55, P(A|B)=.9. "
            "Greedy AA (.33), mode BA (.36), marginal mode AA. Sampling at τ=1 matches P (E3); "
            "at τ=.5 it does not (E4).",
            lambda: binary_tree(E1_CONDITIONALS, 2),
        ),
        ToyPreset(
            "E2",
            "Three different winners (n=2): P(A)=.6, P(A|A)=.55, P(A|B)=0. "
            "Greedy AA, mode BB (0-1 optimal), AB is Hamming-optimal.",
            lambda: binary_tree(E2_CONDITIONALS, 2),
        ),
        ToyPreset(
            "hidden path",
            "A high-probability path behind the least likely first token (n=6, 4 tokens): 333333 has "
            "P=.13 and is the mode, but greedy, lookahead up to depth 5 and beams of width ≤ 3 all "
            "follow the attractive 0-branch whose best path 000000 has P=.092.",
            hidden_path,
        ),
        ToyPreset(
            "SAT trap",
            "P(x) ∝ exp(-2·#violated clauses) for x1 ∧ (x1→x2) ∧ … ∧ (x1→x8) over 8 binary variables "
            "(B = true). The unique satisfying assignment BBBBBBBB is the mode, but the x1 = false "
            "half violates just one clause and holds most of the mass: greedy and every lookahead "
            "up to depth 4 commit to A first, and the beam needs width > 2^(t-1) to keep it.",
            lambda: cnf_distribution(SAT_CLAUSES, 8, 2.0),
        ),
        ToyPreset(
            "Markov chain",
            "A random 3-state Markov chain of length 6 (Dirichlet α=0.5, seed 3) with three different "
            "winners: greedy 100000 (P=.098), the mode 122222 (P=.337), the Hamming-optimal 102222.",
            lambda: random_markov_chain(3, 0.5, 6, seed=3),
        ),
        ToyPreset(
            "EOS",
            "C12, EOS makes the 0-1 mode degenerate: tokens a and <eos> (shown as ⏹), p(<eos>) = .4 at every "
            "step, at most 3 tokens; an output that ended is padded with <eos>. The mode is the empty output "
            "(<eos> at once, P = .4); greedy emits aaa (P = .6³ = .216).",
            eos_toy,
        ),
    )
}
