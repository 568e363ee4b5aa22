"""A generated family of phrasings per MT10 task, for training a policy that understands goals in its
operators' own words (pure Python, seeded).

Each task has phrase templates (the verbs and objects of its training phrasings and their synonyms, several
word orders); :func:`paraphrase` wraps one in politeness and filler ("please", "can you", "robot,", "for
me", "carefully"), an optional preamble, punctuation and casing, and sometimes typos (a swapped, dropped,
doubled or replaced letter), up to a few hundred characters.

The held-out phrasings of :mod:`dream_vla_ros.sim.tasks` stay out of it: no template uses a word that occurs
only in held-out phrasings (:func:`heldout_only_words`: "shove", "disc", "grab", "sash", "get", ...), and a
generated phrasing that normalises to a held-out one is drawn again. ``test_paraphrases`` checks both.
"""

from __future__ import annotations

import random
import re
from functools import cache

from dream_vla_ros.sim.tasks import TASKS, task_spec

_TARGET = ("the goal", "the target", "the goal position", "the target point", "the target position",
           "the goal point", "the red target", "the goal marker")
_PUCK = ("the puck", "the red puck", "the hockey puck", "the little puck", "the round puck", "the red object")
_PEG = ("the peg", "the green peg", "the wooden peg", "the stick")
_HOLE = ("the hole", "the side hole", "the slot", "the hole in the box", "the hole on the side")
_BUTTON = ("the button", "the red button", "the big button", "the button on the box")
_TOOL = ("the gripper", "the arm", "the end effector", "the claw", "the robot arm", "the tool")

# Templates per task: "{puck}"-style slots are filled from the tuples above.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": ("reach {target}", "reach for {target}", "reach out to {target}", "move {tool} to {target}",
              "put {tool} at {target}", "position {tool} at {target}", "send {tool} to {target}",
              "move to {target}", "touch {target} with {tool}", "place {tool} on {target}",
              "head to {target}", "{tool} to {target}"),
    "push": ("push {puck} to {target}", "push {puck} onto {target}", "slide {puck} to {target}",
             "move {puck} to {target} by pushing it", "push {puck} toward {target}",
             "slide {puck} across the table to {target}", "shift {puck} to {target} by pushing",
             "push {puck} along the table to {target}", "slide {puck} across the table onto {target}",
             "with {tool}, push {puck} to {target}", "roll {puck} to {target}", "push {puck} into {target}"),
    "pick-place": ("pick up {puck} and place it at {target}", "grasp {puck} and put it on {target}",
                   "pick {puck} and move it to {target}", "lift {puck} and set it down at {target}",
                   "pick up {puck} and put it at {target}", "lift {puck} and place it on {target}",
                   "grasp {puck}, lift it and put it at {target}", "pick {puck} up and place it at {target}",
                   "pick {puck} up, then set it at {target}", "lift up {puck} and move it to {target}",
                   "grasp {puck} and lift it to {target}", "pick and place {puck} at {target}"),
    "door-open": ("open the door", "pull the door open", "swing the door open", "open the door by its handle",
                  "swing open the door", "pull open the door", "open up the door", "open the cabinet door",
                  "pull the handle to open the door", "swing the cabinet door open", "open the little door",
                  "pull the door all the way open"),
    "drawer-open": ("open the drawer", "pull the drawer open", "pull out the drawer", "slide the drawer open",
                    "pull open the drawer", "open up the drawer", "slide out the drawer",
                    "pull the drawer out", "open the drawer by its handle", "slide the drawer out",
                    "pull the handle to open the drawer", "open the drawer all the way"),
    "drawer-close": ("close the drawer", "push the drawer closed", "push the drawer in", "slide the drawer shut",
                     "close up the drawer", "push in the drawer", "slide the drawer closed", "push the drawer shut",
                     "slide the drawer in", "close the open drawer", "push the drawer back in",
                     "close the drawer all the way"),
    "button-press-topdown": ("press the button from the top", "push {button} down", "press down on {button}",
                             "press {button}", "press {button} down", "push down on {button}",
                             "press {button} from the top", "push {button} from the top", "depress {button}",
                             "press {button} downward", "press {button} all the way down",
                             "push {button} down from the top"),
    "peg-insert-side": ("insert {peg} into {hole}", "put {peg} in {hole} from the side", "insert {peg} sideways",
                        "pick up {peg} and insert it into {hole}", "push {peg} into {hole}",
                        "place {peg} into {hole}", "put {peg} into {hole}", "insert {peg} in {hole} from the side",
                        "pick {peg} up and put it in {hole}", "stick {peg} into {hole}",
                        "lift {peg} and insert it into {hole}", "move {peg} into {hole}"),
    "window-open": ("open the window", "slide the window open", "push the window open",
                    "slide the window to open it", "open up the window", "slide open the window",
                    "push the window to open it", "open the sliding window", "slide the window all the way open",
                    "open the window by sliding it", "push open the window", "slide the window pane open"),
    "window-close": ("close the window", "slide the window closed", "push the window shut",
                     "slide the window to close it", "close up the window", "slide the window shut",
                     "push the window closed", "close the sliding window", "slide the window all the way closed",
                     "close the window by sliding it", "push the window to close it", "slide the window pane shut"),
}
_SLOTS = {"target": _TARGET, "puck": _PUCK, "peg": _PEG, "hole": _HOLE, "button": _BUTTON, "tool": _TOOL}

_PREFIXES = ("", "", "", "please ", "please, ", "can you ", "could you ", "could you please ", "would you ",
             "i want you to ", "i need you to ", "now ", "robot, ", "hey robot, ", "kindly ", "try to ",
             "you should ", "let's ", "ok, ", "alright, ", "task: ", "next, ", "now please ")
_SUFFIXES = ("", "", "", " please", " now", " for me", ", thanks", " thank you", " carefully", " slowly",
             " quickly", " gently", " right now", ", please", " when you are ready", " if you can")
_PREAMBLES = ("okay robot, the table and the camera are set up. ",
              "we are testing the arm today, so listen carefully. ", "hello there! ",
              "now for the next step of the experiment. ", "robot arm, here comes what i want: ",
              "the scene has been reset and you are ready to move. ", "listen. ")
_QUESTION_PREFIXES = ("can you ", "could you ", "could you please ", "would you ")
_KEYBOARD_NEIGHBOURS = dict(zip("abcdefghijklmnopqrstuvwxyz", (
    "qs", "vn", "xv", "sf", "wr", "dg", "fh", "gj", "uo", "hk", "jl", "ko", "nk", "bm", "ip", "ol", "wa", "et",
    "ad", "ry", "yi", "cb", "qe", "zc", "tu", "xa"), strict=True))
MAX_CHARS = 300


def normalize(text: str) -> str:
    """Lower case, letters and digits only, single spaces (what two phrasings must differ in)."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


@cache
def heldout_only_words() -> frozenset[str]:
    """Words of held-out phrasings that no training phrasing of any task uses (the generator never does)."""
    train = {w for s in TASKS.values() for p in s.train for w in normalize(p).split()}
    heldout = {w for s in TASKS.values() for p in s.heldout for w in normalize(p).split()}
    return frozenset(heldout - train)


@cache
def _heldout_sentences() -> frozenset[str]:
    return frozenset(normalize(p) for s in TASKS.values() for p in s.heldout)


@cache
def templates(task: str) -> tuple[str, ...]:
    """Every slot-filled template of ``task`` (no wrappers, no typos)."""
    out: list[str] = []
    for template in _TEMPLATES[task_spec(task).name]:
        fills = [""]
        for slot in re.findall(r"{(\w+)}", template):
            fills = [f + "\0" + value for f in fills for value in _SLOTS[slot]]
        for fill in fills:
            out.append(template.format(**dict(zip(re.findall(r"{(\w+)}", template), fill.split("\0")[1:],
                                                  strict=True))))
    return tuple(out)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap
    if kind == 1:
        return word[:i] + word[i + 1:]  # drop
    if kind == 2:
        return word[:i] + word[i] + word[i:]  # double
    neighbours = _KEYBOARD_NEIGHBOURS.get(word[i], word[i])
    return word[:i] + rng.choice(neighbours) + word[i + 1:]  # a neighbouring key


def _casing(text: str, rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return text
    if kind < 0.8:
        return text[:1].upper() + text[1:]
    if kind < 0.9:
        return text.title()
    return text.upper()


def paraphrase(task: str, rng: random.Random, typo_rate: float = 0.15) -> str:
    """One generated phrasing of ``task`` (never a held-out phrasing, at most :data:`MAX_CHARS` characters)."""
    options = templates(task)
    while True:
        text = decorate(rng.choice(options), rng, typo_rate)
        if normalize(text) not in _heldout_sentences():
            return text


def decorate(core: str, rng: random.Random, typo_rate: float = 0.15) -> str:
    """``core`` as an operator might type it: politeness and filler, an optional preamble, typos, punctuation
    and casing (at most :data:`MAX_CHARS` characters; any instruction, not only MT10's)."""
    for _ in range(100):
        prefix = rng.choice(_PREFIXES)
        text = prefix + core + rng.choice(_SUFFIXES)
        if rng.random() < 0.1:
            text = "".join(rng.sample(_PREAMBLES, rng.choice((1, 1, 2, 3)))) + text
        if rng.random() < typo_rate:
            words = text.split(" ")
            long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
            for i in rng.sample(long_words, min(len(long_words), rng.choice((1, 1, 2)))):
                words[i] = _typo(words[i], rng)
            text = " ".join(words)
        end = rng.random()
        if prefix in _QUESTION_PREFIXES and end < 0.5:
            text += "?"
        elif end < 0.3:
            text += "."
        elif end < 0.35:
            text += "!"
        text = _casing(text, rng)
        if len(text) <= MAX_CHARS:
            return text
    return core  # a core too long for any decoration


def phrasing_family(task: str, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct generated phrasings of ``task`` (seeded), the plain templates first."""
    rng = random.Random(f"{task}:{seed}")
    out = list(dict.fromkeys(templates(task)))[:count]
    seen = {normalize(p) for p in out}
    attempts = 0
    while len(out) < count and attempts < 50 * count:
        attempts += 1
        text = paraphrase(task, rng)
        if normalize(text) not in seen:
            seen.add(normalize(text))
            out.append(text)
    return out
