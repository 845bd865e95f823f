"""A small, seeded "captioned scenes" dataset in the on-disk layout this project uses for MSCOCO.

Why it exists: the full pipeline (pretrain -> noisy fine-tuning with NPC -> retrieval evaluation)
must be runnable end to end on a laptop CPU in minutes, with no downloads. Real image-text data is
replaced by rendered scenes of coloured shapes whose captions are generated from the scene, so that
retrieval is solvable but *compositional*: every single word (a colour, a shape, "left of") is shared
by many images; only combinations such as "red circle left of a blue square" single one out.

Layout written under ``root`` (the same as the real MSCOCO layout, so the same data code reads it)::

    images/COCO_2014_%012d.jpg          every image of every split (ids unique across splits)
    annotations/scan_split/
        pretrain_caps.txt pretrain_ids.txt   "web pretraining" split; ids one line per image
        train_caps.txt    train_ids.txt      captions one a line; ids one line per image
        dev_caps.txt      dev_ids.txt        ids one line per caption (each repeated num_anns times)
        test_caps.txt     test_ids.txt
    demo_info.json                      written last: its presence means the dataset is complete

Captions ``num_anns*k .. num_anns*k + num_anns - 1`` of a split belong to its ``k``-th image.

Domain shift, standing in for "web-pretrained CLIP vs MSCOCO": ``pretrain`` scenes hold fewer objects
and their captions are alt-text-like (attribute lists, "a photo of ...", tags, rarely a relation),
while train/dev/test captions are COCO-like sentences that mostly describe spatial relations and
absolute positions. The vocabulary is shared, so a model pretrained on ``pretrain`` transfers but
has clear room to improve by fine-tuning on ``train``.

Determinism: every random draw comes from ``np.random.default_rng`` seeded by a ``SeedSequence``
keyed on ``(seed, split, image index, purpose)``. An image therefore depends only on the seed, its
split and its index: growing one split leaves every other file's content unchanged, and the same
seed and sizes give byte-identical files (with the same Pillow/libjpeg build).

One job a module: ``scenes`` (what a scene holds, and its seeded draw), ``words`` (the words captions
use), ``captions`` (the caption templates), ``render`` (a scene's image and its JPEG bytes) and
``dataset`` (the files on disk).
"""
from .captions import describe_scene
from .dataset import (ANN_SUBDIR, DEMO_VERSION, IMAGE_PATTERN, INFO_NAME, MARKER_NAME, SceneRecord,
                      ensure_demo_dataset, generate_demo_dataset, split_records)
from .render import render_scene
from .scenes import BACKGROUNDS, COLOURS, SHAPES, SIZES, SPLITS, TEXTURES, Scene, SceneObject
from .words import BACKGROUND_WORDS, COLOUR_WORDS, RELATION_WORDS, SHAPE_WORDS, SIZE_WORDS

# The generator's internals that the studies in bench/ read as ground truth (how an image's scene is
# drawn, which phrases name what, when a relation holds).
from .dataset import _ID_BASE  # noqa: F401
from .scenes import _make_scene, _relation, _rng  # noqa: F401
from .words import _FRONTED_WORDS, _GENERIC_NOUNS, _GENERIC_PLURALS, _SHAPE_PLURAL, _TEXTURE_WORDS  # noqa: F401

__all__ = [
    "ANN_SUBDIR", "BACKGROUNDS", "BACKGROUND_WORDS", "COLOURS", "COLOUR_WORDS", "DEMO_VERSION", "IMAGE_PATTERN",
    "INFO_NAME", "MARKER_NAME", "RELATION_WORDS", "SHAPES", "SHAPE_WORDS", "SIZES", "SIZE_WORDS", "SPLITS",
    "Scene", "SceneObject", "SceneRecord", "TEXTURES", "describe_scene", "ensure_demo_dataset",
    "generate_demo_dataset", "render_scene", "split_records",
]
