"""Panel: a run at a glance and its review, beside the grid: the score histogram (click or
select bars to see those labels), the counts of each merge step, and a cluster browser whose
rows take the review actions (take out, keep, move, split, rename) straight to the run; the
rare clusters merging left alone can be listed with the nearest cluster to each, to join it."""

import json
import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.wording import SHORT, as_markdown, breakable, code, count, one_line, plain, quoted

from .common import PLUGIN, edit_message, gone_view, reads_run

PAGE = 20  # clusters per page
MEMBERS = 100  # members of the open cluster per page
# A search waits this long for the next key: the App sends an event (two, in fact) for each key
# typed, and on a busy machine the rows of "falthapel" typed at 80 ms a key came 11 s after it,
# behind 26 searches for its beginnings, each found in full
SEARCH_WAIT = 0.3  # seconds


class VLSRPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="vlsr_panel",
            label="VLSR review",
            icon="fact_check",
            surfaces="grid",
            help_markdown="Scores, merge steps and clusters of a VLSR run; review edits are "
                          "stored on the run and written by *Apply*",
        )

    # -- loading -------------------------------------------------------------------------------

    def on_load(self, ctx, said=False):
        """Show the run chosen, or another one if it is gone (``said``: the caller told the
        curator already)."""
        from vlsr_core.fo.runs import default_run_key, list_vlsr_runs

        keys = list_vlsr_runs(ctx.dataset) if ctx.dataset is not None else []
        ctx.panel.state.keys = keys
        shown = gone_view(ctx)  # (a saved view deleted meanwhile, with its run, say)
        if shown is not None:
            _to_dataset(ctx)
        gone = ctx.panel.state.key
        if gone not in keys:
            ctx.panel.state.key = default_run_key(keys)
            ctx.panel.state.page, ctx.panel.state.cluster_label = 0, None
            ctx.panel.state.joined = ctx.panel.state.filtered = None
            ctx.panel.state.listing = "clusters"
            if gone is not None:  # (deleted elsewhere: `vlsr delete-run`, another window)
                ctx.panel.state.deleted = gone
                # (the grid: 0 samples, unexplained; a saved view of the run: gone with it)
                reset = not said and (shown is not None or reads_run(ctx, gone))
                if reset and shown is None:
                    ctx.ops.set_view(view=ctx.dataset.view())
                if not said:
                    ctx.ops.notify(f"Run {gone!r} was deleted elsewhere" + (
                        f": the panel shows run {ctx.panel.state.key!r}"
                        if ctx.panel.state.key else "") + (
                        "; the App shows the whole dataset, as the view open read its fields"
                        if reset else ""), variant="warning")
        self._load(ctx, scores=True)

    def on_change_dataset(self, ctx):
        ctx.panel.state.key = ctx.panel.state.deleted = None
        self.on_load(ctx)

    def refresh(self, ctx):
        # (a run deleted from this App's operator browser was not deleted elsewhere)
        self.on_load(ctx, said=ctx.params.get("deleted") == ctx.panel.state.key)

    def on_change_view(self, ctx):
        if ((ctx.panel.state.status is None and ctx.panel.state.problem is None)
                or _run_stamp(ctx.dataset, ctx.panel.state.key) != ctx.panel.state.stamp):
            # the App can send it before the panel's load; and a run made, changed or deleted
            # from Python tells the panel nothing (session.view = ... sends this)
            self.on_load(ctx)
        # (else nothing is written: render says what the grid shows; a write of the state
        # while the sidebar filters the grid makes the App query the grid again without the
        # filter, and the curator's filter is gone)

    @staticmethod
    def _busy(dataset, key):
        """What runs on ``key`` now: a stage (Apply is refused), or stages in progress as
        delegated shards; and what waits for a worker (on any run, before the first); None if
        nothing."""
        from vlsr_core.fo.jobs import failed_note, queued_note, shard_note, stopped_note
        from vlsr_core.fo.lease import running_note
        from vlsr_core.fo.runs import stage_activity

        queued = queued_note(dataset, key)
        lines = [f"**Scheduled:** {queued}"] if queued else []
        if key is None:
            return lines[0] if lines else None
        running = stage_activity(dataset, key)[0]
        sharded = not running and shard_note(dataset, key)
        stopped = not running and stopped_note(dataset, key)
        if stopped:
            lines.insert(0, f"**Stopped:** {stopped}")
        failed = not running and failed_note(dataset, key)
        if failed:
            lines.append(f"**Failed:** {failed}")
        if running:
            lines.insert(0, f"**Busy:** {running_note(running)}: Apply is refused until it is "
                            "done, and *Refresh* then shows what it changed")
        elif sharded:
            lines.insert(0, f"**In progress:** {sharded}")
        return "\n\n".join(lines) or None

    def _state(self, ctx):
        """The run's review state, or None with the reason in ``panel.state.problem``."""
        from vlsr_core.fo.review import ReviewError, cached_review_state
        from vlsr_core.fo.runs import RunDeletedError

        key = ctx.panel.state.key
        if key is None:
            from vlsr_core.fo.labels import media_problem

            ctx.panel.state.problem = (
                "There are no samples in this dataset" if len(ctx.dataset) == 0
                else media_problem(ctx.dataset) or (
                    f"Run {ctx.panel.state.deleted!r} was deleted. No VLSR run on this dataset "
                    "now" if ctx.panel.state.deleted else "No VLSR run on this dataset yet")
                + ": run *VLSR 1: compute embeddings*, then score and cluster the labels")
            return None
        try:
            state = cached_review_state(ctx.dataset, key)
        except (ReviewError, RunDeletedError) as e:  # (half deleted, or deleted meanwhile)
            ctx.panel.state.problem = str(e)
            return None
        ctx.panel.state.problem = None
        return state

    def _load(self, ctx, query=None, scores=False):
        """Compute what the panel shows, for the search ``query`` (None: the box's, in the
        state); the score histogram (which the App keeps between events) only with ``scores``:
        on load, refresh, another run. What it finds is sent in one patch at the end, unless a
        later event of the panel has started meanwhile (see :class:`_Writes`)."""
        from vlsr_core.fo.labels import LabelFieldError
        from vlsr_core.fo.stages import VLSRError

        if _deleted(ctx):  # meanwhile, elsewhere: another run, or what to do without one
            self.on_load(ctx)
            return
        s = _Writes(ctx)
        try:
            self._find(ctx, s, query, scores)
        except (LabelFieldError, VLSRError) as e:  # the run's label field deleted, say
            s.problem = f"Run {s.key!r} cannot be shown: {e}"
        finally:
            s.send()

    def _find(self, ctx, s, query, scores):
        from vlsr_core.fo.browse import (cluster_rows, join_choices, member_rows, merge_steps,
                                         page_of, count_rare, rare_distance_note, rare_rows,
                                         score_histogram)
        from vlsr_core.fo.review import copy_note, run_copies_outdated
        from vlsr_core.fo.runs import half_deleted, outdated_note
        from vlsr_core.fo.summary import joins_to_check

        key = s.key
        # (first: a failure below would leave it unwritten, and every change of view would
        # load the panel again)
        s.stamp = _run_stamp(ctx.dataset, key)
        state = self._state(ctx)
        if scores:  # (no run left: no histogram either)
            hist = (score_histogram(ctx.dataset, key)
                    if key is not None and not half_deleted(ctx.dataset, key) else None)
            s.edges = hist.edges if hist else None
            crops = key is not None and getattr(ctx.dataset.get_run_info(key).config, "crops",
                                                False)
            s.scored_on = "box crop" if crops else "image"
            # counts of labels: a tick at each whole number where Plotly would put halves
            s.few = bool(hist) and max(hist.counts, default=0) <= 10
            ctx.panel.data.histogram = [dict(
                type="bar", x=[(a + b) / 2 for a, b in zip(hist.edges, hist.edges[1:])],
                y=hist.counts, marker=dict(color="#ff6d04"),
                hovertemplate="score %{x:.3f}: %{y} labels<extra></extra>")] if hist else []
        s.busy = self._busy(ctx.dataset, key)
        if scores:  # (on load and Refresh: half a second at 100,000 samples)
            from vlsr_core.fo.runs import stage_activity
            from vlsr_core.fo.summary import by_hand_lines

            for seen in [k for k in _SCOPES if k[0] == ctx.dataset.name]:
                del _SCOPES[seen]  # (samples added or deleted since: counted again)
            # (as the summary: not while a stage runs or stopped part-way)
            s.by_hand = "\n\n".join(by_hand_lines(ctx.dataset, key)) or None if (
                state is not None and not any(stage_activity(ctx.dataset, key))) else None
        if state is None:
            return
        s.last_edit = state.in_force[-1].id if state.in_force else 0  # (what Undo undoes)
        s.status = state.summary() + "".join(
            f"; {copy_note(name, n)}" for name, n in run_copies_outdated(ctx.dataset, key, state))
        outdated = outdated_note(ctx.dataset.get_run_info(key).config)
        if outdated:  # (as the forms and the summary: the panel said "all applied" meanwhile)
            s.status += f"\n\n**Out of date:** {outdated}"
        # in the state, as the other tables: the App shows its state and data merged, a list
        # index by index, so a shorter list in one kept the other's last rows
        s.steps = [dict(step=step, count=n) for step, n in merge_steps(state)]
        s.joins = joins_to_check(state.label_map.steps or {}, see_all=lambda step: (
            f"choose {step} in Only clusters with a member joined by, above, to walk them all"),
            canonical=state.label_map.canonical) or None
        choices = join_choices(state)
        s.join_choices = [[step, n] for step, n in choices]
        if s.joined not in dict(choices):  # "all", or a step no label is joined by any more
            s.joined = "all"
        joined = s.filtered = None if s.joined == "all" else s.joined
        query = s.searched = (s.query if query is None else query) or ""
        config = ctx.dataset.get_run_info(key).config
        floor, by_samples = config.min_cluster_size, config.size_by == "samples"
        s.n_rare = count_rare(state, floor, by_samples)
        s.rare_under = f"{floor} {'samples' if by_samples else 'labels'}"
        if s.listing != "rare" or not s.n_rare:
            s.listing = "clusters"
        s.shown_listing = s.listing
        rows = (rare_rows(state, floor, by_samples, query) if s.listing == "rare" else
                cluster_rows(state, query, joined))
        shown, s.page, s.pages, _ = page_of(rows, s.page, PAGE)
        s.n_clusters = len(rows)
        s.pairs = any(r.get("pair") for r in shown)
        # (the text in the state: the App shows a markdown by its name from there)
        s.rare_note = (f"*Distance*: {rare_distance_note(state.label_map)}"
                       if s.listing == "rare" else None)
        cluster = self._selected_cluster(ctx, state)
        # the tables' rows live in the panel's state, which the App sends back with each event:
        # a row action (which only says the row's index) then acts on the row the curator saw,
        # even if the run changed since. An open cluster stands alone in the clusters table,
        # its members under it (whatever the search and the choice of joins)
        s.clusters = _shown(shown if cluster is None else [
            r for r in cluster_rows(state) if r["cluster"] == cluster])
        members = member_rows(state, cluster, query, joined, SHORT) if cluster is not None else []
        # a cluster of thousands of labels (paper mode) shows MEMBERS a page
        s.members, s.member_page, s.member_pages, s.member_span = page_of(
            members, s.member_page, MEMBERS)
        s.members = _shown(s.members)
        s.n_members = len(members)
        names = state.label_map.cluster_names
        s.cluster_name = _cell(names[cluster]) if cluster is not None else None
        s.clusters_title, s.members_title = _titles(s)
        s.pages_where = f"*page {s.page + 1} of {s.pages}*" if s.pages > 1 else ""
        s.member_pages_where = f"*members {s.member_span}*" if s.member_pages > 1 else ""

    def _selected_cluster(self, ctx, state):
        label = ctx.panel.state.cluster_label
        return state.label_map.cluster.get(label) if label else None

    # -- events ----------------------------------------------------------------------------------

    def on_change_key(self, ctx):
        ctx.panel.state.key = ctx.params["value"]
        ctx.panel.state.page, ctx.panel.state.cluster_label = 0, None
        ctx.panel.state.joined = ctx.panel.state.filtered = None
        self._load(ctx, scores=True)

    # The App puts a changed value in the state (``query``, ``joined``, ``listing``) before
    # the event, and sends it again when the panel opens. The handlers neither write it back
    # (the reply to one key comes after the next keys, and would put the box back to what it
    # held, firing the event again for ever) nor skip a value the rows seem to have been
    # found for: the state an event carries can predate the reply to the change before it
    # (a List changed twice in a second kept the first choice's rows). They find the rows
    # again, and start from the first page only on a change.

    def on_search(self, ctx):
        mine = _Writes.begin(ctx)  # (the App runs events side by side)
        time.sleep(SEARCH_WAIT)
        if not _Writes.latest(ctx, mine):
            return  # a later key's search finds the rows
        query = ctx.params.get("value") or ""
        if query != ctx.panel.state.searched:
            ctx.panel.state.page = ctx.panel.state.member_page = 0
        self._load(ctx, query)

    def on_joined(self, ctx):
        if (ctx.params.get("value") or "all") != (ctx.panel.state.filtered or "all"):
            ctx.panel.state.page = ctx.panel.state.member_page = 0
        self._load(ctx)

    def next_page(self, ctx):
        ctx.panel.state.page = (ctx.panel.state.page or 0) + 1
        self._load(ctx)

    def previous_page(self, ctx):
        ctx.panel.state.page = max(0, (ctx.panel.state.page or 0) - 1)
        self._load(ctx)

    def next_members(self, ctx):
        ctx.panel.state.member_page = (ctx.panel.state.member_page or 0) + 1
        self._load(ctx)

    def previous_members(self, ctx):
        ctx.panel.state.member_page = max(0, (ctx.panel.state.member_page or 0) - 1)
        self._load(ctx)

    def on_listing(self, ctx):
        if (ctx.params.get("value") or "clusters") != ctx.panel.state.shown_listing:
            ctx.panel.state.page, ctx.panel.state.cluster_label = 0, None
        self._load(ctx)

    def on_histogram_click(self, ctx):
        self._show_scores(ctx, [ctx.params.get("x")])

    def on_histogram_select(self, ctx):
        self._show_scores(ctx, [p["x"] for p in ctx.params.get("data") or []])

    def _show_scores(self, ctx, xs):
        from vlsr_core.fo.browse import Histogram, labels_scoring_between
        from vlsr_core.fo.runs import run_samples

        edges = ctx.panel.state.edges
        xs = [x for x in xs if x is not None]
        if not edges or not xs:
            return
        lo, hi = Histogram([], edges).range_of(xs)
        key = ctx.panel.state.key
        field = ctx.dataset.get_run_info(key).config.label_field
        ctx.ops.set_view(labels_scoring_between(run_samples(ctx.dataset, key), key, field, lo, hi))
        ctx.ops.notify(f"Labels of run {key!r} scoring {lo:.3f} to {hi:.3f}")

    def _cluster_row(self, ctx):
        """The clicked cluster row: the run's review state, the cluster's id and name now; None
        if the run is gone (said, and the panel shown again)."""
        state = self._state(ctx)
        if state is None:
            self._gone(ctx)
            return None
        cluster = state.label_map.cluster[ctx.panel.state.clusters[ctx.params["row"]]["label"]]
        return state, cluster, state.label_map.cluster_names[cluster]

    def _gone(self, ctx):
        """Say why the run cannot be read now (deleted elsewhere, say), and show the panel again."""
        gone = _deleted(ctx)
        if not gone:  # (half deleted, say; deleted: on_load says so)
            ctx.ops.notify(ctx.panel.state.problem or "The run is gone", variant="error")
        self.on_load(ctx, said=not gone)

    def open_cluster(self, ctx):
        row = self._cluster_row(ctx)
        if row is None:
            return
        state, cluster, _ = row
        ctx.panel.state.cluster_label = state.label_map.representatives[cluster]
        ctx.panel.state.member_page = 0
        self._load(ctx)

    def show_cluster(self, ctx):
        from vlsr_core.fo.browse import labels_named

        row = self._cluster_row(ctx)
        if row is None:
            return
        state, cluster, name = row
        members = [l for l, c in state.label_map.cluster.items() if c == cluster]
        self._show_labels(ctx, labels_named, members, f"the cluster of {code(name)}")

    def rename_cluster(self, ctx):
        row = self._cluster_row(ctx)
        if row is None:
            return
        self._prompt(ctx, "edit_label_map", action="rename", label=row[2])

    def join_nearest(self, ctx):
        """A rare cluster joins the cluster nearest to it: renamed to its name, one edit."""
        from vlsr_core.fo.review import ReviewError, add_edit
        from vlsr_core.fo.runs import RunDeletedError

        row = ctx.panel.state.clusters[ctx.params["row"]]
        try:
            edit = add_edit(ctx.dataset, ctx.panel.state.key, "rename", row["label"],
                            to=row["nearest"], state=self._state(ctx))
        except (ReviewError, RunDeletedError) as e:  # (a stale row: the review changed elsewhere)
            self._refused(ctx, e)
            return
        ctx.ops.notify(f"Edit #{edit.id}: {row['canonical']} joins the cluster {row['nearest']}; "
                       "Apply to write it", variant="success")
        self._load(ctx)

    def _member(self, ctx):
        """The label of the clicked member row, as the curator saw it."""
        return ctx.panel.state.members[ctx.params["row"]]["label"]

    def _edit(self, ctx, action):
        from vlsr_core.fo.review import ReviewChanged, ReviewError, add_edit, review_state
        from vlsr_core.fo.runs import RunDeletedError

        label, key, seen = self._member(ctx), ctx.panel.state.key, self._state(ctx)
        if seen is None:  # (the run deleted meanwhile)
            self._gone(ctx)
            return

        def still_shown(state):
            """Refuse an edit of a label that an edit made elsewhere moved out of the cluster
            whose members the curator clicked: made where it is now, it would undo that. The
            cluster shown is the one most of its member rows are in now (its canonical label
            may have been moved away too): the panel opens it again after the edit."""
            cluster = state.label_map.cluster
            rows = [cluster[m["label"]] for m in ctx.panel.state.members or []
                    if m["label"] in cluster]
            if not rows:
                return state
            was = cluster.get(ctx.panel.state.cluster_label)  # (first among equals)
            shown = max(dict.fromkeys(rows), key=lambda c: (rows.count(c), c == was))
            ctx.panel.state.cluster_label = state.label_map.representatives[shown]
            where = cluster.get(label)
            if where != shown:
                names = state.label_map.cluster_names
                raise ReviewError(
                    f"{quoted(label)} is no longer in the cluster the panel showed: an edit made "
                    "elsewhere meanwhile moved it"
                    + (f" to {quoted(names[where])}" if where is not None else "")
                    + ". Nothing was recorded; the rows now show the review as it is")
            return state

        try:
            try:
                edit = add_edit(ctx.dataset, key, action, label, state=still_shown(seen))
            except ReviewChanged:  # an edit made elsewhere landed meanwhile: on top of it
                edit = add_edit(ctx.dataset, key, action, label,
                                state=still_shown(review_state(ctx.dataset, key)))
        except (ReviewError, RunDeletedError) as e:  # (a stale row, an edit made elsewhere)
            self._refused(ctx, e)
            return
        ctx.ops.notify(edit_message(edit), variant="success")
        self._load(ctx)

    def _refused(self, ctx, error):
        """Say why an action was refused, and show the review as it is now (the run deleted
        meanwhile: another run, or what to do without one, which on_load says)."""
        if _deleted(ctx):
            self.on_load(ctx)
            return
        ctx.ops.notify(str(error), variant="error")
        self._load(ctx)

    def take_out(self, ctx):
        self._edit(ctx, "reject")

    def keep(self, ctx):
        self._edit(ctx, "accept")

    def split(self, ctx):
        self._edit(ctx, "split")

    def move(self, ctx):
        self._prompt(ctx, "edit_label_map", action="move", label=self._member(ctx))

    def show_member(self, ctx):
        from vlsr_core.fo.browse import labels_named

        label = self._member(ctx)
        self._show_labels(ctx, labels_named, [label], code(label))

    def _show_labels(self, ctx, labels_named, labels, what):
        from vlsr_core.fo.runs import run_samples

        key = ctx.panel.state.key
        field = ctx.dataset.get_run_info(key).config.label_field
        ctx.ops.set_view(labels_named(run_samples(ctx.dataset, key), key, field, labels=labels))
        ctx.ops.notify(f"Samples with labels of {plain(what)}")

    def undo(self, ctx):
        from vlsr_core.fo.review import ReviewError, after_undo, cached_review_state, undo_edit
        from vlsr_core.fo.runs import RunDeletedError

        shown = ctx.panel.state.last_edit  # (0: none; None: a panel of an earlier version)
        try:
            state = cached_review_state(ctx.dataset, ctx.panel.state.key)
            in_force = state.in_force
            last = in_force[-1] if in_force else None
            if last is not None and shown is not None and last.id != shown:
                # the review changed elsewhere since the panel showed it: an edit made there,
                # or the edit the panel showed last undone there
                was = next((e for e in state.edits if e.id == shown), None)
                what = (f"edit #{shown} ({plain(was.describe())}) was undone elsewhere, and its "
                        f"last edit in force is now #{last.id} ({plain(last.describe())})"
                        if was is not None and was.undone and last.id < shown else
                        f"its last edit is now #{last.id} ({plain(last.describe())}), made "
                        "elsewhere")
                raise ReviewError(
                    f"The review changed since the panel showed it: {what}. Nothing was "
                    f"undone; the panel shows the review as it is now: Undo again to undo "
                    f"#{last.id}")
            edit = undo_edit(ctx.dataset, ctx.panel.state.key,
                             edit_id=last.id if last is not None else None)
        except (ReviewError, RunDeletedError) as e:
            self._refused(ctx, e)
            return
        left = after_undo(ctx.dataset, ctx.panel.state.key, [edit])
        ctx.ops.notify(f"Undid edit #{edit.id} ({plain(edit.describe())}); {left}",
                       variant="success")  # (as the undo form says it: which edit it was)
        self._load(ctx)

    def _prompt(self, ctx, operator, on_success=None, **params):
        """Open ``operator``'s form on the panel's run, unless the run was deleted elsewhere:
        then say so and show the panel again (the form said "No VLSR run on this dataset yet"
        over the deleted run's clusters)."""
        key = ctx.panel.state.key
        if key is None or _deleted(ctx):
            self.on_load(ctx)
            return
        ctx.prompt(PLUGIN + operator, params=dict(key=key, **params), on_success=on_success)

    def apply(self, ctx):
        # (scheduled as a delegated job, it runs nothing of the plugin's that would refresh
        # the panel: the panel then said "not applied yet", and nothing of the job)
        self._prompt(ctx, "apply_review", on_success=self.refresh)

    def import_map(self, ctx):
        self._prompt(ctx, "import_label_map")

    def suggestions(self, ctx):
        self._prompt(ctx, "review_suggestions")

    def close_cluster(self, ctx):
        ctx.panel.state.cluster_label = None
        self._load(ctx)

    # -- layout ----------------------------------------------------------------------------------

    def render(self, ctx):
        """Top to bottom: the run, where its review stands and the review's buttons; the clusters
        (or the open cluster and its members), in view without scrolling; then the overview:
        the merge steps, the joins worth checking and the score histogram."""
        panel = types.Object()
        s = ctx.panel.state
        if len(s.keys or []) > 1:
            runs = types.DropdownView(label="Run")
            for k in s.keys:
                runs.add_choice(k, label=k)
            panel.enum("key", runs.values(), default=s.key, view=runs, on_change=self.on_change_key)
        if s.problem:
            panel.md(s.problem, name="problem")
            if s.busy:
                panel.md(s.busy, name="busy")
            self._refresh_button(panel)  # (a delegated run clusters it, say)
            self._histogram(panel, s)  # a run scored, not clustered yet
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        if s.status is None:  # an event overtaken by a later one, before the run was shown:
            # that one's reply brings it
            panel.md("Loading the run…", name="status")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        panel.md(s.status, name="status")
        if s.busy:
            panel.md(s.busy, name="busy")
        if s.by_hand:  # (the export waits for them: said before a curator reviews on them)
            panel.md(s.by_hand, name="by_hand")
        scope = _scope(ctx, s.key)
        if scope:
            panel.md(scope, name="scope")
        actions = panel.h_stack("actions", gap=1)
        # short labels keep the row on one line in a narrow panel; the tooltips say the rest
        actions.btn("apply", label="Apply review", icon="task_alt", variant="contained",
                    on_click=self.apply, title="Write the edits in force to the run's fields")
        actions.btn("undo", label="Undo", icon="undo", on_click=self.undo,
                    title="Undo the last review edit (an earlier one: VLSR 4: undo a review edit)")
        actions.btn("suggestions", label="Suggestions…", icon="rule", on_click=self.suggestions,
                    title="Accept or reject the suggested labels of the selected samples")
        actions.btn("import", label="Import…", icon="upload_file", on_click=self.import_map,
                    title="Import an edited label map (label_map.csv of an export) as edits")
        self._refresh_button(actions)
        if s.cluster_name:  # reviewed member by member: nothing run-wide around it
            self._open_cluster(panel, s)
        else:
            if s.listing == "rare":
                self._rare_clusters(panel, s)
            else:
                self._clusters(panel, s)
            self._overview(panel, s)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))

    def refresh_all(self, ctx):
        """The Refresh button: the panel, and the grid and sidebar (a run from the command
        line or a delegated job changed the fields: the grid showed the view before)."""
        if gone_view(ctx) is None:  # (else the panel's load sends the App to the dataset: a
            # reload would send the App the gone view's name, a full-page error)
            ctx.ops.reload_dataset()
        self.refresh(ctx)

    def _refresh_button(self, panel):
        panel.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh_all,
                  title="Show what a delegated run changed (runs and edits made in the App "
                        "refresh the panel themselves)")

    def _listing_choice(self, panel, s):
        """The choice of listing, when merging left rare clusters, and the search box."""
        if s.n_rare:
            listing = types.DropdownView(label="List")
            listing.add_choice("clusters", label="clusters, the most doubtful first")
            listing.add_choice("rare", label=f"rare clusters (under {s.rare_under}: "
                                             f"{s.n_rare:,}), the nearest to another first")
            panel.enum("listing", listing.values(), default=s.listing, view=listing,
                       on_change=self.on_listing)
        panel.str("query", default=s.query or "", label="Find a cluster by label",
                  on_change=self.on_search)

    def _joined_choice(self, panel, s):
        """The choice of the merge step the listed members (or clusters' members) joined by."""
        if not s.join_choices:
            return
        joined = types.DropdownView(
            label="Only members joined by" if s.cluster_name else
            "Only clusters with a member joined by")
        joined.add_choice("all", label="all")
        where = " in the run" if s.cluster_name else ""  # (not in the open cluster alone)
        for step, n in s.join_choices:
            joined.add_choice(step, label=f"{step} ({n:,} label{'' if n == 1 else 's'}{where})")
        panel.enum("joined", joined.values(), default=s.joined or "all", view=joined,
                   on_change=self.on_joined)

    @staticmethod
    def _no_match(panel, s):
        """Say so when the search finds nothing, in place of an empty table ("No data provided"
        under "(0; page 1 of 1)"); whether it did."""
        if s.query and not s.clusters:
            from vlsr_core.engine.grouping import LONG_LABEL

            return panel.md(f"No {'rare ' if s.listing == 'rare' else ''}cluster has a label "
                            f"containing {code(s.query)}" + (
                                f" among those with a member joined by {s.filtered}"
                                if s.filtered else "") + (
                                " (the clusters of labels kept out of merging, with no letter "
                                f"or digit, only digits or over {LONG_LABEL} characters, are "
                                "never rare: search all clusters)" if s.listing == "rare"
                                else ""), name="no_match")

    def _clusters_table(self):
        return _table((("canonical_shown", "Cluster"), ("labels", "Labels"),
                       ("occurrences", "Occurrences"), ("farthest_shown", "Farthest"),
                       ("edited", "Edited")),
                      (("open", self.open_cluster, "Members", "list"),
                       ("show", self.show_cluster, "Show samples", "image"),
                       ("rename", self.rename_cluster, "Rename…", "edit")))

    def _clusters(self, panel, s):
        self._listing_choice(panel, s)
        self._joined_choice(panel, s)
        if self._no_match(panel, s):
            return
        _title(panel, s, "clusters_title")
        panel.list("clusters", types.Object(), view=self._clusters_table())
        self._pager(panel, s, "pages", s.page, s.pages, self.previous_page, self.next_page)

    def _rare_clusters(self, panel, s):
        self._listing_choice(panel, s)
        if self._no_match(panel, s):
            return
        rows = _table((("canonical_shown", "Cluster"), ("labels", "Labels"),
                       ("occurrences", "Occurrences"), ("nearest_shown", "Nearest cluster"),
                       ("distance_shown", "Distance")),
                      (("join", self.join_nearest, "Join the nearest cluster", "merge"),
                       ("open", self.open_cluster, "Members", "list"),
                       ("show", self.show_cluster, "Show samples", "image")))
        if s.rare_note:
            panel.md(s.rare_note, name="rare_note")
        _title(panel, s, "clusters_title")
        panel.list("clusters", types.Object(), view=rows)
        self._pager(panel, s, "pages", s.page, s.pages, self.previous_page, self.next_page)

    def _open_cluster(self, panel, s):
        """The open cluster alone, its members under it: seen without scrolling."""
        panel.str("query", default=s.query or "", label="Find a cluster by label",
                  on_change=self.on_search)
        self._joined_choice(panel, s)
        panel.btn("close_cluster", label="Back to all clusters", icon="arrow_back",
                  on_click=self.close_cluster)
        panel.list("clusters", types.Object(), view=self._clusters_table(), label="The open cluster")
        # a cluster's canonical label was merged into nothing: no take-out or keep for it, and
        # no split of the only label (the menu offered them, then an error said so)
        merged = [not m.get("is_canonical") for m in s.members]
        splits = [m or s.clusters[0]["labels"] > 1 for m in merged]  # (the open cluster's)
        members = _table((("shown", "Label"), ("frequency", "Samples"),
                          ("distance_shown", "Distance"), ("joined_by", "Joined by"),
                          ("clustered_with_shown", "Clustered with")),
                         (("take_out", self.take_out, "Take out (reject merge)", "call_split", merged),
                          ("keep", self.keep, "Keep (accept merge)", "check", merged),
                          ("move", self.move, "Move to another cluster…", "drive_file_move"),
                          ("split", self.split, "Split out on its own", "content_cut", splits),
                          ("show_member", self.show_member, "Show samples", "image")))
        _title(panel, s, "members_title")
        panel.list("members", types.Object(), view=members)
        self._pager(panel, s, "member_pages", s.member_page, s.member_pages,
                    self.previous_members, self.next_members)

    def _overview(self, panel, s):
        """Below the listing: the counts of each merge step, the joins worth checking, and the
        score histogram."""
        steps = types.TableView()
        steps.add_column("step", label="Merge step")
        steps.add_column("count", label="Labels / clusters")
        panel.list("steps", types.Object(), view=steps, label="Vocabulary before and after")
        if s.joins:
            panel.md(s.joins, name="joins")
        self._histogram(panel, s)

    def _histogram(self, panel, s):
        if not s.edges:
            return
        # the title is text above the chart: Plotly's toolbar, shown on hover, covers a title
        # drawn inside it
        panel.md("**Label scores:** click a bar, or drag over several, to see those labels",
                 name="histogram_title")
        panel.plot("histogram", layout=dict(
            xaxis=dict(title=dict(text=f"{s.scored_on or 'image'}-label score")),
            yaxis=dict(title=dict(text="labels"), **(dict(dtick=1) if s.few else {})),
            # the App's panel ends a few pixels below the window: the bottom margin keeps the
            # axis title in sight
            bargap=0.05, dragmode="select", height=280, margin=dict(t=20, b=70, l=50, r=10)),
            config=dict(displaylogo=False),
            on_click=self.on_histogram_click, on_selected=self.on_histogram_select)

    @staticmethod
    def _pager(panel, s, name, page, pages, previous, following):
        """Previous and Next buttons, those that lead somewhere, and under them where they led
        (``{name}_where``, from the state as the titles: the App keeps the table scrolled to
        the bottom after Next, where the title is out of sight)."""
        buttons = panel.h_stack(name, gap=1)
        if (page or 0) > 0:
            buttons.btn("previous", label="Previous", icon="chevron_left", on_click=previous)
        if (page or 0) + 1 < (pages or 1):
            buttons.btn("next", label="Next", icon="chevron_right", on_click=following)
        _title(panel, s, f"{name}_where")


def _titles(s):
    """The titles of the clusters table and of the members table, with their counts. They live
    in the panel's state, shown by name (:func:`_title`), not in the layout: the App draws the
    layout of every event, and that of an event overtaken by a later one (a key typed in the
    search box after another) came last and titled 2 rows "(63; page 1 of 4)"."""
    page = f"page {(s.page or 0) + 1} of {s.pages}"
    if s.shown_listing == "rare":
        clusters = (f"Rare clusters, the nearest to another cluster first ({s.n_clusters:,} "
                    f"row{'' if s.n_clusters == 1 else 's'}"
                    + (", two clusters nearest to each other in one" if s.pairs else "")
                    + f"; {page})")
    else:
        with_member = f" with a member joined by {s.filtered}" if s.filtered else ""
        clusters = f"Clusters{with_member}, the most doubtful first ({s.n_clusters:,}; {page})"
    if s.searched:  # (the App may send a search's keys out of order, and keep the box's last:
        # the rows are said to be for what they were found for)
        clusters += f" — search: {code(s.searched, SHORT)}"
    members = None
    if s.cluster_name is not None:
        by = f" joined by {s.filtered}" if s.filtered else ""
        order = (f"those containing {code(s.searched, SHORT)} first, then the farthest"
                 if s.searched else "the farthest first")
        members = (f"Members of the cluster '{as_markdown(s.cluster_name)}'{by}, {order} "
                   f"(members {s.member_span})")
    return clusters, members


def _title(panel, s, name):
    """A table's title, shown as the state holds it (see :func:`_titles`)."""
    panel.md(getattr(s, name) or "", name=name)


def _deleted(ctx):
    """Whether the run the panel shows was deleted since (elsewhere: `vlsr delete-run`)."""
    key = ctx.panel.state.key
    return key is not None and not ctx.dataset.has_run(key)


class _Writes:
    """The panel state as an event carried it, with the values a handler sets, sent in one
    patch by :meth:`send`, and not at all if a later event of the panel began since: the App
    runs events side by side, and on a busy machine the rows for "helmit" came 14 s after
    those for "he", typed later, and replaced them. The inputs' values (:data:`INPUTS`) are
    sent only to correct them: sent back as they were, they would undo a change the curator
    made meanwhile."""

    INPUTS = ("query", "joined", "listing")
    _latest = {}  # panel id -> the token of its latest event (not the event: it holds a context)

    def __init__(self, ctx):
        vars(self).update(_ctx=ctx, _set={}, _token=self.begin(ctx))

    @classmethod
    def begin(cls, ctx):
        """Mark the start of an event of ctx's panel; returns its token."""
        token = cls._latest[ctx.panel.id] = object()
        return token

    @classmethod
    def latest(cls, ctx, token):
        """Whether no event of ctx's panel began after the one of ``token``."""
        return cls._latest.get(ctx.panel.id) is token

    def __getattr__(self, key):
        return self._set[key] if key in self._set else getattr(self._ctx.panel.state, key)

    def __setattr__(self, key, value):
        self._set[key] = value

    def send(self):
        if not self.latest(self._ctx, self._token):
            return
        carried = self._ctx.panel.state
        self._ctx.panel.state.set({k: v for k, v in self._set.items()
                                   if k not in self.INPUTS or getattr(carried, k) != v})


def _to_dataset(ctx):
    """Send the App from a saved view deleted meanwhile to the whole dataset. FiftyOne 1.22's
    App queries once more with the name of the saved view it showed, and its server fails on
    the name of one that no longer exists while others do ("Object of type SavedView is not
    JSON serializable", a full-page error: fiftyone/server/query.py, ``Dataset.stages``): one
    that exists is shown first."""
    others = ctx.dataset.list_saved_views()
    if others:
        ctx.ops.set_view(name=others[0])
    ctx.ops.set_view(view=ctx.dataset.view())


_SCOPES = {}  # (dataset, key, the run's collection, the grid's view) -> :func:`_scope`, the last
# few; counted again on the panel's load and Refresh (samples added meanwhile)


def _scope(ctx, key):
    """A line saying that the panel covers the whole run while the grid shows part of it (a
    saved view, a filter), or None; counted once a view (render asks it at every event)."""
    if gone_view(ctx) is not None:  # (ctx.view fails on it)
        return None
    view = ctx.view
    if view is None or key is None or not ctx.dataset.has_run(key):
        return None
    seen = (ctx.dataset.name, key, ctx.dataset.get_run_info(key).config.collection,
            json.dumps(view._serialize(), default=str))
    if seen not in _SCOPES:
        while len(_SCOPES) >= 8:
            _SCOPES.pop(next(iter(_SCOPES)))
        _SCOPES[seen] = _count_scope(ctx, key, view)
    return _SCOPES[seen]


def _count_scope(ctx, key, view):
    from vlsr_core.fo.runs import run_collection

    if ctx.dataset.get_run_info(key).config.collection == "":
        return None  # made on an unsaved view: which samples it covers is not known
    run = run_collection(ctx.dataset, key)
    name = getattr(view, "name", None)
    if not view._stages or (name and name == getattr(run, "name", None)):
        return None
    n_shown, n_run = len(view), len(run)
    if n_shown == n_run:  # a sort, or a filter that leaves every sample: not a part
        return None
    shown = f"the saved view `{name}`" if name else "a filtered view"
    return (f"*The grid shows {shown} ({count(n_shown, 'sample')}); the clusters and scores "
            f"here are those of the whole run ({count(n_run, 'sample')}).*")


def _shown(rows):
    """The rows with ``NAME_shown`` beside each value a table shows: a name on one line, a
    long one cut and a long word breakable (a table is as wide as its longest word, and must
    fit the panel beside the grid), a distance with three decimals; and ``shown`` (a member)
    breakable. The actions read the values whole."""
    return [dict(r, **{f"{k}_shown": _cell(r[k])
                       for k in ("canonical", "nearest", "clustered_with") if k in r},
                 **{f"{k}_shown": f"{r[k]:.3f}" for k in ("farthest", "distance") if k in r},
                 **({"shown": breakable(r["shown"])} if "shown" in r else {}))
            for r in rows]


def _cell(name):
    """A name as a narrow table cell shows it: on one line, a long one cut, a long word
    breakable."""
    return breakable(one_line(name, SHORT))


def _table(columns, actions):
    """A table of ``columns`` ((key, heading) pairs) whose rows have a menu of ``actions``
    ((name, handler, label, icon), and optionally whether each row offers it), two of them
    inline."""
    table = types.TableView(max_inline_actions=2)
    for key, heading in columns:
        table.add_column(key, label=heading)
    for name, handler, label, icon, *rows in actions:
        table.add_row_action(name, handler, label=label, icon=icon,
                             **({"rows": rows[0]} if rows else {}))
    return table


def _run_stamp(dataset, key):
    """What changes when a run is made, deleted, embedded, scored or clustered again, edited or
    applied, by any process: the panel hears of the App's own operators, not of a notebook's."""
    from vlsr_core.fo.runs import list_vlsr_runs

    keys = list_vlsr_runs(dataset)
    if key not in keys:
        return json.dumps(keys)
    config = dataset.get_run_info(key).config
    return json.dumps([keys, config.stages, config.model_fingerprint, config.label_model,
                       getattr(config, "review", None), getattr(config, "applied", None)],
                      default=str)
