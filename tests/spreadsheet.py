"""A curator's spreadsheet edit of an exported ``label_map.csv``, for the import tests."""

import csv


def edit_label_map(exported, edited, changed):
    """Write ``edited``: the CSV ``exported`` with the ``canonical`` of the labels in ``changed``
    (label -> new canonical label) replaced and every other cell as it was, in UTF-8 with a
    byte-order mark, as a spreadsheet saves it. Returns the rows written."""
    with open(exported, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["canonical"] = changed.get(r["label"], r["canonical"])
    with open(edited, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
