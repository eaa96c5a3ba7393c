"""core.choice_points and core.branching: numbers checked against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.branching import BranchTree, branch
from core.choice_points import (
    choice_trace,
    decompose,
    entropy_bits,
    head_table,
    pair_information,
    score_path,
    step_heads,
)
from core.decoders import Fixed, Greedy
from core.toy import MarkovChain, binary_tree, random_markov_chain

# ---- entropy and the decomposition --------------------------------------------------------------


@pytest.mark.parametrize("V", [1, 2, 7, 8192])
def test_entropy_of_uniform_is_log_v(V):
    uniform = torch.full((V,), -math.log(V), dtype=torch.float64)
    assert float(entropy_bits(uniform)) == pytest.approx(math.log2(V), abs=1e-12)


def test_entropy_ignores_impossible_tokens():
    lp = torch.tensor([math.log(0.5), math.log(0.5), -math.inf], dtype=torch.float64)
    assert float(entropy_bits(lp)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_decomposition_identity_on_random_joints(seed):
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.full(12, 0.3)).reshape(3, 4)
    d = decompose(joint)
    assert d.h_x + d.h_y == pytest.approx(d.h_x_given_y + 2 * d.mutual_information + d.h_y_given_x, abs=1e-9)
    assert abs(d.residual) < 1e-9
    # each term against its textbook definition via the joint entropy
    p = joint[joint > 0]
    h_xy = -np.sum(p * np.log2(p))
    assert d.h_x_given_y == pytest.approx(h_xy - d.h_y, abs=1e-9)
    assert d.h_y_given_x == pytest.approx(h_xy - d.h_x, abs=1e-9)
    assert d.mutual_information == pytest.approx(d.h_x + d.h_y - h_xy, abs=1e-9)
    assert d.mutual_information >= 0


def test_decomposition_extremes():
    independent = decompose(np.outer([0.25, 0.75], [0.5, 0.5]))
    assert independent.mutual_information == pytest.approx(0.0, abs=1e-12)
    assert independent.h_x_given_y == pytest.approx(independent.h_x, abs=1e-12)
    copy = decompose(np.diag([0.5, 0.25, 0.25]))  # Y = X
    assert copy.mutual_information == pytest.approx(1.5, abs=1e-12)
    assert copy.h_x_given_y == pytest.approx(0.0, abs=1e-12)
    assert copy.h_y_given_x == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "joint, match",
    [(np.array([0.5, 0.5]), "2-d"), (np.array([[0.5, 0.6]]), "sum to 1"), (np.array([[1.5, -0.5]]), ">= 0")],
)
def test_decompose_rejects_bad_joints(joint, match):
    with pytest.raises(ValueError, match=match):
        decompose(joint)


# ---- the two-token estimate ---------------------------------------------------------------------


def _chain_pair_joint(chain: MarkovChain, prefix: list[int]) -> np.ndarray:
    p_x = chain.initial if not prefix else chain.transition[prefix[-1]]
    return p_x[:, None] * chain.transition


def test_pair_information_is_exact_when_top_k_covers_the_vocabulary():
    chain = random_markov_chain(4, 0.7, 5, seed=3)
    est = pair_information(chain, [2], top_k=16)
    assert est.exact and est.covered == pytest.approx(1.0)
    want = decompose(_chain_pair_joint(chain, [2]))
    got = est.decomposition
    for name in ("h_x", "h_y", "h_x_given_y", "h_y_given_x", "mutual_information"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-9), name
    assert est.h_y_head2 is None  # toys have one head


def test_pair_information_truncated_keeps_exact_h_x_and_bounds_mi():
    chain = random_markov_chain(6, 0.4, 5, seed=11)
    exact = decompose(_chain_pair_joint(chain, [1]))
    for k in (1, 2, 3, 5):
        est = pair_information(chain, [1], top_k=k)
        d = est.decomposition
        top = np.sort(chain.transition[1])[::-1][:k]
        assert est.covered == pytest.approx(top.sum(), abs=1e-12)
        assert d.h_x == pytest.approx(exact.h_x, abs=1e-9)  # p(x) is used over the whole vocabulary
        assert d.mutual_information <= exact.mutual_information + 1e-12  # lower bound
        assert abs(d.residual) < 1e-9  # the identity holds for the estimated joint
        assert not est.exact or k >= 6


def test_pair_information_on_the_tiny_engine(tiny_engine):
    prefix = tiny_engine.encode("def f(x):\n    return")
    est = pair_information(tiny_engine, prefix, top_k=8)
    assert len(est.x_ids) == 8 and 0 < est.covered < 1
    p1 = tiny_engine.logprobs([prefix])[0].double().exp()
    assert est.x_probs[0] == pytest.approx(float(p1.max()), rel=1e-6)
    assert est.decomposition.h_x == pytest.approx(float(entropy_bits(p1.log())), rel=1e-5)
    assert abs(est.decomposition.residual) < 1e-9
    assert est.h_y_head2 == pytest.approx(float(entropy_bits(tiny_engine.head_logprobs(prefix)[1])), rel=1e-6)


@pytest.mark.parametrize("top_k", [0, 257, 2.5, True])
def test_pair_information_rejects_bad_top_k(top_k):
    with pytest.raises(ValueError, match="top_k"):
        pair_information(random_markov_chain(3, 1.0, 3, seed=0), [], top_k=top_k)


# ---- step view and the path trace ----------------------------------------------------------------


def test_step_heads_on_a_uniform_toy():
    chain = MarkovChain(np.full(5, 0.2), np.full((5, 5), 0.2), 3)
    (view,) = step_heads(chain, [4], top_k=3)
    assert view.head == 1 and view.token_ids == (0, 1, 2)  # ties to the lowest id
    assert view.entropy_bits == pytest.approx(math.log2(5))
    assert view.covered == pytest.approx(0.6)


def test_step_heads_on_the_tiny_engine(tiny_engine):
    prefix = tiny_engine.encode("import os")
    views = step_heads(tiny_engine, prefix, top_k=5)
    heads = tiny_engine.head_logprobs(prefix).double()
    assert [v.head for v in views] == [1, 2, 3, 4]
    for v, lp in zip(views, heads):
        assert v.token_ids == tuple(int(i) for i in torch.sort(lp, descending=True, stable=True).indices[:5])
        assert v.entropy_bits == pytest.approx(float(entropy_bits(lp)), rel=1e-9)
    with pytest.raises(ValueError, match="token ids"):
        step_heads(tiny_engine, [tiny_engine.vocab_size], top_k=5)


def test_head_table_and_disagreement_match_direct_computation(tiny_engine):
    prompt = tiny_engine.encode("x = 1")
    tokens = list(Greedy().decode(tiny_engine, prompt, 6).tokens)
    table = head_table(tiny_engine, prompt, tokens)
    trace = choice_trace(tiny_engine, prompt, tokens)
    L = len(prompt)
    full = prompt + tokens
    after = {end: tiny_engine.head_logprobs(full[:end]).double() for end in range(L - 3, L + 6)}
    for t in range(6):
        head1 = tiny_engine.logprobs([full[: L + t]])[0].double()
        for k in range(1, 5):
            end = L + t - k + 1  # head k after full[:end] predicts full[L + t]
            direct = after[end][k - 1]
            assert torch.allclose(table[k - 1, t], direct, atol=1e-5), (k, t)
            tv = 0.5 * float((direct.exp() - head1.exp()).abs().sum())
            assert trace.head_tv[k - 1, t] == pytest.approx(tv, abs=1e-5)
            assert trace.head_agree[k - 1, t] == float(direct.argmax() == head1.argmax())
            assert trace.head_chosen_prob[k - 1, t] == pytest.approx(float(direct[tokens[t]].exp()), rel=1e-4)
        assert trace.chosen_prob[t] == pytest.approx(math.exp(float(head1[tokens[t]])), rel=1e-4)
        assert trace.entropy_bits[t] == pytest.approx(float(entropy_bits(head1)), rel=1e-5)
    assert np.allclose(trace.head_tv[0], 0.0)
    assert np.allclose(trace.influence[:-1], trace.head_tv[1, 1:]) and np.isnan(trace.influence[-1])
    summary = trace.head_summary()
    assert [h.head for h in summary] == [2, 3, 4]
    for h in summary:
        assert h.positions == 6  # the prompt is long enough for every head to see every token
        assert h.mean_tv == pytest.approx(float(np.mean(trace.head_tv[h.head - 1])))
        assert h.top1_agreement == pytest.approx(float(np.mean(trace.head_agree[h.head - 1])))


@pytest.mark.parametrize("use_toy", [False, True])
def test_score_path_equals_fixed_decoder(tiny_engine, use_toy):
    model = random_markov_chain(5, 0.5, 6, seed=2) if use_toy else tiny_engine
    prompt = [] if use_toy else tiny_engine.encode("y = [")
    tokens = (1, 4, 3, 2, 2)  # no EOS (the tiny engine's is 0): Fixed ends an output there, score_path does not
    got, want = score_path(model, prompt, tokens), Fixed(tokens).decode(model, prompt, 5)
    assert got.tokens == want.tokens
    assert got.step_logprobs == pytest.approx(want.step_logprobs, abs=1e-5)
    assert got.logprob == pytest.approx(want.logprob, abs=1e-4)


def test_head_table_marks_heads_reaching_before_the_prompt(tiny_engine):
    table = head_table(tiny_engine, [5], [7, 9])
    # head 3 for token 0 would need a prefix ending 2 tokens before the prompt's last: unavailable
    assert torch.isnan(table[2, 0]).all() and torch.isnan(table[3, 1]).all()
    assert not torch.isnan(table[1, 0]).any()  # head 2 after the empty prefix (end-of-text only)


def test_choice_trace_on_a_toy_and_top_positions():
    toy = binary_tree({(): 0.6, (0,): 0.55, (1,): 0.9}, 2)  # E1
    trace = choice_trace(toy, [], [0, 0])
    assert trace.chosen_prob == pytest.approx([0.6, 0.55])
    h = lambda p: -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # noqa: E731
    assert trace.entropy_bits == pytest.approx([h(0.6), h(0.55)])
    assert np.isnan(trace.influence).all()  # one head: no head-2 view
    assert trace.top_positions("entropy", 1) == (1,)
    assert trace.top_positions("surprise", 1) == (1,)
    assert trace.top_positions("influence", 1) == ()
    with pytest.raises(ValueError, match="metric"):
        trace.metric("loudness")


# ---- branching ----------------------------------------------------------------------------------


def test_branch_tree_fork_goto_undo():
    tree = BranchTree.root((1, 2, 3, 4))
    a = tree.fork(1, 9, (8, 7))
    assert a.path == (1, 9, 8, 7) and len(a.branches) == 2 and a.current == 1
    b = a.fork(3, 5, ())
    assert b.path == (1, 9, 8, 5) and b.branches[2].parent == 1
    c = b.goto(0).fork(0, 6, (6, 6, 6))
    assert c.outline() == ((0, 0), (1, 1), (2, 2), (1, 3))
    assert c.children(0) == (1, 3)
    same = c.goto(1).fork(1, 9, (8, 7))  # an existing path: switch, no twin
    assert len(same.branches) == 4 and same.current == 1
    assert c.undo().undo() == b and b.undo().undo() == tree
    assert not tree.can_undo
    with pytest.raises(ValueError, match="nothing to undo"):
        tree.undo()
    with pytest.raises(ValueError, match="position"):
        tree.fork(4, 1, ())
    with pytest.raises(ValueError, match="continuation must have 2"):
        tree.fork(1, 1, (1,))
    with pytest.raises(ValueError, match="branch index"):
        tree.goto(3)


def test_branch_continues_greedily(tiny_engine):
    prompt = tiny_engine.encode("for i in")
    root = Greedy().decode(tiny_engine, prompt, 5).tokens
    tree = BranchTree.root(root)
    forced = (root[2] + 1) % tiny_engine.vocab_size
    new = branch(tree, tiny_engine, prompt, 2, forced)
    assert new.path[:3] == (*root[:2], forced)
    assert new.path[3:] == Greedy().decode(tiny_engine, prompt + list(new.path[:3]), 2).tokens
    assert branch(new, tiny_engine, prompt, 4, 11).path == (*new.path[:4], 11)
    with pytest.raises(ValueError, match="token must be an id"):
        branch(tree, tiny_engine, prompt, 0, tiny_engine.vocab_size)
