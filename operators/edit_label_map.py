"""Operator: a review edit of the label map (accept or reject a merge, move, split, rename)."""

from collections import Counter

import fiftyone.operators as foo
import fiftyone.operators.types as types
import numpy as np

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.wording import SHORT, code, one_line

from .common import done, edit_message, label_choice, reported, review_form, shown_choices

ACTIONS = {
    "reject": "Reject a merge: take a label out of its cluster",
    "accept": "Accept a merge: keep a label in its cluster, even after clustering again",
    "move": "Move a label to another cluster",
    "split": "Split a label out on its own",
    "rename": "Rename a cluster",
}


class EditLabelMap(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="edit_label_map",
            label="VLSR 4: edit the label map",
            description="Step 4: accept or reject a merge, move or split a label, rename a cluster; "
                        "stored on the run, written by Apply",
            icon="edit",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs, form, key, state = review_form(ctx, self.config.label)
        if state is None:
            return form
        actions = types.Dropdown(label="Edit")
        for value, text in ACTIONS.items():
            actions.add_choice(value, label=text)
        inputs.enum("action", actions.values(), default="reject", view=actions, required=True)
        action = ctx.params.get("action", "reject")
        label_map = state.label_map
        canonical = label_map.canonical
        names = label_map.cluster_names
        if action == "rename":
            choices = shown_choices(_by_size(label_map, names))
            label_prop = label_choice(inputs, "label", choices, "Cluster",
                                      "The canonical label of the cluster to rename")
            to_prop = inputs.str("to", required=True, label="New name",
                                 description="Naming it like another cluster, or like a label of "
                                             "another cluster, joins the two")
        else:
            vocab, dist = label_map.vocabulary, np.asarray(label_map.distance_to_canonical)
            order = np.argsort(-dist, kind="stable")  # the most doubtful merges first
            if action in ("accept", "reject"):
                order = [i for i in order if canonical[vocab[i]] != vocab[i]]
            elif action == "split":  # not the labels that are a cluster of their own already
                size = Counter(canonical.values())
                order = [i for i in order if size[canonical[vocab[i]]] > 1]
            choices = [(vocab[i], _member_choice(vocab[i], canonical[vocab[i]], dist[i]))
                       for i in order]
            label_prop = label_choice(inputs, "label", choices, "Label",
                                      "Labels farthest from their canonical label come first")
            to_prop = None
            if action == "move":  # to another cluster than the label's own
                own = canonical.get(ctx.params.get("label"))
                to_prop = label_choice(
                    inputs, "to", shown_choices([n for n in _by_size(label_map, names)
                                                 if n != own]),
                    "Move to the cluster of", "A canonical label (or any label)")
        label, to = ctx.params.get("label"), ctx.params.get("to")
        if not label or (action in ("move", "rename") and not to):
            return form
        from vlsr_core.fo.review import ReviewError, add_edit, join_note

        try:
            edit = add_edit(ctx.dataset, key, action, label, to or None, dry_run=True, state=state)
        except ReviewError as e:
            prop = to_prop if e.about == "to" and to_prop is not None else label_prop
            prop.invalid, prop.error_message = True, str(e)
            return form
        note = join_note(state, edit, shown=code)  # (Markdown: labels as code, not formatted)
        joins = f" {note[0].upper()}{note[1:]}." if note else ""
        inputs.view("preview", types.Notice(
            label=f"Edit #{edit.id}: {edit.describe()}.{joins} Stored on the run; "
                  "Apply writes it to the fields."))
        return form

    @reported
    def execute(self, ctx):
        from vlsr_core.fo.review import add_edit, cached_review_state, join_note

        key = ctx.params.get("key", DEFAULT_KEY)
        state = cached_review_state(ctx.dataset, key)
        edit = add_edit(ctx.dataset, key, ctx.params.get("action", "reject"), ctx.params["label"],
                        ctx.params.get("to") or None, state=state)
        message = edit_message(edit, join_note(state, edit))
        done(ctx, message)
        return dict(message=message, edit=edit.as_record())


def _member_choice(label, name, distance):
    """How a label shows among the choices: with its cluster's name and its distance to it,
    or marked as that name (``x → x (0.000)`` read as a join)."""
    if label == name:
        return f"{one_line(label, SHORT)} (canonical)"
    return (f"{one_line(label, SHORT)} → {one_line(name, SHORT)} "
            f"({max(distance, 0.0):.3f})")  # not -0.000 from rounding


def _by_size(label_map, names):
    """Cluster names, the largest clusters (by label occurrences) first."""
    from vlsr_core.fo.browse import cluster_sizes

    size = cluster_sizes(label_map)
    return [names[c] for c in np.argsort(-size, kind="stable")]
