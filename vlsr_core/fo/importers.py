"""Import labelled images into a FiftyOne dataset: Factorynet folders and plain CSV lists.

Both importers are lenient: anything odd in the input (a malformed row, a CSV without its image, an
unreadable image, ...) is skipped or degraded and listed with its reason in the returned report's
``problems``, never raised, so one bad file among thousands does not stop an import. Samples are added
in chunks. An image whose filepath is already in the dataset is not added again: the labels (and boxes)
the input gives it that its sample lacks are added to the sample, so importing a folder or a corrected
CSV again adds only what is new, and loses nothing; labels the input no longer gives are kept, and
reported.

Factorynet (VLSR_SPEC.md, "Factorynet input format"): one header-less CSV beside each image, same base
name, rows ``label, X, Y, height, width[, source]``. The boxes are in the labelling tool's canvas, not in
image pixels: the image, after EXIF rotation, was shown scaled to a canvas width ``cw`` (the width of the
file's whole-image box when it has one, else min(W, 891)) and height ``cw * H / W``.

Plain CSV: the image path in the first column (absolute, or relative to the CSV's folder), then one label
per non-empty cell; an optional header row; rows naming the same image are merged.
"""

import ast
import csv
import functools
import io
import json
import logging
import math
import os
import re
import tokenize
import unicodedata
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import fiftyone as fo
import fiftyone.core.media as fom
import fiftyone.core.storage as fos

from ..csv_text import not_text
from ..engine.defaults import DEFAULT_KEY, is_field_name
from ..model.images import BadImageError, oriented_size
from ..wording import count
from .lease import IMPORT, dataset_document, run_lease
from .runs import run_outputs, sample_fields

# Factorynet image types, preferred first; then those of images saved again in other formats
# (a CSV beside a .webp was said to have "no image beside it")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp")
SOURCES = ("user", "wikimedia")  # the values Factorynet's optional sixth column takes
DEFAULT_CANVAS_WIDTH = 891  # the canvas width most Factorynet labelling sessions used
WHOLE_IMAGE_TOLERANCE = 0.02  # relative aspect-ratio error for a box to count as the whole image
CLIP_TOLERANCE = 0.02  # boxes overshooting the canvas by more than this (relative) are reported
# first cells that mark a plain CSV's header row, in any case and spacing ("File Path",
# "image_path": see _header_name)
HEADER_NAMES = ("filepath", "path", "image", "img", "file", "image_path", "filename",
                "image_file")
# a header's names for label columns, as words of the name ("label 2", "final_label", "Tags",
# "className", "ground_truth"), unless a word says the column holds something else of a label
# ("class_id", "label_count", "annotation_id")
LABEL_WORDS = ("label", "labels", "class", "classes", "category", "categories", "tag", "tags",
               "object", "objects", "annotation", "annotations", "gt", "truth", "choice",
               "choices")
NOT_LABEL_WORDS = ("id", "ids", "count", "counts", "score", "scores", "confidence", "conf",
                   "prob", "probability", "index", "idx", "num", "number", "no", "date", "time",
                   "timestamp", "source", "by")
CHUNK_SIZE = 1000  # samples per dataset.add_samples call
PROGRESS_EVERY = 100  # input items between progress calls

Progress = Callable[[float], None] | None


class InputFileError(ValueError):
    """The input given to an importer cannot be used at all (no such file, a folder, a binary
    file, a field that cannot take the labels): nothing is written."""


class FactorynetRow(NamedTuple):
    """One usable row of a Factorynet CSV; box is (X, Y, width, height) in canvas units, or None;
    line: its line in the file, for the problems found later (a box outside the canvas). A row
    without a label is kept, with label "", only for a box at 0, 0 that may be the whole-image
    box sizing the canvas."""

    label: str
    box: tuple[float, float, float, float] | None
    source: str | None
    line: int | None = None


@dataclass
class ImportReport:
    """What an import did: counts to show, and every skipped or odd input with the reason."""

    n_samples: int = 0  # samples added
    n_labels: int = 0  # label rows (Factorynet) or distinct labels of each image (plain CSV) read
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file or "file:line", reason)
    n_existing: int = 0  # images of the input whose filepath was already in the dataset
    n_updated: int = 0  # of those, the samples given labels or boxes they lacked
    new_labels: Counter = field(default_factory=Counter)  # label -> samples given it (image-level)
    n_new_boxes: int = 0  # boxes added to those samples
    n_repeats: int = 0  # label cells (plain CSV) repeating a label their image already has
    n_sized: int = 0  # images already in the dataset whose size was read now (an import stopped)

    def summary(self, first_problem=True) -> str:
        """One line of counts, and a second with the first problem when there are any (unless
        ``first_problem`` is False: for a caller listing them)."""
        text = f"{count(self.n_samples, 'sample')} added, {count(self.n_labels, 'label')} read"
        if self.n_repeats:
            text += f" ({count(self.n_repeats, 'repeat')} of a label on the same image, kept once)"
        if self.n_existing:
            text += f", {count(self.n_existing, 'image')} already in the dataset"
            if self.n_updated:
                what = ", ".join(repr(label) for label, _ in self.new_labels.most_common(3))
                if len(self.new_labels) > 3:
                    what += f" and {count(len(self.new_labels) - 3, 'other label')}"
                lacked = [f"the labels they lacked: {what}"] if what else []
                if self.n_new_boxes:
                    lacked.append(count(self.n_new_boxes, "box"))
                text += f" ({self.n_updated} of them given {' and '.join(lacked)})"
            elif not self.n_sized:
                text += " (unchanged)"
            if self.n_sized:  # (what an interrupted import had left to do)
                its = "its" if self.n_sized == 1 else "their"
                text += (f" ({'' if self.n_updated == 0 else 'and '}"
                         f"{count(self.n_sized, 'image')} given {its} size now)")
        text += f", {count(len(self.problems), 'problem')}"
        if self.problems and first_problem:
            where, reason = self.problems[0]
            text += f"\nfirst problem: {where}: {reason}"
        return text


def read_factorynet_csv(csv_path) -> tuple[list[FactorynetRow], list[tuple[str, str]]]:
    """Parse one Factorynet CSV into its usable rows, plus every row skipped or degraded and why."""
    csv_path = os.fspath(csv_path)
    problems = []
    rows = []
    for line, cells in _csv_rows(csv_path, problems):
        where = f"{csv_path}:{line}"
        if not cells:
            continue  # a blank line
        while len(cells) > 5 and not cells[-1].strip():  # (empty columns a spreadsheet adds)
            cells = cells[:-1]
        if len(cells) not in (5, 6):
            expected = "label, X, Y, height, width[, source]"
            hint = (" (its cells seem separated by ';' or tabs: the CSV must use commas)"
                    if len(cells) == 1 and any(c in cells[0] for c in ";\t") else "")
            problems.append((where, f"{count(len(cells), 'column')}, expected {expected}; row "
                                    f"skipped{hint}"))
            continue
        label = cells[0].strip()
        if not label:
            box = _canvas_box(cells[1:5])
            if box is None:
                problems.append((where, "empty label; row skipped"))
            else:  # (audit: skipped, its canvas was taken for the image's, every box misplaced)
                problems.append((where, "empty label; its box at 0, 0 only sizes the canvas"))
                rows.append(FactorynetRow("", box, None, line))
            continue
        source = cells[5].strip() if len(cells) == 6 else ""
        source = source or None
        coords = [c.strip() for c in cells[1:5]]
        if not any(coords):
            box = None
            problems.append((where, "blank coordinates; image-level label only"))
        else:
            try:
                x, y, height, width = (_number(c) for c in coords)
            except ValueError:  # (as blank ones: the label stays)
                x = y = height = width = None
                problems.append((where, f"non-numeric coordinates {coords}; image-level label "
                                        "only"))
            if width is None:
                box = None
            elif width <= 0 or height <= 0:
                box = None
                size = f"width {width:g}, height {height:g}"
                problems.append((where, f"zero-size box ({size}); image-level label only"))
            else:
                box = (x, y, width, height)
        if source is not None and source not in SOURCES:
            shifted = (f" (a number: if the label holds a comma, quote it, as here it reads "
                       f"{label!r})" if _is_number(source) else "")
            problems.append((where, f"unexpected source {source!r}; kept as written{shifted}"))
        rows.append(FactorynetRow(label, box, source, line))
    return rows, problems


def import_factorynet(
    directory,
    dataset,
    label_field="ground_truth",
    detections_field="ground_truth_detections",
    recursive=True,
    progress: Progress = None,
) -> ImportReport:
    """Add every image of a Factorynet folder that has its CSV, with labels and canvas-scaled boxes."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise NotADirectoryError(
            f"{directory} is a file, not a folder: vlsr import-factorynet reads a folder of images "
            "each with a CSV of its boxes; for one CSV of image paths and labels, use vlsr "
            "import-csv" if os.path.isfile(directory) else f"no such folder: {directory}")
    if label_field == detections_field:
        raise InputFileError(f"the labels and the boxes need two fields, not both {label_field!r}")
    _check_fields(dataset, {label_field: fo.Classifications, detections_field: fo.Detections})
    report = ImportReport()
    pairs = _factorynet_pairs(directory, recursive, report.problems)
    samples = (_factorynet_sample(csv_path, image_path, label_field, detections_field, report)
               for csv_path, image_path in pairs)
    _add_in_chunks(dataset, samples, len(pairs), (label_field, detections_field), report, progress)
    return report


def import_csv(csv_path, dataset, label_field="ground_truth", progress: Progress = None) -> ImportReport:
    """Add the images a plain CSV lists (path, then labels), merging the rows of each image."""
    csv_path = os.fspath(csv_path)
    folder = os.path.dirname(os.path.abspath(csv_path))
    _check_fields(dataset, {label_field: fo.Classifications})
    report = ImportReport()
    _casefolded_names.cache_clear()  # (the folders as they are now)
    images = {}  # filepath -> (where it first appears, its labels in order, repeats included)
    first_row, left_out, joined, garbled = True, set(), [], []
    rows = _csv_rows(csv_path, report.problems)
    if not report.problems and not any(c.strip() for _, cells in rows for c in cells):
        raise InputFileError(f"{csv_path} is empty: it lists no image")
    for line, cells in rows:
        where = f"{csv_path}:{line}"
        if not any(c.strip() for c in cells):
            continue  # a blank line, or a spreadsheet's empty row
        path = cells[0].strip()
        header, first_row = first_row, False
        if header and _header_name(path) in map(_header_name, HEADER_NAMES):
            left_out = _not_label_columns(cells, where, report.problems)
            continue
        if not path:
            report.problems.append((where, "empty image path; row skipped"))
            continue
        if path.lower().startswith("file://"):  # a local file written as a URL
            url = urllib.parse.urlparse(path, allow_fragments=False)  # ("a #1.jpg": no fragment)
            if url.netloc not in ("", "localhost"):
                report.problems.append((where, (
                    f"{path} names the host {url.netloc!r}: a local file is file:///{url.netloc}"
                    f"{url.path} (three slashes); row skipped")))
                continue
            path = urllib.parse.unquote(url.path)
        filepath = _as_on_disk(fos.normalize_path(os.path.join(folder, os.path.expanduser(path))))
        if not os.path.isfile(filepath):
            report.problems.append((where, _missing_image(path, filepath, folder, cells, header)))
            if header and _unknown_header(path, filepath):  # its names still tell the label
                left_out = _not_label_columns(cells, where, report.problems)  # columns apart
            continue
        media = fom.get_media_type(filepath)
        if media != fom.IMAGE:
            report.problems.append((where, _not_an_image(filepath, media)))
            continue
        labels = [l for k, c in enumerate(cells) if k and k not in left_out
                  for l in _cell_labels(c)]
        joined.extend(l for l in labels if _looks_joined(l))
        garbled.extend(l for l in labels if _misdecoded(l))
        # one image under two names (a symlink) is one sample, under the first name given
        images.setdefault(os.path.realpath(filepath), (filepath, where, []))[2].extend(labels)

    def samples():
        for filepath, where, labels in images.values():
            report.n_labels += len(set(labels))
            report.n_repeats += len(labels) - len(set(labels))
            if not labels:
                report.problems.append((where, "no labels; an unlabelled image"))
            yield fo.Sample(filepath=filepath, **{label_field: _classifications(labels)})

    if joined:  # (once a file: a scraped CSV holds thousands)
        report.problems.append((csv_path, (
            f"{count(len(joined), 'cell')} {'holds' if len(joined) == 1 else 'hold'} ';' or '|', "
            f"or a list that does not read as one, e.g. {joined[0]!r}: a cell is one label, so "
            f"{'it is' if len(joined) == 1 else 'they are'} imported as written; if a cell lists "
            'several labels, give each its own cell, or write them as a list: ["cat", "dog"]')))
    if garbled:  # (UTF-8 read as Windows-1252, then saved: "cafÃ©" beside "café")
        report.problems.append((csv_path, (
            f"{count(len(garbled), 'label')} {'reads' if len(garbled) == 1 else 'read'} as UTF-8 "
            f"decoded as Windows-1252, e.g. {garbled[0]!r} for {_misdecoded(garbled[0])!r}: "
            "the file was opened with the wrong encoding and saved; they are imported as "
            "written: fix them in the file (or open the original as UTF-8) and import again")))
    if not images and not report.problems:
        raise InputFileError(f"{csv_path} holds a header row and nothing else: it lists no image")
    _add_in_chunks(dataset, samples(), len(images), (label_field,), report, progress)
    return report


def _as_on_disk(filepath):
    """``filepath``, or the file it names in the other Unicode form when only that exists: a
    name with accents typed on one system is often stored decomposed on another (macOS), and
    the two print alike."""
    if os.path.exists(filepath):
        return filepath
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, filepath)
        if other != filepath and os.path.exists(other):
            return other
    return filepath


def _header_name(name):
    """A header cell as compared with :data:`HEADER_NAMES`: its letters, lower case."""
    return re.sub(r"[^a-z]", "", name.lower())


def _unknown_header(path, filepath):
    """Whether a first row whose first cell, ``path``, names no file reads as a header of names
    the importer does not know (a name, not a path: no extension, no URL)."""
    return "://" not in path and not os.path.splitext(path)[1] and not os.path.isdir(filepath)


def _looks_joined(label):
    """Whether a label of one cell may list several, as scraped CSVs write them."""
    return any(c in label for c in ";|") or label.startswith("[") and label.endswith("]")


def _misdecoded(label):
    """What ``label`` reads as if it is UTF-8 text decoded as Windows-1252 (``cafÃ©``:
    ``café``), or None."""
    if label.isascii():
        return None
    try:
        fixed = label.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return None
    return fixed if fixed != label else None


def _cell_labels(cell):
    """The labels of a plain CSV's cell: itself, or the strings of a list written as JSON or as
    Python writes it (`["a", "b"]`, `['a', 'b']`: pandas' to_csv of a column of lists); blank
    ones dropped."""
    cell = cell.strip()
    if cell.startswith("[") and cell.endswith("]"):
        try:  # JSON first: its escapes (surrogate pairs, "\/") are not Python's
            items = json.loads(cell)
        except ValueError:
            items = _python_strings(cell)
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return [i.strip() for i in items if i.strip()]
    return [cell] if cell else []


def _python_strings(cell):
    """The strings of a list as Python or numpy prints it (``['a', 'b']``, ``['a' 'b']``), each
    literal apart, or None: ``ast.literal_eval`` joins adjacent literals, and numpy's
    ``['cat' 'dog']`` (pandas' to_csv of a column of arrays) became the label ``catdog``."""
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(cell).readline)
                  if t.type not in skip]
    except (tokenize.TokenError, SyntaxError):
        return None
    if len(tokens) < 2 or (tokens[0].string, tokens[-1].string) != ("[", "]"):
        return None
    strings = []
    for token in tokens[1:-1]:
        if token.type == tokenize.STRING:
            value = ast.literal_eval(token.string)  # (a literal: nothing is run)
            if not isinstance(value, str):  # (b'...')
                return None
            strings.append(value)
        elif token.string != ",":
            return None
    return strings


def _not_label_columns(header, where, problems):
    """The columns of a plain CSV's ``header`` row whose names are not label columns' (every
    cell after the path was read as a label: a ``split`` column gave each image the label
    ``train``), reported in ``problems``. A column without a name, or past the header's last,
    is one of labels."""
    from .export import SAMPLES_HEADER

    names = [name.strip().lower() for name in header]
    if names[:len(SAMPLES_HEADER)] == SAMPLES_HEADER:  # an export's: its cleaned labels
        problems.append((where, (
            "an export's samples.csv: its final labels are imported (column 'final_label'); "
            "the original and canonical labels, score, suggestions and any other column are "
            "left out (to import the original labels, delete the other columns)")))
        return set(range(len(header))) - {SAMPLES_HEADER.index("final_label")}

    def labels_named(name):
        words = set(re.sub(r"[^a-z]+", " ", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())
                    .split())
        return bool(words & set(LABEL_WORDS)) and not words & set(NOT_LABEL_WORDS)

    left_out = {k for k, name in enumerate(header) if k and name.strip() and not labels_named(name)}
    if left_out:
        names = ", ".join(f"{header[k].strip()!r} (column {k + 1})" for k in sorted(left_out))
        problems.append((where, (
            f"{'columns' if len(left_out) > 1 else 'column'} {names} of the header "
            f"{'are' if len(left_out) > 1 else 'is'} not named as labels: left out (a label "
            "column's name holds the word label, class, category, tag, object, annotation, "
            "choice, gt or ground truth, as in 'label 2', 'className' or 'Tags', and no word "
            "such as id, count or score, or it is blank: rename a column so to import its cells "
            "as labels)")))
    return left_out


def _not_an_image(filepath, media):
    """Why the file ``filepath``, of FiftyOne's ``media`` type, is not imported as an image:
    FiftyOne tells a file's media by its name's extension, and a scraped image is often named
    by a hash alone."""
    if media == fom.VIDEO:
        return f"{filepath} is a video, not an image file; row skipped"
    ext = os.path.splitext(filepath)[1]
    named = f"its extension {ext} is not an image's" if ext else "its name has no extension"
    return (f"{filepath}: {named}, and FiftyOne tells an image by the extension of its file "
            "name: rename it with its image extension (.jpg, .png, ...); row skipped")


def _missing_image(path, filepath, folder, cells, header):
    """Why a plain CSV's first cell ``path`` (read as ``filepath``) names no image file, and
    what to do."""
    if "://" in path:
        return f"{path} is a URL: only image files on this machine can be imported; row skipped"
    if os.path.isdir(filepath):
        return f"{filepath} is a folder, not an image file; row skipped"
    if len(cells) == 1 and any(s in path for s in ";\t"):
        return (f"no such file {filepath}; row skipped (its cells seem separated by ';' or tabs: "
                "the CSV must use commas)")
    if header and _unknown_header(path, filepath):
        return (f"the first row ({', '.join(cells)[:80]}) reads as a header of unknown names: a "
                f"header names the image column {' or '.join(HEADER_NAMES)}, and it comes first; "
                "row skipped")
    if path.isdigit() and len(cells) > 1 and os.path.splitext(cells[1].strip())[1]:
        return (f"no such file {filepath}; row skipped (the first column holds row numbers, as "
                "pandas writes with index=True: write the CSV with index=False, the image path "
                "first)")
    if "\\" in path:
        return (f"no such file {filepath}; row skipped (a Windows path: write the folders with /, "
                "relative to the CSV)")
    twin = _case_twin(filepath)
    if twin:
        return (f"no such file {filepath}; row skipped (the file {os.path.basename(twin)} "
                "differs in case only: file names here tell upper and lower case apart)")
    if os.path.isfile(os.path.abspath(os.path.expanduser(path))):
        return (f"no such file {filepath}: paths are read from the CSV's folder ({folder}), and "
                f"{path} is a file from the current folder: write the paths relative to the CSV, "
                "or absolute; row skipped")
    return f"no such file {filepath}; row skipped"


def _case_twin(filepath):
    """A file beside where ``filepath`` points whose name differs from it in case alone."""
    folder, name = os.path.split(filepath)
    twin = _casefolded_names(folder).get(name.casefold())
    return os.path.join(folder, twin) if twin else None


@functools.lru_cache(maxsize=8)
def _casefolded_names(folder):
    """The names in ``folder`` by their case-folded form (read once an import: a CSV of
    thousands of missing files in one folder of thousands); cleared as an import starts."""
    try:
        return {n.casefold(): n for n in os.listdir(folder)}
    except OSError:
        return {}


def _check_fields(dataset, fields):
    """Refuse, before anything is written, label fields (name -> the label list type an import
    writes there) that cannot take the import's labels, and a dataset that cannot take images
    (FiftyOne refused them at the first write, after the fields were declared)."""
    if dataset.media_type not in (None, "image"):
        raise InputFileError(f"dataset {dataset.name!r} holds {dataset.media_type} samples: images "
                             "are imported into an image dataset (give a new name to make one)")
    built_in = dataset._get_default_sample_fields()
    writers = run_outputs(dataset)
    for name, kind in fields.items():
        if not is_field_name(name) or name in built_in:
            raise InputFileError(f"{name!r} cannot be a label field: give a name of your own, of "
                                 "letters, digits and underscores, such as ground_truth")
        writer = writers.get(name)
        if writer is not None:
            raise InputFileError(f"field {name!r} is an output of run {writer!r}: running that "
                                 "run again or deleting it would take what you import with it; "
                                 "give a field of your own, such as ground_truth")
        if name in sample_fields(DEFAULT_KEY).values():
            raise InputFileError(f"{name!r} is the name of an output of a run with the default "
                                 f"key {DEFAULT_KEY!r}, which would write over it: give a field "
                                 "of your own, such as ground_truth")
        field = dataset.get_field(name)
        if field is not None and getattr(field, "document_type", None) is not kind:
            held = getattr(field, "document_type", None) or type(field)
            raise InputFileError(f"field {name!r} of dataset {dataset.name!r} holds "
                                 f"{held.__name__}, not {kind.__name__}: give another field")


def _decoded(data, path, problems):
    """A CSV file's text: UTF-8 (BOM or not); a line that is not is read as Windows-1252, what
    Excel's "CSV" is on Windows (latin-1 for its five unused bytes), and reported. Read whole
    as Windows-1252, a file with one stray byte garbled every other accented label."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lines, other, utf8 = [], [], False  # utf8: a line of other than ASCII read as UTF-8
    for n, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            lines.append(line.decode("utf-8-sig" if n == 1 else "utf-8"))
            utf8 = utf8 or not line.isascii()
        except UnicodeDecodeError:
            try:
                lines.append(line.decode("cp1252"))
            except UnicodeDecodeError:
                lines.append(line.decode("latin-1"))
            other.append(n)
    if not utf8:
        problems.append((path, "not UTF-8; read as Windows-1252 (Excel's \"CSV\"): save it as "
                               "\"CSV UTF-8\" to be sure of its accents"))
    else:
        for n in other:
            problems.append((f"{path}:{n}", "not UTF-8, unlike the rest of the file; read as "
                                            "Windows-1252: check its accents"))
    return "".join(lines)


def _csv_rows(path, problems) -> list[tuple[int, list[str]]]:
    """A CSV file's rows with their first line numbers (text: :func:`_decoded`).

    A row with a line break inside a cell is skipped and reported: no label or path holds one,
    and it is what an unclosed quote does, swallowing the rows after it into one cell."""
    if os.path.isdir(path):
        raise InputFileError(f"{path} is a folder, not a CSV file")
    if not os.path.exists(path):
        raise InputFileError(f"no such file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    problem = not_text(data)
    if problem:
        raise InputFileError(f"{path} {problem}")
    text = _decoded(data, path, problems)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    rows, end = [], 0
    # an unclosed quote makes a cell of the rows after it, up to the next quote: reported as
    # such below, where csv's limit of 131,072 characters a cell skipped the rest of the file
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            broken = next((c for c in cells if "\n" in c or "\r" in c), None)
            if broken is None:
                rows.append((start, cells))
                continue
            inner = broken.splitlines()
            problems.append((f"{path}:{start}", (
                f"a quoted cell runs over lines {start}-{end}, taking in {inner[1]!r}"
                f"{' and more' if len(inner) > 2 else ''}; no label or path holds a line break, "
                f"so lines {start}-{end} are skipped: close the quote if it was left open (an "
                "unclosed quote takes the rows after it), else remove the line break, and "
                "import again")))
    except csv.Error as e:
        problems.append((f"{path}:{reader.line_num}", f"malformed CSV ({e}); rest of the file skipped"))
    finally:
        csv.field_size_limit(limit)
    return rows


def _is_number(text):
    try:
        _number(text)
    except ValueError:
        return False
    return True


def _canvas_box(coords):
    """The (X, Y, width, height) of a row without a label if it may be the whole-image box that
    sizes the canvas (at 0, 0, of a positive size), else None."""
    try:
        x, y, height, width = (_number(c.strip()) for c in coords)
    except ValueError:
        return None
    return (x, y, width, height) if x == y == 0 and width > 0 and height > 0 else None


def _number(text) -> float:
    """A finite float from a CSV cell; ValueError for text, blanks, nan and infinities."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _factorynet_pairs(directory, recursive, problems) -> list[tuple[str, str]]:
    """(csv, image) pairs of a Factorynet folder, in path order; orphans and ambiguities
    reported. Linked subfolders are walked too, each real folder once."""
    pairs, seen, orphans = [], {os.path.realpath(directory)}, 0
    for folder, subfolders, names in os.walk(directory, followlinks=True):
        kept = []
        for name in sorted(subfolders) if recursive else ():
            real = os.path.realpath(os.path.join(folder, name))
            if real not in seen:  # a link to a folder walked already (or to an ancestor: a loop)
                seen.add(real)
                kept.append(name)
        subfolders[:] = kept
        csvs, images = {}, {}
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".csv":
                csvs.setdefault(stem, []).append(name)
            elif ext.lower() in IMAGE_EXTENSIONS:
                images.setdefault(stem, []).append(name)
        for stem, image_names in images.items():
            if stem not in csvs:
                orphans += len(image_names)
                for name in image_names:
                    problems.append(
                        (os.path.join(folder, name), "no CSV beside it; not a Factorynet image, ignored")
                    )
        for stem, csv_names in csvs.items():
            csv_names.sort(key=lambda n: (n[-4:] != ".csv", n))
            csv_path = os.path.join(folder, csv_names[0])
            for name in csv_names[1:]:
                problems.append(
                    (os.path.join(folder, name), f"another CSV for {csv_names[0]}'s image; skipped")
                )
            candidates = sorted(images.get(stem, []), key=_image_preference)
            if not candidates:
                problems.append((csv_path, "no image beside it; no sample"))
                continue
            if len(candidates) > 1:
                problems.append(
                    (csv_path, f"several images share its base name {candidates}; using {candidates[0]}")
                )
            pairs.append((csv_path, os.path.join(folder, candidates[0])))
    if not pairs:
        problems.append((directory, "no Factorynet image: each image needs a CSV of its boxes "
                                    "beside it, of the same name (0001.jpg, 0001.csv)" + (
            f"; {count(orphans, 'image')} here had none: if one CSV lists image paths and "
            "labels, use vlsr import-csv" if orphans else "")))
    pairs.sort()
    return pairs


def _image_preference(name) -> tuple:
    """Sort key among images sharing a base name: .jpg, .JPG (other casings), .jpeg, .png, .gif
    and :data:`IMAGE_EXTENSIONS`' others."""
    ext = os.path.splitext(name)[1]
    return IMAGE_EXTENSIONS.index(ext.lower()), ext != ext.lower(), name


def _factorynet_sample(csv_path, image_path, label_field, detections_field, report) -> fo.Sample | None:
    """The sample of one CSV/image pair, or None when the CSV cannot be read at all."""
    try:
        rows, problems = read_factorynet_csv(csv_path)
    except (OSError, InputFileError) as e:
        report.problems.append((csv_path, f"unreadable CSV ({e}); no sample"))
        return None
    report.problems.extend(problems)
    labelled = [row for row in rows if row.label]  # (the others only size the canvas)
    report.n_labels += len(labelled)
    if not labelled:
        report.problems.append((csv_path, "no labels; an unlabelled image"))
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    sample = fo.Sample(filepath=image_path, factorynet_id=stem)
    sample[label_field] = _classifications(row.label for row in labelled)
    try:
        width, height = oriented_size(image_path)
    except BadImageError as e:
        report.problems.append((image_path, f"unreadable image ({e.reason}); no boxes"))
        return sample
    canvas_width = _canvas_width(rows, width, height)
    canvas_height = canvas_width * height / width
    canvas = f"canvas {canvas_width:g} x {canvas_height:g}"
    detections = []
    for row in labelled:
        if row.box is None:
            continue
        box, overshoot = _relative_box(row.box, canvas_width, canvas_height)
        what = f"box {row.box} of {row.label!r}"
        where = csv_path if row.line is None else f"{csv_path}:{row.line}"
        if box is None:
            report.problems.append((where, f"{what} is outside the {canvas}; image-level label only"))
            continue
        if overshoot:
            report.problems.append((where, f"{what} overshoots the {canvas}; clipped"))
        detections.append(fo.Detection(label=row.label, bounding_box=box, source=row.source))
    sample[detections_field] = fo.Detections(detections=detections)
    return sample


def _canvas_width(rows, width, height) -> float:
    """The file's canvas width: that of its first whole-image box (X = Y = 0, image's aspect ratio),
    else min(W, 891), the labelling tool's usual canvas."""
    aspect = width / height
    for row in rows:
        if row.box is not None:
            x, y, w, h = row.box
            if x == 0 and y == 0 and abs(w / h / aspect - 1) <= WHOLE_IMAGE_TOLERANCE:
                return w
    return min(width, DEFAULT_CANVAS_WIDTH)


def _relative_box(box, canvas_width, canvas_height) -> tuple[list[float] | None, bool]:
    """FiftyOne's [x, y, w, h] in [0, 1] for a canvas box, clipped to the canvas (None if nothing is
    left), and whether it overshot the canvas by more than CLIP_TOLERANCE."""
    x, y, w, h = box
    x0, y0 = x / canvas_width, y / canvas_height
    x1, y1 = x0 + w / canvas_width, y0 + h / canvas_height
    overshoot = min(x0, y0) < -CLIP_TOLERANCE or max(x1, y1) > 1 + CLIP_TOLERANCE
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
    if x1 <= x0 or y1 <= y0:
        return None, overshoot
    return [x0, y0, x1 - x0, y1 - y0], overshoot


def _classifications(labels: Iterable[str]) -> fo.Classifications:
    """One Classification per distinct label, in order of first appearance."""
    distinct = dict.fromkeys(labels)
    return fo.Classifications(classifications=[fo.Classification(label=label) for label in distinct])


def _add(dataset, samples, report):
    """Add samples with their metadata (width, height, size: shown in the App, used by
    exporters). Returns their ids."""
    with dataset_document(dataset):  # (new fields: a run may be adding its own meanwhile)
        ids = dataset.add_samples(samples, dynamic=True, progress=False)
    _with_metadata(dataset, ids, report)
    report.n_samples += len(ids)
    return ids


def _with_metadata(dataset, ids, report):
    """Compute the metadata the samples ``ids`` lack (an import interrupted while it was computed
    left some without) or hold for another version of their image (its file size changed since:
    the export's pixel boxes follow the image as it is now); an unreadable image is left
    without, and reported once. Returns how many were given their size."""
    sample_ids, paths, sizes = dataset.select(ids).values(["id", "filepath", "metadata.size_bytes"])
    todo = [i for i, path, size in zip(sample_ids, paths, sizes) if size is None
            or size != _file_size(path)]
    if not todo:
        return 0
    todo = dataset.select(todo)
    metadata_log = logging.getLogger("fiftyone.core.metadata")
    level = metadata_log.level
    metadata_log.setLevel(logging.ERROR)  # each failure is reported here, with the file
    try:
        todo.compute_metadata(overwrite=True, skip_failures=True, progress=False)
    finally:
        metadata_log.setLevel(level)
    reported = {fos.normalize_path(where) for where, _ in report.problems}  # (as given: relative)
    unsized = todo.exists("metadata", False).values("filepath")
    for path in unsized:
        if path not in reported:
            report.problems.append((path, "unreadable image: its size cannot be read (a run "
                                          "lists it among the unreadable images)"))
    return len(todo) - len(unsized)


def _file_size(path):
    """Bytes of the file at ``path``; None if it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return None


class _Unexplained:
    """The labels of samples already in the dataset that no input of this import gives (kept,
    and reported once the import is done): an image and a link to it, wherever they are in
    the input, each give part of their sample's labels."""

    def __init__(self):
        self.seen = set()  # the samples an input of this import gave labels to (as `existing`)
        self.left = {}  # (field, sample id) -> (path, label keys no input gave so far)

    def given(self, name, sample_id, path, stored, keys):
        """An input gives ``keys`` for the sample that held ``stored`` before it (the inputs of
        one chunk together)."""
        at = (name, sample_id)
        if at in self.left:
            self.left[at] = (self.left[at][0], self.left[at][1] - keys)
        elif sample_id not in self.seen and stored - keys:
            self.left[at] = (path, stored - keys)

    def report(self, report):
        for path, stale in self.left.values():
            if stale:
                boxes = isinstance(next(iter(stale)), tuple)
                what = (f"{count(len(stale), 'box')} of {sorted({label for label, _ in stale})}"
                        if boxes else sorted(stale))
                report.problems.append((path, (
                    f"already in the dataset with {what} too, which the input no longer gives; "
                    "kept (delete them in the App if the input is right)")))


def _complete(dataset, found, fields, report, unexplained):
    """Give each sample already in the dataset what the input's sample for its image has and it
    lacks: image-level labels by text, boxes by label and box; nothing is removed (what no input
    gives is noted in ``unexplained``). ``found`` holds (sample id, the input's sample) pairs; the
    changes are written in one bulk write per field."""
    ids = list({sample_id: None for sample_id, _ in found})  # (one image under two names: once)
    report.n_sized += _with_metadata(dataset, ids, report)
    updated = set()
    for name in fields:
        given = [s.get_field(name) if s.has_field(name) else None for _, s in found]
        if not any(given):
            continue
        # by id: a sample found twice (an image and a link to it) takes both inputs' labels
        have = (dict(zip(*dataset.select(ids).values(["id", name])))
                if dataset.has_field(name) else {})
        inputs = {}  # sample id -> its inputs' labels (an image and a link to it: two)
        for (sample_id, sample), new in zip(found, given):
            if new is not None:
                inputs.setdefault(sample_id, []).append((sample, new))
        changed = {}
        for sample_id, given_of in inputs.items():
            sample, new = given_of[0]
            attr = _LIST_FIELD[type(new)]
            labels, given_keys = [], set()  # what the inputs give, each label once across them
            for _, more in given_of:
                keys = [_label_key(label) for label in more[attr]]
                labels += [label for label, key in zip(more[attr], keys) if key not in given_keys]
                given_keys.update(keys)
            old = have.get(sample_id)
            if old is None:
                new[attr] = labels
                old, missing, stored = new, labels, set()
            else:
                items = old[_LIST_FIELD[type(old)]]
                stored = {_label_key(label) for label in items}
                missing = [label for label in labels if _label_key(label) not in stored]
                items.extend(missing)
            unexplained.given(name, sample_id, sample.filepath, stored, given_keys)
            if not missing:
                continue
            if isinstance(new, fo.Classifications):
                report.new_labels.update(label.label for label in missing)
            else:
                report.n_new_boxes += len(missing)
            changed[sample_id] = old
            updated.add(sample_id)
        if changed:
            dataset.select(list(changed), ordered=True).set_values(name, list(changed.values()))
    unexplained.seen.update(ids)
    report.n_updated += len(updated)


_LIST_FIELD = {fo.Classifications: "classifications", fo.Detections: "detections"}


def _label_key(label):
    """What makes two labels of an image the same: the text, and for a box the box too."""
    box = getattr(label, "bounding_box", None)
    return label.label if box is None else (label.label, tuple(round(v, 6) for v in box))


def _add_in_chunks(dataset, samples, total, fields, report, progress: Progress):
    """Add the samples an iterable yields (None for inputs giving no sample) CHUNK_SIZE at a time,
    calling progress(fraction of the total inputs) now and then. A sample whose image is already
    in the dataset completes that image's sample instead (:func:`_complete`).

    dynamic=True declares the detections' ``source`` attribute, so the App can filter on it.
    One import into a dataset at a time: two at once each added the images the other had not
    yet (3,000 images made 5,963 samples)."""
    with run_lease(dataset, IMPORT, "import"):
        _add_all(dataset, samples, total, fields, report, progress)


def _add_all(dataset, samples, total, fields, report, progress: Progress):
    """:func:`_add_in_chunks`, its lease held."""
    # by real path: one image under two names (a symlink) is one sample
    existing = ({os.path.realpath(p): i for p, i in zip(*dataset.values(["filepath", "id"]))}
                if len(dataset) else {})
    met = {}  # the samples of images met in this import, by real path: moved from existing or new
    new, found = {}, []  # the samples to add, by real path
    unexplained = _Unexplained()

    def add_new():
        ids = _add(dataset, list(new.values()), report)
        met.update(zip(new, ids))
        unexplained.seen.update(ids)  # (their labels are all this import's)
        new.clear()

    for i, sample in enumerate(samples, 1):
        if sample is not None:
            real = os.path.realpath(sample.filepath)
            if real in new:  # the image again under another name (a link): added, then
                add_new()  # completed by the link's labels
            sample_id = met.get(real)
            if sample_id is None and real in existing:  # (an image and its link count once)
                sample_id = met[real] = existing.pop(real)
                report.n_existing += 1
            if sample_id is None:
                new[real] = sample
            else:
                found.append((sample_id, sample))
        if len(new) >= CHUNK_SIZE:
            add_new()
        if len(found) >= CHUNK_SIZE:
            _complete(dataset, found, fields, report, unexplained)
            found = []
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress(i / total)
    if new:
        add_new()
    if found:
        _complete(dataset, found, fields, report, unexplained)
    unexplained.report(report)
    if progress is not None:
        progress(1.0)
