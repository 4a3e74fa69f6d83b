"""Operator: FiftyOne Brain runs (2-D map, similarity index) on a run's image embeddings."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vlsr_core.engine.defaults import DEFAULT_KEY

from .common import (
    block,
    chosen_run_key,
    chosen_target,
    delegable,
    execution_flags,
    finish,
    run_key_choice,
    run_name,
    run_target,
    run_with_progress,
    target_view,
)


class MapEmbeddings(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="map_embeddings",
            label="VLSR: map the embeddings (Embeddings panel, similarity search)",
            description="See the run's image embeddings in FiftyOne's Embeddings panel and sort by "
                        "similarity; nothing is embedded again",
            icon="scatter_plot",
            **execution_flags(),
        )

    def resolve_input(self, ctx):
        from vlsr_core.fo.brain import available_methods, brain_keys, map_problem, outdated_map

        inputs = types.Object()
        form = types.Property(inputs, view=types.View(label="VLSR: map the embeddings"))
        view = target_view(ctx, inputs, key=chosen_run_key(ctx))
        key = run_key_choice(ctx, inputs, "map the embeddings") if view is not None else None
        if key is None:
            return form
        methods = types.RadioGroup(orientation="horizontal")
        for m in ("pca", "umap"):
            methods.add_choice(m, label=m.upper(), description=(
                "" if m in available_methods() else "needs: pip install umap-learn"))
        inputs.enum("method", methods.values(), default="pca", view=methods, label="Method",
                    description="PCA is always available; UMAP separates clusters better")
        inputs.bool("similarity", default=True, label="Also build a similarity index",
                    description="Sort the grid by similarity to selected samples")
        problem = map_problem(view, key, ctx.params.get("method", "pca"))
        if problem:
            block(inputs, "map_error", problem)
            return form
        old = outdated_map(ctx.dataset, key)
        if old:
            inputs.view("outdated", types.Warning(label="The map is out of date",
                                                  description=f"{old[0].upper()}{old[1:]}."))
        keys = brain_keys(key)
        inputs.view("what", types.Notice(label=(
            f"Makes Brain run {keys['visualization']!r} (and {keys['similarity']!r}) from "
            f"{key}_embedding; samples without an embedding are left out. Colour the map by "
            f"{key}_label or a score in the Embeddings panel.")))
        return form

    def resolve_run_name(self, ctx):
        return run_name(ctx, "map the embeddings")

    @delegable
    def execute(self, ctx):
        from vlsr_core.fo.brain import map_embeddings

        key = ctx.params.get("key", DEFAULT_KEY)
        report = yield from run_with_progress(ctx, "Mapping", lambda progress: map_embeddings(
            chosen_target(ctx, run_target(ctx, key)), key, ctx.params.get("method", "pca"),
            ctx.params.get("similarity", True), progress=progress))
        if not ctx.delegated:  # the App learns of the new Brain runs, then shows them
            yield ctx.trigger("reload_dataset")
            yield ctx.trigger("open_panel", dict(name="Embeddings", layout="horizontal",
                                                 is_active=True))
        message = f"Run {key!r}: {report.summary()}"
        return (yield from finish(ctx, message, message))
