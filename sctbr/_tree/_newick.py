"""Newick I/O of :class:`~sctbr.EnvironmentTree`: ``from_newick`` and ``to_newick`` and the parser behind them.

The two functions are the class's methods (``EnvironmentTree.from_newick = classmethod(from_newick)``), so their
first argument is the class or the tree.

Why a parser of our own (checked against PyPI's options, 2026): the light, well-kept ``newick`` (1.11, pure Python)
parses recursively and raises ``RecursionError`` from a nesting depth of 500 (this parser is iterative: a 10^4-deep
caterpillar tree parses in 0.2 s, and environment trees of 10^4 nodes are in scope, see
``benchmarks/tree_scaling.py``), and it accepts several trees or empty labels without an error; ``treeswift``
drops the escaped quote of ``'it''s'``; ``dendropy`` turns unquoted underscores into spaces by default and, like
Biopython's ``Bio.Phylo`` (C extensions, a large package) or ``ete``, is heavy for reading one string into a
child -> parent mapping. The parser is about 100 lines, tested in ``tests/tree/test_tree.py`` and
``tests/tree/test_newick.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sctbr._tree._names import _check_unique

if TYPE_CHECKING:
    from sctbr._tree._structure import EnvironmentTree

__all__ = ["from_newick", "to_newick"]

# Characters that force a Newick label to be quoted.
_NEWICK_SPECIAL = frozenset(" \t\n\r()[]':;,")


def from_newick(cls: type[EnvironmentTree], s: str) -> EnvironmentTree:
    """Parse a Newick string.

    Branch lengths (``:0.1``) and ``[comments]`` are accepted and ignored, labels may be quoted
    (``'a b'``, with ``''`` for a literal quote) and the trailing ``;`` is optional.  Unlabelled nodes are named
    ``"node0"``, ``"node1"``, ... in pre-order (an unlabelled root is named ``"root"``), skipping names that
    are already used.  Unquoted labels are taken as written (underscores are *not* turned into spaces).

    Parameters
    ----------
    s
        The Newick string.

    Returns
    -------
    The parsed tree.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> tree = EnvironmentTree.from_newick("((CD4:0.1,CD8:0.2)T,'B cell')immune;")
    >>> tree.nodes
    ('immune', 'T', 'B cell', 'CD4', 'CD8')
    >>> EnvironmentTree.from_newick("((a,b),c);").nodes
    ('root', 'node0', 'c', 'a', 'b')
    """
    if not isinstance(s, str):
        raise TypeError(f"from_newick() expects a str, got {type(s).__name__}")
    root = _NewickParser(s).parse()

    # Collect labels (pre-order) and check uniqueness.
    preorder: list[list[Any]] = []
    stack = [root]
    while stack:
        rec = stack.pop()
        preorder.append(rec)
        stack.extend(reversed(rec[1]))
    labels = [rec[0] for rec in preorder if rec[0] is not None]
    _check_unique(labels, "the Newick string")
    used = set(labels)
    counter = 0
    for rec in preorder:
        if rec[0] is not None:
            continue
        if rec is root and "root" not in used:
            rec[0] = "root"
        else:
            while f"node{counter}" in used:
                counter += 1
            rec[0] = f"node{counter}"
            counter += 1
        used.add(rec[0])

    parents: dict[str, str | None] = {root[0]: None}
    for rec in preorder:
        for child in rec[1]:
            parents[child[0]] = rec[0]
    return cls(parents)


def to_newick(self: EnvironmentTree) -> str:
    """Write the tree in Newick format (without branch lengths).

    Labels are quoted when they contain whitespace or one of ``()[]':;,``.

    Returns
    -------
    The Newick string, ending in ``;``.

    Examples
    --------
    >>> from sctbr import EnvironmentTree
    >>> EnvironmentTree({"T": "immune", "B cell": "immune"}).to_newick()
    "(T,'B cell')immune;"
    """
    out: list[str] = []
    stack: list[tuple[bool, str]] = [(False, self.root)]  # (is_literal_token, text or node)
    while stack:
        literal, item = stack.pop()
        if literal:
            out.append(item)
            continue
        kids = self._children[item]
        if not kids:
            out.append(_quote(item))
            continue
        out.append("(")
        stack.append((True, ")" + _quote(item)))
        for i in range(len(kids) - 1, -1, -1):
            stack.append((False, kids[i]))
            if i > 0:
                stack.append((True, ","))
    return "".join(out) + ";"


def _is_special(ch: str) -> bool:
    return ch in _NEWICK_SPECIAL or ch.isspace()


def _quote(name: str) -> str:
    if any(_is_special(ch) for ch in name):
        return "'" + name.replace("'", "''") + "'"
    return name


class _NewickParser:
    """Minimal iterative Newick parser producing records ``[label_or_None, children]``."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def _error(self, msg: str) -> ValueError:
        start = max(self.i - 20, 0)
        context = self.s[start : self.i + 20]
        return ValueError(f"invalid Newick string at position {self.i}: {msg} (near {context!r})")

    def _skip(self) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            ch = s[self.i]
            if ch.isspace():
                self.i += 1
            elif ch == "[":
                end = s.find("]", self.i)
                if end < 0:
                    raise self._error("unterminated [comment]")
                self.i = end + 1
            else:
                break

    def _label(self) -> str | None:
        self._skip()
        s, n = self.s, len(self.s)
        if self.i < n and s[self.i] == "'":
            parts = []
            self.i += 1
            while True:
                end = s.find("'", self.i)
                if end < 0:
                    raise self._error("unterminated quoted label")
                parts.append(s[self.i : end])
                if end + 1 < n and s[end + 1] == "'":  # '' is an escaped quote
                    parts.append("'")
                    self.i = end + 2
                else:
                    self.i = end + 1
                    break
            label = "".join(parts)
            return label or None
        start = self.i
        while self.i < n and not _is_special(s[self.i]):
            self.i += 1
        return s[start : self.i] or None

    def _length(self) -> None:
        self._skip()
        if self.i < len(self.s) and self.s[self.i] == ":":
            self.i += 1
            self._skip()
            start = self.i
            while self.i < len(self.s) and not _is_special(self.s[self.i]):
                self.i += 1
            text = self.s[start : self.i]
            try:
                float(text)
            except ValueError:
                raise self._error(f"branch length {text!r} is not a number") from None

    def parse(self) -> list[Any]:
        s, n = self.s, len(self.s)
        self._skip()
        if self.i >= n or s[self.i] == ";":
            raise ValueError("empty tree: the Newick string contains no nodes")
        stack: list[list[Any]] = []
        root: list[Any] | None = None
        expect_subtree = True
        while True:
            self._skip()
            if self.i >= n:
                if expect_subtree or stack:
                    raise self._error("unexpected end of string (unbalanced parentheses?)")
                break
            ch = s[self.i]
            if expect_subtree:
                if ch == "(":
                    rec: list[Any] = [None, []]
                    self.i += 1
                else:
                    if ch in ",);":
                        rec = [None, []]  # unlabelled leaf
                    else:
                        rec = [self._label(), []]
                    self._length()
                    expect_subtree = False
                if stack:
                    stack[-1][1].append(rec)
                elif root is None:
                    root = rec
                else:
                    raise self._error("more than one tree; separate trees end with ';'")
                if ch == "(":
                    stack.append(rec)
            elif ch == ",":
                if not stack:
                    raise self._error("',' outside parentheses")
                self.i += 1
                expect_subtree = True
            elif ch == ")":
                if not stack:
                    raise self._error("unmatched ')'")
                self.i += 1
                rec = stack.pop()
                rec[0] = self._label()
                self._length()
            elif ch == ";":
                if stack:
                    raise self._error("unclosed '('")
                self.i += 1
                self._skip()
                if self.i < n:
                    raise self._error("text after ';' (only one tree is supported)")
                break
            else:
                raise self._error(f"unexpected character {ch!r}; quote labels that contain spaces or punctuation")
        assert root is not None
        return root
