"""Quality evaluation of VLSR on seeded synthetic data, against baselines; writes docs/quality.md.

Usage (from the repository root)::

    .venv/bin/python eval/run.py                      # the figures of docs/quality.md (~2-3 min)
    .venv/bin/python eval/run.py --concepts 20 --images 300 --seeds 1   # smoke, ~10 s

Each seed generates a dataset (``eval/generate.py``), runs ``vlsr_core.sanitize`` in the
paper's mode (eps 0.07, min_samples 1, min_cluster_size 10, replace_margin 0), the keep-first and
string-normalisation baselines and FiftyOne Brain's mistakenness (``--no-fiftyone`` skips it),
then sweeps eps x min_cluster_size with ``vlsr_core.refine_labels``. Figures are means over seeds
(± the standard deviation when there are several). The tables are printed, and written between
the markers of ``--out`` (the rest of that file, the discussion, is kept). Without ``--out``,
only a run with every option at its default writes, into docs/quality.md, whose discussion is
about that run; any other run only prints.
"""

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

# Before fiftyone is imported anywhere: a database of the evaluation's own.
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "vlsr-eval")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # as tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from eval import baselines, metrics  # noqa: E402
from eval.generate import (  # noqa: E402
    CORRECT_KINDS, KINDS, GeneratorConfig, generate, realised_statistics,
)
from vlsr_core.engine.params import MergeParams, ScoreParams  # noqa: E402
from vlsr_core.engine.pipeline import refine_labels, sanitize  # noqa: E402

DOC = ROOT / "docs" / "quality.md"
BEGIN = "<!-- eval/run.py: generated, begin -->"
END = "<!-- eval/run.py: generated, end -->"
# The paper's mode, whose figures docs/quality.md reports here (the recommended mode is measured on
# real synonym sets by eval/synonyms.py): eps 0.07, min_samples 1, min_cluster_size 10, ...
PAPER = MergeParams(mode="paper", eps=0.07)
DEFAULTS = PAPER.to_dict()
EPS_GRID = (0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2)
MCS_GRID = (1, 2, 5, 10, 20, 50)
# Other options of vlsr_core's merging, each on top of the paper's mode.
OPTIONS = {
    "paper mode": {},
    'mode="recommended" (the engine\'s default)': dict(mode="recommended", eps=None),
    'mode="recommended", image_evidence=True': dict(mode="recommended", eps=None,
                                                    image_evidence=True),
    'linkage="representative"': dict(linkage="representative"),
    'size_by="labels"': dict(size_by="labels"),
    "max_merge_distance=0.1": dict(max_merge_distance=0.1),
    "max_merge_distance=0.15": dict(max_merge_distance=0.15),
    "max_merge_distance=0.2": dict(max_merge_distance=0.2),
    "min_cluster_size=1 (no merging)": dict(min_cluster_size=1),
}


def _quality(data, label_map, final_labels):
    """Label-map figures and final-label accuracy of one method on one dataset."""
    row = metrics.label_map_quality(label_map, data.vocabulary, data.vocabulary_concept,
                                    data.image_labels)
    concept_of = dict(zip(data.vocabulary, data.vocabulary_concept.tolist()))
    row["final_accuracy"] = metrics.final_accuracy(final_labels, data.image_concept, concept_of)
    return row


def _flag_row(suspicion, flagged, wrong):
    """A detection-table row: AUROC of a suspicion score, precision / recall of a flag."""
    precision, recall = metrics.precision_recall(flagged, wrong)
    return dict(n=int(wrong.size), wrong_rate=float(wrong.mean()),
                auroc=metrics.auroc(suspicion, wrong), precision=precision, recall=recall)


def evaluate_seed(cfg, seed, *, eps_grid, mcs_grid, sensitivity_dims=(), fiftyone=True):
    """All figures of one generated dataset: dict with method rows, per-kind rows, sweep, stats."""
    data = generate(cfg, seed)
    concept_of = dict(zip(data.vocabulary, data.vocabulary_concept.tolist()))
    args = (data.image_embeddings, data.image_labels, data.vocabulary, data.vocabulary_embeddings)

    t = time.perf_counter()
    r = sanitize(*args, ScoreParams(), PAPER)
    vlsr_seconds = time.perf_counter() - t

    det_all = metrics.detection(r.similarity, r.suggestions, r.replacements, data.label_correct)
    det_first = metrics.detection(r.similarity, r.suggestions, r.replacements, data.label_correct,
                                  first_only=True)
    wrong_first = ~metrics.flatten(data.label_correct, first_only=True).astype(bool)

    maps = {
        "keep first label": baselines.keep_first(data.image_labels, data.vocabulary),
        "string normalisation": baselines.string_normalisation(data.image_labels, data.vocabulary),
        "VLSR (paper mode)": (r.canonical, r.final_labels),
    }
    methods = {name: _quality(data, label_map, final) for name, (label_map, final) in maps.items()}
    top = [sugg[0][0] if sugg else None for sugg in r.suggestions]
    methods["zero-shot top vocabulary label (ignores the labels)"] = dict(
        final_accuracy=metrics.final_accuracy(top, data.image_concept, concept_of),
        **{k: float("nan") for k in ("n_labels", "n_canonical", "n_concepts", "ari",
                                     "pair_precision", "pair_recall", "map_accuracy")})
    methods["ceiling (a correct label when the image has one)"] = dict(
        final_accuracy=metrics.ceiling_accuracy(data.label_correct),
        n_labels=len(data.vocabulary), n_canonical=methods["VLSR (paper mode)"]["n_concepts"],
        n_concepts=methods["VLSR (paper mode)"]["n_concepts"], ari=1.0, pair_precision=1.0,
        pair_recall=1.0, map_accuracy=1.0,
    )

    detection = {
        "VLSR similarity, all labels": dict(
            n=det_all["n"], wrong_rate=det_all["wrong_rate"], auroc=det_all["auroc_similarity"],
            precision=det_all["precision_q"], recall=det_all["recall_q"]),
        "VLSR gap to best vocabulary label, all labels": dict(
            n=det_all["n"], wrong_rate=det_all["wrong_rate"], auroc=det_all["auroc_gap"],
            precision=det_all["precision_replace"], recall=det_all["recall_replace"]),
        "VLSR similarity, first labels": dict(
            n=det_first["n"], wrong_rate=det_first["wrong_rate"],
            auroc=det_first["auroc_similarity"], precision=det_first["precision_q"],
            recall=det_first["recall_q"]),
        "VLSR gap to best vocabulary label, first labels": dict(
            n=det_first["n"], wrong_rate=det_first["wrong_rate"], auroc=det_first["auroc_gap"],
            precision=det_first["precision_replace"], recall=det_first["recall_replace"]),
    }
    other = metrics.gap_to_other_clusters(data.image_embeddings, data.vocabulary_embeddings,
                                          data.image_labels, data.vocabulary, r.canonical)
    for scope, first in (("all labels", False), ("first labels", True)):
        gap = metrics.flatten(other, first)
        wrong = ~metrics.flatten(data.label_correct, first).astype(bool)
        detection[f"proposed: gap to best label of another cluster, {scope}"] = _flag_row(
            gap, gap > 0, wrong)

    fo_seconds = None
    if fiftyone:
        t = time.perf_counter()
        mistakenness = baselines.fiftyone_mistakenness(*args, label_maps={"canonical": r.canonical})
        fo_seconds = time.perf_counter() - t
        labelled = [bool(ls) for ls in data.image_labels]
        for name, title in (("raw", "FiftyOne mistakenness, first labels"),
                            ("canonical", "FiftyOne mistakenness on VLSR canonical labels, "
                                          "first labels")):
            m = mistakenness[name][labelled]
            detection[title] = _flag_row(m, m > 0.5, wrong_first)

    kinds = metrics.per_kind(
        data, r.similarity, r.replacements, det_all["threshold"],
        label_maps={"string": maps["string normalisation"][0], "vlsr": r.canonical},
    )

    sweep = {}
    for eps in eps_grid:
        for mcs in mcs_grid:
            ref = refine_labels(*args, PAPER, eps=eps, min_samples=1, min_cluster_size=mcs)
            sweep[(eps, mcs)] = _quality(data, ref.canonical, ref.final_labels)

    options = {}
    for name, kwargs in OPTIONS.items():
        ref = refine_labels(*args, **{**DEFAULTS, **kwargs})
        options[name] = _quality(data, ref.canonical, ref.final_labels)

    sensitivity = {}
    for text_dim in sensitivity_dims:
        sensitivity[text_dim] = sensitivity_row(cfg, seed, text_dim)

    stats = realised_statistics(data)
    stats["low-score threshold (10% quantile)"] = det_all["threshold"]
    stats["distinct label strings"] = len(data.vocabulary)
    stats["concepts depicted by some image"] = len(set(data.image_concept.tolist()))
    stats["labels per image"] = float(np.mean([len(ls) for ls in data.image_labels]))
    stats["wrong (image, label) pairs"] = det_all["wrong_rate"]
    return dict(methods=methods, detection=detection, kinds=kinds, sweep=sweep, options=options,
                sensitivity=sensitivity, stats=stats,
                seconds=dict(vlsr=vlsr_seconds, fiftyone=fo_seconds))


def sensitivity_row(cfg, seed, text_dim):
    """VLSR and string normalisation on data generated with another ``text_dim``."""
    data = generate(replace(cfg, text_dim=text_dim), seed)
    args = (data.image_embeddings, data.image_labels, data.vocabulary, data.vocabulary_embeddings)
    stats = realised_statistics(data)
    row = {"unrelated text cos sd": stats["text cos, unrelated concepts: sd"]}
    for cos in (0.93, 0.9):
        row[f"different-concept pairs >= {cos}"] = stats[
            f"string pairs of different concepts with text cos >= {cos}"]
    runs = {"string": baselines.string_normalisation(data.image_labels, data.vocabulary)}
    for name, mcs in (("VLSR", DEFAULTS["min_cluster_size"]), ("VLSR mcs 1", 1)):
        ref = refine_labels(*args, **{**DEFAULTS, "min_cluster_size": mcs})
        runs[name] = (ref.canonical, ref.final_labels)
    for name, (label_map, final) in runs.items():
        q = _quality(data, label_map, final)
        row[f"{name}: ARI"] = q["ari"]
        row[f"{name}: map accuracy"] = q["map_accuracy"]
        if name != "string":  # its final label is the first label's group: keep-first's accuracy
            row[f"{name}: final accuracy"] = q["final_accuracy"]
    return row


# ---------------------------------------------------------------- aggregation and formatting


def _aggregate(dicts):
    """Mean and sd over seeds of every number of a list of equally keyed dicts."""
    out = {}
    for key in dicts[0]:
        values = [d[key] for d in dicts if key in d]
        values = np.array(values, dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = (float(finite.mean()) if finite.size else float("nan"),
                    float(finite.std()) if finite.size > 1 else None)
    return out


def _fmt(value, digits=3, sd=True):
    mean, dev = value
    if mean is None or not np.isfinite(mean):
        return "–"
    if digits == 0 or abs(mean) >= 100:
        text = f"{mean:.0f}"
        return text + (f" ± {dev:.0f}" if sd and dev else "")
    text = f"{mean:.{digits}f}"
    return text + (f" ± {dev:.{digits}f}" if sd and dev else "")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _by_key(results, part):
    keys = list(results[0][part])
    return {k: _aggregate([r[part][k] for r in results if k in r[part]]) for k in keys}


def format_report(results, cfg, args, seconds):
    seeds = [args.seed + k for k in range(args.seeds)]
    out = []
    methods = _by_key(results, "methods")
    detection = _by_key(results, "detection")
    kinds = _by_key(results, "kinds")
    sweep = _by_key(results, "sweep")

    out.append(f"Seeds {seeds}; figures are means ± sd over seeds.\n")
    out.append("### Wrong-label detection\n")
    out.append(
        "AUROC: how well the signal ranks wrong (image, label) pairs above correct ones. Precision "
        "/ recall of each signal's *flag*: VLSR similarity: score below the 10% quantile of all "
        "assigned-label scores (the plugin's low-similarity view); gap: the replacement rule (the "
        "top vocabulary label beats the label by > 0, `replacements` with margin 0); proposed gap: "
        "the same against labels of *other* canonical labels only (not in vlsr_core); FiftyOne: "
        "mistakenness > 0.5 (the zero-shot top label differs from the first label, as strings or "
        "after both are mapped through VLSR's label map). FiftyOne scores one label per image, so "
        "the first-label rows are the comparable ones. Keep-first and string normalisation flag "
        "nothing.\n")
    out.append(_table(
        ["signal", "pairs", "wrong share", "AUROC", "flag precision", "flag recall"],
        [[name, _fmt(v["n"], 0, sd=False), _fmt(v["wrong_rate"]), _fmt(v["auroc"]),
          _fmt(v["precision"]), _fmt(v["recall"])] for name, v in detection.items()]))
    out.append("\n### Label map and final label\n")
    out.append(
        "Canonical labels: distinct labels after mapping (input: the distinct strings; truth: the "
        "concepts they name). ARI and pairwise precision / recall: the label map's partition of "
        "the strings against their true concepts. Map accuracy: label occurrences whose canonical "
        "label names their own concept. Final accuracy: images whose final label names their "
        "concept.\n")
    out.append(_table(
        ["method", "final accuracy", "canonical labels", "distinct strings", "true concepts", "ARI",
         "pair precision", "pair recall", "map accuracy"],
        [[name, _fmt(v["final_accuracy"]), _fmt(v["n_canonical"], 0), _fmt(v["n_labels"], 0),
          _fmt(v["n_concepts"], 0), _fmt(v["ari"]), _fmt(v["pair_precision"]),
          _fmt(v["pair_recall"]), _fmt(v["map_accuracy"])] for name, v in methods.items()]))

    out.append("\n### Other merge options of vlsr_core (eps 0.07, min_cluster_size 10 unless said)\n")
    options = _by_key(results, "options")
    out.append(_table(
        ["options", "final accuracy", "canonical labels", "ARI", "pair precision", "pair recall",
         "map accuracy"],
        [[name, _fmt(v["final_accuracy"]), _fmt(v["n_canonical"], 0), _fmt(v["ari"]),
          _fmt(v["pair_precision"]), _fmt(v["pair_recall"]), _fmt(v["map_accuracy"])]
         for name, v in options.items()]))

    out.append("\n### By label kind (VLSR, paper mode)\n")
    out.append(
        "Share of label occurrences; mean VLSR score; share flagged by the 10%-quantile rule and "
        "by the replacement rule; share whose canonical label names the label's own concept under "
        "string normalisation and under VLSR. Bold kinds are correct labels, the others wrong "
        "ones (for these, 'own concept' means the named concept is kept apart, not folded into "
        "another).\n")
    order = [k for k in KINDS if k in kinds]
    rows = []
    for k in order:
        v = kinds[k]
        rows.append([("**" + k + "**") if k in CORRECT_KINDS else k, _fmt(v["share"], sd=False),
                     _fmt(v["mean_score"], sd=False), _fmt(v["flag_q"], sd=False),
                     _fmt(v["flag_replace"], sd=False), _fmt(v["own_string"], sd=False),
                     _fmt(v["own_vlsr"], sd=False)])
    out.append(_table(["kind (bold = correct)", "share", "mean score", "flag: < q10",
                       "flag: replacement", "own concept: string", "own concept: VLSR"], rows))

    out.append("\n### Sweep: eps x min_cluster_size (min_samples 1)\n")
    out.append("The paper's setting (eps 0.07, min_cluster_size 10) in **bold**. Means over "
               "seeds.\n")
    for metric, label, digits in (("final_accuracy", "final-label accuracy", 3),
                                  ("ari", "adjusted Rand index", 3),
                                  ("map_accuracy", "label-map accuracy", 3),
                                  ("n_canonical", "canonical labels", 0)):
        note = ""
        if metric == "n_canonical":
            n_true = _fmt(methods["VLSR (paper mode)"]["n_concepts"], 0, sd=False)
            note = f" (true concepts: {n_true})"
        out.append(f"\n**{label}**{note}\n")
        header = ["eps \\ min_cluster_size"] + [str(m) for m in args.mcs_grid]
        rows = []
        for eps in args.eps_grid:
            row = [f"{eps:g}"]
            for mcs in args.mcs_grid:
                cell = _fmt(sweep[(eps, mcs)][metric], digits, sd=False)
                if (eps, mcs) == (DEFAULTS["eps"], DEFAULTS["min_cluster_size"]):
                    cell = f"**{cell}**"
                row.append(cell)
            rows.append(row)
        out.append(_table(header, rows))
    out.append("\n" + where_paper_sits(sweep) + "\n")

    if results[0]["sensitivity"]:
        out.append("\n### Sensitivity to the spread of text similarities (`text_dim`)\n")
        out.append(
            "The one generator assumption the label map depends on most: how often strings of "
            "different concepts come close in text space. Smaller `text_dim` = wider spread of "
            "unrelated-label cosines. VLSR's paper mode (eps 0.07, min_cluster_size 10), VLSR "
            "without merging (min_cluster_size 1) and string normalisation; means over seeds.\n")
        sens = _by_key(results, "sensitivity")
        cols = list(next(iter(sens.values())))
        out.append(_table(["text_dim"] + cols, [
            [("all" if k is None else str(k)) + (" (default)" if k == cfg.text_dim else "")]
            + [_fmt(v[c], 1 if ">=" in c else 3, sd=False) for c in cols]
            for k, v in sens.items()]))

    out.append("\n### Generated data, as measured\n")
    stats = _aggregate([r["stats"] for r in results])
    counts = ("string pairs", "distinct label strings", "concepts depicted")
    out.append(_table(["statistic", "value"],
                      [[k, _fmt(v, 1 if k.startswith(counts) else 3, sd=False)]
                       for k, v in stats.items()]))
    out.append("\n### Generator parameters\n")
    out.append(_table(["parameter", "value"], [[k, f"`{v}`"] for k, v in cfg.as_dict().items()]))

    out.append("\n### Run\n")
    versions = {p: _version(p) for p in ("vlsr", "numpy", "scipy", "scikit-learn", "fiftyone",
                                         "fiftyone-brain")}
    out.append(f"- command: `{command_line(args)}`")
    out.append(f"- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs; "
               f"Python {platform.python_version()}")
    out.append("- versions: " + ", ".join(f"{p} {v}" for p, v in versions.items()))
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    out.append(f"- wall time: {timing}")
    return "\n".join(out) + "\n"


def where_paper_sits(sweep):
    """Sentences: the paper's cell's value, rank and the best cell, for the main metrics."""
    lines = []
    default = (DEFAULTS["eps"], DEFAULTS["min_cluster_size"])
    if default not in sweep:
        return "The paper's cell (eps 0.07, min_cluster_size 10) is not in the grid."
    for metric, label in (("final_accuracy", "final-label accuracy"), ("ari", "ARI"),
                          ("map_accuracy", "label-map accuracy")):
        values = {cell: v[metric][0] for cell, v in sweep.items()}
        best = max(values, key=values.get)
        rank = 1 + sum(v > values[default] for v in values.values())
        lines.append(
            f"- {label}: paper's setting {values[default]:.3f}, rank {rank} of {len(values)}; best "
            f"{values[best]:.3f} at eps {best[0]:g}, min_cluster_size {best[1]}.")
    return "Where the paper's setting sits:\n\n" + "\n".join(lines)


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_line(args):
    parts = [".venv/bin/python", "eval/run.py"] + [shlex.quote(a) for a in args.argv]
    return " ".join(parts)


def write_report(path, text):
    """Put text between the markers of path (created with the markers if missing)."""
    path = Path(path)
    block = f"{BEGIN}\n{text}{END}\n"
    if path.exists():
        old = path.read_text()
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1].lstrip("\n")
            path.write_text(head + block + ("\n" + tail if tail else ""))
            return
        path.write_text(old.rstrip("\n") + "\n\n" + block)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# VLSR quality on synthetic data\n\n" + block)


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--concepts", type=int, default=GeneratorConfig.n_concepts)
    p.add_argument("--images", type=int, default=GeneratorConfig.n_images)
    p.add_argument("--dim", type=int, default=GeneratorConfig.dim)
    p.add_argument("--text-common", type=float, default=GeneratorConfig.text_common,
                   help="text cosine of unrelated concepts (CLIP anisotropy)")
    p.add_argument("--text-sibling", type=float, default=GeneratorConfig.text_sibling)
    p.add_argument("--text-dim", type=int, default=GeneratorConfig.text_dim,
                   help="dimension of the labels' own text directions (spread of text cosines)")
    p.add_argument("--sensitivity-dims", type=int, nargs="*", default=[16, 24, 32, 64, 0],
                   help="text_dim values of the sensitivity table (0 = the whole space; none: skip)")
    p.add_argument("--zipf", type=float, default=GeneratorConfig.concept_zipf,
                   help="images per concept ~ rank ** -zipf")
    p.add_argument("--eps-grid", type=float, nargs="+", default=list(EPS_GRID))
    p.add_argument("--mcs-grid", type=int, nargs="+", default=list(MCS_GRID))
    p.add_argument("--no-fiftyone", action="store_true", help="skip the FiftyOne baseline")
    p.add_argument("--out", default=None,
                   help="markdown file to write the tables into ('' = nowhere; default: "
                        "docs/quality.md when every other option is at its default, since "
                        "that page discusses the default run, else nowhere)")
    args = p.parse_args(argv)
    if args.out is None:
        defaults = vars(p.parse_args([]))
        same = all(v == defaults[k] for k, v in vars(args).items())
        args.out = str(DOC) if same else ""
    args.argv = list(argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = GeneratorConfig(n_concepts=args.concepts, n_images=args.images, dim=args.dim,
                          text_common=args.text_common, text_sibling=args.text_sibling,
                          text_dim=args.text_dim or None, concept_zipf=args.zipf)
    dims = [d or None for d in args.sensitivity_dims]
    start = time.perf_counter()
    results = []
    for k in range(args.seeds):
        seed = args.seed + k
        t = time.perf_counter()
        results.append(evaluate_seed(cfg, seed, eps_grid=args.eps_grid, mcs_grid=args.mcs_grid,
                                     sensitivity_dims=dims, fiftyone=not args.no_fiftyone))
        print(f"seed {seed}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    seconds = {"total": time.perf_counter() - start,
               "VLSR sanitize per seed": float(np.mean([r["seconds"]["vlsr"] for r in results]))}
    if not args.no_fiftyone:
        seconds["FiftyOne mistakenness per seed"] = float(
            np.mean([r["seconds"]["fiftyone"] for r in results]))
    text = format_report(results, cfg, args, seconds)
    print(text)
    if args.out:
        write_report(args.out, text)
        print(f"written to {args.out}", file=sys.stderr)
    else:
        print("not written to a file (non-default options; --out PATH to write)", file=sys.stderr)


if __name__ == "__main__":
    main()
