"""The Meta-World MT10 tasks and their language instructions.

Each task has several natural-language phrasings, split into ``train`` phrasings (stored with the
demonstrations) and ``heldout`` phrasings (never in the training data; used by evaluation with
``--phrasings heldout``). Task names are Meta-World's without the ``-v3`` suffix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dream_vla_ros.errors import ConfigError

PHRASING_SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class TaskSpec:
    """One task: its Meta-World environment name and its phrasings."""

    name: str
    env_name: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def phrasings(self, split: str = "train") -> tuple[str, ...]:
        """The phrasings of ``split`` (``train``, ``heldout`` or ``all``)."""
        if split == "all":
            return self.train + self.heldout
        if split not in PHRASING_SPLITS:
            raise ConfigError(f"phrasings: must be one of train, heldout, all, got {split!r}")
        return getattr(self, split)


def _spec(name: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(name=name, env_name=f"{name}-v3", train=train, heldout=heldout)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "reach",
            (
                "reach the goal position",
                "move the gripper to the target",
                "reach for the target point",
                "put the gripper at the goal",
            ),
            ("bring your hand to the target location", "go to the marked goal"),
        ),
        _spec(
            "push",
            (
                "push the puck to the goal",
                "slide the puck to the target",
                "push the red puck onto the goal",
                "move the puck to the target by pushing it",
            ),
            ("shove the disc over to the target spot", "nudge the puck until it reaches the goal"),
        ),
        _spec(
            "pick-place",
            (
                "pick up the puck and place it at the goal",
                "grasp the puck and put it on the target",
                "pick the puck and move it to the goal",
                "lift the puck and set it down at the target",
            ),
            ("grab the disc and carry it to the target spot", "take the puck and drop it off at the goal"),
        ),
        _spec(
            "door-open",
            ("open the door", "pull the door open", "swing the door open", "open the door by its handle"),
            ("get the door open", "pull on the handle until the door is open"),
        ),
        _spec(
            "drawer-open",
            ("open the drawer", "pull the drawer open", "pull out the drawer", "slide the drawer open"),
            ("get the drawer open", "draw the drawer out by its handle"),
        ),
        _spec(
            "drawer-close",
            ("close the drawer", "push the drawer closed", "push the drawer in", "slide the drawer shut"),
            ("shut the drawer", "get the drawer closed"),
        ),
        _spec(
            "button-press-topdown",
            ("press the button from the top", "push the button down", "press down on the button", "press the button"),
            ("hit the button from above", "push down the top button"),
        ),
        _spec(
            "peg-insert-side",
            (
                "insert the peg into the hole",
                "put the peg in the hole from the side",
                "insert the peg sideways",
                "pick up the peg and insert it into the hole",
            ),
            ("slide the peg into the opening", "fit the peg into the side hole"),
        ),
        _spec(
            "window-open",
            ("open the window", "slide the window open", "push the window open", "slide the window to open it"),
            ("get the window open", "move the window sash to open it"),
        ),
        _spec(
            "window-close",
            ("close the window", "slide the window closed", "push the window shut", "slide the window to close it"),
            ("get the window closed", "move the window sash to close it"),
        ),
    )
}

MT10: tuple[str, ...] = tuple(TASKS)


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name`` (``-v3`` suffix accepted); unknown names raise ConfigError."""
    key = name.strip().removesuffix("-v3")
    if key not in TASKS:
        raise ConfigError(f"task: unknown task {name!r}; known tasks: {', '.join(MT10)}")
    return TASKS[key]


def parse_tasks(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"mt10"`` or a comma list (or an iterable) of task names -> canonical names, in order, no repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        for name in MT10 if item.lower() == "mt10" else (task_spec(item).name,):
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"tasks: no task given in {text!r}")
    return tuple(names)


def instruction(task: str, index: int = 0, split: str = "train") -> str:
    """Phrasing number ``index`` (modulo the number of phrasings) of ``task`` in ``split``."""
    phrasings = task_spec(task).phrasings(split)
    return phrasings[index % len(phrasings)]


def phrasing_table() -> dict[str, dict[str, list[str]]]:
    """task -> {"train": [...], "heldout": [...]} (the form stored in a dataset's ``meta.json``)."""
    return {name: {"train": list(spec.train), "heldout": list(spec.heldout)} for name, spec in TASKS.items()}
