"""Grounding questions generated from fresh VIMA-style scenes: "where is <image_history_1> ?" about EVERY
object of a scene, with that object's prompt image, answered by its x, y as location tokens.

Why: recorded demos give one such question per pick-and-place episode (a few hundred), which a small
network memorizes scene by scene; resetting the env is cheap (no oracle rollout), so thousands of
scenes with two to four objects each give many times more questions, and asking about every object
(not only the dragged one) is what forces matching the prompt image to the scene.

Scene i is task `tasks[i % k]` of the level's partition at seed `first_seed + i // k`. The camera image
is the scene's first frame (after the objects settle, as the env's reset returns it); the history
image is the object photographed alone in its colour, as the env renders prompt images of objects
(`VimaScene.studio_image`); the target is its settled x, y through the primitive codec, the same bins
as the pick pose of a primitive target (`vima_data.where_target`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from uio_robot.policies.codec import Codec
from uio_robot.policies.uio2.preprocess import preprocess_example
from uio_robot.policies.vima_data import where_question, where_target
from uio_robot.policies.vima_prompts import multimodal_prompt

CAMERAS = ("image", "top_image")
MAX_SCENES = 100_000


@dataclass(frozen=True)
class WhereQuestion:
    """One question: `frame` (shared by the questions of one scene), the object's prompt image, its x, y."""

    task: str
    seed: int
    object: str
    frame: np.ndarray
    object_image: np.ndarray
    xy: np.ndarray
    scene_xy: dict  # every object of the scene -> x, y (to score an answer against the others)


def generate_where_questions(n_scenes: int, image_size: int, camera: str = "image", level: int | str = "train",
                             first_seed: int = 0, progress: bool = True) -> list[WhereQuestion]:
    """Questions about every object of `n_scenes` scenes of the level's tasks (no oracle rollout)."""
    from tqdm import tqdm

    from uio_robot.envs.vima import VimaEnv, level_tasks

    if not isinstance(n_scenes, int) or not 0 < n_scenes <= MAX_SCENES:
        raise ValueError(f"where scenes: n_scenes must be an integer in [1, {MAX_SCENES}], got {n_scenes!r}")
    if camera not in CAMERAS:
        raise ValueError(f"where scenes: camera must be one of {CAMERAS}, got {camera!r}")
    if not isinstance(first_seed, int) or first_seed < 0:
        raise ValueError(f"where scenes: first_seed must be an integer >= 0, got {first_seed!r}")
    tasks = level_tasks(level)
    envs = {task: VimaEnv(task, level=level, image_size=image_size) for task in tasks}
    out: list[WhereQuestion] = []
    studio: dict[tuple[str, str], np.ndarray] = {}  # (body, colour) -> its picture: the same in every scene
    try:
        for i in tqdm(range(n_scenes), desc="where scenes", unit="scene", file=sys.stderr, disable=not progress):
            task, seed = tasks[i % len(tasks)], first_seed + i // len(tasks)
            env = envs[task]
            obs, _ = env.reset(seed=seed)
            scene_xy = {name: env.scene.object_pos(name)[:2] for name in env.episode.objects}
            for name, colour in env.episode.objects.items():
                if (name, colour) not in studio:
                    studio[name, colour] = env.scene.studio_image(name, colour, env.image_size)
                out.append(WhereQuestion(task, seed, name, obs[camera], studio[name, colour], scene_xy[name],
                                         scene_xy))
    finally:
        for env in envs.values():
            env.close()
    return out


def question_target(codec: Codec, xy: np.ndarray) -> str:
    """The x, y location tokens of the primitive codec (pose0's bins; the yaws do not enter)."""
    return where_target(codec, np.array([xy[0], xy[1], 0.0, xy[0], xy[1], 0.0]))


class GeneratedWhereExamples(Dataset):
    """UIO2 examples of generated questions, preprocessed when drawn: not cached, unlike
    `PrimitiveExamples`, because there are tens of thousands (150 KB each preprocessed) and one takes
    about 6 ms, little beside a training step."""

    def __init__(self, questions: Sequence[WhereQuestion], tokenizer, codec: Codec, image_size: int,
                 history_size: int, num_frames: int, max_text_len: int):
        self.questions, self.tokenizer, self.codec = list(questions), tokenizer, codec
        self.sizes = (image_size, history_size, num_frames, max_text_len)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        q = self.questions[idx]
        image_size, history_size, num_frames, max_text_len = self.sizes
        text, images = multimodal_prompt(where_question(q.object_image), num_frames)
        return preprocess_example(self.tokenizer, text, image=q.frame, image_history=images,
                                  text_targets=question_target(self.codec, q.xy), num_frames=num_frames,
                                  image_size=image_size, history_size=history_size, max_text_len=max_text_len)


def grounding_score(policy, questions: Sequence[WhereQuestion], camera: str = "image") -> dict[str, float]:
    """Ask a primitive policy every question; its answer is the first action's x, y (pose0).

    Returns `hit` (share of answers nearest the asked object among the scene's objects), `chance`
    (the mean of 1 / objects per question: a blind pick of one of the scene's objects), `near` (share
    within 3 cm of the asked object) and `median_cm` (median distance to it). Why: the loss's bin error
    says how close an answer is, not whether it names the right object, which is what a policy needs.
    """
    from uio_robot.policies.types import Observation

    if not questions:
        raise ValueError("grounding_score: no questions")
    hits, chance, dists = [], [], []
    for q in questions:
        obs = Observation({camera: q.frame}, np.zeros(0, np.float32), where_question(q.object_image))
        answer = np.asarray(policy.act(obs).actions[0][:2], np.float64)
        d = {name: float(np.linalg.norm(np.asarray(xy) - answer)) for name, xy in q.scene_xy.items()}
        hits.append(min(d, key=d.get) == q.object)
        chance.append(1.0 / len(d))
        dists.append(d[q.object])
    return {"questions": len(questions), "hit": float(np.mean(hits)), "chance": float(np.mean(chance)),
            "near": float(np.mean(np.array(dists) < 0.03)), "median_cm": float(np.median(dists) * 100)}
