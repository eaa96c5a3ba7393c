"""EOS: sessions absorb it, decoders stop after it (Path includes it), toys with an EOS id enumerate
padded outputs, and the C12 toy's exact numbers (claims.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.decoders import Beam, Fixed, Greedy, Lookahead, Sampling, best_first_search, sample_many, walk
from core.goals import DistributionMatch, Hamming, ZeroOne
from core.protocol import logprobs_after, pad_after_eos, start_session
from core.risk import bayes_output, exact_risk
from core.toy import PRESETS, MarkovChain, TableDistribution, eos_toy, output_distribution
from tests.chisq import assert_frequencies_match
from tests.conftest import make_tiny_engine

A, END = 0, 1


class Counting:
    """A toy behind the protocol that counts ``logprobs`` calls (no ``start``: sessions are PrefixSessions)."""

    def __init__(self, toy):
        self.toy, self.vocab_size, self.eos_id, self.length = toy, toy.vocab_size, toy.eos_id, toy.length
        self.calls = 0

    def logprobs(self, prefixes):
        self.calls += 1
        return self.toy.logprobs(prefixes)


def random_eos_chain(seed: int, v: int = 3, length: int = 4) -> MarkovChain:
    """A random Markov chain whose last state is an absorbing EOS."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(v, 0.6), size=v)
    trans[v - 1] = np.eye(v)[v - 1]
    return MarkovChain(rng.dirichlet(np.full(v, 0.6)), trans, length, eos_id=v - 1)


def eos_heavy_engine(boost: float):
    """The tiny random engine with every position's EOS (token 0) logit raised by about ``boost``."""
    engine = make_tiny_engine()
    w0 = engine.model.wte.weight[0].detach()
    with torch.no_grad():
        engine.model.ln_f.bias += boost * w0 / w0.dot(w0)
    return engine


# ---- the C12 toy ---------------------------------------------------------------------------------


def test_c12_mode_is_the_empty_output_and_greedy_emits_a_cubed():
    toy = PRESETS["EOS"].build()
    assert toy.eos_id == END and toy.token_text(END) == "<eos>" and toy.token_text(A) == "a"
    assert dict(toy.support()) == pytest.approx({(A, A, A): 0.216, (A, A, END): 0.144, (A, END, END): 0.24,
                                                 (END, END, END): 0.4})
    assert toy.prob((END,)) == pytest.approx(0.4) == toy.prob((END, END, END))  # ended outputs are padded
    greedy = Greedy().decode(toy, [], 3)
    assert greedy.tokens == (A, A, A) and math.exp(greedy.logprob) == pytest.approx(0.6**3)
    assert bayes_output(ZeroOne(), toy, 3) == (END, END, END)
    mode = Lookahead(3).decode(toy, [], 3)
    assert mode.tokens == (END,) and math.exp(mode.logprob) == pytest.approx(0.4)  # stops after EOS
    assert exact_risk(ZeroOne(), toy, Greedy(), 3) == pytest.approx(1 - 0.216)
    assert exact_risk(ZeroOne(), toy, Fixed((END,)), 3) == pytest.approx(0.6)
    assert exact_risk(ZeroOne(), toy, Sampling(), 3) == pytest.approx(1 - (0.216**2 + 0.144**2 + 0.24**2 + 0.4**2))
    assert exact_risk(DistributionMatch("kl"), toy, Sampling(), 3) == pytest.approx(0.0, abs=1e-12)
    # per position the marginal mode is a at t = 1 (.6), then EOS (.64 and .784)
    assert bayes_output(Hamming(), toy, 3) == (A, END, END)
    for n, greedy_p in [(5, 0.0778), (10, 0.00605)]:
        longer = eos_toy(0.4, n)
        assert math.exp(Greedy().decode(longer, [], n).logprob) == pytest.approx(greedy_p, abs=5e-5)
        assert bayes_output(ZeroOne(), longer, n) == (END,) * n


def test_c12_beam_search_depends_on_the_length_penalty():
    toy = eos_toy()
    # length_penalty 1 ranks log P / length: aaa (-.511) beats a<eos> (-.713) and <eos> (-.916)
    assert Beam(2).decode(toy, [], 3).tokens == (A, A, A)
    # length_penalty 0 ranks log P itself: the empty output wins
    assert Beam(2, length_penalty=0.0).decode(toy, [], 3).tokens == (END,)
    assert Beam(2, length_penalty=0.0, early_stopping=True).decode(toy, [], 3).tokens == (END,)
    assert output_distribution(Beam(2), toy, 3) == {(A, A, A): 1.0}


# ---- toys with an EOS id ---------------------------------------------------------------------------


def test_toys_with_eos_validate_padding():
    with pytest.raises(ValueError, match=r"continues after EOS \(token 1\)"):
        TableDistribution({(1, 0): 0.5, (0, 0): 0.5}, 2, eos_id=1)
    with pytest.raises(ValueError, match="must put all its mass on EOS"):
        MarkovChain([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], 3, eos_id=1)
    with pytest.raises(ValueError, match=r"eos_id must be a token in 0..1, got 2"):
        MarkovChain([0.5, 0.5], [[0.5, 0.5], [0.0, 1.0]], 3, eos_id=2)
    with pytest.raises(ValueError, match="token_names must name all 2 tokens"):
        MarkovChain([0.5, 0.5], [[0.5, 0.5], [0.0, 1.0]], 3, token_names=("a",))
    table = TableDistribution({(0, 1, 1): 0.25, (1, 1, 1): 0.5, (0, 0, 0): 0.25}, 2, eos_id=1)
    lp = table.logprobs([[1], [1, 0], [0, 1], [0]]).exp()  # [1, 0] has probability 0 but contains EOS
    assert lp.tolist() == [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5]]
    assert table.prob((0, 1)) == 0.25 and table.prob((1,)) == 0.5


def test_decoders_on_random_eos_chains_match_brute_force():
    for seed in range(40):
        toy = random_eos_chain(seed)
        seqs, probs = toy.joint()
        padded = {tuple(s): p for s, p in zip(seqs.tolist(), probs.tolist())}
        assert all(pad_after_eos(s, 4, toy.eos_id) == s for s in padded)
        # greedy: argmax step by step, stopping at EOS
        prefix: list[int] = []
        while len(prefix) < 4 and toy.eos_id not in prefix:
            prefix.append(int(np.argmax(toy.logprobs([prefix])[0].numpy())))
        assert Greedy().decode(toy, [], 4).tokens == tuple(prefix)
        mode = Lookahead(4).decode(toy, [], 4)
        assert toy.prob(mode.tokens) == pytest.approx(max(padded.values()), rel=1e-12)
        assert mode.tokens[-1] == toy.eos_id or len(mode.tokens) == 4
        canonical = Beam(27, length_penalty=0.0, early_stopping="never").decode(toy, [], 4)  # every prefix
        assert toy.prob(canonical.tokens) == pytest.approx(max(padded.values()), rel=1e-12)
        assert output_distribution(Sampling(), toy, 4) == pytest.approx(padded, abs=1e-12)
        for decoder in (Greedy(), Beam(2), Lookahead(2)):
            path = decoder.decode(toy, [], 4)
            assert exact_risk(ZeroOne(), toy, decoder, 4) == pytest.approx(1 - toy.prob(path.tokens), abs=1e-12)
            assert math.exp(path.logprob) == pytest.approx(toy.prob(path.tokens), rel=1e-9)


def test_sampling_on_an_eos_toy_pads_rows_and_ends_paths():
    toy = random_eos_chain(7)
    rows = sample_many(toy, [], 4, 20000, seed=3)
    eos = toy.eos_id
    for row, lp, k, path in zip(rows.tokens.tolist(), rows.step_logprobs.tolist(), rows.lengths.tolist(),
                                rows.paths()):
        assert tuple(row) == pad_after_eos(row[:k], 4, eos) and path.tokens == tuple(row[:k])
        assert all(x == 0.0 for x in lp[k:]) and path.logprob == pytest.approx(sum(lp))
    assert_frequencies_match(map(tuple, rows.tokens.tolist()), dict(toy.support()))


# ---- sessions ----------------------------------------------------------------------------------------


def test_prefix_session_absorbs_eos_and_stops_calling_the_model():
    model = Counting(eos_toy(0.4, 6))
    session = start_session(model, [], batch=2, steps=6)
    session.advance([END, A])
    assert session.last[0].exp().tolist() == [0.0, 1.0] and session.last[1].exp().tolist() == pytest.approx([0.6, 0.4])
    assert session.history.tolist() == [[END], [A]] and session.finished.tolist() == [True, False]
    calls = model.calls
    session.advance([END, END])  # now every row has ended: the model is not asked again
    session.advance([END, END])
    assert model.calls == calls and session.pending == 2
    out = session.feed([[END, END], [END, END]])
    assert model.calls == calls and out.exp()[..., END].eq(1).all()
    fork = session.select([1, 0])
    assert fork.history.tolist() == session.history.flip(0).tolist()
    lp = logprobs_after(model, [], [[A, END, A], [A, A]])
    assert lp.exp().tolist() == [[0.0, 1.0], pytest.approx([0.6, 0.4])]


def test_prefix_session_feed_equals_advances():
    toy = eos_toy(0.3, 6)
    a, b = start_session(toy, [], batch=2, steps=6), start_session(toy, [], batch=2, steps=6)
    tokens = torch.tensor([[A, A, END, END], [A, A, A, A]])
    fed = a.feed(tokens)
    steps = [b.advance(tokens[:, j].tolist()) for j in range(4)]
    assert torch.equal(fed, torch.stack(steps, dim=1))
    assert a.finished.tolist() == [True, False]


def test_engine_session_feed_absorbs_after_eos_and_rollback_reopens():
    engine = make_tiny_engine()
    prompt = engine.encode("The cat")
    plain = engine.start(prompt, batch=1, steps=8)
    session = start_session(engine, prompt, batch=1, steps=8)
    tokens = [17, 0, 23, 5]  # EOS (0) second
    raw, out = plain.feed(tokens), session.feed(tokens)
    assert torch.equal(out[0, 0], raw[0, 0])  # before EOS: the model's own row
    assert out[0, 1:].exp()[:, 0].eq(1).all() and session.finished.tolist() == [True]
    heads = session.heads()
    assert heads.shape[1] == engine.n_heads and heads.exp()[0, :, 0].eq(1).all()
    session.rollback(len(prompt) + 1)  # back to before the EOS
    assert session.finished.tolist() == [False]
    again = session.feed([3])
    plain.rollback(len(prompt) + 1)
    assert torch.equal(again, plain.feed([3]))


# ---- decoders on a neural model with a likely EOS ------------------------------------------------------


def test_decoders_stop_at_eos_on_the_engine():
    engine = eos_heavy_engine(7.5)
    prompt = engine.encode("Once")
    rows = sample_many(engine, prompt, 12, 64, seed=0)
    ended = (rows.tokens == 0).any(dim=1)
    assert 0.2 < float(ended.float().mean()) < 1.0  # the test exercises EOS
    for path, row, k in zip(rows.paths(), rows.tokens.tolist(), rows.lengths.tolist()):
        assert path.tokens == tuple(row[:k]) and (k == 12 or path.tokens[-1] == 0)
        assert all(t == 0 for t in row[k:])
        scored = Fixed(path.tokens).decode(engine, prompt, 12)
        assert scored.tokens == path.tokens and scored.logprob == pytest.approx(path.logprob, abs=1e-3)
    one = Sampling().decode(engine, prompt, 12, seed=5)
    assert one == sample_many(engine, prompt, 12, 1, seed=5).paths()[0]
    sure = eos_heavy_engine(30.0)
    assert Greedy().decode(sure, prompt, 12).tokens == (0,)
    assert Beam(3).decode(sure, prompt, 12).tokens == (0,)
    assert Lookahead(2).decode(sure, prompt, 12).tokens == (0,)
    res = best_first_search(sure, prompt, 3)
    assert res.tokens == (0, 0, 0) and res.step_logprobs[1:] == (0.0, 0.0)
    forced = list(walk(sure, prompt, 3, 2, tokens=torch.tensor([[0, 5, 5], [5, 5, 5]])))
    assert forced[2].logprobs.exp()[0, 0] == 1 and forced[2].history[0].tolist()[-2:] == [0, 5]


def test_fixed_accepts_ended_or_padded_outputs():
    toy = eos_toy()
    for tokens in [(A, END), (A, END, END)]:
        path = Fixed(tokens).decode(toy, [], 3)
        assert path.tokens == (A, END) and math.exp(path.logprob) == pytest.approx(0.24)
    with pytest.raises(ValueError, match="steps must equal the fixed output's length 2, got 3"):
        Fixed((A, A)).decode(toy, [], 3)
