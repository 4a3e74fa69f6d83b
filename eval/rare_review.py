"""How well the rare-cluster list (the panel's List: rare clusters, ``vlsr review show --rare``)
points a curator at the variants the run missed, on the real synonym sets of
``eval/synonyms.py`` (MiniLM embeddings, default label map, every label on one sample, so every
cluster is under the minimum size of 10 samples and listed).

Usage: .venv/bin/python eval/rare_review.py   (prints a table; about a minute)

A row (two rare clusters nearest to each other are one) is right when its nearest cluster holds
a true synonym of one of its labels: joining it (one edit) is then a correct join. Reported for the first 20, 100 and 500 rows, against the
share of all listed rows, and the number of true synonym pairs that the list's first 100 joins
would bring together.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval import synonym_sets  # noqa: E402
from eval.synonyms import embed  # noqa: E402
from vlsr_core.engine.pipeline import build_label_map  # noqa: E402
from vlsr_core.fo.browse import rare_rows  # noqa: E402
from vlsr_core.fo.review import ReviewState  # noqa: E402

TOPS = (20, 100, 500)


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    print("| set | rows | right in the first 20 | first 100 | first 500 | all | "
          "true pairs joined by the first 100 joins |")
    print("|---|---|---|---|---|---|---|")
    for name, load in synonym_sets.available_sets():
        labels, groups = load()
        groups = np.asarray(groups)
        emb = embed(name, labels)
        label_map = build_label_map(labels, emb, np.ones(len(labels), dtype=np.int64))
        state = ReviewState(edits=[], label_map=label_map, outcomes=[], clustered=label_map,
                            embeddings=emb)
        rows = rare_rows(state, 10)
        clusters = np.asarray(label_map.clusters)
        group_sets = [set(groups[clusters == c].tolist()) for c in range(clusters.max() + 1)]
        right = np.array([bool(group_sets[r["cluster"]]
                               & group_sets[label_map.cluster[r["nearest_label"]]])
                          for r in rows])
        shares = [f"{right[:k].mean():.2f}" if len(right) >= k else "-" for k in TOPS]
        gained = 0
        for r in rows[:100]:
            if right[rows.index(r)]:
                a = groups[clusters == r["cluster"]]
                b = groups[clusters == label_map.cluster[r["nearest_label"]]]
                gained += int((a[:, None] == b[None, :]).sum())
        print(f"| {name} | {len(rows)} | " + " | ".join(shares) +
              f" | {right.mean():.2f} | {gained} |")


if __name__ == "__main__":
    main()
