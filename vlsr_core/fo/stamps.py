"""Which image embeddings of a run are current: each image's file stamp (size, time of change
and a tag of the model that embedded it), read to notice a file replaced, an embedding another
model made, or one marked to be made again."""

import hashlib
import json
import os

from ..wording import count
from . import chunks
from .chunks import iter_chunks, packed_ids
from .lease import check_held
from .runs import sample_fields

# What a recompute tags the file stamp of each image it is to embed again, in place of the
# :func:`embedding_tag`: one stopped part-way goes on, when run again without recompute, with
# the images it had not reached (they looked current).
RECOMPUTE = "recompute"


def file_stamp(path):
    """``[size, mtime_ns]`` of a local image file, or None (no such file, or not a local path:
    a change to it is not noticed)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def replaced(now, then):
    """Whether a file whose :func:`file_stamp` is ``now`` is no longer the one of the stamp
    ``then`` a run kept (another size or time of change; a tag after them aside); a file not
    found now, or a stamp without them, tells nothing."""
    return now is not None and bool(then) and then[0] is not None and now[:2] != then[:2]


def embedding_tag(config):
    """A short id of what makes a run's image embeddings: the model's weights and how images are
    decoded and computed. Kept beside each image's :func:`file_stamp`: an embedding brought
    from another run (``merge_samples``) is another model's, however alike its length."""
    made = [getattr(config, "model_fingerprint", None) or config.model, *_image_setup(config)]
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()[:16]


def _kept(then, now):
    """Whether an embedded image that could not be embedded again keeps its embedding: a
    recompute's (``then``, its stamp, marked :data:`RECOMPUTE`) of the file it embedded
    (``now``, its stamp read before with the tag, not another file): what fails is this
    reading (a ``max_pixels`` too low, say), and the embedding is still the picture's."""
    return (bool(then) and len(then) == 3 and then[2] == RECOMPUTE
            and not replaced(now, then))


def _mark_for_recompute(samples, fields):
    """Tag the file stamp of every embedded image of ``samples`` :data:`RECOMPUTE`, keeping
    the file's size and time if any: each is embedded again as if its file had changed."""
    stamp = fields["image_file"]
    for ids, (stamps,) in iter_chunks(samples.exists(fields["embedding"]), [stamp]):
        check_held(samples._dataset)
        samples.set_values(stamp, {i: [*(s or [None, None])[:2], RECOMPUTE]
                                   for i, s in zip(ids, stamps)}, key_field="id", validate=False)


def recompute_left(samples, key):
    """How many images of ``samples`` a recompute left marked to embed again (:data:`RECOMPUTE`:
    stopped part-way, or failing to read them), and the paths of those whose file cannot be
    found now: they keep their embedding until it is back, however often the run goes on."""
    stamp = sample_fields(key)["image_file"]
    if not samples._dataset.has_field(stamp):
        return 0, []
    paths = samples.mongo([{"$match": {f"{stamp}.2": RECOMPUTE}}]).values("filepath")
    return len(paths), [path for path in paths if file_stamp(path) is None]


def foreign_problem(samples, key):
    """Why the image embeddings of ``samples`` are not all of run ``key``'s model, or None:
    some were made by another run's (brought by ``merge_samples``, say)."""
    config = samples._dataset.get_run_info(key).config
    fields = sample_fields(key)
    stamp = fields["image_file"]
    if not samples._dataset.has_field(stamp):
        return None
    # (of an embedding there: a model switched since drops them, and leaves their stamps)
    # (a fourth value: the stamps of two runs' samples merged, see _foreign_stamp)
    other = {f"{stamp}.2": {"$exists": True, "$nin": [embedding_tag(config), RECOMPUTE]}}
    foreign = samples.mongo([{"$match": {"$or": [other, {f"{stamp}.3": {"$exists": True}}],
                                         fields["embedding"]: {"$ne": None}}}])
    n = foreign.count()
    if not n:
        return None
    return (f"{count(n, 'image')} {'holds an embedding' if n == 1 else 'hold embeddings'}"
            f" that another model made (brought from another run, by merge_samples say), e.g. "
            f"{foreign.first().filepath}: embed {'it' if n == 1 else 'them'} again (vlsr run, or "
            "VLSR 1 in the App: only they are embedded)")


def _changed_images(embedded, stamp, tag):
    """The ids (as :func:`sample_ids`) of the ``embedded`` samples whose image file is no longer
    the one embedded: another size or time of change in field ``stamp``, embedded by another
    model than the one of ``tag`` (:func:`embedding_tag`), or marked :data:`RECOMPUTE`; how
    many of them were so marked, and how many another model embedded; and how many files
    cannot be found now (a drive not mounted: not a change, their embeddings stay)."""
    # one streamed query, as sample_ids (a select a chunk: 4.1 s against 1.7 s at 100,000 samples)
    cursor = embedded.exists(stamp)._aggregate(
        post_pipeline=[{"$project": {"filepath": True, stamp: True}}])
    cursor.batch_size(chunks.ID_PAGE)
    changed, marked, foreign, missing = [], 0, 0, 0
    for doc in cursor:
        now, then = file_stamp(doc["filepath"]), doc[stamp]
        again = len(then) > 2 and then[2] == RECOMPUTE  # (a tag, not this model's)
        other = _foreign_stamp(then, tag)
        if again or other or replaced(now, then):
            changed.append(doc["_id"])
            marked, foreign = marked + again, foreign + other
        elif now is None and then[0] is not None:
            missing += 1
    return packed_ids(changed), marked, foreign, missing


def _stamp_earlier(samples, fields, tag):
    """Give the embeddings of ``samples`` that a version before file stamps made the stamps of
    their files as they are now, so that a later change to a file is noticed (one replaced
    before cannot be); how many."""
    unstamped = samples.exists(fields["embedding"]).exists(fields["image_file"], False)
    n = 0
    for ids, (paths,) in iter_chunks(unstamped, ["filepath"]):
        check_held(samples._dataset)
        stamps = {i: [*s, tag] for i, s in zip(ids, map(file_stamp, paths)) if s}
        samples._dataset.set_values(fields["image_file"], stamps, key_field="id",
                                    validate=False)
        n += len(stamps)
    return n


def _foreign_stamp(stamp, tag):
    """Whether a file stamp says another model than ``tag``'s made the embedding beside it:
    another tag, or a fourth value, which ``merge_samples`` appends (the stamps of two runs'
    samples merged as lists) while it keeps one embedding, the one brought."""
    return len(stamp) > 3 or len(stamp) == 3 and stamp[2] not in (tag, RECOMPUTE)


def _image_setup(obj):
    """How images are turned into embeddings besides the model: (jpeg_draft, precision), of an
    encoder or a run's config (encoders without a precision compute at full precision)."""
    return obj.jpeg_draft, getattr(obj, "precision", "full")
