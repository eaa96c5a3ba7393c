"""A tree of paths the user branched by forcing a token, with undo.

``BranchTree`` is immutable: ``fork``, ``goto`` and ``undo`` return new trees, and every new tree
remembers the one it came from, so undo walks back through the user's actions. ``branch`` computes
a fork's continuation with a decoder (greedy by default) and is the only function that touches a
model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from core.decoders import Greedy, Path, check_call, check_seed, make_path, walk
from core.protocol import start_session


@dataclass(frozen=True)
class Branch:
    """One path in the tree.

    Attributes:
        tokens: all its new tokens (after the prompt).
        parent: index of the branch it left, None for the root.
        position: the step at which it left its parent (0 for the root).
        forced: the token forced at ``position`` (None for the root).
    """

    tokens: tuple[int, ...]
    parent: int | None = None
    position: int = 0
    forced: int | None = None


@dataclass(frozen=True)
class BranchTree:
    """Branches in creation order (0 = the root path) and the one being viewed."""

    branches: tuple[Branch, ...]
    current: int = 0
    previous: BranchTree | None = field(default=None, compare=False, repr=False)

    @classmethod
    def root(cls, tokens: Sequence[int]) -> BranchTree:
        return cls((Branch(tuple(int(t) for t in tokens)),))

    @property
    def path(self) -> tuple[int, ...]:
        return self.branches[self.current].tokens

    @property
    def can_undo(self) -> bool:
        return self.previous is not None

    def _check_index(self, index: int) -> int:
        if not isinstance(index, int) or not 0 <= index < len(self.branches):
            raise ValueError(f"branch index must be in [0, {len(self.branches)}), got {index!r}")
        return index

    def fork(self, position: int, token: int, continuation: Sequence[int]) -> BranchTree:
        """Force ``token`` at ``position`` of the current path, followed by ``continuation``.

        If a branch with exactly these tokens exists, switch to it instead of adding a twin.
        """
        path = self.path
        if not isinstance(position, int) or not 0 <= position < len(path):
            raise ValueError(f"position must be a step in [0, {len(path)}), got {position!r}")
        tokens = (*path[:position], int(token), *(int(t) for t in continuation))
        if len(tokens) != len(path):
            raise ValueError(
                f"continuation must have {len(path) - position - 1} tokens to keep the path length, "
                f"got {len(continuation)}"
            )
        for i, b in enumerate(self.branches):
            if b.tokens == tokens:
                return self.goto(i)
        new = Branch(tokens, parent=self.current, position=position, forced=int(token))
        return BranchTree((*self.branches, new), len(self.branches), previous=self)

    def goto(self, index: int) -> BranchTree:
        """View another branch (an undoable action unless it is already current)."""
        index = self._check_index(index)
        if index == self.current:
            return self
        return BranchTree(self.branches, index, previous=self)

    def undo(self) -> BranchTree:
        if self.previous is None:
            raise ValueError("nothing to undo")
        return self.previous

    def children(self, index: int) -> tuple[int, ...]:
        index = self._check_index(index)
        return tuple(i for i, b in enumerate(self.branches) if b.parent == index)

    def outline(self) -> tuple[tuple[int, int], ...]:
        """(depth, branch index) in depth-first order, children by creation, for drawing the tree."""
        out: list[tuple[int, int]] = []

        def visit(i: int, depth: int) -> None:
            out.append((depth, i))
            for c in self.children(i):
                visit(c, depth + 1)

        visit(0, 0)
        return tuple(out)


def branch(tree: BranchTree, model, prompt: Sequence[int], position: int, token: int, decoder=None) -> BranchTree:
    """Fork ``tree`` by forcing ``token`` at ``position`` and continuing with ``decoder`` (greedy)."""
    path = tree.path
    if not isinstance(position, int) or not 0 <= position < len(path):
        raise ValueError(f"position must be a step in [0, {len(path)}), got {position!r}")
    if not isinstance(token, int) or not 0 <= token < model.vocab_size:
        raise ValueError(f"token must be an id in [0, {model.vocab_size}), got {token!r}")
    prefix = [int(t) for t in prompt] + list(path[:position]) + [token]
    remaining = len(path) - position - 1
    decoder = Greedy() if decoder is None else decoder
    continuation = decoder.decode(model, prefix, remaining, seed=0).tokens if remaining else ()
    return tree.fork(position, token, continuation)


def stream_path(model, prompt: Sequence[int], steps: int, sampler=None, seed: int | None = None) -> Iterator[Path]:
    """The greedy path (``sampler`` None) or one draw of ``sampler`` with ``seed``, as the Path so far after every
    token: the last one is ``Greedy().decode(model, prompt, steps)`` (resp. ``sampler.decode(model, prompt, steps,
    seed)``), computed with the same calls, so a page can show a long path while it grows. Stops after EOS."""
    prompt = check_call(model, prompt, steps)
    eos = getattr(model, "eos_id", None)
    tokens: list[int] = []
    lps: list[float] = []
    if sampler is not None:  # sample_many's walk of one row
        for step in walk(model, prompt, steps, 1, seed=check_seed(seed), sampler=sampler):
            tokens.append(int(step.tokens[0]))
            lps.append(float(step.logprobs[0, tokens[-1]]))
            yield make_path(tokens, lps)
            if tokens[-1] == eos:
                return
        return
    session = start_session(model, prompt, batch=1, steps=steps)  # as Greedy.decode calls the model
    for t in range(steps):
        lp = session.last[0]
        tokens.append(int(torch.argmax(lp)))  # the first maximum: ties go to the lowest id
        lps.append(float(lp[tokens[-1]]))
        yield make_path(tokens, lps)
        if tokens[-1] == eos:
            return
        if t + 1 < steps:
            session.advance([tokens[-1]])
