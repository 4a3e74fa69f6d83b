"""Operator: accept or reject suggested labels for the samples or labels selected in the grid."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY
from vlsr_core.wording import SHORT, as_markdown, code, count

from .common import block, done, label_choice, reported, review_form, shown_choices

TOP = "__top__"  # each sample's own best suggestion


class ReviewSuggestions(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="review_suggestions",
            label="VLSR 4: accept or reject suggestions",
            description="Step 4: for the selected samples or labels, take a suggested label or keep "
                        "theirs; stored on the run, written by Apply",
            icon="rule",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs, form, key, state = review_form(ctx, self.config.label)
        if state is None:
            return form
        if ctx.view._is_generated:  # (its ids are of patches or frames, not of samples)
            block(inputs, "selection_error", "The grid shows patches or frames of the samples: "
                  "decisions are about samples and their labels. Go back to a view of the "
                  "samples and select them, or a sample's labels in its expanded view")
            return form
        samples, label_ids = _selection(ctx, key)
        if not samples:
            block(inputs, "selection_error", "Select samples in the grid, or labels of field "
                  f"{ctx.dataset.get_run_info(key).config.label_field!r} in a sample, first")
            return form
        n = len(label_ids) or len(samples)
        what = count(n, f"selected {'label' if label_ids else 'sample'}")
        radio = types.RadioGroup(orientation="horizontal")
        radio.add_choice("accept_suggestion", label="Accept")
        radio.add_choice("reject_suggestion", label="Reject")
        inputs.enum("decision", radio.values(), default="accept_suggestion", view=radio,
                    label=f"Decision for the {what}",
                    description=("Accept: the suggested label replaces them in the run's outputs"
                                 if label_ids else "Accept: the suggested label becomes their final "
                                 "label, beside their own labels in the run's outputs")
                                + " (as its canonical label)"
                                + ". Reject: they keep their labels. Input labels are never changed.")
        label_choice(inputs, "suggestion", shown_choices(state.label_map.vocabulary),
                     "Suggested label",
                     "A label of the vocabulary, or each sample's own top suggestion",
                     required=False, first=[(TOP, "Each sample's top suggestion")])
        groups = _groups(ctx, key, samples, ctx.params.get("suggestion") or TOP)
        missing = len(samples) - sum(len(s) for s in groups.values())
        if not groups:
            block(inputs, "suggestion_error", "The selected samples have no suggestions yet: "
                  "score the labels first")
            return form
        from vlsr_core.fo.review import ReviewError, add_suggestion_decisions, replaced_note

        decision = ctx.params.get("decision", "accept_suggestion")
        try:
            edits = add_suggestion_decisions(ctx.dataset, key, decision, groups, label_ids,
                                             dry_run=True, state=state)
        except ReviewError as e:
            block(inputs, "edit_error", as_markdown(e))  # (it may hold labels as written)
            return form
        canonical = state.label_map.canonical
        shown = ", ".join(f"{code(l, SHORT)} ({len(ids)}"
                          + (f", shown as its canonical label {code(canonical[l], SHORT)})"
                             if decision == "accept_suggestion" and canonical[l] != l else ")")
                          for l, ids in list(groups.items())[:5])
        verb = ("To accept" if decision == "accept_suggestion" else
                "To reject (the samples keep their labels)")
        inputs.view("preview", types.Notice(
            label=f"{verb}: {shown}" + (f"; {count(missing, 'sample')} without suggestions are "
                                        "left out" if missing else "")
                  + "".join(f". {n[0].upper()}{n[1:]}" for n in [replaced_note(state, *edits)]
                            if n)
                  + ". Stored on the run; Apply writes it to the fields."))
        return form

    @reported
    def execute(self, ctx):
        from vlsr_core.fo.review import (add_suggestion_decisions, cached_review_state,
                                         join_note, left_out, replaced_note)

        key = ctx.params.get("key", DEFAULT_KEY)
        samples, label_ids = _selection(ctx, key)
        decision = ctx.params.get("decision", "accept_suggestion")
        groups = _groups(ctx, key, samples, ctx.params.get("suggestion") or TOP)
        state = cached_review_state(ctx.dataset, key)  # (the form's; a decision leaves the map)
        edits = add_suggestion_decisions(ctx.dataset, key, decision, groups, label_ids)
        notes = [n for n in [*(join_note(state, e) for e in edits[:5]),
                             replaced_note(state, *edits)] if n]
        verb = "accepted" if decision == "accept_suggestion" else "rejected"
        n = len(label_ids) or sum(len(e.samples) for e in edits)
        message = (f"Run {key!r}: suggestions {verb} for {count(n, 'label' if label_ids else 'sample')} "
                   f"({'edit' if len(edits) == 1 else 'edits'} {', '.join(f'#{e.id}' for e in edits)})"
                   f"{left_out([s for ids in groups.values() for s in ids], *edits)}"
                   + "".join(f"; {n}" for n in notes) + "; Apply to write them")
        done(ctx, message)
        return dict(message=message, edits=[e.as_record() for e in edits])


def _selection(ctx, key):
    """The selected sample ids, and the selected labels of the run's label field
    (label id -> sample id); selected labels take their samples with them."""
    field = ctx.dataset.get_run_info(key).config.label_field
    labels = {l["label_id"]: l["sample_id"] for l in ctx.selected_labels
              if l.get("field") == field}
    if labels:
        return list(dict.fromkeys(labels.values())), labels
    return list(ctx.selected), {}


def _groups(ctx, key, samples, suggestion):
    """Suggested label -> the samples it is decided for: one label for all, or each sample's
    top suggestion (samples without suggestions are left out)."""
    if suggestion != TOP:
        return {suggestion: list(samples)}
    from vlsr_core.fo.runs import sample_fields

    field = sample_fields(key)["suggestions"]
    if not ctx.dataset.has_field(field):
        return {}
    view = ctx.dataset.select(samples)
    groups = {}
    for sid, labels in zip(view.values("id"), view.values(f"{field}.classifications.label")):
        if labels:
            groups.setdefault(labels[0], []).append(sid)
    return groups
