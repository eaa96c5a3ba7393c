"""An emulator of vLLM's OpenAI-compatible server over an in-process model, for the vLLM-only fields
(``prompt_logprobs``, ``logprobs=-1``, ``return_tokens_as_token_ids``, several prompts per request, ``n``).

The wire format follows vLLM's own code (``vllm/entrypoints/openai/completion/serving.py``,
``request_output_to_completion_response`` and ``_create_completion_logprobs``; ``protocol.py``'s
``CompletionResponse``, ``TokenizeResponse``, ``DetokenizeResponse``; ``vllm/logprobs.py``'s ``Logprob``):

* ``/v1/models``: ``owned_by: "vllm"``, ``max_model_len``, ``root``, ``parent``, ``permission``.
* ``/tokenize`` -> ``{count, max_model_len, tokens, token_strs}``; ``/detokenize`` -> ``{prompt}``.
* ``/v1/completions``: a prompt is text, token ids, or a list of either (one engine request each; choices
  are numbered across prompts, ``n`` per prompt). Each position's ``top_logprobs`` holds the sampled token
  first, then the top k (so k or k + 1 entries), keyed by the decoded token or ``token_id:<id>`` with
  ``return_tokens_as_token_ids``; log-probs are clamped at -9999.0. ``logprobs=-1`` means the whole
  vocabulary and is refused above ``--max-logprobs`` with vLLM's message ("Requested sample logprobs of
  N, which is greater than max allowed: M"), as a 400 ``{"error": {message, type, param, code}}``.
  ``prompt_logprobs=k`` returns, per prompt position, None for the first and then ``{id: {logprob, rank,
  decoded_token}}`` for the prompt token and the top k. ``echo`` prepends the prompt (and its logprobs).
  Generation stops at EOS (included, ``finish_reason: "stop"``). Log-probs are the raw model's.
"""

from __future__ import annotations

import time
import uuid

import torch

from core.decoders import draw, warp_logprobs

CLAMP = -9999.0


class FakeVLLM:
    """``answer(method, path, headers, body)`` for ``server_fixture.stub_server``."""

    def __init__(self, model, name: str = "org/tiny-model", max_logprobs: int = 20, max_model_len: int | None = None,
                 tokenize: bool = True):
        self.model, self.name, self.max_logprobs, self.tokenize = model, name, max_logprobs, tokenize
        self.max_model_len = max_model_len or model.max_tokens
        self.requests: list[tuple[str, dict | None]] = []

    def __call__(self, method: str, path: str, headers: dict, body: dict | None):
        self.requests.append((path, body))
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{
                "id": self.name, "object": "model", "created": int(time.time()), "owned_by": "vllm",
                "root": self.name, "parent": None, "max_model_len": self.max_model_len,
                "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                "allow_sampling": True, "allow_logprobs": True}]}]}
        if path in ("/tokenize", "/detokenize") and not self.tokenize:  # e.g. a server built without them
            return 404, {"detail": "Not Found"}
        if path == "/tokenize":
            ids = self.model.encode(body["prompt"])
            return 200, {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids, "token_strs": None}
        if path == "/detokenize":
            return 200, {"prompt": self.model.decode(body["tokens"])}
        if path == "/v1/completions":
            try:
                return 200, self.complete(body)
            except ValueError as err:
                return 400, {"error": {"message": str(err), "type": "BadRequestError", "param": None, "code": 400}}
        return 404, {"detail": "Not Found"}

    # ---- completions ------------------------------------------------------------------------------
    def _count(self, k: int | None, what: str) -> int | None:
        if k is None:
            return None
        cap = self.model.vocab_size if self.max_logprobs == -1 else self.max_logprobs
        n = self.model.vocab_size if k == -1 else int(k)
        if n > cap:
            raise ValueError(f"Requested {what} logprobs of {n}, which is greater than max allowed: {cap}")
        return n

    def complete(self, body: dict) -> dict:
        prompts = body["prompt"]
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        k = self._count(body.get("logprobs"), "sample")
        pk = self._count(body.get("prompt_logprobs"), "prompt")
        n = int(body.get("n") or 1)
        gen = torch.Generator().manual_seed(int(body["seed"])) if body.get("seed") is not None else torch.Generator()
        choices, usage_prompt, usage_done = [], 0, 0
        for prompt in prompts:
            ids = self.model.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
            plp = self._prompt_logprobs(ids) if pk is not None or body.get("echo") else None
            for _ in range(n):
                out, rows = self._generate(ids, body, gen)
                tokens, tops = list(out), rows
                text = self.model.decode(out)
                if body.get("echo"):
                    tokens, tops, text = ids + tokens, (plp or [None] * len(ids)) + rows, self.model.decode(ids) + text
                finish = "stop" if out and out[-1] == self.model.eos_id else "length"
                choice = {"index": len(choices), "text": text, "logprobs": None, "finish_reason": finish,
                          "stop_reason": None, "prompt_logprobs": None if pk is None else self._prompt_json(plp, pk)}
                if k is not None:
                    choice["logprobs"] = self._logprobs_json(tokens, tops, k, body.get("return_tokens_as_token_ids"))
                choices.append(choice)
                usage_done += len(out)
            usage_prompt += len(ids)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": usage_prompt, "total_tokens": usage_prompt + usage_done,
                          "completion_tokens": usage_done, "prompt_tokens_details": None},
                "system_fingerprint": None, "kv_transfer_params": None}

    def _generate(self, ids: list[int], body: dict, gen: torch.Generator):
        """(new token ids, per position the [V] raw log-probs and the chosen id)."""
        out, rows = [], []
        temperature = float(body.get("temperature", 1.0))
        top_k = body.get("top_k")
        top_p = body.get("top_p")
        for _ in range(int(body.get("max_tokens", 16))):
            lp = self.model.logprobs([ids + out])[0]
            if temperature == 0:
                tok = int(torch.argmax(lp))
            else:
                warped = warp_logprobs(lp[None], temperature, None if top_k in (None, -1, 0) else int(top_k),
                                       None if top_p in (None, 1, 1.0) else float(top_p))
                tok = int(draw(warped, gen)[0])
            rows.append((lp, tok))
            out.append(tok)
            if tok == self.model.eos_id:
                break
        return out, rows

    def _prompt_logprobs(self, ids: list[int]) -> list:
        """vLLM's PromptLogprobs: None, then per position {id: (logprob, rank)} for the token and the top k."""
        lps = self.model.logprobs([ids[:i] for i in range(1, len(ids))]) if len(ids) > 1 else []
        out: list = [None]
        for i, lp in enumerate(lps, start=1):
            out.append((lp, ids[i]))
        return out

    def _entries(self, lp: torch.Tensor, chosen: int, k: int) -> dict[int, tuple[float, int]]:
        """The chosen token first, then the top k (deduplicated), with ranks (1 = most likely)."""
        order = torch.sort(lp, descending=True, stable=True).indices
        rank = {int(t): r + 1 for r, t in enumerate(order[: max(k, 1)].tolist())}
        entries = {chosen: (float(lp[chosen]), int((lp > lp[chosen]).sum()) + 1)}
        for t in order[:k].tolist():
            entries.setdefault(int(t), (float(lp[t]), rank[int(t)]))
        return entries

    def _prompt_json(self, plp: list, k: int) -> list:
        out = []
        for item in plp:
            if item is None:
                out.append(None)
                continue
            lp, tok = item
            out.append({str(t): {"logprob": max(v, CLAMP), "rank": r, "decoded_token": self.model.decode([t])}
                        for t, (v, r) in self._entries(lp, tok, k).items()})
        return out

    def _logprobs_json(self, tokens: list[int], tops: list, k: int, as_ids: bool) -> dict:
        def key(t: int) -> str:
            return f"token_id:{t}" if as_ids else self.model.decode([t])

        offsets, values, strings, top = [], [], [], []
        offset = 0
        for tok, item in zip(tokens, tops):
            strings.append(key(tok))
            offsets.append(offset)
            offset += len(strings[-1])
            if item is None:
                values.append(None)
                top.append(None)
                continue
            lp, _ = item
            values.append(max(float(lp[tok]), CLAMP))
            top.append({key(t): max(v, CLAMP) for t, (v, _) in self._entries(lp, tok, k).items()})
        return {"text_offset": offsets, "token_logprobs": values, "tokens": strings, "top_logprobs": top}


class LetterModel:
    """A 16-token bigram model over the letters a..p (a = EOS = 0), for EOS and whole-vocabulary cases."""

    vocab_size, eos_id, max_tokens = 16, 0, 64

    def __init__(self, seed: int = 4):
        self.weights = torch.randn(16, 16, generator=torch.Generator().manual_seed(seed)) * 2

    def logprobs(self, prefixes) -> torch.Tensor:
        return torch.log_softmax(torch.stack([self.weights[p[-1]] for p in prefixes]), -1)

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 16 for c in text]  # a..p map to 1..15, 0; anything else somewhere in the vocabulary

    def decode(self, ids) -> str:
        return "".join(chr(97 + int(i)) for i in ids)
