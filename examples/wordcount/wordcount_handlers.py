"""Task handlers of the word-count example: a module a worker imports with --handlers.

    PYTHONPATH=examples/wordcount mwcluster worker --handlers wordcount_handlers

`wordcount.count` counts the words of one text file (the task's input is its path), reporting
progress every `report_every` lines; its result is {"lines", "words", "top": {word: count}}
with the file's `top` most frequent words (a param of the job).
"""

from __future__ import annotations

import re
from collections import Counter

from mwcluster.worker import handler

WORD = re.compile(r"[a-z']+")


@handler("wordcount.count")
def count(task, report):
    path = task.input["path"]
    top = task.params.get("top", 20)
    every = task.params.get("report_every", 200)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    counts: Counter = Counter()
    for n, line in enumerate(lines, 1):
        counts.update(WORD.findall(line.lower()))
        if n % every == 0:
            report(n / len(lines), lines=n, words=sum(counts.values()))
    report(1.0, lines=len(lines), words=sum(counts.values()))
    return {"lines": len(lines), "words": sum(counts.values()),
            "top": dict(counts.most_common(top))}
