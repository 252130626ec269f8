"""COCO annotations and the CHAIR metric (Rohrbach et al. 2018, "Object Hallucination in Image Captioning").

CHAIR reads the MSCOCO objects a caption mentions and checks each against the image's
ground truth: the categories of its instance annotations plus the objects its reference
captions mention. A caption is hallucinated (CHAIR_S) if one mention is not in the ground
truth; CHAIR_I is hallucinated mentions over all mentions (a word repeated counts twice);
recall is the ground-truth objects mentioned over all ground-truth objects, summed over
captions (the form OPERA and the self-judgment paper report next to CHAIR).

Words are read as the original does (LisaAnne/Hallucination utils/chair.py):
- lower-cased, tokenised, each word singularised ("dogs" -> "dog", "people" -> "person");
- two-word phrases merged first ("hot dog", "teddy bear", "stop sign"), with its special
  cases: "baby"/"adult" + animal word is the animal ("baby elephant" is not a person),
  "passenger jet/train" is the vehicle, "bow tie" is a tie, "toilet seat" is a toilet, and
  "seat" is dropped from a caption that also says "toilet";
- a word counts if it is one of the synonyms of assets/coco/chair_synonyms.txt (the published
  list), and stands for that list's category.
The original singularises with pattern.en and tokenises with nltk; neither is a dependency
here, so `singularize` and `tokenize` follow the same rules for the words the list contains.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.config import REPO_ROOT

SYNONYMS_FILE = REPO_ROOT / "assets" / "coco" / "chair_synonyms.txt"
# Two-word MSCOCO names treated as one word (the original's list, "train track" as OPERA adds it).
DOUBLE_WORDS = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat",
                "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear",
                "hair drier", "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate",
                "train track")
# "baby bird" would otherwise fire "person" (baby); "passenger jet" likewise (passenger).
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")

# Plurals the suffix rules below get wrong, and words that look plural but are not.
IRREGULAR_PLURALS = {
    "people": "person", "persons": "person", "children": "child", "men": "man", "women": "woman",
    "oxen": "ox", "geese": "goose", "mice": "mouse", "teeth": "tooth", "feet": "foot", "dice": "die",
    "buses": "bus", "minibuses": "minibus", "busses": "bus", "lenses": "lens", "cacti": "cactus",
    "knives": "knife", "pocketknives": "pocketknife", "wives": "wife", "lives": "life", "leaves": "leaf",
    "loaves": "loaf", "shelves": "shelf", "halves": "half", "wolves": "wolf", "calves": "calf", "thieves": "thief",
    "scarves": "scarf", "hooves": "hoof", "elves": "elf", "tomatoes": "tomato", "potatoes": "potato",
    "heroes": "hero", "mangoes": "mango", "buffaloes": "buffalo", "volcanoes": "volcano", "echoes": "echo",
    "ties": "tie", "pies": "pie", "lies": "lie", "cookies": "cookie", "doggies": "doggie", "movies": "movie",
    "goalies": "goalie", "brownies": "brownie", "hoodies": "hoodie", "beanies": "beanie", "veggies": "veggie",
    "selfies": "selfie", "smoothies": "smoothie", "zombies": "zombie", "birdies": "birdie",
}
UNINFLECTED = {"sheep", "cattle", "bison", "fish", "deer", "moose", "series", "species", "scissors",
               "pants", "jeans", "shorts", "news", "this", "is", "was", "has", "his", "its", "as", "us", "yes"}
_NOT_PLURAL_ENDINGS = ("ss", "us", "is", "ous")
_MEN_NOT_PLURAL = {"omen", "ramen", "semen", "specimen", "abdomen", "stamen", "amen"}
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def singularize(word: str) -> str:
    """The singular of an English noun, by the rules CHAIR's word list needs ("skis" -> "ski", "buses" -> "bus")."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word in UNINFLECTED:
        return word
    if word.endswith("men") and word not in _MEN_NOT_PLURAL and len(word) > 4:
        return word[:-3] + "man"  # policemen, gentlemen, firemen
    if word.endswith(_NOT_PLURAL_ENDINGS) or not word.endswith("s") or len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"  # puppies, ponies, skies
    if word.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return word[:-2]  # glasses, sandwiches, dishes, boxes
    return word[:-1]


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; hyphenated words stay one token, "'s" is split off, as nltk does."""
    tokens = []
    for token in _WORD.findall(text.lower()):
        if token.endswith("'s"):
            token = token[:-2]
        tokens.append(token)
    return tokens


@dataclass(frozen=True)
class Mention:
    """An MSCOCO object word in a caption and the category it stands for."""

    word: str
    category: str


@dataclass
class ObjectVocabulary:
    """The 80 COCO categories with their synonyms, and the two-word phrases read as one word."""

    category_of: dict[str, str]  # synonym (singular, lower case) -> category name
    phrases: dict[str, str] = field(default_factory=dict)  # two-word phrase -> the word it is read as

    @classmethod
    def load(cls, path: Path = SYNONYMS_FILE) -> "ObjectVocabulary":
        """Read a synonyms file: one category per line, its name first, comma separated; '#' lines are comments."""
        category_of: dict[str, str] = {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            words = [w.strip() for w in line.split(",") if w.strip()]
            for word in words:
                category_of.setdefault(word, words[0])
        if not category_of:
            raise ValueError(f"{path} holds no categories; expected lines like 'dog, puppy, pup'")
        phrases = {p: p for p in DOUBLE_WORDS}
        for animal in ANIMAL_WORDS:
            phrases[f"baby {animal}"] = phrases[f"adult {animal}"] = animal
        for vehicle in VEHICLE_WORDS:
            phrases[f"passenger {vehicle}"] = vehicle
        phrases.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
        return cls(category_of=category_of, phrases=phrases)

    @property
    def categories(self) -> list[str]:
        """The category names, in file order."""
        return list(dict.fromkeys(self.category_of.values()))

    def words(self, text: str) -> list[str]:
        """The caption's words after singularising and merging two-word phrases."""
        words = [singularize(w) for w in tokenize(text)]
        merged, i = [], 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            if i + 1 < len(words) and pair in self.phrases:
                merged.append(self.phrases[pair])
                i += 2
            else:
                merged.append(words[i])
                i += 1
        if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is not a chair
            merged = [w for w in merged if w != "seat"]
        return merged

    def mentions(self, text: str) -> list[Mention]:
        """Every MSCOCO object word of the text, in order, repeats included."""
        return [Mention(w, self.category_of[w]) for w in self.words(text) if w in self.category_of]


@dataclass
class CocoImage:
    """One annotated image: its file, the categories its instances show, and its reference captions."""

    id: int
    file_name: str
    instance_objects: list[str]  # category names in order of first annotation, no repeats
    captions: list[str]


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the {what} file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); give COCO's {what} file") from exc
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{path} has no {key!r}; is it COCO's {what} file?")
    return data


@dataclass
class CocoAnnotations:
    """A COCO split's images with their instance categories and reference captions."""

    images: dict[int, CocoImage]
    vocabulary: ObjectVocabulary

    @classmethod
    def load(cls, instances_path: Path, captions_path: Path,
             vocabulary: ObjectVocabulary | None = None) -> "CocoAnnotations":
        """Read instances_<split>.json and captions_<split>.json (only images present in both are kept)."""
        vocabulary = vocabulary or ObjectVocabulary.load()
        instances = _read_json(Path(instances_path), "instances")
        captions = _read_json(Path(captions_path), "captions")
        if "categories" not in instances:
            raise ValueError(f"{instances_path} has no 'categories'; is it COCO's instances file?")
        names = {c["id"]: c["name"] for c in instances["categories"]}
        unknown = sorted(set(names.values()) - set(vocabulary.category_of))
        if unknown:
            raise ValueError(f"categories not in the synonym list: {', '.join(unknown)}")
        images = {im["id"]: CocoImage(im["id"], im["file_name"], [], []) for im in instances["images"]}
        for annotation in instances["annotations"]:
            image = images.get(annotation["image_id"])
            category = vocabulary.category_of[names[annotation["category_id"]]]
            if image is not None and category not in image.instance_objects:
                image.instance_objects.append(category)
        captioned = set()
        for annotation in captions["annotations"]:
            image = images.get(annotation["image_id"])
            if image is not None:
                image.captions.append(annotation["caption"])
                captioned.add(image.id)
        return cls(images={i: im for i, im in images.items() if i in captioned}, vocabulary=vocabulary)

    def ground_truth(self, image_id: int) -> set[str]:
        """CHAIR's ground truth: the instance categories plus the objects the reference captions mention."""
        image = self.images[image_id]
        objects = set(image.instance_objects)
        for caption in image.captions:
            objects.update(m.category for m in self.vocabulary.mentions(caption))
        return objects

    def sample(self, n: int, seed: int, min_objects: int = 0) -> list[int]:
        """n image ids drawn without replacement (sorted ids shuffled by the seed), optionally with >= min_objects."""
        ids = sorted(i for i, im in self.images.items() if len(im.instance_objects) >= min_objects)
        if n > len(ids):
            raise ValueError(f"asked for {n} images but only {len(ids)} qualify"
                             + (f" (with at least {min_objects} annotated objects)" if min_objects else ""))
        return random.Random(seed).sample(ids, n)


@dataclass
class CaptionChair:
    """CHAIR of one caption."""

    image_id: int
    caption: str
    mentions: list[Mention]
    hallucinated: list[Mention]
    ground_truth: list[str]
    recalled: list[str]


@dataclass
class ChairResult:
    """CHAIR_S, CHAIR_I and recall over a set of captions, with each caption's details."""

    chair_s: float
    chair_i: float
    recall: float
    captions: list[CaptionChair]

    def summary(self) -> dict:
        """The three numbers and the counts behind them."""
        return {"chair_s": self.chair_s, "chair_i": self.chair_i, "recall": self.recall,
                "captions": len(self.captions), "mentions": sum(len(c.mentions) for c in self.captions),
                "hallucinated": sum(len(c.hallucinated) for c in self.captions)}


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def chair(captions: list[tuple[int, str]], annotations: CocoAnnotations) -> ChairResult:
    """CHAIR of generated captions given as (image id, caption)."""
    results = []
    for image_id, caption in captions:
        if image_id not in annotations.images:
            raise KeyError(f"image {image_id} is not in the annotations")
        truth = annotations.ground_truth(image_id)
        mentions = annotations.vocabulary.mentions(caption)
        recalled = sorted({m.category for m in mentions if m.category in truth})
        results.append(CaptionChair(image_id=image_id, caption=caption, mentions=mentions,
                                    hallucinated=[m for m in mentions if m.category not in truth],
                                    ground_truth=sorted(truth), recalled=recalled))
    return ChairResult(
        chair_s=_ratio(sum(1 for c in results if c.hallucinated), len(results)),
        chair_i=_ratio(sum(len(c.hallucinated) for c in results), sum(len(c.mentions) for c in results)),
        recall=_ratio(sum(len(c.recalled) for c in results), sum(len(c.ground_truth) for c in results)),
        captions=results)
