"""The random streams of SynthPedes' optional mechanisms.

Each mechanism draws from a stream of its own, `SeedSequence([*entropy, CODE])`, next to the three
streams every image has (`writer.image_rngs`: scene, render, caption). Turning one mechanism on
therefore changes no draw of the others, and with every mechanism off the output is what it was
before they existed.
"""

from __future__ import annotations

import numpy as np

OUTFIT_CODE = 11  # an image's outfit (SynthConfig.outfit_change_prob); entropy: the image's
CAMERA_CODE = 12  # a person's cameras (SynthConfig.cameras); entropy: the person's; the network: the seed's
BOX_CODE = 13  # an image's detector box (SynthConfig.detector_box_prob)
OCCLUDER_CODE = 14  # an image's occluder placed by the scene (SynthConfig.scene_visibility, occluder_scale)
SALIENCE_CODE = 15  # an image's shared salience (SynthConfig.shared_salience)
VIEW_DETAILS_CODE = 16  # a person's front and back details (SynthConfig.view_details); entropy: the shade seed
POOL_CODE = 17  # the annotator pool of a dataset (SynthConfig.annotator_pool); entropy: the seed
ANNOTATOR_CODE = 18  # an image's annotators and their slips (SynthConfig.annotator_pool)


def stream(entropy: tuple[int, ...] | list[int], code: int) -> np.random.Generator:
    """The generator of mechanism `code` for the image, person or dataset whose entropy is `entropy`."""
    return np.random.default_rng(np.random.SeedSequence([*entropy, code]))
