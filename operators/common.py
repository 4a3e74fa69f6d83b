"""Pieces every vlsr operator form and execution shares: target, fields, run keys, progress."""

import functools
import json
import logging
import os
import queue
import re
import threading
from time import monotonic

import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.engine.params import ParamError
from vlsr_core.fo.chunks import every_field
from vlsr_core.fo.jobs import FAILED
from vlsr_core.fo.labels import input_fields, media_problem, unlabelled_problem
from vlsr_core.fo.lease import running_note
from vlsr_core.fo.runs import (
    RunDeletedError,
    default_run_key,
    half_deleted,
    input_gone,
    list_vlsr_runs,
    outdated_note,
    output_problem,
    run_collection,
    stage_activity,
)
from vlsr_core.wording import SHORT, one_line, plain

logger = logging.getLogger(__name__)

PLUGIN = "@vlsr/vlsr/"  # the prefix of this plugin's operator URIs


def full_path(typed):
    """A path typed in a form, with ``~`` expanded, and why it is refused, or None: a relative
    path would be resolved from wherever the App's server happened to start. Quotes around it
    (a "copy as path") and a ``file://`` address are read as the path they hold."""
    if not typed:
        return typed, None
    if not isinstance(typed, str):  # (a script's params: it failed in str.strip)
        return None, f"Give a path as text, not {typed!r:.80}"
    typed = typed.strip()
    if len(typed) > 1 and typed[0] == typed[-1] and typed[0] in "\"'":
        typed = typed[1:-1].strip()
    if typed.startswith("file://"):
        from urllib.parse import unquote, urlparse

        typed = unquote(urlparse(typed).path)
    if not typed:
        return None, "Give a full path (only spaces were typed)"
    path = os.path.expanduser(typed)
    if not os.path.isabs(path):
        example = os.path.join(os.path.expanduser("~"), typed)
        return path, (f"Give a full path, such as {example}: {typed!r} is relative, and the "
                      f"App's server would look for it in the folder it started in ({os.getcwd()})")
    return path, None


def block(inputs, name, message):
    """Show ``message`` as an error in the form and refuse to execute."""
    prop = inputs.view(name, types.Error(label=message))
    prop.invalid = True
    prop.error_message = message


def target_view(ctx, inputs, default_target=None, key=None):
    """Add the target choice (dataset, current view, selected samples), by default that of run
    ``key`` if given (:func:`run_target`); return the view or None."""
    if key is not None:
        default_target = run_target(ctx, key)
    inputs.view_target(ctx, default_target=default_target)
    if ctx.dataset is None:
        return None
    view = every_field(chosen_target(ctx, default_target))  # (the App's field visibility hides)
    problem = media_problem(view)  # (a grouped dataset's view of one image slice is fine)
    if problem:
        made_on = key is not None and ctx.dataset.has_run(key) and getattr(
            ctx.dataset.get_run_info(key).config, "collection", None)
        if made_on and ctx.dataset.has_saved_view(made_on):  # (the App cannot target another)
            problem = (f"Run {key!r} was made on saved view {made_on!r}: load that view in the "
                       "App (the view menu, top left) to work on the run")
        block(inputs, "media_error", problem)
        return None
    if len(view) == 0:
        block(inputs, "empty_error", "There are no samples in the chosen target")
        return None
    return view


def chosen_target(ctx, default_target=None):
    """``ctx.target_view()``, except that a target nobody chose yet is ``default_target``
    (``ctx.target_view()`` falls back on the open view)."""
    chosen = ctx.params.get("view_target") or ctx.request_params.get("view_target")
    if chosen or default_target in (None, "CURRENT_VIEW"):
        return ctx.target_view()
    return ctx.dataset  # (as the target "Dataset" is: a run made on it records so)


def run_target(ctx, key):
    """The target a vocabulary-wide stage of run ``key`` takes by default: the collection the run
    was made on (the dataset, or the saved view when that is the one loaded), not whatever
    filtered view happens to be open."""
    try:  # (a run of another kind, FiftyOne's, has no collection: the form says so)
        collection = getattr(ctx.dataset.get_run_info(key).config, "collection", None)
    except ValueError:  # no such run yet
        return "DATASET"
    if collection == "":  # an unsaved view: it cannot be found again, the open view it is
        return "CURRENT_VIEW"
    loaded = getattr(ctx.view, "name", None) if getattr(ctx.view, "is_saved", False) else None
    return "CURRENT_VIEW" if collection and collection == loaded else "DATASET"


def check_target(ctx, inputs, key, view, consequence, rebuilds=False):
    """Whether a vocabulary-wide stage of run ``key`` can run on ``view``: not if the view
    filters the run's labels, nor, for a stage that ``rebuilds`` the label map (scoring,
    clustering), if it holds samples outside the run's saved view (errors); warns when it
    holds fewer samples than the run's collection, saying the ``consequence`` (a sentence) of
    running the stage on it."""
    from vlsr_core.fo.labels import LabelFieldError, label_filter_problem, label_path
    from vlsr_core.fo.runs import outside_problem
    from vlsr_core.fo.stage_run import embeddings_problem

    try:
        config = ctx.dataset.get_run_info(key).config
    except ValueError:
        return True
    try:
        label_path(view, config.label_field)
    except LabelFieldError as e:  # (its input field renamed or deleted since)
        gone = input_gone(ctx.dataset, config)
        block(inputs, "field_error", f"Run {key!r}: {gone}" if gone else str(e))
        return False
    problem = (label_filter_problem(view, config.label_field, config.collection, key)
               or (rebuilds and (outside_problem(view, key, by_count=True)
                                 or embeddings_problem(view, key))))
    if problem:
        block(inputs, "filter_error", problem)
        return False
    if config.collection == "":
        return True  # made on an unsaved view: nothing to compare with
    collection = run_collection(ctx.dataset, key)
    n_run, n_view = len(collection), len(view)
    if n_view < n_run:
        where = f"saved view {config.collection!r}" if collection is not ctx.dataset else "dataset"
        inputs.view("narrowed", types.Warning(
            label=f"The target holds {n_view} of the {n_run} samples of the run's {where}",
            description=f"{consequence} Choose "
                        f"{'Dataset' if collection is ctx.dataset else 'the saved view'} "
                        "as target to work on the whole run."))
    return True


def label_field_input(ctx, inputs):
    """A dropdown of the Classification, Classifications and Detections fields that no VLSR run
    wrote (deleting that run would delete the labels of a run made on them)."""
    fields = input_fields(ctx.dataset)
    if not fields:
        block(inputs, "label_field_error",
              "This dataset has no Classification, Classifications or Detections field to clean "
              "(other than the outputs of VLSR runs)")
        return None
    choices = types.Dropdown(label="Label field")
    for f in fields:
        choices.add_choice(f, label=f)
    chosen = ctx.params.get("label_field")  # (else each render scans fields for labels)
    default = chosen if chosen in fields else _default_label_field(ctx, fields)
    prop = inputs.enum("label_field", choices.values(), default=default, required=True,
                       view=choices, description="The labels to score and merge (they are never "
                                                 "modified)")
    field = ctx.params.get("label_field", default)
    if field is not None and field not in fields:  # (deleted since the form, or the job,
        # was made: "Invalid enum value" said nothing)
        prop.invalid, prop.error_message = True, (
            f"No label field {field!r} on this dataset (deleted since?): choose one of "
            f"{', '.join(map(repr, fields))}")
        return None
    problem = field in fields and unlabelled_problem(ctx.dataset, field)
    if problem:
        prop.invalid, prop.error_message = True, problem
        return None
    return field


def _default_label_field(ctx, fields):
    """The label field a form offers first: that of the run its key names (the run goes on),
    else the first of ``fields`` holding a label."""
    key = ctx.params.get("key") or DEFAULT_KEY
    if ctx.dataset.has_run(key):
        made_on = getattr(ctx.dataset.get_run_info(key).config, "label_field", None)
        if made_on in fields:
            return made_on
    return next((f for f in fields if not unlabelled_problem(ctx.dataset, f)), fields[0])


def new_run_key_input(ctx, inputs, label_field):
    """The run key for a new or continued run, checked against the runs of the dataset."""
    prop = inputs.str("key", default=DEFAULT_KEY, label="Run key",
                      description="Names the run and prefixes every field it writes "
                                  "(vlsr -> vlsr_embedding, ...); use another key to keep "
                                  "runs of different models side by side")
    key = ctx.params.get("key", DEFAULT_KEY) or ""
    problem = output_problem(ctx.dataset, key, label_field)
    if problem:
        prop.invalid, prop.error_message = True, problem
    elif ctx.dataset.has_run(key):
        run_status(ctx, inputs, key)
    else:
        queued_status(ctx, inputs, key)
    return key


def chosen_run_key(ctx):
    """The run a form is on: the one chosen, else :func:`default_run_key` of the dataset's runs."""
    return ctx.params.get("key") or default_run_key(list_vlsr_runs(ctx.dataset))


def run_key_choice(ctx, inputs, action, preselect=True, deleting=False):
    """A dropdown of the VLSR runs of the dataset; None (and an error) if there is none, or if
    the one chosen was half deleted (but to ``deleting`` it).
    ``preselect=False`` (a destructive action): of several runs, none is chosen until the user
    picks one, and None is returned until then."""
    keys = list_vlsr_runs(ctx.dataset)
    if not keys:  # (a key given: a form left open, or a job queued, on a run deleted since)
        given = ctx.params.get("key")
        block(inputs, "run_error", (f"No VLSR run {given!r} on this dataset (deleted since?)"
                                    if given else "No VLSR run on this dataset yet")
              + f": compute embeddings before you {action}")
        return None
    choices = types.Dropdown(label="Run key")
    for k in keys:
        config = ctx.dataset.get_run_info(k).config
        choices.add_choice(k, label=k, description=f"{config.label_field}, {config.model}")
    preselect = preselect or len(keys) == 1
    prop = inputs.enum("key", choices.values(),
                       default=default_run_key(keys) if preselect else None,
                       required=not preselect, view=choices,
                       description="The VLSR run to use" if preselect
                       else f"The VLSR run to use: pick one of the {len(keys)} runs of this dataset")
    key = chosen_run_key(ctx) if preselect else ctx.params.get("key")
    if key not in keys:  # (none picked yet, or a form left open on a run deleted since)
        if key is not None:  # (on the choice itself: a delegated job said "Invalid enum value")
            prop.invalid, prop.error_message = True, (
                f"No VLSR run {key!r} on this dataset (deleted since?): choose one of "
                f"{', '.join(map(repr, keys))}")
        return None
    if not run_status(ctx, inputs, key, deleting):
        return None
    return key


def run_status(ctx, inputs, key, deleting=False):
    """Warnings on the state of existing run ``key``: a stage running (the run is busy), stages
    stopped part-way, stages in progress as delegated shards, operations waiting for a
    worker. Returns False (and an error) if
    the run was half deleted, as nothing but ``deleting`` it can use it."""
    from vlsr_core.fo.jobs import shard_note

    running, stopped = stage_activity(ctx.dataset, key)
    if running:
        inputs.view("running", types.Warning(
            label=f"Run {key!r} is busy: {running_note(running)}; executing this now is "
                  "refused until it is done"))
    stopped_deleting = half_deleted(ctx.dataset, key)
    if stopped_deleting:
        if deleting:
            inputs.view("half_deleted", types.Warning(label=stopped_deleting))
        else:
            block(inputs, "half_deleted", stopped_deleting)
        return deleting
    if stopped:
        inputs.view("incomplete", types.Warning(
            label=f"Run {key!r}: {' and '.join(stopped)} stopped part-way; its fields hold part "
                  "of its results (beside older ones, if any) until it is run again"))
    outdated = outdated_note(ctx.dataset.get_run_info(key).config)
    if outdated:
        inputs.view("outdated", types.Warning(label=f"Run {key!r}: {outdated}"))
    sharded = shard_note(ctx.dataset, key)
    if sharded:
        inputs.view("sharded", types.Warning(label=f"Run {key!r}: {sharded}"))
    queued_status(ctx, inputs, key)
    return True


def queued_status(ctx, inputs, key):
    """A warning naming the operations on run ``key`` scheduled and waiting for a worker,
    listed as running by a worker that stopped, or the last one if it failed."""
    from vlsr_core.fo.jobs import failed_note, queued_note, stopped_note

    for name, note in (("stopped", stopped_note), ("failed", failed_note),
                       ("queued", queued_note)):
        text = note(ctx.dataset, key)
        if text:
            inputs.view(name, types.Warning(label=f"Run {key!r}: {text}"))


def param_inputs(ctx, inputs, cls, base=None, checks=None, hidden=()):
    """A form input per parameter of ``cls`` (:mod:`vlsr_core.engine.params`), defaulting to ``base``
    (e.g. the run's recorded values) or the class defaults, each checked as the engine checks
    it and by ``checks`` (name -> ``check(value)``, for what only this form can know: what this
    machine has, say); those named in ``hidden`` keep ``base``'s value without an input.
    Returns the parameter object, or None while a value is invalid."""
    base = base or cls()
    values, props = {}, {}
    for spec in cls.specs():
        default = getattr(base, spec.name)
        if spec.name in hidden:
            continue
        kwargs = dict(label=spec.label, description=spec.help)
        if spec.choices:
            widget = (types.RadioGroup(orientation="horizontal") if len(spec.choices) <= 3
                      else types.Dropdown(label=spec.label))
            for value, text in zip(spec.choices, spec.choice_labels or spec.choices):
                widget.add_choice(value, label=str(text))
            prop = inputs.enum(spec.name, widget.values(), default=default, view=widget, **kwargs)
        elif spec.type is bool:
            prop = inputs.bool(spec.name, default=default, **kwargs)
        else:
            add = {int: inputs.int, float: inputs.float, str: inputs.str}[spec.type]
            bounds = {k: v for k, v in (("min", spec.low), ("max", spec.high)) if v is not None}
            prop = add(spec.name, default=default, **bounds, **kwargs)
        value = ctx.params.get(spec.name, default)
        value = None if value == "" else value
        problem = cls.problem(spec.name, value)
        if not problem and value is not None and spec.name in (checks or {}):
            problem = checks[spec.name](value)
        if problem:
            prop.invalid, prop.error_message = True, _in_form_words(problem, spec)
        values[spec.name], props[spec.name] = value, prop
    try:
        return cls.resolve(base, **values)
    except ParamError as e:  # one field's value against another's (each alone is fine)
        if e.name in props and not props[e.name].invalid:
            spec = next(s for s in cls.specs() if s.name == e.name)
            props[e.name].invalid, props[e.name].error_message = True, _in_form_words(str(e), spec)
        return None
    except ValueError:
        return None


def _in_form_words(problem, spec):
    """The engine's message about a parameter, named as the form labels it, not as the API does."""
    return spec.label + problem[len(spec.name):] if problem.startswith(spec.name + " ") else problem


def run_params(ctx, key, cls):
    """The parameters of ``cls`` run ``key`` last used (the defaults for what it never set, or
    for values an earlier version allowed and this one does not)."""
    try:
        return ctx.dataset.get_run_info(key).config.params(cls)
    except ValueError:
        return cls()


def params_from(ctx, cls, base=None, hidden=()):
    """The parameters of ``cls`` that the form sent (missing ones, and those ``hidden`` since they
    were sent, from ``base`` or defaults)."""
    base = base or cls()
    sent = {s.name: ctx.params[s.name] for s in cls.specs()
            if s.name in ctx.params and s.name not in hidden}
    return cls.resolve(base, **{k: (None if v == "" else v) for k, v in sent.items()})


def shards_input(ctx, inputs, view, work):
    """The number of delegated shards to split a stage on ``view`` into; ``work`` says what is
    queued. Checked here: the App's own minimum reads "must be greater than 1" for a minimum
    of 1; and a view that cannot be split (Take: a job queued failed in its worker)."""
    prop = inputs.int("num_shards", default=1, label="Shards",
                      description=f"Above 1: {work} as this many delegated jobs over disjoint "
                                  "ranges of samples. Any number of `fiftyone delegated launch` "
                                  "workers sharing the database run them in parallel")
    n = ctx.params.get("num_shards")
    if n not in (None, "") and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        prop.invalid = True
        prop.error_message = "Shards must be a whole number, at least 1 (1: the stage runs as one job)"
    elif n not in (None, "") and n > 1:
        from vlsr_core.fo.chunks import shard_problem

        problem = shard_problem(view)
        if problem:
            prop.invalid, prop.error_message = True, problem


def shard_count(ctx):
    """The shards asked for: 1 when the field was cleared, or given below 1 through the API
    (the form refuses it; a stage asked for 0 embedded its labels and queued no images)."""
    return max(1, int(ctx.params.get("num_shards") or 1))


def queued_message(n_queued, stage):
    """What a stage says after queueing its shards."""
    return (f"{stage} and queued {n_queued} shards: run `fiftyone delegated launch` on any "
            "number of machines; `fiftyone delegated list` shows their progress")


def execution_flags(**kwargs):
    """Operator config flags shared by long-running vlsr operators."""
    return dict(dynamic=True, execute_as_generator=True, allow_immediate_execution=True,
                allow_delegated_execution=True, **kwargs)


def run_with_progress(ctx, label, fn):
    """Run ``fn(progress)`` and report its progress live: a generator, use with ``yield from``.

    In the App (immediate execution) progress messages are yielded as they come; in a
    delegated run they are stored on the operation with ``ctx.set_progress``. The engine runs in
    a thread so that its plain ``progress(fraction)`` callback can feed this generator.
    """
    updates, outcome = queue.Queue(), {}

    def target():
        try:
            outcome["result"] = fn(updates.put)
        except BaseException as e:  # re-raised below, in the operator's own thread
            outcome["error"] = e
        finally:
            updates.put(None)

    thread = threading.Thread(target=target, name=f"vlsr-{label}", daemon=True)
    thread.start()
    first, last = None, -1.0
    while (fraction := updates.get()) is not None:
        # the pace is taken from the first report on: what came before (loading the model,
        # embedding the labels) made an estimate of twice the time left
        first = first or (monotonic(), fraction)
        if fraction - last < 0.01 and fraction < 1:
            continue  # at most a hundred updates
        last = fraction
        text = f"{label}: {fraction:.0%}" + (time_left(
            monotonic() - first[0], fraction - first[1], 1 - fraction) if fraction < 1 else "")
        if ctx.delegated:
            ctx.set_progress(progress=fraction, label=text)
        else:
            yield ctx.trigger("set_progress", dict(progress=fraction, label=text))
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def time_left(elapsed, done, todo):
    """", about 3 min left" when ``done`` (a fraction of the work) took ``elapsed`` seconds and
    ``todo`` is left, once there is enough to go by (10 s and 5 %); "" before."""
    if elapsed < 10 or done < 0.05:
        return ""
    left = elapsed * todo / done
    if left < 10:
        return ", a few seconds left"
    if left < 55:
        return f", about {round(left, -1):.0f} s left"
    hours, minutes = divmod(round(left / 60), 60)
    return ", about " + " ".join([f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(
        minutes or not hours)) + " left"


def delegable(execute):
    """Wrap an operator's generator ``execute`` so that a delegated run goes to its end and
    returns its report, which the delegated operation then stores (a generator's report would
    be dropped); in the App the generator streams progress as before, and a failure is shown
    (:func:`_reporting`, as :func:`reported` shows it for a plain ``execute``)."""

    @functools.wraps(execute)
    def wrapper(self, ctx):
        steps = execute(self, ctx)
        if not ctx.delegated:
            return _reporting(ctx, self.config.label, steps)
        try:
            while True:
                next(steps)  # nothing to stream: progress goes to ctx.set_progress
        except StopIteration as done:
            return done.value
        except Exception as e:
            note_failure(ctx, e)
            raise

    return wrapper


def note_failure(ctx, error):
    """Leave the reason of a delegated operation's failure in its status, where `fiftyone
    delegated info` and the run's summary show it (FiftyOne keeps the traceback alone)."""
    ctx.set_progress(label=FAILED + " ".join(_reason(error).split()))


def reported(execute):
    """Wrap an operator's plain ``execute`` so that a failure reaches the curator as a message
    in the App, and is raised on as the operation's error."""

    @functools.wraps(execute)
    def wrapper(self, ctx):
        try:
            return execute(self, ctx)
        except Exception as e:
            logger.exception("%s failed", self.config.label)
            ctx.ops.notify(f"{self.config.label} failed: {_reason(e)}", variant="error")
            raise

    return wrapper


def _reporting(ctx, label, steps):
    """Stream ``steps``; a failure becomes an error message and a report in the App before it
    is raised on (the App otherwise closes a generator's dialog without a word)."""
    try:
        return (yield from steps)
    except Exception as e:
        logger.exception("%s failed", label)
        message = f"{label} failed: {_reason(e)}"
        yield ctx.trigger("notify", dict(message=message, variant="error"))
        outputs = types.Object()
        outputs.str("error", label="Failed", view=types.MarkdownView(read_only=True))
        yield ctx.trigger("show_output", dict(outputs=types.Property(outputs).to_json(),
                                              results=dict(error=message)))
        raise


def _reason(error):
    """An error as a curator reads it: refusals of bad input (ValueErrors: ours, FiftyOne's)
    and a model that cannot be loaded (its message says what to do) by their message, other
    errors with their kind."""
    from vlsr_core.model.model_source import ModelLoadError

    if isinstance(error, (ValueError, ModelLoadError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_name(ctx, action):
    """The name of a delegated job: what it does, to which run, on which dataset."""
    return f"VLSR {action}: run {ctx.params.get('key', DEFAULT_KEY)!r} on {ctx.dataset.name}"


def finish(ctx, message, markdown=None):
    """After a run: refresh the App's dataset (new fields, views), notify, show a report.
    Returns ``{"message", "report"}``: what a delegated run stores as its result."""
    result = {"message": message, "report": markdown}
    if ctx.delegated:
        return result
    yield ctx.trigger("reload_dataset")
    yield from done(ctx, message)
    if markdown:
        outputs = types.Object()
        outputs.str("report", label="Result", view=types.MarkdownView(read_only=True))
        yield ctx.trigger("show_output", dict(
            outputs=types.Property(outputs).to_json(), results=dict(report=markdown)))
    return result


def gone_view(ctx):
    """The name of the saved view the App shows if it no longer exists (deleted with its run,
    elsewhere), else None: ``ctx.view`` fails on it, and the App's reload then gives a
    full-page error ("Object of type SavedView is not JSON serializable")."""
    name = ctx.request_params.get("view_name")
    return name if name and ctx.dataset is not None and not ctx.dataset.has_saved_view(
        name) else None


def reads_run(ctx, key):
    """Whether the App's open view reads a field or label attribute of run ``key`` (the
    panel's filter of a score range): once the run is deleted, the grid showed 0 samples,
    unexplained."""
    from vlsr_core.fo.runs import label_attributes, sample_fields

    stages = json.dumps(ctx.request_params.get("view") or [], ensure_ascii=False)
    names = [*sample_fields(key).values(), *label_attributes(key).values()]
    return any(re.search(rf"\b{re.escape(name)}\b", stages) for name in names)


def done(ctx, message, deleted=None):
    """Tell the curator what an operator did, and have each VLSR review panel open in the App
    load its run again: a run or an edit made from the operator browser is no event of the
    panel's, which would go on showing what it showed before (``deleted``: the run this one
    deleted, which the panels then do not say was deleted elsewhere). Returns the App's
    instructions (a generator operator yields them; a plain one has them sent when it
    returns)."""
    told = [ctx.trigger("notify", dict(message=message, variant="success"))]
    if ctx.delegated or ctx.executor is None:  # a delegated job has no App to speak to
        return told
    return told + [ctx.trigger("prompt_user_for_operation", dict(
        operator_uri=PLUGIN + "vlsr_panel#refresh", panel_id=panel_id,
        params={"deleted": deleted} if deleted else {}, skip_prompt=True))
        for panel_id in _open_panels(ctx.spaces)]


def _open_panels(space):
    """The ids of the VLSR review panels in the App's layout (nested spaces included)."""
    for child in getattr(space, "children", None) or []:
        if hasattr(child, "children"):
            yield from _open_panels(child)
        elif getattr(child, "type", None) == "vlsr_panel":
            yield child.component_id


def review_form(ctx, label):
    """A review operator's form titled ``label``: the run to review and where its review
    stands. Returns ``(inputs, form, key, state)``; ``state`` is None (and the form says why)
    with no dataset, no run or no clustering yet."""
    inputs = types.Object()
    form = types.Property(inputs, view=types.View(label=label))
    key = run_key_choice(ctx, inputs, "review") if ctx.dataset is not None else None
    state = review_state_input(ctx, inputs, key) if key is not None else None
    return inputs, form, key, state


def review_state_input(ctx, inputs, key):
    """Show where the review of run ``key`` stands; returns its
    :class:`~vlsr_core.fo.review.ReviewState`, or None (and an error) before the first clustering."""
    from vlsr_core.fo.review import ReviewError, cached_review_state

    try:  # cached: a dynamic form is resolved again on every change
        state = cached_review_state(ctx.dataset, key)
    except (ReviewError, RunDeletedError) as e:  # (deleted meanwhile, by another process)
        block(inputs, "review_error", str(e))
        return None
    inputs.str("review_status", default=state.summary(), label="Review",
               view=types.MarkdownView(read_only=True))
    return state


def label_choice(inputs, name, labels, label, description, required=True, first=()):
    """An autocomplete of ``labels`` (``(value, text)`` pairs, at most the first
    :data:`MAX_CHOICES`) after the choices ``first`` that are not labels (not counted with
    them); any typed label is accepted and checked by the engine."""
    view = types.AutocompleteView(label=label, allow_user_input=True)
    for value, text in [*first, *labels[:MAX_CHOICES]]:
        view.add_choice(value, label=text)
    if len(labels) > MAX_CHOICES:
        description += f" (the first {MAX_CHOICES} of {len(labels):,} are listed; type any other)"
    return inputs.str(name, required=required, label=label, description=description, view=view)


def edit_message(edit, join=None):
    """The message of a review edit just recorded: what it does, the cluster a rename joins
    (``join``: :func:`~vlsr_core.fo.review.join_note`), and that Apply writes it."""
    return (f"Edit #{edit.id}: {plain(edit.describe())}" + (f"; {join}" if join else "")
            + "; Apply to write it")


def shown_choices(labels):
    """(label, as shown) pairs for :func:`label_choice`: each on one line, a long one cut."""
    return [(l, one_line(l, SHORT)) for l in labels]


MAX_CHOICES = 500  # choices sent to a form; more are typed
