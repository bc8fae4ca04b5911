"""Every sentence form the suite uses: each task's instructions and each VQA question and answer, filled
with every object description.

Why: a tokenizer trained only on the data of the stage that starts from scratch (one-object scenes in
the curriculum) never sees "left", "behind" or "3" and spells them in bytes; adding these texts gives
every word the model will read or write its own pieces, whatever the first stage's data.
"""

from __future__ import annotations

from string import Formatter

from .scene import COLOURS, SHAPES
from .tasks import TASKS
from .vqa import DEPTHS, MAX_COUNT, PLURAL, QUESTIONS, SIDES, YES_NO, article


def _fill(template: str, descriptions: list[str]) -> list[str]:
    """`template` once per description: its object field ({obj}) or its two ({top} and {base}, {a} and {b})
    filled with each description and the next one. Every form weighs the same, whatever its fields."""
    fields = [name for _, name, _, _ in Formatter().parse(template) if name]
    if not fields:
        return [template]
    n = len(descriptions)
    return [template.format(**{f: descriptions[(i + k) % n] for k, f in enumerate(fields)}) for i in range(n)]


def suite_vocabulary() -> list[str]:
    """Instructions, questions and answers (location answers excepted), sorted and without repeats."""
    descriptions = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    texts = {t for task in TASKS.values() for template in task.templates for t in _fill(template, descriptions)}
    texts.update(QUESTIONS["colour"].format(shape=s) for s in SHAPES)
    texts.update(QUESTIONS["shape"].format(colour=c) for c in COLOURS)
    texts.add(QUESTIONS["count"])
    texts.update(QUESTIONS["count_shape"].format(shapes=PLURAL[s]) for s in SHAPES)
    texts.update(QUESTIONS["count_colour"].format(colour=c) for c in COLOURS)
    texts.update(QUESTIONS["exists"].format(article=article(d), description=d) for d in descriptions)
    for kind in ("where", "left_right", "front_behind"):
        texts.update(_fill(QUESTIONS[kind], descriptions))
    texts.update([*COLOURS, *SHAPES, *map(str, range(MAX_COUNT + 1)), *YES_NO, *SIDES, *DEPTHS])
    return sorted(texts)
