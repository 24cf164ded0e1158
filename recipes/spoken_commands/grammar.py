"""The spoken-commands grammar: seeded, pure-Python sentence generation.

Sentences are lowercase words separated by single spaces, with numbers spelled
out, so the text given to a speech engine is exactly the transcript. Six
categories: digit strings, numbers, playing cards, positions, movement and
device commands.

Example:
    >>> from stenograph.recipes.spoken_commands.grammar import generate_sentences
    >>> [s.text for s in generate_sentences(3, seed=1)]  # doctest: +SKIP
    ['queen of clubs two of spades', 'turn left ninety degrees', 'four one one seven']
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

RANKS = (
    "ace",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "jack",
    "queen",
    "king",
)
SUITS = ("hearts", "diamonds", "clubs", "spades")

POSITION_ROWS = ("front", "rear", "side", "top", "bottom")
POSITION_COLUMNS = ("left", "center", "right")
POSITION_PREFIXES = ("", "", "speaker", "camera", "move to", "select", "channel")

ROOMS = (
    "kitchen",
    "bedroom",
    "living room",
    "bathroom",
    "garage",
    "hallway",
    "office",
    "garden",
    "basement",
    "dining room",
)
SWITCHABLE = ("lights", "fan", "heater", "radio", "television", "lamp", "air conditioner")
OPENABLE = ("door", "window", "blinds", "curtains", "gate")
MEDIA_VERBS = ("play", "pause", "stop", "resume", "skip")
MEDIA_THINGS = ("music", "radio", "song", "next song", "previous song", "podcast")
SHORT_ACTIONS = (
    "stop",
    "turn left",
    "turn right",
    "go back",
    "go home",
    "turn around",
    "slow down",
    "speed up",
)
TIME_UNITS = ("seconds", "minutes", "hours")

CATEGORIES = ("digits", "numbers", "cards", "positions", "movement", "devices")


@dataclass(frozen=True)
class Sentence:
    """One generated sentence.

    Attributes:
        text: Lowercase words separated by single spaces.
        category: One of `CATEGORIES`.
    """

    text: str
    category: str


def number_words(value: int) -> str:
    """Spells out a number in American English words.

    Args:
        value: An integer in [0, 9999].

    Returns:
        The number in words, e.g. 42 -> "forty two", 305 -> "three hundred five",
        1200 -> "one thousand two hundred".

    Raises:
        ValueError: If `value` is outside [0, 9999].
    """
    if not 0 <= value <= 9999:
        raise ValueError(f"number_words handles 0..9999. Received: value={value}")
    if value < 10:
        return DIGITS[value]
    if value < 20:
        return TEENS[value - 10]
    if value < 100:
        tens, ones = divmod(value, 10)
        return TENS[tens] if ones == 0 else f"{TENS[tens]} {DIGITS[ones]}"
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        head = f"{DIGITS[hundreds]} hundred"
        return head if rest == 0 else f"{head} {number_words(rest)}"
    thousands, rest = divmod(value, 1000)
    head = f"{DIGITS[thousands]} thousand"
    return head if rest == 0 else f"{head} {number_words(rest)}"


def _small_number(rng: random.Random, low: int, high: int) -> str:
    return number_words(rng.randint(low, high))


def _digits(rng: random.Random) -> str:
    count = rng.randint(3, 7)
    return " ".join(rng.choice(DIGITS) for _ in range(count))


def _numbers(rng: random.Random) -> str:
    form = rng.randrange(5)
    if form == 0:
        return number_words(rng.randint(0, 99))
    if form == 1:
        return number_words(rng.randint(100, 999))
    if form == 2:
        return number_words(rng.randint(1000, 9999))
    if form == 3:
        noun = rng.choice(("channel", "room", "page", "line", "track", "gate", "level"))
        return f"{noun} {number_words(rng.randint(1, 199))}"
    return f"{number_words(rng.randint(1, 99))} and {number_words(rng.randint(1, 99))}"


def _card(rng: random.Random) -> str:
    return f"{rng.choice(RANKS)} of {rng.choice(SUITS)}"


def _cards(rng: random.Random) -> str:
    count = rng.choice((1, 1, 2, 2, 3))
    return " ".join(_card(rng) for _ in range(count))


def _position(rng: random.Random) -> str:
    place = f"{rng.choice(POSITION_ROWS)} {rng.choice(POSITION_COLUMNS)}"
    prefix = rng.choice(POSITION_PREFIXES)
    if prefix == "channel":
        return f"{place} channel"
    return f"{prefix} {place}".strip()


def _positions(rng: random.Random) -> str:
    count = rng.choice((1, 1, 1, 2, 3))
    return " ".join(_position(rng) for _ in range(count))


def _movement(rng: random.Random) -> str:
    form = rng.randrange(5)
    if form == 0:
        direction = rng.choice(("forward", "backward", "back", "ahead"))
        unit = rng.choice(("meters", "steps", "feet", "centimeters"))
        return (
            f"{rng.choice(('go', 'move', 'drive'))} {direction} {_small_number(rng, 2, 99)} {unit}"
        )
    if form == 1:
        side = rng.choice(("left", "right"))
        angle = rng.choice((10, 15, 20, 30, 45, 60, 90, 120, 135, 180, 270, 360))
        return f"turn {side} {number_words(angle)} degrees"
    if form == 2:
        side = rng.choice(("left", "right", "up", "down"))
        return f"{rng.choice(('move', 'go', 'look'))} {side} {_small_number(rng, 2, 20)} steps"
    if form == 3:
        return f"{rng.choice((*SHORT_ACTIONS, 'go forward'))}{rng.choice(('', ' now'))}"
    first = rng.choice((*SHORT_ACTIONS, f"go forward {_small_number(rng, 2, 20)} meters"))
    return f"{first} then {rng.choice(SHORT_ACTIONS)}"


def _devices(rng: random.Random) -> str:
    form = rng.randrange(8)
    room = rng.choice(ROOMS)
    if form == 0:
        state = rng.choice(("on", "off"))
        return f"turn {state} the {room} {rng.choice(SWITCHABLE)}"
    if form == 1:
        unit = rng.choice(TIME_UNITS)
        amount = rng.randint(2, 59) if unit != "hours" else rng.randint(2, 12)
        return f"set a timer for {number_words(amount)} {unit}"
    if form == 2:
        place = rng.choice(("", f"{room} "))
        return f"set the {place}temperature to {_small_number(rng, 15, 30)} degrees"
    if form == 3:
        level = number_words(rng.randrange(10, 100, 10))
        return rng.choice(
            (
                f"dim the {room} lights",
                f"dim the lights to {level} percent",
                f"dim the {room} lights to {level} percent",
            )
        )
    if form == 4:
        verb = rng.choice(("open", "close", "lock", "unlock"))
        return f"{verb} the {room} {rng.choice(OPENABLE)}"
    if form in (5, 7):
        return _media(rng, room)
    hour = number_words(rng.randint(1, 12))
    minute = rng.choice(("", " fifteen", " thirty", " forty five", " o'clock"))
    return f"wake me up at {hour}{minute}"


def _media(rng: random.Random, room: str) -> str:
    form = rng.randrange(3)
    if form == 0:
        place = rng.choice(("", f"{room} "))
        return f"{rng.choice(MEDIA_VERBS)} the {place}{rng.choice(MEDIA_THINGS)}"
    if form == 1:
        return f"volume {rng.choice(('up', 'down'))}{rng.choice(('', f' in the {room}'))}"
    return f"{rng.choice(('mute', 'unmute'))} the {room} speaker"


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "digits": _digits,
    "numbers": _numbers,
    "cards": _cards,
    "positions": _positions,
    "movement": _movement,
    "devices": _devices,
}


# With balance_words: candidates drawn per category for each sentence, and the
# share below which a category supplies the next sentence by itself.
BALANCE_CANDIDATES = 4
MIN_CATEGORY_SHARE = 0.1


def generate_sentences(
    num_sentences: int,
    seed: int = 0,
    max_words: int | None = None,
    balance_words: bool = False,
    max_repeats: int = 1,
    exclude: Iterable[str] = (),
) -> list[Sentence]:
    """Draws distinct sentences from the grammar, taking the categories in turn.

    The result depends only on the arguments. Categories take turns, so they hold
    equal shares until a small one (devices holds under a thousand distinct
    sentences) runs out; the others then fill the remainder.

    Plain draws follow the grammar's own word frequencies, in which words of big
    categories (digits) are common and words of small forms ("nineteen",
    "heater") rare: fine for thousands of sentences, thin for a few hundred. With
    `balance_words`, each sentence is the one, among `BALANCE_CANDIDATES` drawn from
    every category, whose words have been used least so far (no category falling
    below `MIN_CATEGORY_SHARE`), so a small corpus hears every word several times.

    Args:
        num_sentences: How many distinct sentences to return (at most 20,000).
        seed: Seed of the random generator.
        max_words: If set, only sentences of at most this many words (at least 3).
        balance_words: Prefer sentences with the rarest words so far.
        max_repeats: With `balance_words`, a sentence may be returned up to this
            many times (each will be spoken by its own voice): the grammar has only
            a handful of short sentences with some words ("now", "temperature"), so
            distinct sentences alone leave those words rare however they are chosen.
        exclude: Sentences never to return (held-out dev and test text), in any
            case and spacing.

    Returns:
        `num_sentences` sentences in generation order, distinct unless
        `max_repeats` > 1; fewer only if the grammar runs out of sentences outside
        `exclude`.

    Raises:
        ValueError: If `num_sentences` is not in [1, 20000], `max_words` < 3, or
            `max_repeats` < 1 or set without `balance_words`.
    """
    if not 1 <= num_sentences <= 20_000:
        raise ValueError(
            f"num_sentences must be in [1, 20000]. Received: num_sentences={num_sentences}"
        )
    if max_words is not None and max_words < 3:
        raise ValueError(f"max_words must be at least 3. Received: max_words={max_words}")
    if max_repeats < 1 or (max_repeats > 1 and not balance_words):
        raise ValueError(
            "max_repeats must be >= 1, and above 1 only with balance_words=True. Received: "
            f"max_repeats={max_repeats}, balance_words={balance_words}"
        )
    rng = random.Random(seed)
    generators = _GENERATORS
    if max_words is not None:
        generators = {c: _limited(g, max_words) for c, g in _GENERATORS.items()}
    # Compare excluded text in the grammar's own form (lower case, single-spaced), so
    # that held-out sentences from an edited manifest still match.
    seen: set[str] = {" ".join(text.lower().split()) for text in exclude}
    sentences: list[Sentence] = []
    open_categories = list(CATEGORIES)
    turn = 0
    if balance_words:
        return _balanced_sentences(num_sentences, generators, rng, max_repeats, seen)
    while len(sentences) < num_sentences and open_categories:
        category = open_categories[turn % len(open_categories)]
        text = _draw_new(generators[category], rng, seen)
        if text is None:
            open_categories.remove(category)
            continue
        turn += 1
        seen.add(text)
        sentences.append(Sentence(text=text, category=category))
    return sentences


def _balanced_sentences(
    num_sentences: int,
    generators: dict[str, Callable[[random.Random], str]],
    rng: random.Random,
    max_repeats: int,
    seen: set[str],
) -> list[Sentence]:
    """Picks each sentence among candidates of every category by the rarity of its words.

    A category whose share falls below `MIN_CATEGORY_SHARE` supplies the next
    sentence by itself, so digits and numbers, whose words are everywhere, stay in.
    A sentence leaves the draw once it has been picked `max_repeats` times: it joins
    `seen`, the sentences that can no longer be picked (the excluded ones at first).
    """
    uses: collections.Counter[str] = collections.Counter()
    sentences: list[Sentence] = []
    per_category: collections.Counter[str] = collections.Counter()
    word_counts: collections.Counter[str] = collections.Counter()
    open_categories = list(CATEGORIES)

    def rarity(sentence: Sentence) -> float:
        words = sentence.text.split()
        return sum(1.0 / (1.0 + word_counts[w]) for w in words) / len(words)

    while len(sentences) < num_sentences and open_categories:
        floor = MIN_CATEGORY_SHARE * len(sentences)
        starved = [c for c in open_categories if per_category[c] < floor]
        candidates = []
        for category in starved[:1] or list(open_categories):
            for _ in range(BALANCE_CANDIDATES):
                text = _draw_new(generators[category], rng, seen)
                if text is None:
                    open_categories.remove(category)
                    break
                candidates.append(Sentence(text=text, category=category))
        if not candidates:
            continue
        best = max(candidates, key=rarity)
        uses[best.text] += 1
        if uses[best.text] >= max_repeats:
            seen.add(best.text)
        per_category[best.category] += 1
        word_counts.update(best.text.split())
        sentences.append(best)
    return sentences


def _limited(
    generator: Callable[[random.Random], str], max_words: int
) -> Callable[[random.Random], str]:
    """Wraps a generator to redraw until a sentence has at most `max_words` words."""

    def draw(rng: random.Random) -> str:
        while True:
            text = generator(rng)
            if len(text.split()) <= max_words:
                return text

    return draw


def _draw_new(
    generator: Callable[[random.Random], str], rng: random.Random, seen: set[str]
) -> str | None:
    """Returns an unseen sentence, or None when 500 draws in a row were all seen."""
    for _ in range(500):
        text = generator(rng)
        if text not in seen:
            return text
    return None


def grammar_vocabulary() -> set[str]:
    """Returns every word the grammar can produce."""
    words: set[str] = set(DIGITS) | set(TEENS) | {w for w in TENS if w}
    words |= {"hundred", "thousand", "and", "of", "then", "the", "to", "for", "at", "a"}
    words |= set(RANKS) | set(SUITS) | set(POSITION_ROWS) | set(POSITION_COLUMNS)
    for phrase in (*POSITION_PREFIXES, *ROOMS, *SWITCHABLE, *OPENABLE, *SHORT_ACTIONS):
        words |= set(phrase.split())
    for phrase in (*MEDIA_VERBS, *MEDIA_THINGS, "volume up down in mute unmute speaker"):
        words |= set(phrase.split())
    words |= set(TIME_UNITS)
    words |= {"channel", "room", "page", "line", "track", "gate", "level"}
    words |= {"go", "move", "drive", "forward", "backward", "back", "ahead", "turn"}
    words |= {"meters", "steps", "feet", "centimeters", "degrees", "up", "down", "look"}
    words |= {"stop", "home", "around", "now", "slow", "speed", "on", "off", "set", "timer"}
    words |= {"temperature", "dim", "lights", "percent", "open", "close", "lock", "unlock"}
    words |= {"wake", "me", "o'clock"}
    return words
