"""The numerical half of the determinism contract (``core.compute``): different shapes of the same
computation — a k-token feed vs k one-token steps, batched ``logprobs`` vs one-token steps, a row in
a batch of 96 vs alone, ``sample_groups`` vs ``sample_many``, CUDA vs CPU — agree within
``LOGPROB_TOLERANCE`` nats per log-prob and make the same decisions wherever the top-2 margin is not
a near-tie. Run natively and under emulated CPUs (``make test``)."""

from __future__ import annotations

import copy
import os
import random

import pytest
import torch

from core.compute import LOGPROB_TOLERANCE, NEAR_TIE_MARGIN
from core.decoders import Greedy, sample_groups, sample_many
from core.engine import Engine, load_default
from tests.conftest import make_tiny_engine

STEPS = 64


@pytest.fixture(scope="module")
def engine():
    return load_default()


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=LOGPROB_TOLERANCE, rtol=0)


def same_clear_decisions(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal argmax on every row of [T, V] log-probs whose top-2 margin (in ``b``) is not a near-tie."""
    top = torch.topk(b, 2).values
    clear = (top[:, 0] - top[:, 1]) >= NEAR_TIE_MARGIN
    assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear])


def test_the_tolerances_are_ordered():
    assert 0 < 10 * LOGPROB_TOLERANCE <= NEAR_TIE_MARGIN  # two values each within the tolerance never swap


def test_the_emulated_cpu_is_in_effect():
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if not wanted:
        pytest.skip("not an emulated run")
    assert torch.backends.cpu.get_cpu_capability() == wanted.upper()


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_feeds_batches_and_steps_agree_within_the_tolerance(which, engine):
    eng = engine if which == "shipped" else make_tiny_engine(seed=3)
    rng = random.Random(0)
    prompts = [eng.encode(t) for t in ("def fibonacci(n):\n    if n", "import os\nimport sys\n\n\nclass Config:\n",
                                       "for key, value in")]
    prompts.append([rng.randrange(eng.vocab_size) for _ in range(37)])
    for prompt in prompts:
        tokens = list(Greedy().decode(eng, prompt, STEPS).tokens)
        session = eng.start(prompt, 1, STEPS)
        steps = torch.stack([session.last[0]] + [session.feed([t])[0, -1] for t in tokens[:-1]])
        multi = eng.start(prompt, 1, STEPS)
        rows, i = [multi.last[0]], 0
        while i < STEPS - 1:  # speculative-like feeds of 1..4 tokens
            piece = tokens[i : min(i + rng.randint(1, 4), STEPS - 1)]
            rows += list(multi.feed(piece)[0])
            i += len(piece)
        fed = torch.stack(rows)
        close(fed, steps)
        same_clear_decisions(fed, steps)
        batched = eng.logprobs([prompt + tokens[:t] for t in range(STEPS)])
        close(batched, steps)
        same_clear_decisions(batched, steps)


def test_a_row_in_a_batch_agrees_with_the_row_alone(engine):
    prompt = engine.encode("class Stack:\n    def push(self, x):\n        ")
    drawn = sample_many(engine, prompt, 6, 96, seed=2)  # 96 rows: canonical chunks on the worker pool
    for row in (0, 37, 95):
        alone = engine.start(prompt, 1, 6)
        lps = [alone.last[0]] + [alone.feed([t])[0, -1] for t in drawn.tokens[row, :-1].tolist()]
        want = torch.stack(lps).gather(1, drawn.tokens[row][:, None]).squeeze(1).double()
        close(drawn.step_logprobs[row], want)


def test_sample_groups_rows_agree_with_sample_many(engine):
    prompt = engine.encode("def mean(values):\n    ")
    groups = [(40, 1, None), (24, 5, None)]
    for got, (n, seed, sampler) in zip(sample_groups(engine, prompt, 5, groups), groups):
        want = sample_many(engine, prompt, 5, n, seed, sampler)
        same = (got.tokens == want.tokens).all(dim=1)  # a token may differ only where a uniform sat on a boundary
        assert same.float().mean() >= 0.9
        close(got.step_logprobs[same], want.step_logprobs[same])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_agrees_with_the_cpu_within_the_tolerance(engine):
    gpu = Engine(copy.deepcopy(engine.model), engine.tokenizer, name="cuda", device="cuda")
    cpu = engine
    for text in ("def fibonacci(n):\n    if n", "for key, value in"):
        prompt = cpu.encode(text)
        tokens = list(Greedy().decode(cpu, prompt, 32).tokens)
        rows = [prompt + tokens[:t] for t in range(32)]
        a, b = gpu.logprobs(rows), cpu.logprobs(rows)
        close(a, b)
        same_clear_decisions(a, b)
