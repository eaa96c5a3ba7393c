"""Our decoders and warpers against ``transformers`` on small randomly initialised GPT-2s (and SmolLM2).

``Beam(w, length_penalty, early_stopping)`` equals ``generate(do_sample=False, num_beams=w,
length_penalty=..., early_stopping=..., max_new_tokens=steps, num_return_sequences=1)``: without an EOS
every hypothesis has ``steps`` new tokens, so the length penalty cannot change the ranking; with one
(a GPT-2 whose EOS logit is raised so beams do end early) the finished-hypothesis bookkeeping, the
length penalty and the three early-stopping rules all matter, and still agree token for token.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from core.decoders import Beam, Greedy, Sampling, sample_many, warp_logprobs

VOCAB = 64
EOS = 7


class GPT2Adapter:
    """A ``transformers`` causal LM as a NextTokenModel (prefixes include the prompt, never empty)."""

    def __init__(self, model: GPT2LMHeadModel):
        self.model, self.vocab_size, self.eos_id = model, model.config.vocab_size, model.config.eos_token_id

    @torch.no_grad()
    def logprobs(self, prefixes):
        unique = {tuple(p) for p in prefixes}
        rows = {}
        for length in {len(p) for p in unique}:
            batch = [p for p in unique if len(p) == length]
            logits = self.model(torch.tensor(batch)).logits[:, -1].float()
            rows.update(zip(batch, torch.log_softmax(logits, dim=-1)))
        return torch.stack([rows[tuple(p)] for p in prefixes])


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def gpt2_eos() -> GPT2LMHeadModel:
    """A random GPT-2 with EOS = 7, peaked (embeddings x 8) and with EOS's logit raised by 3 everywhere, so
    about half the beam searches below end early, at every length."""
    torch.manual_seed(1)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                     bos_token_id=None, eos_token_id=EOS, pad_token_id=EOS)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight *= 8
        w = model.transformer.wte.weight[EOS]
        model.transformer.ln_f.bias += 3.0 * w / w.dot(w)
    return model


def generate(model, prompt: list[int], steps: int, width: int, **settings) -> list[int]:
    ids = torch.tensor([prompt])
    eos = model.config.eos_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=width,
                             max_new_tokens=steps, num_return_sequences=1, eos_token_id=eos, pad_token_id=eos,
                             **settings)
    return out[0, len(prompt):].tolist()


PROMPTS = [[5], [1, 2, 3], [60, 7, 7, 30, 2, 11, 12]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_and_beam_equal_generate(gpt2, prompt):
    model = GPT2Adapter(gpt2)
    assert list(Greedy().decode(model, prompt, 8).tokens) == generate(gpt2, prompt, 8, 1)
    for width in (2, 4):
        assert list(Beam(width).decode(model, prompt, 8).tokens) == generate(gpt2, prompt, 8, width), width


@pytest.mark.parametrize(("length_penalty", "early_stopping"), [(0.0, "never"), (1.0, False), (2.0, True)])
def test_beam_equals_generate_for_any_length_penalty_without_eos(gpt2, length_penalty, early_stopping):
    model = GPT2Adapter(gpt2)
    for prompt in PROMPTS[:2]:
        ours = list(Beam(3).decode(model, prompt, 8).tokens)
        assert ours == generate(gpt2, prompt, 8, 3, length_penalty=length_penalty, early_stopping=early_stopping)


SETTINGS = [(1.0, False), (0.0, "never"), (2.0, True), (-1.0, False), (0.5, "never"), (1.0, True)]


def test_beam_with_eos_equals_generate_for_every_length_penalty_and_early_stopping(gpt2_eos):
    model = GPT2Adapter(gpt2_eos)
    g = torch.Generator().manual_seed(0)
    lengths, differs = [], 0
    for _ in range(6):
        prompt = torch.randint(0, VOCAB, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        for width in (2, 3, 4):
            outs = set()
            for length_penalty, early_stopping in SETTINGS:
                ours = Beam(width, length_penalty, early_stopping).decode(model, prompt, 8).tokens
                want = generate(gpt2_eos, prompt, 8, width, length_penalty=length_penalty,
                                early_stopping=early_stopping)
                assert list(ours) == want, (prompt, width, length_penalty, early_stopping)
                assert EOS not in ours[:-1]
                lengths.append(len(ours) if ours[-1] == EOS else 0)
                outs.add(ours)
            differs += len(outs) > 1
    assert sum(0 < n < 8 for n in lengths) >= 20 and sum(n == 0 for n in lengths) >= 20  # both kinds of ending
    assert differs >= 3  # the settings change the output


def test_greedy_with_eos_equals_generate(gpt2_eos):
    model = GPT2Adapter(gpt2_eos)
    for prompt in PROMPTS:
        assert list(Greedy().decode(model, prompt, 8).tokens) == generate(gpt2_eos, prompt, 8, 1)


@pytest.mark.slow
def test_beam_with_eos_equals_generate_on_smollm2():
    from core.hf import load_smollm2

    engine = load_smollm2()
    prompt = engine.encode("<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n<|im_start|>assistant\n")
    ours = Beam(3, length_penalty=2.0, early_stopping=True).decode(engine, prompt, 10)
    assert ours.tokens[-1] == engine.eos_id and len(ours.tokens) < 10  # the answer ends with <|im_end|>
    ids = torch.tensor([engine.context_ids(prompt)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=3,
                                    max_new_tokens=10, num_return_sequences=1, length_penalty=2.0,
                                    early_stopping=True, eos_token_id=engine.eos_id, pad_token_id=engine.eos_id)
    assert list(ours.tokens) == out[0, ids.shape[1]:].tolist()


def test_warpers_equal_transformers_on_random_logits():
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        vocab = int(torch.randint(2, 100, (1,), generator=g))
        logits = torch.randn(8, vocab, generator=g) * float(torch.rand(1, generator=g) * 5)
        t = float(torch.rand(1, generator=g) * 2 + 0.1)
        k = int(torch.randint(1, vocab + 1, (1,), generator=g))
        p = float(torch.rand(1, generator=g) * 0.98 + 0.01)
        for temperature, top_k, top_p in [(t, None, None), (1.0, k, None), (1.0, None, p), (t, k, p)]:
            ref = logits
            if temperature != 1.0:
                ref = TemperatureLogitsWarper(temperature)(None, ref)
            if top_k is not None:
                ref = TopKLogitsWarper(top_k)(None, ref)
            if top_p is not None:
                ref = TopPLogitsWarper(top_p)(None, ref)
            ours = warp_logprobs(logits, temperature, top_k, top_p)
            assert torch.equal(torch.isinf(ours), torch.isinf(ref))
            finite = ~torch.isinf(ref)
            ref = ref - torch.logsumexp(ref, dim=-1, keepdim=True)
            torch.testing.assert_close(ours[finite], ref[finite], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", [Sampling(), Sampling(0.7, top_k=10), Sampling(1.3, top_p=0.8),
                                     Sampling(min_p=0.8), Sampling(typical_p=0.5), Sampling(eta_cutoff=0.9),
                                     Sampling(epsilon_cutoff=0.0155), Sampling(top_n_sigma=3.0),
                                     Sampling(1.2, repetition_penalty=3.0)], ids=repr)
def test_sampling_frequencies_pass_chi_square(gpt2, sampler):
    model = GPT2Adapter(gpt2)
    prompt = [3, 9]
    n = 20000
    rows = sample_many(model, prompt, 2, n, seed=7, sampler=sampler).tokens
    first = sampler.warp(model.logprobs([prompt]), torch.tensor([prompt]))[0].double().exp()
    second = sampler.warp(model.logprobs([prompt + [v] for v in range(VOCAB)]),
                          torch.tensor([prompt + [v] for v in range(VOCAB)])).double().exp()
    joint = (first[:, None] * second).reshape(-1).numpy()  # exact warped distribution of 2 tokens
    counts = np.bincount((rows[:, 0] * VOCAB + rows[:, 1]).numpy(), minlength=VOCAB * VOCAB)
    assert counts[joint == 0].sum() == 0  # never outside the sampler's support
    big = joint * n >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(joint[big] * n, joint[~big].sum() * n)
    keep = expected > 0
    assert chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-3
