"""Bad input to every public core function: one table, each case a ValueError whose message names the
argument and the values it allows (issue 7, hardening). Pages turn exactly these messages into st.error
(tests/test_bad_inputs_pages.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core import choice_points as cp
from core.branching import BranchTree, branch
from core.compare import DecoderSettings, compare, empirical_distribution, lineup
from core.decoders import Beam, Fixed, Greedy, Lookahead, Sampling, best_first_search, sample_many, warp_logprobs
from core.goals import DistributionMatch, Hamming, NGramHamming, ZeroOne
from core.hf import check_memory, load_local_model
from core.risk import approx_bayes_output, bayes_output, estimate_risk, exact_risk, truncated_mass
from core.speculative import self_speculative
from core.theory import greedy_optimality_sweep
from core.toy import (
    PRESETS,
    MarkovChain,
    TableDistribution,
    binary_tree,
    cnf_distribution,
    hidden_path,
    output_distribution,
    random_markov_chain,
    random_table,
    sequence_tempered,
)
from core.train import TrainConfig, corpus_files

NAN, INF = float("nan"), float("inf")
E1 = PRESETS["E1"].build()
LONG = 10**6  # "huge" steps / prompt lengths


class Env:
    """What the cases need: the tiny random 4-head engine and a scratch directory with broken models."""

    def __init__(self, engine, tmp):
        self.engine = engine
        self.tmp = tmp
        self.file = tmp / "notes.txt"
        self.file.write_text("not a model")
        self.corrupt = tmp / "corrupt"
        self.corrupt.mkdir()
        (self.corrupt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        (self.corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 16)
        engine.tokenizer.save_pretrained(str(self.corrupt))
        self.bad_config = tmp / "bad_config"
        self.bad_config.mkdir()
        (self.bad_config / "config.json").write_text("{not json")
        self.pickles = tmp / "pickles"
        self.pickles.mkdir()
        (self.pickles / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        (self.pickles / "pytorch_model.bin").write_bytes(b"x")


@pytest.fixture(scope="module")
def env(tiny_engine, tmp_path_factory) -> Env:
    return Env(tiny_engine, tmp_path_factory.mktemp("bad_models"))


S = DecoderSettings
VOCAB = "vocabulary"
CASES = [
    # ---- toys -------------------------------------------------------------------------------
    (
        "table not summing to 1",
        lambda e: TableDistribution({(0,): 0.5, (1,): 0.4}, 2),
        r"probabilities must sum to 1 \(within 1e-09\), got 0\.9",
    ),
    ("table empty", lambda e: TableDistribution({}, 2), r"probs must hold at least one sequence"),
    ("table vocab 0", lambda e: TableDistribution({(0,): 1.0}, 0), r"vocab_size must be an integer >= 1, got 0"),
    (
        "table nan probability",
        lambda e: TableDistribution({(0,): NAN, (1,): 1.0}, 2),
        r"probability of \(0,\) must be >= 0 and finite, got nan",
    ),
    ("table negative probability", lambda e: TableDistribution({(0,): -0.5, (1,): 1.5}, 2), r"must be >= 0 and finite"),
    ("table token outside vocab", lambda e: TableDistribution({(5,): 1.0}, 2), r"outside the vocabulary 0\.\.1"),
    ("table mixed lengths", lambda e: TableDistribution({(0,): 0.5, (0, 1): 0.5}, 2), r"must have one length"),
    (
        "markov initial not summing",
        lambda e: MarkovChain([0.5, 0.4], [[1, 0], [0, 1]], 2),
        r"initial must sum to 1 \(within 1e-09\), got 0\.9",
    ),
    (
        "markov row not summing",
        lambda e: MarkovChain([0.5, 0.5], [[1, 0], [0.3, 0.3]], 2),
        r"transition rows must sum to 1 .*\(row 1\)",
    ),
    ("markov negative", lambda e: MarkovChain([1.5, -0.5], [[1, 0], [0, 1]], 2), r"initial must hold finite .* >= 0"),
    ("markov length 0", lambda e: MarkovChain([1.0], [[1.0]], 0), r"length must be an integer >= 1, got 0"),
    ("markov shape", lambda e: MarkovChain([0.5, 0.5], [[1.0]], 2), r"transition must have shape \(2, 2\)"),
    ("random chain alpha 0", lambda e: random_markov_chain(3, 0.0, 4, 0), r"alpha must be > 0 and finite, got 0\.0"),
    ("random chain alpha < 0", lambda e: random_markov_chain(3, -1.0, 4, 0), r"alpha must be > 0 and finite, got -1"),
    ("random chain alpha nan", lambda e: random_markov_chain(3, NAN, 4, 0), r"alpha must be > 0 and finite, got nan"),
    ("random chain alpha inf", lambda e: random_markov_chain(3, INF, 4, 0), r"alpha must be > 0 and finite, got inf"),
    ("random chain 0 states", lambda e: random_markov_chain(0, 1.0, 4, 0), r"n_states must be an integer >= 1, got 0"),
    ("random chain length 0", lambda e: random_markov_chain(3, 1.0, 0, 0), r"length must be an integer >= 1, got 0"),
    ("random chain seed", lambda e: random_markov_chain(3, 1.0, 4, "x"), r"seed must be an integer.*, got 'x'"),
    ("random table alpha 0", lambda e: random_table(2, 2, 0, alpha=0.0), r"alpha must be > 0 and finite"),
    ("random table too big", lambda e: random_table(50, 8, 0), r"over the enumeration limit of 1,048,576"),
    ("tree p > 1", lambda e: binary_tree([1.5, 0.5, 0.5], 2), r"P\(A \| \(\)\) must be in \[0, 1\], got 1\.5"),
    ("tree p nan", lambda e: binary_tree([NAN, 0.5, 0.5], 2), r"must be in \[0, 1\], got nan"),
    ("tree n 0", lambda e: binary_tree([], 0), r"n must be an integer in 1\.\.8, got 0"),
    ("tree n huge", lambda e: binary_tree([0.5], 9), r"n must be an integer in 1\.\.8, got 9"),
    ("tree wrong count", lambda e: binary_tree([0.5], 2), r"p_a must hold 2\^n - 1 = 3 conditionals"),
    ("cnf beta nan", lambda e: cnf_distribution([(1,)], 2, NAN), r"beta must be >= 0 and finite, got nan"),
    ("cnf bad literal", lambda e: cnf_distribution([(3,)], 2, 1.0), r"must be a non-empty list of literals ±1\.\.±2"),
    ("hidden path", lambda e: hidden_path(p_main=0.1, p_hidden=0.5), r"hidden_path needs 0 < p_hidden < p_main"),
    ("tempering tau 0", lambda e: sequence_tempered(E1, 0.0), r"tau must be > 0 and finite, got 0\.0"),
    ("tempering tau nan", lambda e: sequence_tempered(E1, NAN), r"tau must be > 0 and finite, got nan"),
    (
        "output distribution steps 0",
        lambda e: output_distribution(Sampling(), E1, 0),
        r"steps must be an integer in 1\.\.2 for this toy of length 2, got 0",
    ),
    (
        "output distribution steps huge",
        lambda e: output_distribution(Sampling(), E1, LONG),
        r"steps must be an integer in 1\.\.2",
    ),
    ("toy prefix outside vocab", lambda e: E1.logprobs([[7]]), r"token 7 is outside the vocabulary 0\.\.1"),
    ("toy window n", lambda e: E1.window_marginals(3), r"window length n must be an integer in 1\.\.2, got 3"),
    # ---- decoders ---------------------------------------------------------------------------
    ("tau 0", lambda e: Sampling(temperature=0.0), r"temperature must be > 0 and finite, got 0\.0"),
    ("tau negative", lambda e: Sampling(temperature=-1.0), r"temperature must be > 0 and finite, got -1\.0"),
    ("tau nan", lambda e: Sampling(temperature=NAN), r"temperature must be > 0 and finite, got nan"),
    ("tau inf", lambda e: Sampling(temperature=INF), r"temperature must be > 0 and finite, got inf"),
    ("top-k 0", lambda e: Sampling(top_k=0), r"top_k must be None or an integer >= 1, got 0"),
    ("top-k float", lambda e: Sampling(top_k=2.5), r"top_k must be None or an integer >= 1, got 2\.5"),
    ("top-p 0", lambda e: Sampling(top_p=0.0), r"top_p must be None or in \(0, 1\], got 0\.0"),
    ("top-p 1.5", lambda e: Sampling(top_p=1.5), r"top_p must be None or in \(0, 1\], got 1\.5"),
    ("top-p nan", lambda e: Sampling(top_p=NAN), r"top_p must be None or in \(0, 1\], got nan"),
    ("warp tau 0", lambda e: warp_logprobs(E1.logprobs([[]]), 0.0), r"temperature must be > 0"),
    ("beam width 0", lambda e: Beam(0), r"width must be an integer >= 1, got 0"),
    ("lookahead depth 0", lambda e: Lookahead(0), r"depth must be an integer >= 1, got 0"),
    ("lookahead budget 0", lambda e: Lookahead(2, node_budget=0), r"node_budget must be an integer >= 1, got 0"),
    ("search depth 0", lambda e: best_first_search(E1, [], 0), r"depth must be an integer >= 1, got 0"),
    (
        "search budget 0",
        lambda e: best_first_search(E1, [], 2, node_budget=0),
        r"node_budget must be None or an integer >= 1, got 0",
    ),
    ("greedy steps 0", lambda e: Greedy().decode(E1, [], 0), r"steps must be an integer >= 1, got 0"),
    ("greedy steps negative", lambda e: Greedy().decode(E1, [], -3), r"steps must be an integer >= 1, got -3"),
    ("greedy steps float", lambda e: Greedy().decode(E1, [], 1.5), r"steps must be an integer >= 1, got 1\.5"),
    (
        "greedy steps huge (toy)",
        lambda e: Greedy().decode(E1, [], LONG),
        r"steps must be <= 2 for this toy of length 2, got 1000000",
    ),
    (
        "greedy steps huge (engine)",
        lambda e: Greedy().decode(e.engine, [1], LONG),
        r"prompt \+ steps = 1000001 tokens exceeds the model's context of 127 tokens",
    ),
    ("lookahead steps 0", lambda e: Lookahead(2).decode(E1, [], 0), r"steps must be an integer >= 1, got 0"),
    ("beam steps huge", lambda e: Beam(2).decode(E1, [], 3), r"steps must be <= 2 for this toy"),
    (
        "sampling seed None",
        lambda e: Sampling().decode(E1, [], 2, seed=None),
        r"seed must be an integer for a random decoder, got None",
    ),
    ("sampling steps 0", lambda e: Sampling().decode(E1, [], 0, seed=0), r"steps must be an integer >= 1, got 0"),
    ("fixed wrong length", lambda e: Fixed((0,)).decode(E1, [], 2), r"steps must equal the fixed output's length 1"),
    ("sample_many n 0", lambda e: sample_many(E1, [], 2, 0, 0), r"n must be an integer >= 1, got 0"),
    ("sample_many steps huge", lambda e: sample_many(e.engine, [1], LONG, 2, 0), r"exceeds the model's context of 127"),
    ("sample_many seed", lambda e: sample_many(E1, [], 2, 2, 1.5), r"seed must be an integer"),
    # ---- goals and risk ---------------------------------------------------------------------
    ("ngram n 0", lambda e: NGramHamming(0), r"n must be an integer >= 1, got 0"),
    ("ngram n > steps", lambda e: NGramHamming(3).window(2), r"NGramHamming n must be <= steps \(2\), got 3"),
    ("divergence name", lambda e: DistributionMatch("js"), r"divergence must be 'kl' or 'tv', got 'js'"),
    ("loss lengths", lambda e: Hamming().loss((0,), (0, 1)), r"y_hat and y must have the same length"),
    (
        "exact risk steps 0",
        lambda e: exact_risk(ZeroOne(), E1, Greedy(), 0),
        r"steps must be an integer in 1\.\.2 for this toy, got 0",
    ),
    (
        "exact risk steps huge",
        lambda e: exact_risk(Hamming(), E1, Greedy(), LONG),
        r"steps must be an integer in 1\.\.2",
    ),
    (
        "exact risk on a neural model",
        lambda e: exact_risk(ZeroOne(), e.engine, Greedy(), 2),
        r"exact risk needs an enumerable toy .*use estimate_risk",
    ),
    ("bayes output steps 0", lambda e: bayes_output(ZeroOne(), E1, 0), r"steps must be an integer in 1\.\.2"),
    (
        "bayes output distribution match",
        lambda e: bayes_output(DistributionMatch(), E1, 2),
        r"no single output is Bayes-optimal for distribution matching",
    ),
    (
        "estimate n_samples 1",
        lambda e: estimate_risk(ZeroOne(), E1, Greedy(), [], 2, 1, 0),
        r"n_samples must be an integer >= 2, got 1",
    ),
    (
        "estimate seed",
        lambda e: estimate_risk(ZeroOne(), E1, Greedy(), [], 2, 8, None),
        r"seed must be an integer, got None",
    ),
    (
        "estimate steps 0",
        lambda e: estimate_risk(Hamming(), e.engine, Greedy(), [1], 0, 8, 0),
        r"steps must be an integer >= 1, got 0",
    ),
    (
        "estimate steps huge",
        lambda e: estimate_risk(Hamming(), e.engine, Greedy(), [1], LONG, 8, 0),
        r"exceeds the model's context of 127 tokens",
    ),
    (
        "truncated mass n_samples 0",
        lambda e: truncated_mass(E1, Sampling(top_k=1), [], 2, 0, 0),
        r"n_samples must be an integer >= 2, got 0",
    ),
    (
        "approx bayes n_samples 1",
        lambda e: approx_bayes_output(Hamming(), e.engine, [1], 2, 1, 0),
        r"n_samples must be an integer >= 2, got 1",
    ),
    # ---- theory sweep -----------------------------------------------------------------------
    (
        "sweep states 0",
        lambda e: greedy_optimality_sweep(n_states=(0,)),
        r"n_states must be a non-empty list of integers >= 1",
    ),
    ("sweep no states", lambda e: greedy_optimality_sweep(n_states=()), r"n_states must be a non-empty list"),
    (
        "sweep alpha 0",
        lambda e: greedy_optimality_sweep(alphas=(0.0,)),
        r"alphas must be a non-empty list of numbers > 0 and finite",
    ),
    ("sweep alpha < 0", lambda e: greedy_optimality_sweep(alphas=(1.0, -2.0)), r"alphas must be .* > 0 and finite"),
    (
        "sweep alpha nan",
        lambda e: greedy_optimality_sweep(alphas=(NAN,)),
        r"alphas must be .* > 0 and finite, got \(nan,\)",
    ),
    ("sweep chains 0", lambda e: greedy_optimality_sweep(n_chains=0), r"n_chains must be an integer >= 1, got 0"),
    ("sweep length 0", lambda e: greedy_optimality_sweep(length=0), r"length must be an integer >= 1, got 0"),
    (
        "sweep chains huge",
        lambda e: greedy_optimality_sweep(n_chains=10**9),
        r"n_chains x max\(length, #states\) x #states\^2 must be at most 33,554,432",
    ),
    (
        "sweep length huge",
        lambda e: greedy_optimality_sweep(n_states=(2,), length=10**9),
        r"must be at most 33,554,432",
    ),
    # ---- engine (the neural model) ----------------------------------------------------------
    (
        "engine token outside vocab",
        lambda e: e.engine.logprobs([[e.engine.vocab_size]]),
        r"token id 8192 is outside this model's vocabulary \[0, 8192\)",
    ),
    ("engine negative token", lambda e: e.engine.logprobs([[1, -1]]), r"token id -1 is outside .* \[0, 8192\)"),
    (
        "engine prefix too long",
        lambda e: e.engine.logprobs([[1] * 500]),
        r"prompt \+ steps = 500 tokens exceeds the model's context of 127 tokens",
    ),
    ("engine start token", lambda e: e.engine.start([99999]), r"token id 99999 is outside .* \[0, 8192\)"),
    ("engine start batch 0", lambda e: e.engine.start([1], batch=0), r"batch must be >= 1, got 0"),
    ("engine start steps < 0", lambda e: e.engine.start([1], steps=-1), r"steps must be >= 0, got -1"),
    ("engine start too long", lambda e: e.engine.start([1] * 100, steps=100), r"exceeds the model's context of 127"),
    ("engine feed token", lambda e: e.engine.start([1]).feed([8192]), r"token id 8192 is outside"),
    ("engine head_logprobs token", lambda e: e.engine.head_logprobs([-5]), r"token id -5 is outside"),
    ("engine encode non-text", lambda e: e.engine.encode(None), r"text input must be of type `str`"),
    # ---- local models -----------------------------------------------------------------------
    ("model path empty", lambda e: load_local_model(""), r"model path must be a non-empty path, got ''"),
    ("model path whitespace", lambda e: load_local_model("   "), r"model path must be a non-empty path"),
    (
        "model dir missing",
        lambda e: load_local_model(e.tmp / "no-such-model"),
        r"does not exist; expected a directory saved by transformers "
        r"\(config\.json, \*\.safetensors, tokenizer files\) or a \.gguf file",
    ),
    (
        "model path is a file",
        lambda e: load_local_model(e.file),
        r"is a \.txt file; expected a directory saved by transformers .* or a \.gguf file",
    ),
    ("model dir without config", lambda e: load_local_model(e.tmp), r"has no config\.json; expected a directory"),
    ("config not json", lambda e: load_local_model(e.bad_config), r"config\.json is not valid JSON"),
    ("pickle weights only", lambda e: load_local_model(e.pickles), r"has only pickle weights \(pytorch_model\.bin\)"),
    (
        "corrupt safetensors",
        lambda e: load_local_model(e.corrupt),
        r"weights file .*model\.safetensors is damaged or not safetensors",
    ),
    ("corrupt safetensors (memory check)", lambda e: check_memory(e.corrupt), r"is damaged or not safetensors"),
    (
        "broken gguf",
        lambda e: load_local_model(_write(e.tmp / "broken.gguf", b"GGUFxx")),
        r"is not a readable GGUF file",
    ),
    # ---- self-speculative -------------------------------------------------------------------
    ("speculative on a toy", lambda e: self_speculative(E1, [], 2), r"needs a model with extra heads \(n_heads >= 2\)"),
    ("speculative steps 0", lambda e: self_speculative(e.engine, [1], 0), r"steps must be an integer >= 1, got 0"),
    ("speculative steps huge", lambda e: self_speculative(e.engine, [1], LONG), r"exceeds the model's context of 127"),
    (
        "speculative heads 1",
        lambda e: self_speculative(e.engine, [1], 4, heads=1),
        r"heads must be an integer in \[2, 4\], got 1",
    ),
    (
        "speculative heads 9",
        lambda e: self_speculative(e.engine, [1], 4, heads=9),
        r"heads must be an integer in \[2, 4\], got 9",
    ),
    (
        "speculative token",
        lambda e: self_speculative(e.engine, [8192], 4),
        r"prompt token ids must be in \[0, 8192\), got 8192",
    ),
    # ---- compare (the Compare page's compute) -----------------------------------------------
    ("compare steps 0", lambda e: compare(E1, [], 0, 0, ZeroOne(), S()), r"steps must be an integer >= 1, got 0"),
    (
        "compare steps huge (toy)",
        lambda e: compare(E1, [], LONG, 0, ZeroOne(), S()),
        r"steps must be <= 2 for this toy of length 2",
    ),
    (
        "compare steps huge (engine)",
        lambda e: compare(e.engine, [1], LONG, 0, ZeroOne(), S(), 16),
        r"prompt \+ steps = 1000001 tokens exceeds the model's context of 127 tokens",  # time guards are the pages'
    ),
    (
        "compare seed None",
        lambda e: compare(E1, [], 2, None, ZeroOne(), S()),
        r"seed must be an integer >= 0, got None",
    ),
    ("compare seed < 0", lambda e: compare(E1, [], 2, -1, ZeroOne(), S()), r"seed must be an integer >= 0, got -1"),
    ("compare toy with prompt", lambda e: compare(E1, [1], 1, 0, ZeroOne(), S()), r"toys take no prompt"),
    (
        "compare tau 0",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(temperature=0.0)),
        r"temperature must be > 0 and finite, got 0\.0",
    ),
    (
        "compare tau negative",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(temperature=-0.5)),
        r"temperature must be > 0 and finite, got -0\.5",
    ),
    (
        "compare tau nan",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(temperature=NAN)),
        r"temperature must be > 0 and finite, got nan",
    ),
    (
        "compare top-k 0",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(top_k=0)),
        r"top_k must be None or an integer >= 1, got 0",
    ),
    (
        "compare top-p 0",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(top_p=0.0)),
        r"top_p must be None or in \(0, 1\], got 0\.0",
    ),
    (
        "compare top-p 1.5",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(top_p=1.5)),
        r"top_p must be None or in \(0, 1\], got 1\.5",
    ),
    (
        "compare depth 0",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(lookahead_depth=0)),
        r"lookahead depth must be an integer from 1 to 2, got 0",
    ),
    (
        "compare depth > steps (toy)",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(lookahead_depth=3)),
        r"lookahead depth must be an integer from 1 to 2, got 3",
    ),
    (
        "compare depth above the neural budget",
        lambda e: compare(e.engine, [1], 8, 0, ZeroOne(), S(lookahead_depth=5), 16),
        r"lookahead depth must be an integer from 1 to 4 on a neural model \(node budget 256 per token\), got 5",
    ),
    (
        "compare beam 0",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(beam_width=0)),
        r"beam width must be an integer from 1 to 16, got 0",
    ),
    (
        "compare beam huge",
        lambda e: lineup(S(beam_width=10**6), 2, True),
        r"beam width must be an integer from 1 to 16",
    ),
    (
        "compare shown samples",
        lambda e: compare(E1, [], 2, 0, ZeroOne(), S(shown_samples=11)),
        r"samples shown must be an integer from 0 to 10, got 11",
    ),
    (
        "compare n_samples small",
        lambda e: compare(e.engine, [1], 2, 0, ZeroOne(), S(), 8),
        r"Monte Carlo samples must be an integer from 16 to 1024, got 8",
    ),
    (
        "compare n_samples huge",
        lambda e: compare(e.engine, [1], 2, 0, ZeroOne(), S(), 10**6),
        r"Monte Carlo samples must be an integer from 16 to 1024, got 1000000",
    ),
    (
        "compare ngram > steps",
        lambda e: compare(E1, [], 2, 0, NGramHamming(3), S()),
        r"NGramHamming n must be <= steps \(2\)",
    ),
    (
        "empirical distribution n 0",
        lambda e: empirical_distribution(E1, Sampling(), 2, 0, 0),
        r"n must be an integer >= 1",
    ),
    # ---- choice points and branching --------------------------------------------------------
    ("step heads top-k 0", lambda e: cp.step_heads(e.engine, [1], 0), r"top_k must be an integer in \[1, 256\], got 0"),
    ("step heads top-k huge", lambda e: cp.step_heads(E1, [], 10**6), r"top_k must be an integer in \[1, 256\]"),
    (
        "step heads token",
        lambda e: cp.step_heads(e.engine, [8192]),
        r"prefix must hold token ids in \[0, 8192\), got 8192",
    ),
    (
        "pair information top-k 0",
        lambda e: cp.pair_information(E1, [], 0),
        r"top_k must be an integer in \[1, 256\], got 0",
    ),
    (
        "pair information token",
        lambda e: cp.pair_information(E1, [3]),
        r"prefix must hold token ids in \[0, 2\), got 3",
    ),
    (
        "trace tokens",
        lambda e: cp.choice_trace(e.engine, [1], [1, -2]),
        r"tokens must hold token ids in \[0, 8192\), got -2",
    ),
    (
        "head table prompt",
        lambda e: cp.head_table(e.engine, ["a"], [1]),
        r"prompt must hold token ids in \[0, 8192\), got 'a'",
    ),
    (
        "next token table",
        lambda e: cp.next_token_table(E1, [], [0, 9]),
        r"tokens must hold token ids in \[0, 2\), got 9",
    ),
    ("score path", lambda e: cp.score_path(E1, [], [2]), r"tokens must hold token ids in \[0, 2\)"),
    (
        "decompose not summing",
        lambda e: cp.decompose([[0.5, 0.2], [0.1, 0.1]]),
        r"joint must sum to 1 \(within 1e-09\), got 0\.89999",
    ),
    ("decompose negative", lambda e: cp.decompose([[1.5, -0.5]]), r"joint must hold finite probabilities >= 0"),
    ("decompose nan", lambda e: cp.decompose([[NAN, 1.0]]), r"joint must hold finite probabilities >= 0"),
    ("decompose 1-d", lambda e: cp.decompose([0.5, 0.5]), r"joint must be a non-empty 2-d table"),
    (
        "trace metric",
        lambda e: cp.choice_trace(E1, [], [0, 0]).metric("beauty"),
        r"metric must be one of \('entropy', 'surprise', 'influence'\), got 'beauty'",
    ),
    (
        "trace top positions",
        lambda e: cp.choice_trace(E1, [], [0, 0]).top_positions("entropy", -1),
        r"count must be an integer >= 0, got -1",
    ),
    (
        "branch position",
        lambda e: branch(BranchTree.root((0, 0)), E1, [], 5, 1),
        r"position must be a step in \[0, 2\), got 5",
    ),
    (
        "branch token",
        lambda e: branch(BranchTree.root((0, 0)), E1, [], 0, 7),
        r"token must be an id in \[0, 2\), got 7",
    ),
    ("branch goto", lambda e: BranchTree.root((0,)).goto(3), r"branch index must be in \[0, 1\), got 3"),
    ("branch undo at root", lambda e: BranchTree.root((0,)).undo(), r"nothing to undo"),
    # ---- training configuration -------------------------------------------------------------
    ("train d_model 0", lambda e: TrainConfig(d_model=0), r"d_model must be an integer >= 1, got 0"),
    ("train batch 0", lambda e: TrainConfig(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (
        "train heads",
        lambda e: TrainConfig(d_model=30, n_attn_heads=4),
        r"d_model must be divisible by n_attn_heads \(4\)",
    ),
    ("train lr 0", lambda e: TrainConfig(lr=0.0), r"lr must be > 0 and finite, got 0\.0"),
    ("train lr nan", lambda e: TrainConfig(lr=NAN), r"lr must be > 0 and finite, got nan"),
    ("train min lr ratio", lambda e: TrainConfig(min_lr_ratio=1.5), r"min_lr_ratio must be in \[0, 1\], got 1\.5"),
    ("train warmup", lambda e: TrainConfig(warmup_steps=-1), r"warmup_steps must be an integer >= 0, got -1"),
    ("train time budget", lambda e: TrainConfig(time_budget_s=-1.0), r"time_budget_s must be >= 0 and finite, got -1"),
    ("train corpus", lambda e: corpus_files("no-such-corpus-dir"), r"is not 'stdlib', 'site:NAME' or a directory"),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "call", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_precise_value_error(env, case, call, match):
    with pytest.raises(ValueError, match=match):
        call(env)


def test_every_case_names_the_allowed_values():
    """Each expected message says what is allowed (a range, a list, a form), not just that it failed."""
    hints = ("must", "expected", "needs", "outside", "exceeds", "not ", "no ", "only", "nothing", "limit", "take no")
    for case, _, match in CASES:
        assert any(h in match for h in hints), case


def test_engine_still_works_after_bad_calls(env):
    """A refused call leaves the shared engine (prefix cache, sessions) exactly as usable as before."""
    before = env.engine.logprobs([[1, 2, 3]])
    for bad in ([[8192]], [[1, 2, -1]], [[1] * 500]):
        with pytest.raises(ValueError):
            env.engine.logprobs(bad)
    assert np.array_equal(env.engine.logprobs([[1, 2, 3]]).numpy(), before.numpy())
    assert Greedy().decode(env.engine, [1, 2], 3).tokens == Greedy().decode(env.engine, [1, 2], 3).tokens


def test_odd_text_is_not_an_error(env):
    """Unknown characters and whitespace-only text are valid input to the tokenizer (byte-level BPE):
    they encode, and decode back."""
    for text in ("\x00\ufffe🦄ꙮ\u202e", "   \n\t", "ä" * 50):
        ids = env.engine.encode(text)
        assert ids and env.engine.decode(ids) == text
    assert math.isfinite(float(env.engine.logprobs([env.engine.encode("🦄")]).logsumexp(-1)))
