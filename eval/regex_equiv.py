"""Semantic equivalence of NL-RX regular expressions by comparing minimal DFAs (greenery).

NL-RX regexes (and the LLM-JEPA chat data built from them) are written in the dialect of
the Java automaton library dk.brics.automaton, which the original NL-RX evaluation used:
`~X` is the complement, `X&Y` the intersection, and whole lines are matched (no implicit
search). Python's `re` has neither operator, so this module parses the dialect itself and
builds finite automata with `greenery` (a maintained pure-Python FSM library on PyPI that
offers intersection, complement and equivalence on DFAs over the full Unicode alphabet):

    regex text -> _Parser (brics precedence) -> greenery.Fsm per node -> minimal DFA
    gold DFA, predicted DFA -> symmetric difference empty? -> EquivResult

Brics precedence, loosest first: `|`, `&`, concatenation, postfix repeats (`* + ? {n}
{n,} {n,m}`), prefix `~`. So `\\b(X)&(Y)\\b` means `(\\bX) & (Y\\b)`, exactly as in the
original evaluation. `.` is any character; `[...]` classes as usual; `\\c` is the
literal character c, except `\\b`: brics itself reads it as the letter "b", which would
make `[a-z]` contain the word boundary. We read `\\b` as one dedicated boundary symbol
(a private-use character that only `.`, negated classes and `~` can match), so regexes
are compared over the alphabet Unicode + {boundary}. Equal languages there means equal
regexes for every reading of `\\b` that is a function of the language (never a false
"equivalent" caused by the letter b). `BoundaryMode.LETTER_B` gives brics' reading.

Pathological inputs (nested complements, big counted repeats) can blow up the subset
construction, so every check has a size limit (regex length and DFA states after every
operation) and a wall-clock limit; such cases are reported as `Verdict.UNDECIDED` and
counted by the scorer, never silently treated as equal.

    from eval.regex_equiv import regex_equivalent
    regex_equivalent("(dog)|([0-9])", "[0-9]|dog").verdict  # Verdict.EQUIVALENT
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from greenery import EPSILON, Charclass, Fsm
from greenery.fsm import from_charclass

_REDUCE_ABOVE = 300  # minimise intermediate DFAs only once they grow past this many states
BOUNDARY_CHAR = "\ue0b0"  # private-use code point standing for `\b`
NLRX_PLACEHOLDERS = {  # original NL-RX token dialect -> the concrete strings of the chat data
    "<VOW>": "AEIOUaeiou", "<NUM>": "0-9", "<LET>": "A-Za-z", "<CAP>": "A-Z", "<LOW>": "a-z",
    "<M0>": "dog", "<M1>": "truck", "<M2>": "ring", "<M3>": "lake",
}


class Verdict(enum.Enum):
    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    PARSE_ERROR = "parse_error"  # a regex is not valid in the dialect
    UNDECIDED = "undecided"  # time or size limit reached


class BoundaryMode(enum.Enum):
    """How `\\b` is read: a dedicated boundary symbol (default) or brics' literal letter b."""

    SYMBOL = "symbol"
    LETTER_B = "letter_b"


class RegexSyntaxError(ValueError):
    """The text is not a regex of the NL-RX (brics) dialect."""


class LimitExceeded(RuntimeError):
    """The automaton grew past `max_states` or the check ran past `timeout_s`."""


@dataclass(frozen=True)
class EquivLimits:
    max_len: int = 400  # characters per regex
    max_states: int = 5000  # DFA states after any single operation
    timeout_s: float = 5.0  # per comparison (enforced in the main thread; states limit everywhere)


@dataclass(frozen=True)
class EquivResult:
    verdict: Verdict
    detail: str = ""

    @property
    def equivalent(self) -> bool:
        return self.verdict is Verdict.EQUIVALENT


def from_nlrx_tokens(text: str) -> str:
    """Original NL-RX target line (`\\ b ( <M0> ) & ( [ <NUM> ] )`) -> the chat data's form."""
    for token, value in NLRX_PLACEHOLDERS.items():
        text = text.replace(token, value)
    return text.replace(" ", "")


_SPECIAL = frozenset("\\[]().|&~*+?{}")


def _string_fsm(text: str) -> Fsm:
    """DFA accepting exactly `text` (states 0..n, n+1 dead), over the text's own characters."""
    classes = [Charclass(c) for c in dict.fromkeys(text)]
    other = ~Charclass("".join(dict.fromkeys(text)))
    alphabet = {*classes, other}
    dead = len(text) + 1
    fsm_map = {q: {a: dead for a in alphabet} for q in range(dead + 1)}
    for q, c in enumerate(text):
        fsm_map[q][Charclass(c)] = q + 1
    return Fsm(alphabet=alphabet, states=set(fsm_map), initial=0, finals={len(text)}, map=fsm_map)


class _Parser:
    """Recursive descent over the brics grammar; each method returns a (reduced) greenery Fsm."""

    def __init__(self, text: str, boundary: BoundaryMode, max_states: int, deadline: float | None):
        self.s, self.i = text, 0
        self.boundary = BOUNDARY_CHAR if boundary is BoundaryMode.SYMBOL else "b"
        self.max_states, self.deadline = max_states, deadline

    def parse(self) -> Fsm:
        fsm = self.union()
        if self.i != len(self.s):
            raise RegexSyntaxError(f"unexpected {self.s[self.i]!r} at position {self.i} in {self.s!r}")
        return fsm

    def _check(self, fsm: Fsm) -> Fsm:
        if len(fsm.states) > _REDUCE_ABOVE:  # minimising (two reversals) is costly in greenery
            fsm = fsm.reduce()
        if len(fsm.states) > self.max_states:
            raise LimitExceeded(f"automaton has {len(fsm.states)} states (> {self.max_states})")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise LimitExceeded("time limit reached")
        return fsm

    def _peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def union(self) -> Fsm:
        fsm = self.inter()
        while self._peek() == "|":
            self.i += 1
            fsm = self._check(fsm | self.inter())
        return fsm

    def inter(self) -> Fsm:
        fsm = self.concat()
        while self._peek() == "&":
            self.i += 1
            fsm = self._check(fsm & self.concat())
        return fsm

    def concat(self) -> Fsm:
        fsm = EPSILON
        while self._peek() not in (None, "|", "&", ")"):
            fsm = self._check(fsm + self.repeat())
        return fsm

    def repeat(self) -> Fsm:
        fsm = self.complement()
        while self._peek() in ("*", "+", "?", "{"):
            op = self.s[self.i]
            self.i += 1
            if op == "*":
                fsm = fsm.star()
            elif op == "+":
                fsm = fsm + fsm.star()
            elif op == "?":
                fsm = fsm | EPSILON
            else:
                fsm = self._counted(fsm)
            fsm = self._check(fsm)
        return fsm

    def _counted(self, fsm: Fsm) -> Fsm:
        close = self.s.find("}", self.i)
        if close < 0:
            raise RegexSyntaxError(f"unclosed '{{' at position {self.i - 1} in {self.s!r}")
        body, self.i = self.s[self.i:close], close + 1
        lo_text, comma, hi_text = body.partition(",")
        if not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            raise RegexSyntaxError(f"bad repeat {{{body}}} in {self.s!r}")
        lo = int(lo_text)
        out = fsm.times(lo) if lo else EPSILON
        if not comma:
            return out
        if not hi_text:
            return out + fsm.star()
        hi = int(hi_text)
        if hi < lo:
            raise RegexSyntaxError(f"repeat {{{body}}} has max < min in {self.s!r}")
        return out + (fsm | EPSILON).times(hi - lo) if hi > lo else out

    def complement(self) -> Fsm:
        if self._peek() == "~":
            self.i += 1
            return self._check(self.complement().everythingbut())
        return self.atom()

    def atom(self) -> Fsm:
        ch = self._peek()
        if ch is None:
            raise RegexSyntaxError(f"regex {self.s!r} ends where an operand was expected")
        self.i += 1
        if ch == "(":
            fsm = self.union()
            if self._peek() != ")":
                raise RegexSyntaxError(f"missing ')' in {self.s!r}")
            self.i += 1
            return fsm
        if ch == "[":
            return from_charclass(self._charclass())
        if ch == ".":
            return from_charclass(~Charclass())
        if ch == "\\":
            if self._peek() is None:
                raise RegexSyntaxError(f"dangling '\\' at the end of {self.s!r}")
            esc = self.s[self.i]
            self.i += 1
            return from_charclass(Charclass(self.boundary if esc == "b" else esc))
        if ch in "*+?{}])":
            raise RegexSyntaxError(f"operator {ch!r} at position {self.i - 1} has no operand in {self.s!r}")
        return self._literal_run(ch)

    def _literal_run(self, first: str) -> Fsm:
        """A run of plain characters ('dog') as one automaton: one crawl instead of one per char."""
        end = self.i
        while end < len(self.s) and self.s[end] not in _SPECIAL:
            end += 1
        if end > self.i and end < len(self.s) and self.s[end] in "*+?{":
            end -= 1  # the last char belongs to the postfix operator: 'dog*' is 'do' 'g*'
        text, self.i = first + self.s[self.i:end], end
        return _string_fsm(text)

    def _charclass(self) -> Charclass:
        negated = self._peek() == "^"
        self.i += negated
        ranges: list[tuple[str, str]] = []
        while self._peek() != "]":
            if self._peek() is None:
                raise RegexSyntaxError(f"unclosed '[' in {self.s!r}")
            lo = self._class_char()
            if self._peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                hi = self._class_char()
                if hi < lo:
                    raise RegexSyntaxError(f"bad range {lo}-{hi} in {self.s!r}")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        self.i += 1
        if not ranges:
            raise RegexSyntaxError(f"empty character class in {self.s!r}")
        return Charclass(tuple(ranges), negated=negated)

    def _class_char(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        if ch == "\\" and self.i < len(self.s):
            ch = self.s[self.i]
            self.i += 1
        return ch


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit (main thread on Unix only); elsewhere the state limit still applies."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def on_alarm(signum, frame):
        raise LimitExceeded(f"time limit of {seconds} s reached")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def compile_regex(text: str, boundary: BoundaryMode = BoundaryMode.SYMBOL,
                  limits: EquivLimits = EquivLimits()) -> Fsm:
    """Minimal DFA of an NL-RX regex; raises RegexSyntaxError or LimitExceeded."""
    text = text.strip()
    if not text:
        raise RegexSyntaxError("empty regex")
    if len(text) > limits.max_len:
        raise LimitExceeded(f"regex has {len(text)} characters (> {limits.max_len})")
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s > 0 else None
    return _Parser(text, boundary, limits.max_states, deadline).parse()


@lru_cache(maxsize=4096)
def _cached_compile(text: str, boundary: BoundaryMode, limits: EquivLimits) -> Fsm:
    return compile_regex(text, boundary, limits)


def regex_equivalent(gold: str, pred: str, boundary: BoundaryMode = BoundaryMode.SYMBOL,
                     limits: EquivLimits = EquivLimits()) -> EquivResult:
    """Compare the languages of two NL-RX regexes (compiled DFAs are cached by text)."""
    if gold.strip() == pred.strip() and gold.strip():
        return EquivResult(Verdict.EQUIVALENT, "identical text")
    try:
        with _time_limit(limits.timeout_s):
            gold_fsm = _cached_compile(gold.strip(), boundary, limits)
            pred_fsm = _cached_compile(pred.strip(), boundary, limits)  # model outputs repeat too
            same = gold_fsm.equivalent(pred_fsm)
    except RegexSyntaxError as e:
        return EquivResult(Verdict.PARSE_ERROR, str(e))
    except (LimitExceeded, RecursionError) as e:
        return EquivResult(Verdict.UNDECIDED, str(e) or type(e).__name__)
    return EquivResult(Verdict.EQUIVALENT if same else Verdict.DIFFERENT)


def is_empty_language(text: str, boundary: BoundaryMode = BoundaryMode.SYMBOL,
                      limits: EquivLimits = EquivLimits()) -> bool:
    """True when the regex matches no line at all (common in NL-RX: e.g. `([AEIOU])&([a-z])`)."""
    return compile_regex(text, boundary, limits).empty()
