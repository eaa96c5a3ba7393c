"""Determinism (issue 7): the same inputs and seed give byte-identical exported JSON across runs, in
separate processes (one of them with a single intra-op thread, as the engine uses on a busy machine)
and in a long-lived process whose shared engine has served other requests before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from core.compare import DecoderSettings, compare, empirical_distribution
from core.decoders import Sampling
from core.goals import DistributionMatch, Hamming, ZeroOne
from core.risk import risk_table
from core.toy import PRESETS, random_markov_chain

def exports(engine):
    settings = DecoderSettings(lookahead_depth=2, temperature=0.7, top_k=3, top_p=0.8, beam_width=3, shown_samples=2)
    out = []
    for name in ("E1", "Markov chain"):
        toy = PRESETS[name].build()
        for goal in (ZeroOne(), Hamming(), DistributionMatch("kl"), DistributionMatch("tv")):
            out.append(compare(toy, [], toy.length, 5, goal, settings).to_json(settings))
    chain = random_markov_chain(3, 0.7, 4, seed=11)
    out.append(json.dumps(risk_table([ZeroOne(), Hamming(), DistributionMatch("tv")], chain, [Sampling(0.5)], 4),
                          sort_keys=True, default=str))
    out.append(json.dumps(sorted(empirical_distribution(chain, Sampling(), 4, 500, 3).items())))
    prompt = engine.encode("def fibonacci(n):\n    ")
    out.append(compare(engine, prompt, 3, 7, Hamming(), settings, 16).to_json(settings, prompt))
    return "\n".join(out)

if __name__ == "__main__":
    from core.engine import load_default
    sys.stdout.write(exports(load_default()))
"""


def _run(threads: str | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_exported_json_is_byte_identical_across_processes_and_histories():
    procs = [_run(None), _run("1")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
        outs.append(out)
    assert outs[0] == outs[1]
    assert outs[0].count(b'"goal": ') == 9  # eight toy comparisons and one on the shipped model

    # in this process, after the shared engine served other prefixes (its prefix cache is dirty)
    from core.engine import load_default

    engine = load_default()
    engine.logprobs([engine.encode("import os\nimport sys\n" * 8)])
    engine.logprobs([engine.encode("def fibonacci(n):\n    return")])
    namespace: dict = {"__name__": "determinism"}
    exec(compile(SCRIPT, "<determinism>", "exec"), namespace)
    assert namespace["exports"](engine).encode() == outs[0]
